"""greenpool/metrics.py: what is recorded, and that it renders as Prometheus text
that prometheus_client's own parser reads back with the names and units
operators expect. The end-to-end scrape by a real Prometheus is in
tests/test_metrics_prometheus.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

from prometheus_client.parser import text_string_to_metric_families

from greenpool import metrics, registry
from greenpool.pool import Pool
from tests.fakedb import FakeDB

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_histogram_counts_each_value_in_the_first_bucket_that_holds_it():
    h = metrics.Histogram((0.1, 1.0))
    for value in (0.0, 0.1, 0.5, 1.0, 3.0):
        h.observe(value)
    assert h.snapshot() == {"bounds": [0.1, 1.0], "counts": [2, 2, 1], "sum": 4.6}
    assert metrics.cumulative_buckets(h.snapshot()) == [("0.1", 2), ("1.0", 4), ("+Inf", 5)]


def test_view_labels_are_bounded_per_process():
    holds = metrics.HoldHistograms(bounds=(1.0,), max_views=3)
    for n in range(10):
        holds.observe("default", f"view-{n}", 0.5)
    holds.observe("default", "view-0", 0.5)  # a known view keeps its own label
    by_view = {(e["pool"], e["view"]): sum(e["counts"]) for e in holds.snapshot()}
    assert by_view == {
        ("default", "view-0"): 2,
        ("default", "view-1"): 1,
        ("default", "view-2"): 1,
        ("default", metrics.OTHER_VIEW): 7,
    }


def test_pool_records_how_long_each_checkout_waited():
    db = FakeDB()
    pool = Pool(db.connect, max_size=1, timeout=5, concurrency="threads", name="waits")
    held = pool.getconn()
    import threading

    got = []
    waiter = threading.Thread(target=lambda: got.append(pool.getconn()))
    waiter.start()
    time.sleep(0.15)
    pool.putconn(held)
    waiter.join(5)
    pool.putconn(got[0])
    counts = pool.wait_histogram()["counts"]
    bounds = pool.wait_histogram()["bounds"]
    waited = [b for b, c in zip([*bounds, float("inf")], counts) for _ in range(c)]
    assert len(waited) == 2
    assert waited[0] == bounds[0] and waited[1] >= 0.1  # one served at once, one after ~0.15 s
    pool.close()


def test_rendered_series_have_prometheus_names_units_and_labels():
    db = FakeDB()
    pool = registry.get_pool(
        "metrics-test",
        "fp",
        lambda: Pool(db.connect, max_size=2, timeout=5, concurrency="threads", name="metrics-test"),
    )
    try:
        pool.putconn(pool.getconn())
        metrics.set_view("app:orders")
        metrics.record_hold("metrics-test", 0.02)
        text, content_type = metrics.render(metrics.Collector(lambda: [({"worker": "0-1"}, metrics.snapshot())]))
    finally:
        registry.close_pool("metrics-test")
        metrics.set_view(metrics.NO_VIEW)
    assert content_type.startswith("text/plain")
    families = _families(text.decode())
    checkouts = families["greenpool_pool_checkouts"]
    assert checkouts.type == "counter"
    (sample,) = [s for s in checkouts.samples if s.labels["alias"] == "metrics-test"]
    assert sample.name == "greenpool_pool_checkouts_total" and sample.value == 1
    assert sample.labels == {"alias": "metrics-test", "worker": "0-1"}
    assert families["greenpool_pool_connections_idle"].type == "gauge"
    assert families["greenpool_pool_checkout_wait_seconds"].type == "histogram"
    hold = families["greenpool_pool_connection_hold_seconds"]
    counts = [s for s in hold.samples if s.name.endswith("_count") and s.labels["view"] == "app:orders"]
    assert [(s.labels["pool"], s.value) for s in counts] == [("metrics-test", 1)]


def test_openmetrics_is_rendered_when_asked_for():
    text, content_type = metrics.render(metrics.Collector(lambda: [({}, {"pools": {}, "holds": []})]), openmetrics=True)
    assert content_type.startswith("application/openmetrics-text")
    assert text.endswith(b"# EOF\n")


SPOOL_CHILD = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {root!r})
    from greenpool import metrics, registry
    from greenpool.pool import Pool
    from tests.fakedb import FakeDB
    metrics.SPOOL_INTERVAL = 0.1  # the test need not wait the 5 s
    db = FakeDB()
    pool = registry.get_pool("default", "fp", lambda: Pool(db.connect, max_size=2, concurrency="threads"))
    pool.putconn(pool.getconn())
    print("ready", flush=True)
    sys.stdin.readline()  # the parent says when to exit
""")


