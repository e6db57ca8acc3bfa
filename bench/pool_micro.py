"""Pool micro-benchmark: greenpool.Pool against SQLAlchemy's QueuePool and bare PyMySQL.

One gevent monkey-patched process measures every stack, interleaved round by
round (A B C D, A B C D, ...) so that noise from the machine (other processes,
frequency changes) falls on all of them alike; each figure is the median over
rounds.

1. Uncontended checkout+checkin: µs per ``getconn()``/``putconn()`` (QueuePool:
   ``connect()``/``close()``) cycle, one greenlet, many cycles per round. The
   "bare" row is the same loop holding one connection without a pool: the floor.
2. Contended throughput: 100 greenlets share a pool of 10 connections; each
   loops checkout, ``SELECT 1`` (cursor, execute, fetchall), checkin for a fixed
   time. The reference is one bare PyMySQL connection driven by one greenlet in
   a tight ``SELECT 1`` loop.
3. Checkin round trips: how many commands a checkin sends to the server, counted
   on the client (every byte PyMySQL sends goes through
   ``Connection._write_bytes``, its only ``sendall`` call) and cross-checked on
   the server (``Questions`` + ``Com_admin_commands`` from SHOW SESSION STATUS
   on that very connection, so other clients of the server do not count), with
   a positive control (a checkin after BEGIN must cost one ROLLBACK).

Run from the repository root (MySQL from GREENPOOL_MYSQL_HOST/_PORT/_USER/
_PASSWORD/_DATABASE, default root@127.0.0.1:3306/test)::

    .venv/bin/python -m bench.pool_micro           # full run (~2 min); rewrites its docs section
    .venv/bin/python -m bench.pool_micro --quick   # ~15 s; docs only with --docs

Results are appended as JSON lines to bench/results/pool_micro.jsonl (--out) and
the full run rewrites the section of docs/benchmarks.md between
``<!-- pool_micro:start -->`` and ``<!-- pool_micro:end -->``; nothing else in
that file is touched.

``--profile`` prints where greenpool's time goes instead (no results written):
the uncontended cycle line by line, and the pool's own CPU per cycle under
contention measured without a database.
"""

from __future__ import annotations

# Only modules gevent does not patch are imported here: monkey-patching happens
# first thing in main(), before PyMySQL, SQLAlchemy or greenpool are imported.
import argparse
import json
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "pool_micro.jsonl"
DEFAULT_DOCS = ROOT / "docs" / "benchmarks.md"

POOL_SIZE = 10
GREENLETS = 100

# Targets from issue 2, section 5.
TARGET_UNCONTENDED_SPEEDUP = 3.0  # greenpool at least 3x faster than QueuePool
TARGET_CONTENDED_RATIO = 0.90  # greenpool at least 90% of one bare connection's rate

FULL = {"unc_rounds": 9, "unc_cycles": 20_000, "con_rounds": 7, "con_seconds": 3.0, "warmup": 0.3, "verify_cycles": 200}
QUICK = {"unc_rounds": 3, "unc_cycles": 2_000, "con_rounds": 2, "con_seconds": 0.5, "warmup": 0.1, "verify_cycles": 50}

# Stack keys, in the order they run within a round, and their labels.
UNCONTENDED = ("greenpool", "greenpool_probe", "greenpool_metrics", "qp_rollback", "qp_none", "bare")
CONTENDED = ("greenpool", "qp_rollback", "qp_none", "bare1", "bare10")
LABELS = {
    "greenpool": "greenpool.Pool (reset=make_reset(False), check=None)",
    "greenpool_probe": "the same with the backend's checkout probe (probe=mysql.looks_dead: one poll())",
    "greenpool_metrics": "greenpool.Pool plus the backend's per-checkout metrics (hold time by view: metrics.record_hold)",
    "qp_rollback": "SQLAlchemy QueuePool, reset_on_return='rollback' (its default)",
    "qp_none": "SQLAlchemy QueuePool, reset_on_return=None",
    "bare": "bare connection, no pool (the floor: loop cost only)",
    "bare1": "bare PyMySQL, 1 connection, 1 greenlet (reference)",
    "bare10": "bare PyMySQL, 10 connections, 10 greenlets, no pool (extra reference)",
}


def main(argv: list[str] | None = None) -> int:
    from gevent import monkey

    monkey.patch_all()

    args = _parse_args(sys.argv[1:] if argv is None else argv)
    if args.profile:
        return _profile(args)
    return _run(args, sys.argv[1:] if argv is None else argv)


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pool_micro",
        description="greenpool.Pool vs SQLAlchemy QueuePool vs bare PyMySQL, under gevent.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="short run (noisy); does not write docs unless --docs is given"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"JSON lines file to append to (default: {DEFAULT_OUT.relative_to(ROOT)})",
    )
    parser.add_argument(
        "--docs",
        type=Path,
        default=None,
        help=f"markdown file whose pool_micro section is rewritten (default: {DEFAULT_DOCS.relative_to(ROOT)} for a full run)",
    )
    parser.add_argument("--no-docs", action="store_true", help="do not write the markdown section")
    parser.add_argument("--rounds", type=int, default=None, help="override the number of rounds of both benchmarks")
    parser.add_argument("--seconds", type=float, default=None, help="override the seconds per contended round")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print where greenpool's time goes (line profile, pool cost under contention); writes nothing",
    )
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.seconds is not None and args.seconds <= 0:
        parser.error(f"--seconds must be > 0, got {args.seconds}")
    return args


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    settings = dict(QUICK if args.quick else FULL)
    if args.rounds is not None:
        settings["unc_rounds"] = settings["con_rounds"] = args.rounds
    if args.seconds is not None:
        settings["con_seconds"] = args.seconds
    return settings


