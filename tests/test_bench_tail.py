"""bench/tail_probe.py and bench/tail_anatomy.py: the timings behind the tail study."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.tail_anatomy import line_counts, percentiles, read_samples

ROOT = Path(__file__).resolve().parent.parent


def run_with_probe(tmp_path: Path, mysql_params: dict, before: str, after: str) -> None:
    """Run ``before``, then bench.tail_probe installed with its samples in tmp_path,
    then ``after`` (which finds the test server's settings in ``params``) in a child
    Python: install() wraps PyMySQL, Django and greenpool for the whole process."""
    probe = f"""
from bench import tail_probe
tail_probe.FLUSH_EVERY = 1
tail_probe.install({str(tmp_path)!r})
params = {json.dumps(mysql_params)}
"""
    subprocess.run([sys.executable, "-c", before + probe + after], check=True, cwd=ROOT, timeout=60)


def test_probe_times_a_request_its_statements_and_its_pool_connection(tmp_path, mysql_params):
    before = """
import django
from django.conf import settings
settings.configure()
"""
    after = """
from django.core.handlers.wsgi import WSGIHandler
from greenpool.mysql import connect_factory
from greenpool.pool import Pool
pool = Pool(connect_factory(dict(host=params["host"], port=int(params["port"]), user=params["user"],
                                 password=params["password"], database=params["database"])), max_size=1)
conn = pool.getconn()
cur = conn.cursor()
cur.execute("SELECT 1")
cur.close()
pool.putconn(conn)
pool.close()
assert WSGIHandler.__call__.__name__ == "timed_call"  # calling it needs a whole project: bench.tail_anatomy does
"""
    run_with_probe(tmp_path, mysql_params, before, after)
    samples = read_samples(tmp_path, {})
    assert len(samples["wait"]) == 1 and len(samples["hold"]) == 1
    assert len(samples["query"]) >= 1  # SELECT 1 (and whatever PyMySQL sends at connect)
    assert all(0 <= ms < 10_000 for kind in ("wait", "hold", "query") for ms in samples[kind])
    assert samples["hold"][0] >= max(samples["query"])  # the statement ran while the connection was held


def test_probe_times_how_long_an_arrived_answer_waits_for_its_greenlet(tmp_path, mysql_params):
    # Under gevent: a greenlet waits for SELECT SLEEP(0.05); the answer arrives
    # while another greenlet keeps the CPU for 0.3 s without yielding, so the
    # waiting greenlet is resumed about 0.25 s after its answer arrived.
    before = """
from gevent import monkey
monkey.patch_all()
"""
    after = """
import time
import gevent
import pymysql
conn = pymysql.connect(host=params["host"], port=int(params["port"]), user=params["user"],
                       password=params["password"], database=params["database"])
conn.query("SELECT 1")  # the first statement marks the socket
waiter = gevent.spawn(conn.query, "SELECT SLEEP(0.05)")
gevent.sleep(0.01)  # the waiter has sent its statement and waits for the answer
end = time.monotonic() + 0.3
while time.monotonic() < end:
    pass
waiter.join(timeout=10)
conn.close()
"""
    run_with_probe(tmp_path, mysql_params, before, after)
    resumes = read_samples(tmp_path, {})["resume"]
    # One sample for the SLEEP; SELECT 1 adds one only if its greenlet waited
    # for the answer, and then it was resumed at once (nothing else ran).
    *others, slept = sorted(resumes)
    assert len(others) <= 1 and all(ms < 50 for ms in others), resumes
    assert 150 <= slept <= 2_000, resumes


def test_samples_written_before_the_measured_run_are_skipped(tmp_path):
    (tmp_path / "1.samples").write_text("query 0.001\nquery 0.002\n")
    skip = line_counts(tmp_path)
    with open(tmp_path / "1.samples", "a") as f:
        f.write("query 0.050\nhold 0.100\n")
    (tmp_path / "2.samples").write_text("wait 0.003\n")
    samples = read_samples(tmp_path, skip)
    assert samples["query"] == [50.0] and samples["hold"] == [100.0] and samples["wait"] == [3.0]


def test_percentiles_count_the_slow_ones():
    p = percentiles([float(x) for x in range(1, 101)])  # 1..100 ms
    assert p["n"] == 100 and p["p50_ms"] == 51.0 and p["p99_ms"] == 100.0 and p["max_ms"] == 100.0
    assert p["over_10ms"] == 90
    assert percentiles([]) == {"n": 0}


def test_report_rewrites_the_section_from_recorded_results(tmp_path):
    from bench.tail_anatomy import report

    parts = {
        "app": percentiles([5.0, 7.0]),
        "wait": percentiles([1.0, 2.0]),
        "hold": percentiles([2.0, 30.0]),
        "query": percentiles([0.3, 0.4, 12.0]),
    }
    meta = {
        "run": "r1",
        "time": "t",
        "type": "meta",
        "versions": {},
        "machine": {"nproc": 2},
        "git": {"commit": "c"},
        "loadavg_start": [1.0],
        "loadavg_end": [1.0],
        "warmup": 2,
        "wrk_command": "wrk ...",
    }
    rec = {
        "run": "r1",
        "type": "tail_anatomy",
        "stack": "gp-gevent",
        "label": "greenpool-serve gevent",
        "wrk": {"rps": 700.0, "p50_ms": 100.0, "p99_ms": 300.0},
        "parts": parts,
    }
    results = tmp_path / "tail.jsonl"
    results.write_text(json.dumps(meta) + "\n" + json.dumps(rec) + "\n")
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n")
    assert report(results, None, page) == "r1"
    text = page.read_text()
    assert "<!-- tail_anatomy:start -->" in text and "| greenpool-serve gevent | 700.0 | 100.0 / 300.0 |" in text
    assert "33.3% of 3" in text  # one of three statements over 10 ms
