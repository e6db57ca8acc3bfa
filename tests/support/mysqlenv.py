"""The MySQL/MariaDB server the test suite runs against.

`make test` resolves it in .ci/bootstrap.sh and exports GREENPOOL_MYSQL_* from
.run/env.sh; run by hand, the same variables (or these defaults) apply.
"""

from __future__ import annotations

import os
from typing import Any

import pymysql

DEFAULTS = {
    "host": "127.0.0.1",
    "port": "3306",
    "user": "root",
    "password": "",
    "database": "test",
}


def mysql_params_from_env(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Connection parameters from GREENPOOL_MYSQL_HOST/_PORT/_USER/_PASSWORD/_DATABASE."""
    env = os.environ if environ is None else environ
    params: dict[str, Any] = {
        key: env.get(f"GREENPOOL_MYSQL_{key.upper()}", default) for key, default in DEFAULTS.items()
    }
    try:
        params["port"] = int(params["port"])
    except ValueError:
        raise ValueError(f"GREENPOOL_MYSQL_PORT must be a number, got {params['port']!r}") from None
    return params


def describe(params: dict[str, Any]) -> str:
    return f"{params['user']}@{params['host']}:{params['port']}/{params['database']}"


def connect(params: dict[str, Any], **overrides: Any) -> pymysql.connections.Connection:
    """A fresh PyMySQL connection with bounded connect/read/write timeouts."""
    options: dict[str, Any] = dict(params)
    options.setdefault("connect_timeout", 5)
    options.setdefault("read_timeout", 30)
    options.setdefault("write_timeout", 30)
    options.setdefault("autocommit", True)
    options.update(overrides)
    return pymysql.connect(**options)


def check_reachable(params: dict[str, Any]) -> str | None:
    """None when the server accepts a login and ``SELECT 1``, else why it does not."""
    try:
        conn = connect(params)
    except pymysql.MySQLError as exc:
        return f"cannot connect to MySQL at {describe(params)}: {exc}"
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()
    except pymysql.MySQLError as exc:
        return f"MySQL at {describe(params)} accepted a login but SELECT 1 failed: {exc}"
    finally:
        conn.close()
    return None
