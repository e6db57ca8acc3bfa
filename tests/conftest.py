"""Fixtures shared by the whole suite. Reusable code lives in tests/support/."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# `tests.support` must import however pytest was started (`pytest`, `python -m pytest`,
# with or without tests/__init__.py): put the repository root on sys.path.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.support import mysqlenv  # noqa: E402
from tests.support.mariadb import throwaway_or_skip  # noqa: E402


@pytest.fixture(scope="session")
def mysql_params():
    """The shared MySQL server: dict(host, port, user, password, database).

    From GREENPOOL_MYSQL_* (make test exports them from .run/env.sh); fails the test,
    naming the server, when it does not answer.
    """
    params = mysqlenv.mysql_params_from_env()
    problem = mysqlenv.check_reachable(params)
    if problem:
        pytest.fail(
            f"{problem}. Run `make test` (it finds or starts a server), or set "
            "GREENPOOL_MYSQL_HOST/_PORT/_USER/_PASSWORD/_DATABASE.",
            pytrace=False,
        )
    return dict(params)


@pytest.fixture
def mysql_admin(mysql_params):
    """A fresh autocommit PyMySQL connection for admin queries (SHOW PROCESSLIST, KILL)."""
    conn = mysqlenv.connect(mysql_params)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture(scope="module")
def throwaway_mariadb():
    """A private mariadbd for this module's tests, which may stop, kill or reconfigure it
    (skipped without MariaDB binaries, failed in CI)."""
    with throwaway_or_skip() as server:
        yield server