def _mysql_params() -> dict[str, Any]:
    env = os.environ
    port = env.get("GREENPOOL_MYSQL_PORT", "3306")
    try:
        port_num = int(port)
    except ValueError:
        raise SystemExit(f"GREENPOOL_MYSQL_PORT must be a number, got {port!r}") from None
    return {
        "host": env.get("GREENPOOL_MYSQL_HOST", "127.0.0.1"),
        "port": port_num,
        "user": env.get("GREENPOOL_MYSQL_USER", "root"),
        "password": env.get("GREENPOOL_MYSQL_PASSWORD", ""),
        "database": env.get("GREENPOOL_MYSQL_DATABASE", "test"),
        "autocommit": True,
    }


# -- the stacks -----------------------------------------------------------------


class _Stacks:
    """Every pool and connection the run uses, made once and warmed up."""

    def __init__(self, params: dict[str, Any]) -> None:
        import pymysql
        from sqlalchemy.pool import QueuePool

        from greenpool import mysql as gpmysql
        from greenpool.pool import Pool

        self.params = params

        def plain() -> Any:
            return pymysql.connect(**params)

        self.plain_connect = plain
        self.gp_connect = gpmysql.connect_factory(params)
        self.greenpool = Pool(
            self.gp_connect, max_size=POOL_SIZE, reset=gpmysql.make_reset(False), check=None, name="bench"
        )
        self.greenpool_probe = Pool(
            self.gp_connect,
            max_size=POOL_SIZE,
            reset=gpmysql.make_reset(False),
            check=None,
            probe=gpmysql.looks_dead,
            name="bench-probe",
        )
        self.qp_rollback = QueuePool(plain, pool_size=POOL_SIZE, max_overflow=0)
        self.qp_none = QueuePool(plain, pool_size=POOL_SIZE, max_overflow=0, reset_on_return=None)
        self.bare1 = plain()
        self.bare10 = [plain() for _ in range(POOL_SIZE)]
        # Open every pooled connection now, so no round measures a connect.
        for pool in (self.greenpool, self.greenpool_probe):
            held = [pool.getconn() for _ in range(POOL_SIZE)]
            for conn in held:
                pool.putconn(conn)
        for qp in (self.qp_rollback, self.qp_none):
            fairies = [qp.connect() for _ in range(POOL_SIZE)]
            for fairy in fairies:
                fairy.close()

    def close(self) -> None:
        self.greenpool.close()
        self.greenpool_probe.close()
        self.qp_rollback.dispose()
        self.qp_none.dispose()
        for conn in [self.bare1, *self.bare10]:
            conn.close()


# -- 1. uncontended checkout+checkin -------------------------------------------


def _cycles_greenpool(pool: Any, n: int) -> float:
    from time import perf_counter

    getconn, putconn = pool.getconn, pool.putconn
    t0 = perf_counter()
    for _ in range(n):
        putconn(getconn())
    return perf_counter() - t0


def _cycles_greenpool_metrics(pool: Any, n: int) -> float:
    """What the Django backend adds to each checkout for /metrics: the hold
    time, timed and recorded under the request's view label."""
    from time import monotonic, perf_counter

    from greenpool.metrics import record_hold

    getconn, putconn = pool.getconn, pool.putconn
    t0 = perf_counter()
    for _ in range(n):
        conn = getconn()
        checked_out_at = monotonic()
        record_hold("bench", monotonic() - checked_out_at)
        putconn(conn)
    return perf_counter() - t0


def _cycles_queuepool(pool: Any, n: int) -> float:
    from time import perf_counter

    connect = pool.connect
    t0 = perf_counter()
    for _ in range(n):
        connect().close()
    return perf_counter() - t0


def _cycles_bare(conn: Any, n: int) -> float:
    from time import perf_counter

    t0 = perf_counter()
    for _ in range(n):
        held = conn  # noqa: F841 -- "checking out" without a pool: the floor
    return perf_counter() - t0


