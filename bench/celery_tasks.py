"""Celery workers side by side: server connections per worker process and tasks/s,
for each Celery pool type, greenpool's backend next to Django's stock one.

    python -m bench.celery_tasks                  # every pool type and variant, 300 tasks each
    python -m bench.celery_tasks --tasks 100 --pools prefork gevent --variants greenpool django-none
    python -m bench.celery_tasks --report RUN     # docs/benchmarks.md's section from a saved run

Each run starts a real worker of tests/celeryproj (tests/support/celery_worker.py,
the code tests/test_celery.py uses) on Redis (127.0.0.1:6379, else a private
redis-server) and the GREENPOOL_MYSQL_* server, runs one warm-up task per
task slot, then sends ``--tasks`` tasks of three primary-key reads each and waits
for every result. Measured: tasks/s from the first send to the last result; the
server sessions the tasks ran on (each returns CONNECTION_ID()), per worker process
and in all; the most sessions of the run's database open at once (PROCESSLIST,
sampled every 50 ms). JSON lines go to bench/results/celery.jsonl, a table to
stdout, and (a run of every pool type and variant) the "Celery workers" section
of docs/benchmarks.md.

Variants:
  greenpool          ENGINE greenpool.backends.mysql, pool max_size 4, greenpool.celery.install(app)
  greenpool-swap     the same without install(app): the ENGINE swap alone
  django-0           Django's stock MySQL ENGINE on PyMySQL, CONN_MAX_AGE=0 (Django's default)
  django-none        the same with CONN_MAX_AGE=None (persistent connections)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support import mysqlenv, redis_server
from tests.support.celery_worker import (
    ITEMS,
    POOLS,
    CeleryWorker,
    eventlet_installed,
    per_process,
    project_database,
    server_sessions,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "celery.jsonl"
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "celery_tasks"
MAX_SIZE = 4
CONCURRENCY = {"prefork": 2, "gevent": 50, "eventlet": 50, "threads": 8, "solo": 1}
VARIANTS: dict[str, dict[str, str]] = {
    "greenpool": {"backend": "greenpool", "max_size": str(MAX_SIZE)},
    "greenpool-swap": {"backend": "greenpool", "max_size": str(MAX_SIZE), "install": "0"},
    "django-0": {"backend": "django", "conn_max_age": "0"},
    "django-none": {"backend": "django", "conn_max_age": "none"},
}


class SessionSampler:
    """The most server sessions of one database open at once, sampled in a thread."""

    def __init__(self, db: dict[str, Any], database: str, interval: float = 0.05) -> None:
        self.db, self.database, self.interval = db, database, interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="session-sampler", daemon=True)

    def __enter__(self) -> SessionSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, len(server_sessions(self.db, self.database)))
            self._stop.wait(self.interval)


def run_one(broker: str, db: dict[str, Any], pool: str, variant: str, tasks: int, workdir: Path) -> dict[str, Any]:
    concurrency = CONCURRENCY[pool]
    with (
        project_database(db) as database,
        CeleryWorker(
            broker, db, database, pool=pool, concurrency=concurrency, workdir=workdir, **VARIANTS[variant]
        ) as worker,
    ):
        worker.run("celeryproj.reads", [[[1, 2, 3]]] * concurrency, timeout=60)  # warm-up
        arglists = [[[(i % ITEMS) + 1, ((i + 37) % ITEMS) + 1, ((i + 71) % ITEMS) + 1]] for i in range(tasks)]
        with SessionSampler(db, database) as sampler:
            started = time.monotonic()
            results = worker.run("celeryproj.reads", arglists, timeout=600)
            seconds = time.monotonic() - started
        sessions = per_process(results)
    return {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "pool": pool,
        "concurrency": concurrency,
        "variant": variant,
        "max_size": MAX_SIZE if variant.startswith("greenpool") else None,
        "tasks": tasks,
        "seconds": round(seconds, 3),
        "tasks_per_s": round(tasks / seconds, 1),
        "processes": len(sessions),
        "connections_total": len(set().union(*sessions.values())),
        "connections_per_process_max": max(len(ids) for ids in sessions.values()),
        "peak_open_sessions": sampler.peak,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| pool (-c) | variant | tasks/s | processes | connections made | per process (max) | open at once (peak) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['pool']} ({r['concurrency']}) | {r['variant']} | {r['tasks_per_s']:.0f} | {r['processes']} "
            f"| {r['connections_total']} | {r['connections_per_process_max']} | {r['peak_open_sessions']} |"
        )
    return "\n".join(lines)


def section(rows: list[dict[str, Any]]) -> str:
    first = rows[0]
    return f"""## Celery workers (bench/celery_tasks.py)

