"""The connection budget checked when greenpool-serve starts (greenpool/launch/budget.py),
against a throwaway mariadbd whose max_connections and account limits the tests set."""

from __future__ import annotations

import re

import pytest

from greenpool.launch.errors import ExitCode
from tests.support.serve import cli

pytestmark = pytest.mark.mysql

BUDGET_LINE = r"connection budget of 127\.0\.0\.1:\d+ \(default\)"


def _budget_line(log: str) -> str:
    lines = [line for line in log.splitlines() if re.search(BUDGET_LINE, line)]
    assert len(lines) == 1, log[-4000:]
    return lines[0]


def test_a_budget_within_its_share_is_logged_once_at_info(serve):
    server = serve(workers=2, env={"GREENPOOL_DEMO_POOL_MAX_SIZE": "5"})
    line = _budget_line(server.log())
    assert "[INFO]" in line
    assert "this host takes at most 15 = (2 workers + 1) x max_size 5; 1 host (--hosts)" in line
    assert re.search(r"max_connections 151 with \d+ in use, so \d+ free", line), line


def test_a_fleet_over_the_share_of_free_connections_is_a_warning_naming_the_numbers(serve, db):
    db.set_global("max_connections", 40)
    server = serve("--hosts", "3", workers=2, env={"GREENPOOL_DEMO_POOL_MAX_SIZE": "5"})
    line = _budget_line(server.log())
    assert "[WARNING]" in line
    assert "this host takes at most 15 = (2 workers + 1) x max_size 5; 3 hosts take 45" in line
    assert "max_connections 40 with" in line and "(the limit is 80%, --connection-budget)" in line
    assert server.get("/read")[0] == 200  # a warning: it serves


def test_strict_connection_budget_refuses_to_start_with_config_error(serve, db):
    db.set_global("max_connections", 20)
    server = serve("--strict-connection-budget", workers=2, wait=False, env={"GREENPOOL_DEMO_POOL_MAX_SIZE": "10"})
    assert server.wait_exit() == ExitCode.CONFIG_ERROR
    log = server.log()
    assert re.search(
        r"this host takes at most 30 = \(2 workers \+ 1\) x max_size 10; .* max_connections 20 "
        r"with \d+ in use, so \d+ free: 30 is \d+% of what is free .*refusing to start "
        r"\(--strict-connection-budget\)",
        log,
    ), log[-4000:]
    assert db.connection_count() == 0  # every worker closed what it opened


def test_the_accounts_max_user_connections_is_the_limit_when_it_is_smaller(serve, db):
    user = db.create_user("pw-budget")
    db.query(f"ALTER USER '{user}'@'127.0.0.1' WITH MAX_USER_CONNECTIONS 12")
    server = serve(
        workers=1, db_params=db.params(user=user, password="pw-budget"), env={"GREENPOOL_DEMO_POOL_MAX_SIZE": "5"}
    )
    line = _budget_line(server.log())
    # 1 worker + 1 replacement, 5 each: 10 of the 12 the account allows (the checking connection is its own).
    assert "max_user_connections 12 with 0 in use, so 12 free: 10 is 83% of what is free" in line, line
    assert "[WARNING]" in line


def test_check_config_prints_the_budget_and_fails_when_strict(serve, db, tmp_path):
    db.set_global("max_connections", 20)
    server = serve(
        "--check-config",
        "--strict-connection-budget",
        "--connection-budget",
        "0.4",
        workers=4,
        wait=False,
        env={"GREENPOOL_DEMO_POOL_MAX_SIZE": "2"},
    )
    assert server.wait_exit() == ExitCode.CONFIG_ERROR
    assert "this host takes at most 10 = (4 workers + 1) x max_size 2" in _budget_line(server.log())


def test_a_bad_share_is_a_usage_error_naming_the_flag():
    result = cli("--connection-budget", "1.5", "--print-config")
    assert result.returncode == ExitCode.USAGE
    assert "--connection-budget" in result.stderr and "at most 1" in result.stderr, result.stderr
