"""Session state does not cross requests.

One worker with max_size=1: every request gets the same pooled connection (the tests
check its server thread id). One request leaves state behind on purpose
(greenpool.demo.test_views, GREENPOOL_DEMO_TEST_VIEWS=1); the next one must see the
session exactly as a fresh one: no user variable, temporary table, changed session
variable, named lock, open transaction or changed isolation level.
"""

from __future__ import annotations

import uuid

import pytest

from greenpool.demo.test_views import DIRTY
from tests.faults.conftest import SERVERS, FaultDB, demo_env
from tests.support.serve import ServeProcess

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module", params=SERVERS)
def one_connection_server(request, faultdb, tmp_path_factory):
    """A demo server per worker type, shared by this module's tests: one worker, one connection."""
    if not faultdb.running:
        faultdb.start()
    name = f"gp_fault_iso_{uuid.uuid4().hex[:8]}"
    with faultdb.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    state = FaultDB(faultdb, name)
    server = ServeProcess(
        tmp_path_factory.mktemp("isolation"),
        state.params(),
        server=request.param,
        workers=1,
        env=demo_env(pool_max_size=1, pool_min_size=1, test_views=1),
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
        state.cleanup()


@pytest.mark.parametrize("what", list(DIRTY))
def test_state_left_by_one_request_is_not_seen_by_the_next(one_connection_server, what):
    server = one_connection_server
    clean = server.get_json("/test/session")
    assert clean["user_variable"] is None and clean["temporary_table"] is False
    assert clean["named_lock_holder"] is None and clean["in_transaction"] == 0
    assert clean["session_variable"] == clean["session_variable_global"]

    left = server.get_json(f"/test/dirty?do={what}")
    assert left["connection_id"] == clean["connection_id"], "the requests did not share the pooled connection"

    seen = server.get_json("/test/session")
    assert seen["connection_id"] == clean["connection_id"], "the connection was replaced, not cleaned"
    assert seen == clean, f"{what} left by the previous request is visible: {seen} != {clean}"
    assert "503 for" not in server.log() and "Traceback" not in server.log()


def test_test_views_are_not_served_by_default(serve):
    server = serve(server="gevent", workers=1)
    for path in ("/test/session", "/test/dirty?do=named_lock", "/test/reprs", "/test/interrupted"):
        assert server.get(path)[0] == 404, path
