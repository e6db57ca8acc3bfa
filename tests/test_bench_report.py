"""bench/report.py rewrites only its own marked section of docs/benchmarks.md."""

from __future__ import annotations

import pytest

from bench.report import MARK_END, MARK_START, write_section

OTHER = "<!-- pool_micro:start -->\nthe pool micro-benchmark's section\n<!-- pool_micro:end -->\n"


def test_appends_the_section_when_the_page_has_none(tmp_path):
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\n" + OTHER)
    write_section(page, "first\n")
    text = page.read_text()
    assert text.startswith("# Benchmarks\n\n" + OTHER)
    assert text.rstrip().endswith(f"{MARK_START}\nfirst\n{MARK_END}")


def test_replaces_only_its_own_section(tmp_path):
    page = tmp_path / "benchmarks.md"
    page.write_text(f"# Benchmarks\n\n{OTHER}\n{MARK_START}\nold\n{MARK_END}\n\ntrailer\n")
    write_section(page, "new\n")
    assert page.read_text() == f"# Benchmarks\n\n{OTHER}\n{MARK_START}\nnew\n{MARK_END}\n\ntrailer\n"


def test_refuses_unbalanced_markers(tmp_path):
    page = tmp_path / "benchmarks.md"
    before = f"# Benchmarks\n{MARK_START}\nno end\n"
    page.write_text(before)
    with pytest.raises(SystemExit):
        write_section(page, "x\n")
    assert page.read_text() == before


def _cell(rps, p99, non2xx=0, cpu=1000.0, new=0, peak=10):
    return {
        "type": "cell",
        "wrk": {
            "requests": int(rps * 4),
            "rps": rps,
            "p99_ms": p99,
            "non2xx": non2xx,
            "timeouts": 0,
            "socket_errors": 0,
        },
        "cpu": {"stack_us_per_request": cpu},
        "connections": {"peak_ours": peak, "peak_ours_warmup": peak, "new": new},
    }


def test_rounds_merge_to_the_medians_and_keep_every_rounds_errors():
    from bench.report import clean, merge_rounds

    merged = merge_rounds(
        [_cell(900, 300, cpu=1500), _cell(700, 500, non2xx=2, cpu=1700, peak=11), _cell(800, 100, cpu=1600, new=1)]
    )
    assert merged["wrk"]["rps"] == 800
    assert merged["wrk"]["p99_ms"] == 300  # median of the rounds' p99, not the median round's
    assert merged["cpu"]["stack_us_per_request"] == 1600
    assert merged["wrk"]["non2xx"] == 2 and not clean(merged)
    assert merged["connections"]["peak_ours"] == 11 and merged["connections"]["new"] == 1
    assert [r["rps"] for r in merged["rounds"]] == [700, 800, 900]


def test_one_round_is_left_as_measured():
    from bench.report import merge_rounds

    cell = _cell(900, 300)
    assert merge_rounds([cell]) is cell


def test_rounds_keep_whose_connections_were_counted_in_the_round_with_the_most():
    from bench.report import merge_rounds

    few = _cell(900, 300, peak=12)
    few["connections"]["excess_run"] = {"ours": 12, "by_owner": {"pid 1 (x)": 12}}
    many = _cell(800, 300, peak=66)
    many["connections"]["excess_run"] = {"ours": 66, "by_owner": {"pid 2 (y)": 10, "no local owner": 56}}
    merged = merge_rounds([few, many, _cell(700, 300)])
    assert merged["connections"]["excess_run"]["ours"] == 66
    assert merged["connections"]["excess_warmup"] is None


def _study(stack, workers, hog, p50, p99):
    return {
        "type": "latency_study",
        "stack": stack,
        "label": stack,
        "path": "/read",
        "clients": 50 * workers,
        "workers": workers,
        "cpu_hog": hog,
        "client": {"raw": {"p50_ms": p50, "p99_ms": p99}},
    }