def test_spool_shows_every_live_process_and_forgets_the_dead(tmp_path, monkeypatch):
    """GREENPOOL_METRICS_DIR: each process writes its snapshot there; a scrape
    answers for every live one, and drops the file of a process that died
    without cleaning up."""
    spool = tmp_path / "spool"
    env = {**os.environ, metrics.SPOOL_ENV: str(spool)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", SPOOL_CHILD.format(root=ROOT)],
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            entries = metrics.read_spool(str(spool))
            if (
                sum(snap["pools"].get("default", {}).get("stats", {}).get("requests_num", 0) for _, snap in entries)
                == 2
            ):
                break
            time.sleep(0.05)
        pids = {int(labels["pid"]) for labels, _ in entries}
        assert pids == {children[0].pid, children[1].pid, os.getpid()}
        snapshots = {int(labels["pid"]): snap for labels, snap in entries}
        assert snapshots[children[0].pid]["pools"]["default"]["stats"]["requests_num"] == 1

        children[0].stdin.write("\n")  # a clean exit removes its own file
        children[0].stdin.flush()
        assert children[0].wait(10) == 0
        os.kill(children[1].pid, signal.SIGKILL)  # a killed one leaves its file behind
        children[1].wait(10)
        assert spool.joinpath(f"greenpool-{children[1].pid}.json").exists()
        assert not spool.joinpath(f"greenpool-{children[0].pid}.json").exists()
        assert {labels["pid"] for labels, _ in metrics.read_spool(str(spool))} == {str(os.getpid())}
        assert not spool.joinpath(f"greenpool-{children[1].pid}.json").exists()
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(10)


def test_snapshot_is_json_and_names_no_connection_secrets():
    db = FakeDB()
    pool = registry.get_pool("secret-test", "fp", lambda: Pool(db.connect, max_size=1, concurrency="threads"))
    try:
        pool.putconn(pool.getconn())
        text = json.dumps(metrics.snapshot())
    finally:
        registry.close_pool("secret-test")
    assert "secret-test" in text
    for word in ("password", "passwd", "host", "user"):
        assert word not in text.lower()


def test_each_request_starts_unlabelled_and_takes_its_views_name():
    """Threads serve many requests: one that never reaches a view must not be
    counted under the previous request's view."""
    from types import SimpleNamespace

    from greenpool.middleware import ViewLabelMiddleware

    seen = []
    metrics.set_view("left over from an earlier request on this thread")
    middleware = ViewLabelMiddleware(lambda request: seen.append(metrics._current_view.get()) or "response")
    assert middleware(SimpleNamespace()) == "response"
    request = SimpleNamespace(resolver_match=SimpleNamespace(view_name="shop:orders"))
    middleware.process_view(request, None, (), {})
    seen.append(metrics._current_view.get())
    assert seen == [metrics.NO_VIEW, "shop:orders"]
    metrics.set_view(metrics.NO_VIEW)


def test_observability_page_shows_the_generated_series_table():
    from pathlib import Path

    from greenpool.launch.metrics_server import markdown_reference

    text = (Path(ROOT) / "docs" / "observability.md").read_text()
    section = text.split("<!-- series:start -->\n", 1)[1].split("<!-- series:end -->", 1)[0]
    assert section == markdown_reference(), "regenerate: python -m greenpool.launch.metrics_server"
