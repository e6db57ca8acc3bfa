"""The test environment itself: the shared MySQL server answers with the settings given."""

import pytest

pytestmark = pytest.mark.mysql


def test_select_1_on_shared_server(mysql_params):
    import pymysql

    conn = pymysql.connect(connect_timeout=5, read_timeout=30, **mysql_params)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1, DATABASE()")
            assert cur.fetchone() == (1, mysql_params["database"])
    finally:
        conn.close()


def test_mysql_admin_sees_itself_in_processlist(mysql_admin):
    with mysql_admin.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
        (own_id,) = cur.fetchone()
        cur.execute("SHOW PROCESSLIST")
        assert own_id in [row[0] for row in cur.fetchall()]