def test_one_worker_rows_compare_each_setting_with_sync_and_stay_out_of_the_two_worker_lines():
    from bench.report import Run, findings

    meta = {
        "type": "meta",
        "stacks": [
            {"key": "gp-gevent", "label": "greenpool-serve gevent"},
            {"key": "sync-persist", "label": "gunicorn sync"},
        ],
        "reference": "sync-persist",
        "plan": {"paths": ["/read"], "concurrency": [100]},
    }
    rows = [
        meta,
        _study("gp-gevent", 2, False, 150.0, 450.0),
        _study("sync-persist", 2, False, 150.0, 210.0),
        _study("gp-gevent-w1", 1, False, 100.0, 130.0),
        _study("sync-persist-w1", 1, False, 100.0, 125.0),
        _study("gp-gevent-w1", 1, True, 200.0, 600.0),
    ]
    rows[-1]["wrk"] = {"requests": 1000}
    rows[-1]["sched"] = {"cpu_s": 3.0, "runqueue_wait_s": 2.5, "scheduled_in": 1500}
    lines = [line for line in findings(Run(rows)) if line.startswith("- /read, ")]
    assert lines == [
        "- /read, 2 workers, 100 clients, second client's raw latencies: greenpool-serve gevent p50 150.0 / p99 450.0 ms"
        " (3.0x); gunicorn sync p50 150.0 / p99 210.0 ms (1.4x).",
        "- /read, 1 worker, 50 clients, second client's raw latencies: greenpool-serve gevent p50 100.0 / p99 130.0 ms"
        " (1.3x); gunicorn sync p50 100.0 / p99 125.0 ms (1.2x).",
        "- /read, 1 worker, 50 clients, a busy loop beside it, second client's raw latencies: greenpool-serve gevent"
        " p50 200.0 / p99 600.0 ms (3.0x), workers' run-queue wait / times scheduled in per request 2.50 / 1.5;"
        " gunicorn sync not measured.",
    ]
    # The 100-client lines speak of the two-worker rows only.
    assert not any("1 worker" in line for line in findings(Run(rows)) if "100 clients: p99 by wrk" in line)


def test_the_study_table_has_the_scheduler_column_only_when_a_row_recorded_it():
    from bench.report import Run, study_section

    meta = {
        "type": "meta",
        "stacks": [],
        "reference": "sync-persist",
        "plan": {"paths": ["/read"], "concurrency": [100]},
    }
    row = _study("gp-gevent-w1", 1, True, 200.0, 600.0)
    row["wrk"] = {"requests": 1000, "rps": 250.0, "p50_ms": 190.0, "p99_ms": 610.0}
    without = study_section(Run([meta, row]))
    assert "run-queue" not in without[0] and without[0].count("|") == without[2].count("|")
    row["sched"] = {"cpu_s": 3.0, "runqueue_wait_s": 2.5, "scheduled_in": 1500}
    with_sched = study_section(Run([meta, row]))
    assert with_sched[0].endswith("run-queue wait ms / times scheduled in |")
    assert with_sched[2].endswith("| 2.50 / 1.5 |") and with_sched[0].count("|") == with_sched[2].count("|")


def test_the_connection_split_is_reported_only_where_recorded():
    from bench.report import connection_split_finding

    shared = _study("gp-gevent", 2, False, 120.0, 260.0)
    assert connection_split_finding(shared, None) == ""  # a run from before it was recorded
    shared["client_connections_per_worker"] = [68, 32]
    reuse = _study("gp-gevent-reuseport", 2, False, 120.0, 250.0)
    reuse["client_connections_per_worker"] = [47, 53]
    assert connection_split_finding(shared, reuse) == (
        "- The second client's connections on each worker in its /read run: shared socket 68 / 32; "
        "--reuse-port 47 / 53 (a worker serving more of them makes each wait longer; docs/tuning.md)."
    )


def test_the_split_comes_with_each_workers_latencies_where_the_client_recorded_them():
    from bench.report import connection_split_finding

    shared = _study("gp-gevent", 2, False, 120.0, 260.0)
    shared["client_connections_per_worker"] = [53, 47]
    shared["client"]["per_worker"] = [
        {"worker": "0-101", "connections": 53, "requests": 2000, "p50_ms": 245.5, "p99_ms": 341.0},
        {"worker": "1-102", "connections": 47, "requests": 2600, "p50_ms": 161.2, "p99_ms": 256.5},
    ]
    assert connection_split_finding(shared, None) == (
        "- The second client's connections on each worker in its /read run: shared socket 53 / 47 "
        "(its latencies by the worker that answered: p50 245.5 / 161.2 ms, p99 341.0 / 256.5 ms) "
        "(a worker serving more of them makes each wait longer; docs/tuning.md)."
    )