Run {first["run"]} on {first["commit"]} ({first["time"][:10]}), `python -m bench.celery_tasks --tasks {first["tasks"]}`:
each row is one real worker of tests/celeryproj on Redis, {first["tasks"]} tasks of three
primary-key reads each, after one warm-up task per slot. greenpool rows use max_size
{MAX_SIZE}. `greenpool` calls `greenpool.celery.install(app)` (docs/celery.md),
`greenpool-swap` is the ENGINE swap alone, `django-0` / `django-none` are Django's stock
MySQL backend on PyMySQL with CONN_MAX_AGE 0 / None.

- *connections made*: distinct server sessions (CONNECTION_ID()) the tasks ran on;
  *per process (max)*: the most of them in one worker process.
- *open at once (peak)*: the most sessions of the run's database in PROCESSLIST,
  sampled every 50 ms.
- tasks/s: from the first send to the last result, one short run per row on a shared
  2-core machine. The connection counts are exact; compare tasks/s only roughly.

{table(rows)}
"""


def git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.celery_tasks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=300, help="tasks per run (default 300)")
    parser.add_argument("--pools", nargs="+", choices=POOLS, default=list(POOLS))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--no-save", action="store_true", help=f"print only; do not append to {RESULTS}")
    parser.add_argument("--no-docs", action="store_true", help=f"do not write {DOCS}'s section")
    parser.add_argument(
        "--report", metavar="RUN", help=f"write {DOCS}'s section from run RUN of {RESULTS}; run nothing"
    )
    args = parser.parse_args(argv)
    if args.report:
        from bench.report import write_section

        rows = [row for row in map(json.loads, RESULTS.read_text().splitlines()) if row["run"] == args.report]
        if not rows:
            parser.error(f"no run {args.report!r} in {RESULTS}")
        write_section(DOCS, section(rows), SECTION)
        print(table(rows))
        return 0
    if args.tasks < 1:
        parser.error(f"--tasks must be >= 1, got {args.tasks}")
    pools = [p for p in args.pools if p != "eventlet" or eventlet_installed()]
    db = mysqlenv.mysql_params_from_env()
    run_id = uuid.uuid4().hex[:12]
    commit = git_commit()
    rows = []
    with redis_server.redis_url() as broker, tempfile.TemporaryDirectory(prefix="greenpool-bench-celery-") as tmp:
        for pool in pools:
            for variant in args.variants:
                row = {"run": run_id, "commit": commit, **run_one(broker, db, pool, variant, args.tasks, Path(tmp))}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                if not args.no_save:
                    RESULTS.parent.mkdir(parents=True, exist_ok=True)
                    with open(RESULTS, "a") as out:
                        out.write(json.dumps(row) + "\n")
    print(f"run {run_id} on {commit}: {args.tasks} tasks per row, three primary-key reads each")
    print(table(rows))
    complete = set(args.pools) == set(POOLS) and set(args.variants) == set(VARIANTS)
    if complete and not (args.no_docs or args.no_save):
        from bench.report import write_section

        write_section(DOCS, section(rows), SECTION)
        print(f"wrote the {SECTION} section of {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