def _uncontended(stacks: _Stacks, settings: dict[str, Any]) -> dict[str, list[float]]:
    import gc

    runners: dict[str, Callable[[int], float]] = {
        "greenpool": lambda n: _cycles_greenpool(stacks.greenpool, n),
        "greenpool_probe": lambda n: _cycles_greenpool(stacks.greenpool_probe, n),
        "greenpool_metrics": lambda n: _cycles_greenpool_metrics(stacks.greenpool, n),
        "qp_rollback": lambda n: _cycles_queuepool(stacks.qp_rollback, n),
        "qp_none": lambda n: _cycles_queuepool(stacks.qp_none, n),
        "bare": lambda n: _cycles_bare(stacks.bare1, n),
    }
    n = settings["unc_cycles"]
    for key in UNCONTENDED:  # warm-up: caches, specialisation, lazily built state
        runners[key](max(100, n // 20))
    results: dict[str, list[float]] = {key: [] for key in UNCONTENDED}
    for round_no in range(settings["unc_rounds"]):
        for key in UNCONTENDED:
            gc.collect()
            results[key].append(runners[key](n) / n * 1e6)
        _progress(f"uncontended round {round_no + 1}/{settings['unc_rounds']}: " + _fmt_round(results, "{:.2f} µs"))
    return results


# -- 2. contended throughput ---------------------------------------------------


class _Run:
    """Shared by a round's greenlets: the stop flag and the query count."""

    __slots__ = ("stop", "count")

    def __init__(self) -> None:
        self.stop = False
        self.count = 0


def _worker_greenpool(pool: Any, run: _Run) -> None:
    getconn, putconn = pool.getconn, pool.putconn
    while not run.stop:
        conn = getconn()
        cur = conn.cursor()
        cur.execute("SELECT 1")
        cur.fetchall()
        cur.close()
        putconn(conn)
        run.count += 1


def _worker_queuepool(pool: Any, run: _Run) -> None:
    connect = pool.connect
    while not run.stop:
        conn = connect()
        cur = conn.cursor()
        cur.execute("SELECT 1")
        cur.fetchall()
        cur.close()
        conn.close()
        run.count += 1


def _worker_bare(conn: Any, run: _Run) -> None:
    while not run.stop:
        cur = conn.cursor()
        cur.execute("SELECT 1")
        cur.fetchall()
        cur.close()
        run.count += 1


def _contended_round(spawn_all: Callable[[_Run], list[Any]], warmup: float, seconds: float) -> tuple[float, float]:
    """Queries per second over ``seconds``, counted after ``warmup``, and this
    process's CPU time per query in µs (the client is CPU-bound here: with the
    server on the same few cores, CPU per query is what sets the rate, and it
    is less disturbed by other load on the machine than the rate is)."""
    import gc
    from time import perf_counter, process_time

    import gevent

    gc.collect()
    run = _Run()
    greenlets = spawn_all(run)
    try:
        gevent.sleep(warmup)
        c0, t0, p0 = run.count, perf_counter(), process_time()
        gevent.sleep(seconds)
        c1, t1, p1 = run.count, perf_counter(), process_time()
    finally:
        run.stop = True
        gevent.joinall(greenlets, timeout=60)
    for greenlet in greenlets:
        if greenlet.exception is not None:
            raise RuntimeError(f"a benchmark greenlet failed: {greenlet.exception!r}") from greenlet.exception
        if not greenlet.dead:
            raise RuntimeError("a benchmark greenlet did not stop within 60 s")
    queries = max(1, c1 - c0)
    return (c1 - c0) / (t1 - t0), (p1 - p0) / queries * 1e6


def _contended(stacks: _Stacks, settings: dict[str, Any]) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    import gevent

    spawners: dict[str, Callable[[_Run], list[Any]]] = {
        "greenpool": lambda run: [gevent.spawn(_worker_greenpool, stacks.greenpool, run) for _ in range(GREENLETS)],
        "qp_rollback": lambda run: [gevent.spawn(_worker_queuepool, stacks.qp_rollback, run) for _ in range(GREENLETS)],
        "qp_none": lambda run: [gevent.spawn(_worker_queuepool, stacks.qp_none, run) for _ in range(GREENLETS)],
        "bare1": lambda run: [gevent.spawn(_worker_bare, stacks.bare1, run)],
        "bare10": lambda run: [gevent.spawn(_worker_bare, conn, run) for conn in stacks.bare10],
    }
    results: dict[str, list[float]] = {key: [] for key in CONTENDED}
    cpu: dict[str, list[float]] = {key: [] for key in CONTENDED}
    for round_no in range(settings["con_rounds"]):
        for key in CONTENDED:
            rate, cpu_us = _contended_round(spawners[key], settings["warmup"], settings["con_seconds"])
            results[key].append(rate)
            cpu[key].append(cpu_us)
        _progress(f"contended round {round_no + 1}/{settings['con_rounds']}: " + _fmt_round(results, "{:.0f} q/s"))
    return results, cpu


# -- 3. checkin round trips -------------------------------------------------------


class _WriteCounter:
    """Counts the writes PyMySQL makes on one connection's socket. Each command
    is one packet written through ``_write_bytes`` (its only ``sendall``), and
    the protocol is strictly request/response: no write, no round trip."""

    def __init__(self, raw: Any) -> None:
        self.writes = 0
        original = raw._write_bytes

        def counting(data: bytes) -> None:
            self.writes += 1
            original(data)

        raw._write_bytes = counting  # instance attribute shadows the method


def _server_counts(raw: Any) -> int:
    """Commands the server has received on this session: Questions (statements,
    including this SHOW) plus Com_admin_commands (COM_PING and friends, which
    Questions leaves out)."""
    cur = raw.cursor()
    cur.execute("SHOW SESSION STATUS WHERE Variable_name IN ('Questions', 'Com_admin_commands')")
    rows = {name.lower(): int(value) for name, value in cur.fetchall()}
    cur.close()
    return rows["questions"] + rows["com_admin_commands"]


def _verify_case(
    checkout: Callable[[], Any],
    checkin: Callable[[Any], None],
    raw_of: Callable[[Any], Any],
    work: tuple[str, ...],
    cycles: int,
) -> dict[str, Any]:
    conn = checkout()
    raw = raw_of(conn)
    counter = _WriteCounter(raw)
    before = _server_counts(raw)
    checkin_writes = work_writes = 0
    for cycle in range(cycles):
        if cycle:
            conn = checkout()
            if raw_of(conn) is not raw:
                raise RuntimeError("a size-1 pool handed out a different connection")
        mark = counter.writes
        cur = raw.cursor()
        for sql in work:
            cur.execute(sql)
            cur.fetchall()
        cur.close()
        work_writes += counter.writes - mark
        mark = counter.writes
        checkin(conn)
        checkin_writes += counter.writes - mark
    conn = checkout()
    after = _server_counts(raw)
    checkin(conn)
    # Between the two SHOWs the server saw `cycles` checkouts, work runs and
    # checkins, and the second SHOW itself (counted in Questions).
    server_extra = after - before - 1 - len(work) * cycles
    return {
        "work": list(work),
        "cycles": cycles,
        "client_writes_per_checkin": checkin_writes / cycles,
        "client_writes_per_work": work_writes / cycles,
        "server_commands_per_cycle_beyond_work": server_extra / cycles,
    }


def _verify_round_trips(params: dict[str, Any], cycles: int) -> dict[str, Any]:
    import pymysql
    from sqlalchemy.pool import QueuePool

    from greenpool import mysql as gpmysql
    from greenpool.pool import Pool

    def plain() -> Any:
        return pymysql.connect(**params)

    gp = Pool(
        gpmysql.connect_factory(params), max_size=1, reset=gpmysql.make_reset(False), check=None, name="bench-verify"
    )
    qp_rb = QueuePool(plain, pool_size=1, max_overflow=0)
    qp_none = QueuePool(plain, pool_size=1, max_overflow=0, reset_on_return=None)

    def fairy_raw(fairy: Any) -> Any:
        return fairy.dbapi_connection

    def fairy_close(fairy: Any) -> None:
        fairy.close()

    try:
        cases = {
            "greenpool_idle": ("greenpool checkin, nothing run", gp.getconn, gp.putconn, lambda c: c, ()),
            "greenpool_select": (
                "greenpool checkin after SELECT 1 (autocommit)",
                gp.getconn,
                gp.putconn,
                lambda c: c,
                ("SELECT 1",),
            ),
            "greenpool_open_txn": (
                "greenpool checkin after BEGIN; SELECT 1 (positive control: must roll back)",
                gp.getconn,
                gp.putconn,
                lambda c: c,
                ("BEGIN", "SELECT 1"),
            ),
            "qp_rollback_idle": (
                "QueuePool reset_on_return='rollback' checkin, nothing run",
                qp_rb.connect,
                fairy_close,
                fairy_raw,
                (),
            ),
            "qp_none_idle": (
                "QueuePool reset_on_return=None checkin, nothing run",
                qp_none.connect,
                fairy_close,
                fairy_raw,
                (),
            ),
        }
        out: dict[str, Any] = {}
        for key, (label, checkout, checkin, raw_of, work) in cases.items():
            out[key] = {"label": label, **_verify_case(checkout, checkin, raw_of, work, cycles)}
        return out
    finally:
        gp.close()
        qp_rb.dispose()
        qp_none.dispose()


# -- the run ------------------------------------------------------------------------


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    import datetime
    import uuid

    settings = _settings(args)
    params = _mysql_params()
    meta = _meta(params)
    started = datetime.datetime.now(datetime.UTC)
    _progress(
        f"pool_micro: {'quick' if args.quick else 'full'} run against {params['user']}@{params['host']}:{params['port']}/"
        f"{params['database']} ({meta['server']}), settings {settings}"
    )

    verify = _verify_round_trips(params, settings["verify_cycles"])
    for case in verify.values():
        _progress(
            f"round trips: {case['label']}: client writes/checkin {case['client_writes_per_checkin']:.2f}, "
            f"server commands/cycle {case['server_commands_per_cycle_beyond_work']:.2f}"
        )

    stacks = _Stacks(params)
    try:
        unc = _uncontended(stacks, settings)
        con, con_cpu = _contended(stacks, settings)
        gp_stats = stacks.greenpool.get_stats()
    finally:
        stacks.close()

    meta["loadavg_end"] = list(os.getloadavg())
    meta["elapsed_s"] = round((datetime.datetime.now(datetime.UTC) - started).total_seconds(), 1)
    command = _command(argv)
    summary = _summarize(unc, con, verify)
    record_base = {
        "run_id": uuid.uuid4().hex[:12],
        "timestamp": started.isoformat(timespec="seconds"),
        "command": command,
        "quick": bool(args.quick),
        "settings": settings,
        **meta,
    }
    lines = []
    for key in UNCONTENDED:
        lines.append(
            {
                **record_base,
                "bench": "uncontended",
                "stack": key,
                "label": LABELS[key],
                "unit": "us_per_cycle",
                **_dist(unc[key]),
            }
        )
    for key in CONTENDED:
        lines.append(
            {
                **record_base,
                "bench": "contended",
                "stack": key,
                "label": LABELS[key],
                "unit": "queries_per_s",
                **_dist(con[key]),
                "cpu_us_per_query": _dist(con_cpu[key]),
            }
        )
    lines.append({**record_base, "bench": "checkin_round_trips", "cases": verify})
    lines.append({**record_base, "bench": "summary", **summary, "greenpool_stats": gp_stats})

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a", encoding="utf-8") as fh:
        for line in lines:
            fh.write(json.dumps(line, sort_keys=True, ensure_ascii=False) + "\n")
    _progress(f"appended {len(lines)} JSON lines to {args.out}")

    table = _markdown(record_base, unc, con, con_cpu, verify, summary, args.out)
    print(table)
    docs = None if args.no_docs else (args.docs or (None if args.quick else DEFAULT_DOCS))
    if docs is not None:
        _write_section(docs, table)
        _progress(f"rewrote the pool_micro section of {docs}")
    return 0


def _dist(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": values}


def _summarize(unc: dict[str, list[float]], con: dict[str, list[float]], verify: dict[str, Any]) -> dict[str, Any]:
    med_u = {k: statistics.median(v) for k, v in unc.items()}
    med_c = {k: statistics.median(v) for k, v in con.items()}
    # Paired per-round ratios (same round, same machine state), as a check on
    # the ratio of medians.
    paired_u = {
        k: statistics.median(a / b for a, b in zip(unc[k], unc["greenpool"])) for k in ("qp_rollback", "qp_none")
    }
    paired_c = {k: statistics.median(a / b for a, b in zip(con[k], con["bare1"])) for k in con}
    probe_cost = statistics.median(a - b for a, b in zip(unc["greenpool_probe"], unc["greenpool"]))
    metrics_cost = statistics.median(a - b for a, b in zip(unc["greenpool_metrics"], unc["greenpool"]))
    speedup_rb = med_u["qp_rollback"] / med_u["greenpool"]
    speedup_none = med_u["qp_none"] / med_u["greenpool"]
    ratio_c = med_c["greenpool"] / med_c["bare1"]
    gp_checkin = max(verify[k]["client_writes_per_checkin"] for k in ("greenpool_idle", "greenpool_select"))
    gp_server = max(verify[k]["server_commands_per_cycle_beyond_work"] for k in ("greenpool_idle", "greenpool_select"))
    control_ok = (
        verify["greenpool_open_txn"]["client_writes_per_checkin"] == 1
        and verify["qp_rollback_idle"]["client_writes_per_checkin"] == 1
    )
    return {
        "uncontended_speedup_vs_qp_rollback": speedup_rb,
        "uncontended_speedup_vs_qp_none": speedup_none,
        "uncontended_speedup_paired": paired_u,
        "probe_cost_us_paired": probe_cost,
        "metrics_cost_us_paired": metrics_cost,
        "contended_ratio_to_bare1": {k: v / med_c["bare1"] for k, v in med_c.items()},
        "contended_ratio_to_bare1_paired": paired_c,
        "target_uncontended_vs_qp_rollback_met": speedup_rb >= TARGET_UNCONTENDED_SPEEDUP,
        "target_uncontended_vs_qp_none_met": speedup_none >= TARGET_UNCONTENDED_SPEEDUP,
        "target_contended_met": ratio_c >= TARGET_CONTENDED_RATIO,
        "target_checkin_no_round_trip_met": gp_checkin == 0 and gp_server == 0 and control_ok,
        "round_trip_controls_ok": control_ok,
    }


# -- output ---------------------------------------------------------------------------


def _markdown(
    base: dict[str, Any],
    unc: dict[str, list[float]],
    con: dict[str, list[float]],
    con_cpu: dict[str, list[float]],
    verify: dict[str, Any],
    summary: dict[str, Any],
    out_path: Path,
) -> str:
    s = base["settings"]
    v = base["versions"]
    m = base["machine"]
    med_u = {k: statistics.median(x) for k, x in unc.items()}
    med_c = {k: statistics.median(x) for k, x in con.items()}
    yes = {True: "**met**", False: "**not met**"}
    out: list[str] = []
    add = out.append
    add("## Pool micro-benchmark (bench/pool_micro.py)")
    add("")
    add("Generated by the command below; do not edit by hand, rerun it (bench/README.md explains the method).")
    add("")
    add("```")
    add(base["command"])
    add("```")
    add("")
    add(
        f"Run {base['run_id']} at {base['timestamp']}{' (--quick: short and noisy)' if base['quick'] else ''}; "
        f"{m['nproc']} CPUs ({m['cpu_model']}), load average {m['loadavg_start'][0]:.2f} at start and "
        f"{base['loadavg_end'][0]:.2f} at end; Python {v['python']}, gevent {v['gevent']}, greenlet {v['greenlet']}, "
        f"PyMySQL {v['pymysql']}, SQLAlchemy {v['sqlalchemy']}, greenpool {v['greenpool']} "
        f"(git {v['git']}{', uncommitted changes' if v['git_dirty'] else ''}; pool.py sha256 {v['pool_py_sha256']}); "
        f"server {base['server']} on {base['server_host']}. One gevent monkey-patched process; the stacks run "
        f"interleaved in rounds (A B C …, A B C …) and each figure is the median over rounds."
    )
    add("")
    add(f"### 1. Uncontended checkout + checkin ({s['unc_rounds']} rounds × {s['unc_cycles']:,} cycles, one greenlet)")
    add("")
    add("| stack | µs per cycle (median) | min – max | greenpool is faster by |")
    add("|---|---:|---:|---:|")
    for key in UNCONTENDED:
        faster = (
            ""
            if key in ("greenpool", "greenpool_probe", "greenpool_metrics", "bare")
            else f"{med_u[key] / med_u['greenpool']:.1f}x"
        )
        add(f"| {LABELS[key]} | {med_u[key]:.2f} | {min(unc[key]):.2f} – {max(unc[key]):.2f} | {faster} |")
    add("")
    add(
        f"The checkout probe costs {summary['probe_cost_us_paired']:.2f} µs per cycle, and the backend's metrics "
        f"{summary['metrics_cost_us_paired']:.2f} µs (medians of the per-round differences). The pool's own "
        "checkout-wait histogram is in every greenpool row."
    )
    add("")
    add(
        f"### 2. Contended: {GREENLETS} greenlets sharing {POOL_SIZE} connections, checkout + `SELECT 1` + checkin "
        f"({s['con_rounds']} rounds × {s['con_seconds']:g} s after {s['warmup']:g} s warm-up)"
    )
    add("")
    add("| stack | queries/s (median) | min – max | vs bare single connection | client CPU µs per query (median) |")
    add("|---|---:|---:|---:|---:|")
    for key in CONTENDED:
        add(
            f"| {LABELS[key]} | {med_c[key]:,.0f} | {min(con[key]):,.0f} – {max(con[key]):,.0f} | "
            f"{med_c[key] / med_c['bare1']:.0%} | {statistics.median(con_cpu[key]):.1f} |"
        )
    add("")
    add(f"### 3. Database round trips per checkin ({s['verify_cycles']} cycles each, pools of size 1)")
    add("")
    add("| case | client: packets written during checkin | server: commands per cycle beyond the work |")
    add("|---|---:|---:|")
    for case in verify.values():
        add(
            f"| {case['label']} | {case['client_writes_per_checkin']:.2f} | {case['server_commands_per_cycle_beyond_work']:.2f} |"
        )
    add("")
    add(
        "Client side: every byte PyMySQL sends goes through `Connection._write_bytes` (its only `sendall` call), "
        "wrapped on that one connection and read just before and after the checkin; a command is one packet, and "
        "MySQL's protocol is strictly request/response, so no write means no round trip. Server side: "
        "`Questions` + `Com_admin_commands` from `SHOW SESSION STATUS` read on that same connection before and after "
        "the cycles (session counters: other clients of the server do not count), minus the work statements and the "
        "SHOW itself (`Questions` leaves out COM_PING, which `Com_admin_commands` counts). The open-transaction case "
        "and QueuePool's default reset are positive controls: both must show 1 (a ROLLBACK)."
    )
    add("")
    add("### Targets (issue 2, section 5)")
    add("")
    add("| target | measured | |")
    add("|---|---:|---|")
    add(
        f"| uncontended checkout+checkin ≥ {TARGET_UNCONTENDED_SPEEDUP:g}x faster than QueuePool (default reset) | "
        f"{summary['uncontended_speedup_vs_qp_rollback']:.1f}x | {yes[summary['target_uncontended_vs_qp_rollback_met']]} |"
    )
    add(
        f"| same, against QueuePool with reset_on_return=None (no round trip either) | "
        f"{summary['uncontended_speedup_vs_qp_none']:.1f}x | {yes[summary['target_uncontended_vs_qp_none_met']]} |"
    )
    add(
        f"| contended throughput ≥ {TARGET_CONTENDED_RATIO:.0%} of one bare connection's `SELECT 1` rate | "
        f"{summary['contended_ratio_to_bare1']['greenpool']:.0%} | {yes[summary['target_contended_met']]} |"
    )
    gp_rt = max(verify[k]["client_writes_per_checkin"] for k in ("greenpool_idle", "greenpool_select"))
    add(
        f"| a checkin with nothing to roll back costs no round trip | {gp_rt:.0f} per checkin"
        f"{'' if summary['round_trip_controls_ok'] else ' (controls FAILED: method not trusted)'} | "
        f"{yes[summary['target_checkin_no_round_trip_met']]} |"
    )
    add("")
    add("Notes:")
    add("")
    add(
        "- QueuePool's default `reset_on_return='rollback'` sends a ROLLBACK on every checkin (one round trip, section 3), "
        "which dominates its uncontended time; the `reset_on_return=None` row is QueuePool's pool logic alone. "
        "greenpool's reset rolls back only when the server's status flags say a transaction is open."
    )
    add(
        "- The bare rows are not pools: the uncontended one is the loop's own cost; `bare1` is the reference rate of the "
        "target; `bare10` (10 connections each driven by its own greenlet) shows what 10 connections give with no pool "
        "at all, because with the server on the same machine several connections overlap client and server work and "
        "can beat one connection."
    )
    add(
        "- Client CPU per query is this process's CPU time (`time.process_time()`) over the measured window divided by "
        "the queries. The benchmark process is CPU-bound here (the server shares the same cores), so its rate is about "
        "1 / CPU per query; when other load on the machine moves the rates, this column moves much less."
    )
    add(
        "- PyMySQL 1.2 builds a new TLS context (loading the CA bundle) on every connect when no SSL option is given; "
        "greenpool's `PooledConnection` caches it. That only changes connect time, which no row here measures "
        "(every connection is opened before the first round); greenpool's connections also go through "
        "`PooledConnection.query`, which sets a busy flag around each command. "
        f"This server {'offers TLS, so sessions are encrypted' if base['server_tls'] else 'does not offer TLS, so every session here is plain TCP'}."
    )
    add(f"- Raw per-round figures: {_rel(out_path)} (one JSON line per stack, run id {base['run_id']}).")
    return "\n".join(out)


def _write_section(path: Path, body: str) -> None:
    from bench.report import write_section

    write_section(path, body, name="pool_micro")


def _meta(params: dict[str, Any]) -> dict[str, Any]:
    import hashlib
    import platform
    import subprocess
    from importlib import metadata

    import pymysql

    import greenpool

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    conn = pymysql.connect(**params)
    try:
        cur = conn.cursor()
        cur.execute("SELECT VERSION(), @@have_ssl")
        server, have_ssl = cur.fetchone()
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        row = cur.fetchone()
        tls = bool(row and row[1])
        cur.close()
    finally:
        conn.close()
    return {
        "versions": {
            "python": platform.python_version(),
            "gevent": metadata.version("gevent"),
            "greenlet": metadata.version("greenlet"),
            "pymysql": metadata.version("PyMySQL"),
            "sqlalchemy": metadata.version("SQLAlchemy"),
            "greenpool": greenpool.__version__,
            "git": git("rev-parse", "--short", "HEAD") or "unknown",
            "git_dirty": bool(git("status", "--porcelain", "--", "greenpool")),
            "pool_py_sha256": hashlib.sha256((ROOT / "greenpool" / "pool.py").read_bytes()).hexdigest()[:12],
        },
        "machine": {
            "nproc": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "cpu_model": cpu_model,
            "platform": platform.platform(),
            "loadavg_start": list(os.getloadavg()),
        },
        "server": server,
        "server_have_ssl": have_ssl,
        "server_tls": tls,
        "server_host": f"{params['host']}:{params['port']}",
        "pymysql_sendall_call_sites": _sendall_call_sites(),
    }


def _sendall_call_sites() -> int:
    """How many places in pymysql.connections write to the socket (the client
    counter of section 3 is sound only if that is _write_bytes alone)."""
    import inspect

    import pymysql.connections

    return inspect.getsource(pymysql.connections).count(".sendall(")


def _command(argv: list[str]) -> str:
    import shlex

    python = sys.executable
    try:
        python = str(Path(python).relative_to(ROOT))  # .venv/bin/python, not the resolved interpreter
    except ValueError:
        pass
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    target = "-m bench.pool_micro" if spec is not None and spec.name == "bench.pool_micro" else "bench/pool_micro.py"
    return " ".join([python, target, *map(shlex.quote, argv)])


def _rel(path: Any) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _fmt_round(results: dict[str, list[float]], fmt: str) -> str:
    return ", ".join(f"{key} {fmt.format(values[-1])}" for key, values in results.items())


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- profiling ------------------------------------------------------------------------


class _FakeConn:
    """Stands in for a PyMySQL connection when only the pool's own cost is
    measured: passes make_reset(False) without a round trip (open, idle,
    autocommit on, no transaction)."""

    open = True

    def __init__(self) -> None:
        from pymysql.constants import SERVER_STATUS

        from greenpool.mysql import ConnectionState

        self.greenpool = ConnectionState()
        self.server_status = SERVER_STATUS.SERVER_STATUS_AUTOCOMMIT

    def get_autocommit(self) -> bool:
        return True

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass


def _profile(args: argparse.Namespace) -> int:
    """Where greenpool's time goes (prints only; writes no results):

    1. the uncontended getconn()/putconn() cycle, line by line when
       line_profiler is installed (pip install line_profiler), else cProfile;
    2. the pool's own CPU per cycle under contention, without a database:
       fake connections and ``gevent.sleep(0)`` (one trip through the hub, as
       a query's wait on its socket) instead of ``SELECT 1``, at 1, 10 and 100
       greenlets on 10 connections, greenpool against QueuePool.
    """
    import cProfile
    import pstats
    from time import process_time

    import gevent
    from sqlalchemy.pool import QueuePool

    from greenpool import mysql as gpmysql
    from greenpool.pool import Pool

    settings = _settings(args)
    n = settings["unc_cycles"] * 5
    reset = gpmysql.make_reset(False)
    pool = Pool(_FakeConn, max_size=POOL_SIZE, reset=reset, check=None, name="profile")
    pool.putconn(pool.getconn())
    try:
        from line_profiler import LineProfiler
    except ImportError:
        profiler = cProfile.Profile()
        profiler.enable()
        _cycles_greenpool(pool, n)
        profiler.disable()
        print(f"== 1. uncontended: {n:,} getconn()/putconn() cycles, cProfile (pip install line_profiler for lines) ==")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    else:
        lines = LineProfiler(
            Pool.getconn, Pool.putconn, Pool._hand_out, Pool._vet, Pool._pop_idle, Pool._give_back, reset
        )
        lines.runcall(_cycles_greenpool, pool, n)
        print(
            f"== 1. uncontended: {n:,} getconn()/putconn() cycles, line_profiler (its overhead inflates every line) =="
        )
        lines.print_stats(output_unit=1e-6, stripzeros=True)
    print(f"   without a profiler: {_cycles_greenpool(pool, n) / n * 1e6:.2f} µs per cycle")
    pool.close()

    def work(run: _Run, checkout: Callable[[], Any], checkin: Callable[[Any], None]) -> None:
        while not run.stop:
            conn = checkout()
            gevent.sleep(0)
            checkin(conn)
            run.count += 1

    def no_pool(run: _Run) -> None:
        while not run.stop:
            gevent.sleep(0)
            run.count += 1

    def cpu_per_cycle(spawn: Callable[[_Run], list[Any]], seconds: float = 1.0) -> float:
        run = _Run()
        greenlets = spawn(run)
        gevent.sleep(0.1)
        c0, p0 = run.count, process_time()
        gevent.sleep(seconds)
        c1, p1 = run.count, process_time()
        run.stop = True
        gevent.joinall(greenlets, timeout=30, raise_error=True)
        return (p1 - p0) / max(1, c1 - c0) * 1e6

    gp = Pool(_FakeConn, max_size=POOL_SIZE, reset=reset, check=None, name="profile-contended")
    qp = QueuePool(_FakeConn, pool_size=POOL_SIZE, max_overflow=0, reset_on_return=None)
    rounds = 3 if args.quick else 5
    print(
        f"\n== 2. pool CPU per cycle under contention, no database ({POOL_SIZE} fake connections, "
        f"gevent.sleep(0) as the query; median of {rounds} interleaved rounds of 1 s) =="
    )
    print(f"{'greenlets':>10} {'no pool':>10} {'greenpool':>10} {'QueuePool(None)':>16}   µs of CPU per cycle")
    for count in (1, POOL_SIZE, GREENLETS):
        spawners = {
            "none": lambda run, count=count: [gevent.spawn(no_pool, run) for _ in range(count)],
            "gp": lambda run, count=count: [gevent.spawn(work, run, gp.getconn, gp.putconn) for _ in range(count)],
            "qp": lambda run, count=count: [
                gevent.spawn(work, run, qp.connect, lambda c: c.close()) for _ in range(count)
            ],
        }
        got: dict[str, list[float]] = {key: [] for key in spawners}
        for _ in range(rounds):
            for key, spawn in spawners.items():
                got[key].append(cpu_per_cycle(spawn))
        med = {key: statistics.median(values) for key, values in got.items()}
        print(f"{count:>10} {med['none']:>10.2f} {med['gp']:>10.2f} {med['qp']:>16.2f}")
    stats = gp.get_stats()
    gp.close()
    qp.dispose()
    if stats["returns_bad"]:
        print(
            f"warning: greenpool discarded {stats['returns_bad']} fake connections at checkin: the figures include reconnects"
        )
    return 0


if __name__ == "__main__":
    if __package__ in (None, ""):
        # Run as `python bench/pool_micro.py`: make the repository importable.
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
