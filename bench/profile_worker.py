"""Where a stack's workers spend their CPU under load: py-spy on every worker, grouped.

    .venv/bin/pip install py-spy                 # not in the bench extra: only this script needs it
    .venv/bin/python -m bench.profile_worker --stack gp-gevent --path /read --clients 100 --seconds 8

Starts the stack as bench.run does (bench/stacks.py), warms it up, then runs wrk for
--seconds + 2 while ``py-spy record --format raw`` samples each worker for --seconds.
Prints the share of samples per part (greenpool's pool, its Django backend, its launcher,
Django, PyMySQL and its socket writes to MySQL, ...; each sample counted once, for the
innermost frame on its stack that is not gevent's or the standard library's), and the
hottest leaf lines. py-spy cannot see a greenlet
that is switched out, so a gevent worker waiting in its hub is idle and not sampled; a sync
worker blocked in recv() is sampled. Writes nothing.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import run, stacks

# Each sample goes to one part: the innermost frame on its stack that is not gevent's or the
# standard library's decides (so a socket write inside PyMySQL is PyMySQL's, a socket write
# inside the launcher is the launcher's); a stack of gevent frames only is the hub.
PARTS = (
    ("PyMySQL: writing a command to the MySQL socket", ("Connection._write_bytes",)),
    ("PyMySQL: the rest", ("pymysql/",)),
    (
        "greenpool pool (pool.py, _compat.py, registry.py)",
        ("greenpool/pool.py", "greenpool/_compat.py", "greenpool/registry.py"),
    ),
    ("greenpool Django backend (backends/, mysql.py)", ("greenpool/backends/", "greenpool/mysql.py")),
    ("greenpool launcher (launch/: request handling, stats, access log, writing the response)", ("greenpool/launch/",)),
    ("Django and the demo views", ("django/", "greenpool/demo/", "greenpool/middleware.py")),
    ("gunicorn", ("gunicorn/",)),
    ("tornado", ("tornado/",)),
    ("asgiref", ("asgiref/",)),
)
_PASS_THROUGH = ("gevent/", "/socket.py", "/ssl.py", "/selectors.py", "/threading.py", "/queue.py")


def part_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        if any(p in frame for p in _PASS_THROUGH):
            continue
        for name, needles in PARTS:
            if any(needle in frame for needle in needles):
                return name
        return "other Python"
    return "gevent / the hub"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="gp-gevent", help=f"one of {', '.join(stacks.ALL)}")
    parser.add_argument("--path", default="/read")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(stacks.VENV_BIN / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    stack = stacks.ALL[args.stack]
    tmp = Path(tempfile.mkdtemp(prefix="greenpool-profile-"))
    db_env = run.prepare_database(run.BENCH_MAX_USER_CONNECTIONS)
    running = run.start(stack, tmp, db_env, "profile")
    outputs: list[Path] = []
    try:
        problem = run.wait_ready(running)
        if problem:
            raise SystemExit(problem)
        url = running.base + args.path + ("?s=0.05" if args.path == "/slow" else "")
        run.wrk(url, args.clients, 2)
        box: dict = {}
        load = threading.Thread(target=lambda: box.update(w=run.wrk(url, args.clients, args.seconds + 2)))
        load.start()
        time.sleep(1.0)
        procs = []
        for pid in running.pids()["workers"]:
            out = tmp / f"{pid}.txt"
            outputs.append(out)
            procs.append(
                subprocess.Popen(
                    [
                        spy,
                        "record",
                        "--pid",
                        str(pid),
                        "--duration",
                        str(args.seconds),
                        "--rate",
                        str(args.rate),
                        "--format",
                        "raw",
                        "--output",
                        str(out),
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for proc in procs:
            proc.wait(timeout=args.seconds + 60)
        load.join()
        result = box.get("w", {})
    finally:
        run.stop(running)
    total = 0
    parts: collections.Counter = collections.Counter()
    leaves: collections.Counter = collections.Counter()
    for out in outputs:
        if not out.exists():
            continue
        for line in out.read_text().splitlines():
            stack_text, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = stack_text.split(";")
            leaves[frames[-1]] += n
            parts[part_of(frames)] += n
    shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"{stack.label}, {args.path}, {args.clients} clients: {result.get('rps')} req/s during the profile; "
        f"{total} samples over {len(outputs)} workers"
    )
    for name, n in parts.most_common():
        print(f"{n / total if total else 0:7.1%}  {name}")
    print("hottest leaf lines:")
    for frame, n in leaves.most_common(8):
        print(f"{n / total if total else 0:7.1%}  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
