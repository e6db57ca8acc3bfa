"""The backend against a throwaway MariaDB whose global variables a test changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.mysql

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_session_setup_works_when_the_server_has_sql_auto_is_null_on(throwaway_mariadb):
    """Django then sends two SET statements in one query: PyMySQL needs
    CLIENT.MULTI_STATEMENTS for it (mysqlclient has it by default)."""
    throwaway_mariadb.set_global("sql_auto_is_null", 1)
    try:
        script = textwrap.dedent(
            f"""
            import json, sys
            sys.path.insert(0, {ROOT!r})
            import django
            from django.conf import settings
            P = {throwaway_mariadb.params()!r}
            settings.configure(DATABASES={{"default": {{
                "ENGINE": "greenpool.backends.mysql", "NAME": P["database"], "USER": P["user"],
                "PASSWORD": P["password"], "HOST": P["host"], "PORT": str(P["port"]),
                "OPTIONS": {{"pool": {{"max_size": 2}}}},
            }}}}, INSTALLED_APPS=[])
            django.setup()
            from django.db import connection
            with connection.cursor() as cur:
                cur.execute("SELECT @@sql_auto_is_null, @@tx_isolation")
                row = cur.fetchone()
            print(json.dumps({{"row": list(row)}}))
            """
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    finally:
        throwaway_mariadb.set_global("sql_auto_is_null", 0)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["row"] == [0, "READ-COMMITTED"]
