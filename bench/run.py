"""Server benchmark: greenpool side by side with the stacks users run today, in one run.

    .venv/bin/python -m bench.run            # full run (about 34 min); rewrites its docs section + plots
    .venv/bin/python -m bench.run --quick    # smoke run (about 7 min); JSON only unless --docs PATH
    make bench                               # the full run (make bench BENCH_ARGS=--quick)

Every stack of bench/stacks.py serves the same demo site with 2 worker processes
against the same MariaDB. The run is a list of cells (path x concurrency); in each
cell every stack is measured back to back, in an order that rotates from cell to
cell, each from a fresh start (so no stack's idle connections count against
another's, and every stack's warm-up starts from the same state). Ratios are taken
against the reference stack (bench.stacks.REFERENCE) measured in the same cell.

Per stack and cell: start it; wrk warm-up; wrk measured run (``wrk -t1 --latency
-s bench/wrk_report.lua``); meanwhile a thread polls the server (SHOW GLOBAL STATUS
Threads_connected and Connections, and information_schema.PROCESSLIST rows of the
benchmark's own MySQL account); then the connects the stack made (bench/
connect_counter.py), the CPU time of its processes, the RSS of each worker,
greenpool's pool stats (``greenpool-serve stats --json``) and the errors its log
shows; stop it. One JSON line per measurement in bench/results/servers.jsonl.

After the matrix (full run): the slow-query experiment (/slow at 200 clients next to
/hello on the same workers, and gunicorn sync with as many workers as it needs to
match, for memory) and the latency study (wrk next to a second client,
bench/client.py, to tell the servers' tails from wrk's). Then bench.report
rewrites the section of docs/benchmarks.md between ``<!-- servers:start -->`` and
``<!-- servers:end -->`` and the plots under docs/img/.

The database: GREENPOOL_MYSQL_HOST/_PORT/_USER/_PASSWORD (an account that can
create a database and an account; default root@127.0.0.1:3306). The stacks use a
database of their own (greenpool_bench) and an account of their own
(greenpool_bench@127.0.0.1, MAX_USER_CONNECTIONS 100): the shared server keeps
connections free for everyone else while a stack without a bound floods it, and
PROCESSLIST rows of that account are exactly the stack's connections. No global
setting of the server is changed. Only 127.0.0.1 is ever targeted.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import connect_counter, stacks
from bench.stacks import ROOT, Stack

RESULTS = ROOT / "bench" / "results" / "servers.jsonl"
STUDY_RESULTS = ROOT / "bench" / "results" / "study.jsonl"  # --study-only runs
LUA = ROOT / "bench" / "wrk_report.lua"
WRK_TIMEOUT_S = 10
BENCH_DB = "greenpool_bench"
BENCH_USER = "greenpool_bench"
BENCH_PASSWORD = "greenpool_bench"
BENCH_MAX_USER_CONNECTIONS = 100
POLL_S = 0.05

# rounds: the /read cells of the stacks that the targets compare (stacks.ROUND_STACKS)
# are measured this many times, each round in another order; the report takes medians.
FULL = {
    "concurrency": (10, 100, 500),
    "warmup": 2,
    "duration": 4,
    "paths": stacks.PATHS,
    "tuned": True,
    "rounds": 3,
    "round_paths": ("/read",),
    "extras": True,
    "slow_clients": 200,
    "slow_seconds": 4,
    "study_seconds": 4,
    "slow_pool_series": True,
}
QUICK = {
    "concurrency": (10, 100),
    "warmup": 1,
    "duration": 2,
    "paths": ("/hello", "/read"),
    "tuned": False,
    "rounds": 1,
    "round_paths": ("/read",),
    "extras": True,
    "slow_clients": 200,
    "slow_seconds": 2,
    "study_seconds": 2,
    # The smoke run keeps the default pool's slow-query experiment and leaves out
    # the labelled max_size 20 series (about a minute more).
    "slow_pool_series": False,
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the database -------------------------------------------------------------------


def admin_params() -> dict[str, Any]:
    return {
        "host": os.environ.get("GREENPOOL_MYSQL_HOST", "127.0.0.1"),
        "port": int(os.environ.get("GREENPOOL_MYSQL_PORT", "3306")),
        "user": os.environ.get("GREENPOOL_MYSQL_USER", "root"),
        "password": os.environ.get("GREENPOOL_MYSQL_PASSWORD", ""),
        "connect_timeout": 5,
    }


def connect_admin():  # type: ignore[no-untyped-def]
    import pymysql

    return pymysql.connect(**admin_params(), autocommit=True, ssl_disabled=True)


def prepare_database(limit: int) -> dict[str, str]:
    """Create the benchmark's database and account; migrate and seed. Returns the stacks' GREENPOOL_MYSQL_*."""
    params = admin_params()
    if params["host"] not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"GREENPOOL_MYSQL_HOST={params['host']}: the benchmark only talks to a server on this machine")
    conn = connect_admin()
    try:
        cur = conn.cursor()
        cur.execute(f"CREATE DATABASE IF NOT EXISTS `{BENCH_DB}`")
        account = f"'{BENCH_USER}'@'127.0.0.1'"
        cur.execute(f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY %s", (BENCH_PASSWORD,))
        cur.execute(f"ALTER USER {account} IDENTIFIED BY %s WITH MAX_USER_CONNECTIONS {int(limit)}", (BENCH_PASSWORD,))
        cur.execute(f"GRANT ALL ON `{BENCH_DB}`.* TO {account}")
    finally:
        conn.close()
    env = {
        "GREENPOOL_MYSQL_HOST": "127.0.0.1",
        "GREENPOOL_MYSQL_PORT": str(params["port"]),
        "GREENPOOL_MYSQL_USER": BENCH_USER,
        "GREENPOOL_MYSQL_PASSWORD": BENCH_PASSWORD,
        "GREENPOOL_MYSQL_DATABASE": BENCH_DB,
    }
    full_env = stacks.env_for(stacks.Command("prepare", []), {**env, **stacks.django_env("greenpool")})
    proc = subprocess.run(
        [sys.executable, "-m", "greenpool.demo.prepare"],
        env=full_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise SystemExit(f"migrate/seed of {BENCH_DB} failed:\n{proc.stdout}\n{proc.stderr}")
    return env


class Monitor(threading.Thread):
    """Polls the server every POLL_S: our account's connections (PROCESSLIST) and
    Threads_connected / Connections (SHOW GLOBAL STATUS, every client of the server)."""

    QUERY = (
        "SELECT (SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s), "
        "(SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'THREADS_CONNECTED'), "
        "(SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'CONNECTIONS')"
    )

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.conn = connect_admin()
        self.lock = threading.Lock()
        # (phase, limit), replaced in one assignment so that the polling thread never
        # pairs one phase with another phase's limit
        self.state: tuple[str, int | None] = ("idle", None)
        self.record_lock = threading.Lock()  # set_phase / recording a sample / take
        self.peaks: dict[str, dict[str, int]] = {}
        self.stop_event = threading.Event()
        self.samples = 0

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            cur = self.conn.cursor()
            cur.execute(self.QUERY, (BENCH_USER,))
            ours, threads, conns = cur.fetchone()
            cur.close()
        return {"ours": int(ours), "threads_connected": int(threads), "connections": int(conns)}

    def active_queries(self) -> int:
        with self.lock:
            cur = self.conn.cursor()
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s AND COMMAND = 'Query'",
                (BENCH_USER,),
            )
            (n,) = cur.fetchone()
            cur.close()
        return int(n)

    def set_phase(self, phase: str, limit: int | None = None) -> None:
        """Count peaks under `phase`; when our connections exceed `limit`, also record
        whose they are (see excess())."""
        with self.record_lock:
            self.state = (phase, limit)

    def excess(self, count: int) -> dict[str, Any]:
        """Who holds our account's connections right now: PROCESSLIST's rows by command,
        and the local process that owns each client socket (none: the client has
        closed it and the server thread has not noticed yet)."""
        with self.lock:
            cur = self.conn.cursor()
            cur.execute("SELECT HOST, COMMAND, TIME FROM information_schema.PROCESSLIST WHERE USER = %s", (BENCH_USER,))
            rows = cur.fetchall()
            cur.close()
        owners = client_socket_owners(int(self.conn.port))
        by_owner: dict[str, int] = {}
        by_command: dict[str, int] = {}
        for host, command, _seconds in rows:
            port = int(host.rsplit(":", 1)[1]) if ":" in host else -1
            owner = owners.get(port, "no local owner (closed by the client)")
            by_owner[owner] = by_owner.get(owner, 0) + 1
            by_command[command] = by_command.get(command, 0) + 1
        return {"ours": count, "by_command": by_command, "by_owner": by_owner}

    def wait_gone(self, timeout: float = 10.0) -> float:
        """Wait until the previous stack's connections have left the server (a closed
        client connection stays in PROCESSLIST until its server thread sees the close),
        so that they are not counted as the next stack's. Bounded; returns seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < timeout and self.snapshot()["ours"] > 0:
            time.sleep(POLL_S)
        return round(time.monotonic() - started, 2)

    def run(self) -> None:
        while not self.stop_event.is_set():
            state = self.state
            phase, limit = state
            if phase != "idle":
                try:
                    snap = self.snapshot()
                    excess = self.excess(snap["ours"]) if limit is not None and snap["ours"] > limit else None
                except Exception:  # the monitor must never end the run
                    time.sleep(POLL_S)
                    continue
                with self.record_lock:
                    # A sample whose phase ended while it was taken belongs to no phase.
                    # Recorded anyway, it was popped by the next take() of that phase
                    # name: the next stack's (run c3ba8985ad58: PROCESSLIST 84 and 38 in
                    # greenpool's cells right after stacks that held 74-100 and 40
                    # connections, while the server's Connections counter did not move).
                    if self.state is state:
                        peak = self.peaks.setdefault(phase, {"ours": 0, "threads_connected": 0, "samples": 0})
                        if excess is not None and snap["ours"] > peak["ours"]:
                            peak["excess"] = excess
                        peak["ours"] = max(peak["ours"], snap["ours"])
                        peak["threads_connected"] = max(peak["threads_connected"], snap["threads_connected"])
                        peak["samples"] += 1
            time.sleep(POLL_S)

    def take(self, phase: str) -> dict[str, Any]:
        with self.record_lock:
            return self.peaks.pop(phase, {"ours": 0, "threads_connected": 0, "samples": 0})

    def close(self) -> None:
        self.stop_event.set()
        self.join(timeout=2)
        self.conn.close()


def client_socket_owners(server_port: int) -> dict[int, str]:
    """Local TCP port -> "pid command" of the process holding each connection to
    127.0.0.1:server_port (Linux /proc; the benchmark runs as the owner of its stacks)."""
    inodes: dict[str, int] = {}  # socket inode -> local port
    remote = f"0100007F:{server_port:04X}"
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[2] == remote:
                    inodes[fields[9]] = int(fields[1].split(":")[1], 16)
    except OSError:
        return {}
    owners: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:  # gone, or not ours to read
            continue
        name = (" ".join(os.path.basename(a) for a in argv[:3]) or "?").splitlines()[0][:40]
        if argv[1:2] == ["-c"]:  # a greenpool-serve worker (python -c BOOT): name its master
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = f.read().rsplit(")", 1)[1].split()[1]
                with open(f"/proc/{ppid}/cmdline", "rb") as f:
                    parent = [os.path.basename(a.decode(errors="replace")) for a in f.read().split(b"\0")[:2] if a]
                name = f"worker of pid {ppid} {' '.join(parent)}"
            except (OSError, IndexError):
                pass  # the parent is gone: keep the worker's own name
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{entry}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                owners[inodes[target[8:-1]]] = f"pid {entry} ({name})"
    return owners


# -- processes ------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def descendants(pid: int, tree: dict[int, list[int]] | None = None) -> list[int]:
    tree = tree if tree is not None else _children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for child in tree.get(p, []):
            out.append(child)
            todo.append(child)
    return out


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sched_stats(pids: list[int]) -> tuple[int, int, int]:
    """(ns on a CPU, ns runnable but waiting for one, times scheduled in), summed over
    the threads of ``pids`` (/proc/PID/task/TID/schedstat); threads that are gone count 0."""
    total = [0, 0, 0]
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    values = [int(v) for v in f.read().split()[:3]]
            except (OSError, ValueError):
                continue
            for i, v in enumerate(values):
                total[i] += v
    return total[0], total[1], total[2]


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def find_server_pid() -> int | None:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() in ("mariadbd", "mysqld"):
                        return int(entry)
            except OSError:
                continue
    return None


def free_ports(count: int) -> int:
    """A port P such that P .. P+count-1 are free on 127.0.0.1."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count > 65000:
            continue
        ok = True
        for p in range(base, base + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free ports")


@dataclass
class Running:
    stack: Stack
    workdir: Path
    ports: stacks.Ports
    procs: list[tuple[stacks.Command, subprocess.Popen]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.ports.front}"

    def pids(self) -> dict[str, list[int]]:
        """{"workers": [...], "masters": [...], "proxy": [...]} of the live processes."""
        tree = _children()
        out: dict[str, list[int]] = {"workers": [], "masters": [], "proxy": []}
        for command, proc in self.procs:
            if proc.poll() is not None:
                continue
            kids = tree.get(proc.pid, [])
            if command.role == "proxy":
                out["proxy"] += [proc.pid, *descendants(proc.pid, tree)]
            elif kids:
                out["masters"].append(proc.pid)
                out["workers"] += kids
            else:
                out["workers"].append(proc.pid)
        return out

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for group in self.pids().values() for p in group)

    def log_offsets(self) -> list[int]:
        return [p.stat().st_size if p.exists() else 0 for p in self.logs]


def start(
    stack: Stack, root: Path, db_env: dict[str, str], tag: str, extra_env: dict[str, str] | None = None
) -> Running:
    workdir = root / f"{stack.key}-{tag}"
    workdir.mkdir(parents=True)
    counters = workdir / "counters"
    app_port = free_ports(stack.worker_ports)
    front = free_ports(1) if stack.needs_nginx else app_port
    ports = stacks.Ports(app=app_port, front=front)
    running = Running(stack, workdir, ports)
    base_env = {**db_env, "GREENPOOL_BENCH_COUNTER_DIR": str(counters), **(extra_env or {})}
    for command in stack.commands(ports, workdir):
        log_path = workdir / f"{command.name}.log"
        logf = open(log_path, "wb")
        proc = subprocess.Popen(
            command.argv,
            env=stacks.env_for(command, base_env),
            cwd=ROOT,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        logf.close()
        running.procs.append((command, proc))
        running.logs.append(log_path)
    return running


def wait_ready(running: Running, timeout: float = 60.0) -> str | None:
    """None once the stack answers /hello (twice, both workers' boot time allowed), else why not."""
    deadline = time.monotonic() + timeout
    url = running.base + "/hello"
    last = "no answer"
    while time.monotonic() < deadline:
        for command, proc in running.procs:
            if proc.poll() is not None:
                return (
                    f"{command.name} exited with {proc.returncode}: {tail(running.workdir / (command.name + '.log'))}"
                )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    # The first worker answers while its siblings may still be booting;
                    # a load started then would put every keep-alive connection on the
                    # first one. Booting takes CPU: wait until the stack has none.
                    wait_booted(running)
                    return None
                last = f"HTTP {resp.status}"
        except Exception as exc:  # not up yet
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.1)
    return f"not ready after {timeout:.0f}s ({last}): {tail(running.logs[0])}"


def wait_idle(running: Running, quiet_s: float, timeout: float, monitor: Monitor | None = None) -> float:
    """Wait until the stack's processes have used (almost) no CPU for quiet_s seconds
    and, with a monitor, our account runs no query. Bounded; returns the seconds waited."""
    started = time.monotonic()
    quiet_since = None
    last = running.cpu()
    while time.monotonic() - started < timeout:
        time.sleep(0.1)
        now = running.cpu()
        busy = now - last > 0.015 or (monitor is not None and monitor.active_queries() > 0)
        last = now
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            break
    return round(time.monotonic() - started, 2)


def wait_booted(running: Running) -> float:
    """Every worker has finished loading the app: no CPU for 0.5 s."""
    return wait_idle(running, quiet_s=0.5, timeout=20.0)


def stop(running: Running) -> None:
    for command, proc in reversed(running.procs):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, getattr(signal, "SIG" + command.stop_signal))
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 8.0
    for _command, proc in running.procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    # Whatever is left of each process group we started (workers whose master is gone).
    for _command, proc in running.procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass


def tail(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


_INTERESTING = re.compile(r"bench-error|503 for|WORKER TIMEOUT|Too many connections|Traceback|Error|error", re.I)
_NOISE = re.compile(r"^\[[^\]]*\]\s*|\b0x[0-9a-f]+\b|\d+")


def log_errors(running: Running, offsets: list[int]) -> list[dict[str, Any]]:
    """Error lines the stack logged since ``offsets``, grouped (numbers masked), most frequent first."""
    counts: Counter = Counter()
    example: dict[str, str] = {}
    for path, offset in zip(running.logs, offsets):
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read(20_000_000).decode("utf-8", "replace")
        except OSError:
            continue
        for line in data.splitlines():
            if not _INTERESTING.search(line):
                continue
            text = line.split("[bench-error]", 1)[-1].strip()
            key = _NOISE.sub("N", re.sub(r"^(\[[^\]]*\]\s*)+", "", text))[:200]
            counts[key] += 1
            example.setdefault(key, text[:300])
    return [{"count": n, "line": example[k]} for k, n in counts.most_common(5)]


# -- load -----------------------------------------------------------------------------


def wrk(url: str, clients: int, seconds: int, threads: int = 1) -> dict[str, Any]:
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{clients}",
        f"-d{seconds}s",
        "--timeout",
        f"{WRK_TIMEOUT_S}s",
        "--latency",
        "-s",
        str(LUA),
        url,
    ]
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + WRK_TIMEOUT_S + 30, stdin=subprocess.DEVNULL
    )
    for line in proc.stdout.splitlines():
        if line.startswith("WRKJSON "):
            data = json.loads(line[len("WRKJSON ") :])
            dur = data["duration_us"] / 1e6
            lat = data["latency_us"]
            rps = data["requests"] / dur if dur else 0.0
            errors = data["errors"]
            return {
                "requests": data["requests"],
                "duration_s": round(dur, 3),
                "rps": round(rps, 1),
                "p50_ms": lat["p50"] / 1000,
                "p90_ms": lat["p90"] / 1000,
                "p99_ms": lat["p99"] / 1000,
                "p999_ms": lat["p999"] / 1000,
                "max_ms": lat["max"] / 1000,
                "mean_ms": round(lat["mean"] / 1000, 3),
                "non2xx": errors["status"],
                "timeouts": errors["timeout"],
                "socket_errors": errors["connect"] + errors["read"] + errors["write"],
                "errors": errors,
                # Little's law: a closed loop of `clients` cannot have mean latency x rate > clients
                # for real samples; above 1 means wrk's coordinated-omission correction added samples.
                "little_ratio": round(lat["mean"] / 1e6 * rps / clients, 3) if clients else None,
            }
    return {"failed": f"wrk exited {proc.returncode}: {proc.stderr.strip()[-500:]}", "rps": 0.0}


def wrk_command(clients: int, seconds: int, url: str = "URL") -> str:
    return f"wrk -t1 -c{clients} -d{seconds}s --timeout {WRK_TIMEOUT_S}s --latency -s bench/wrk_report.lua {url}"


def wait_quiet(running: Running, monitor: Monitor) -> float:
    """The stack has finished the requests a wrk run left behind (a sync worker still
    answers the connections wrk closed, a queued /slow still sleeps): no CPU for 0.3 s
    and no query running."""
    return wait_idle(running, quiet_s=0.3, timeout=15.0, monitor=monitor)


def greenpool_stats(running: Running) -> dict[str, Any] | None:
    if not running.stack.control:
        return None
    argv = [
        str(stacks.VENV_BIN / "greenpool-serve"),
        "stats",
        "--json",
        "--control-dir",
        stacks.control_dir(running.workdir),
    ]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=20, cwd=ROOT, stdin=subprocess.DEVNULL)
        data = json.loads(proc.stdout)
    except (subprocess.TimeoutExpired, ValueError, OSError) as exc:
        return {"error": str(exc)}
    workers = data.get("workers", [])
    total: Counter = Counter()
    requests: Counter = Counter()
    per_worker = [
        {
            "index": w.get("index"),
            "requests": (w.get("requests") or {}).get("total"),
            "connections_total": (w.get("requests") or {}).get("connections_total"),
            "pool_size": ((w.get("pools") or {}).get("default") or {}).get("pool_size"),
        }
        for w in workers
    ]
    for w in workers:
        for pool in (w.get("pools") or {}).values():
            total.update({k: v for k, v in pool.items() if isinstance(v, (int, float))})
        requests.update({k: v for k, v in (w.get("requests") or {}).items() if isinstance(v, (int, float))})
    return {"workers": len(workers), "pool": dict(total), "requests": dict(requests), "per_worker": per_worker}


def settled_greenpool_stats(running: Running, timeout: float = 15.0) -> dict[str, Any] | None:
    """Stats once no request is in flight and no connection checked out (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        stats_now = greenpool_stats(running)
        if stats_now is None or "error" in stats_now:
            return stats_now
        busy = stats_now["requests"].get("in_flight", 0) + stats_now["pool"].get("pool_in_use", 0)
        if busy == 0 or time.monotonic() > deadline:
            stats_now["settled"] = busy == 0
            return stats_now
        time.sleep(0.2)


# -- one measurement -------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, plan: dict[str, Any]) -> None:
        self.args = args
        self.plan = plan
        self.run_id = uuid.uuid4().hex[:12]
        self.tmp = Path(tempfile.mkdtemp(prefix=f"greenpool-bench-{self.run_id}-"))
        self.out_path = Path(args.out)
        self.db_env: dict[str, str] = {}
        self.monitor: Monitor | None = None
        self.server_pid = find_server_pid()
        self.count = 0

    def emit(self, record: dict[str, Any]) -> None:
        record = {"run": self.run_id, "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), **record}
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.out_path, "a") as f:
            f.write(json.dumps(record, sort_keys=False) + "\n")

    def measure(self, stack: Stack, path: str, clients: int, tag: str) -> dict[str, Any]:
        plan = self.plan
        rec: dict[str, Any] = {
            "type": "cell",
            "stack": stack.key,
            "label": stack.label,
            "series": stack.series,
            "path": path,
            "clients": clients,
            "loadavg": list(os.getloadavg()),
        }
        url_path = path + ("?s=0.05" if path == "/slow" else "")
        assert self.monitor is not None
        rec["wait_previous_connections_s"] = self.monitor.wait_gone()
        running = start(stack, self.tmp, self.db_env, tag)
        try:
            problem = wait_ready(running)
            if problem:
                rec["failed"] = f"did not start: {problem}"
                return rec
            url = running.base + url_path
            monitor = self.monitor
            assert monitor is not None
            counters = running.workdir / "counters"
            base = monitor.snapshot()
            monitor.set_phase("warmup", limit=stack.bound)
            warm = wrk(url, clients, plan["warmup"])
            monitor.set_phase("idle")
            peak_warm = monitor.take("warmup")
            drained_s = wait_quiet(running, monitor)
            before = monitor.snapshot()
            cnt0 = connect_counter.read(str(counters))
            cpu0 = running.cpu()
            srv0 = cpu_seconds(self.server_pid) if self.server_pid else 0.0
            offsets = running.log_offsets()
            monitor.set_phase("run", limit=stack.bound)
            result = wrk(url, clients, plan["duration"])
            monitor.set_phase("idle")
            peak = monitor.take("run")
            after = monitor.snapshot()
            cnt1 = connect_counter.read(str(counters))
            cpu1 = running.cpu()
            srv1 = cpu_seconds(self.server_pid) if self.server_pid else 0.0
            pids = running.pids()
            rss = {k: [rss_kb(p) for p in v] for k, v in pids.items()}
            gp = settled_greenpool_stats(running)
            requests = result.get("requests", 0) or 0
            others_before = before["threads_connected"] - before["ours"]
            rec.update(
                {
                    "url": url_path,
                    "wrk": result,
                    "drain_after_warmup_s": drained_s,
                    "warmup_wrk": {k: warm.get(k) for k in ("rps", "requests", "non2xx", "timeouts", "socket_errors")},
                    "connections": {
                        "peak_ours": peak["ours"],
                        "peak_ours_warmup": peak_warm["ours"],
                        "peak_threads_connected": peak["threads_connected"],
                        "peak_threads_connected_minus_others": peak["threads_connected"] - others_before,
                        "others_at_start": others_before,
                        "ours_at_start": base["ours"],
                        "samples": peak["samples"],
                        "new": cnt1["successes"] - cnt0["successes"],
                        "attempts": cnt1["attempts"] - cnt0["attempts"],
                        "new_per_1000": round((cnt1["successes"] - cnt0["successes"]) * 1000 / requests, 2)
                        if requests
                        else None,
                        "server_connections_delta_all_clients": after["connections"] - before["connections"],
                        "bound": stack.bound,
                        # above the bound: whose connections they were, at the highest sample
                        "excess_run": peak.get("excess"),
                        "excess_warmup": peak_warm.get("excess"),
                    },
                    "cpu": {
                        "stack_s": round(cpu1 - cpu0, 3),
                        "stack_us_per_request": round((cpu1 - cpu0) * 1e6 / requests, 1) if requests else None,
                        "server_s_all_clients": round(srv1 - srv0, 3),
                    },
                    "rss_kb": rss,
                    "rss_worker_mean_kb": int(statistics.mean(rss["workers"])) if rss["workers"] else None,
                    "greenpool": gp,
                    "log_errors": log_errors(running, offsets),
                }
            )
            return rec
        finally:
            stop(running)
            shutil.rmtree(running.workdir, ignore_errors=True)

    def probe_cannot_serve(self, stack: Stack, path: str) -> dict[str, Any]:
        """One request to a path the stack is expected not to serve: record the answer and the error it logs."""
        rec: dict[str, Any] = {"type": "cannot_serve", "stack": stack.key, "label": stack.label, "path": path}
        running = start(stack, self.tmp, self.db_env, f"probe{path.strip('/')}")
        try:
            problem = wait_ready(running)
            if problem:
                rec["failed"] = f"did not start: {problem}"
                return rec
            offsets = running.log_offsets()
            status, body = None, ""
            for _ in range(3):
                try:
                    with urllib.request.urlopen(
                        running.base + path + ("?s=0.05" if path == "/slow" else ""), timeout=10
                    ) as resp:
                        status, body = resp.status, resp.read(300).decode("utf-8", "replace")
                except urllib.error.HTTPError as exc:
                    status, body = exc.code, exc.read(300).decode("utf-8", "replace")
                except Exception as exc:
                    status, body = None, f"{type(exc).__name__}: {exc}"
            time.sleep(0.3)
            errors = log_errors(running, offsets)
            rec.update({"status": status, "body": body.strip()[:200], "errors": errors, "serves": status == 200})
            return rec
        finally:
            stop(running)
            shutil.rmtree(running.workdir, ignore_errors=True)


def probe_greenpool_ioloop(bench: Bench) -> dict[str, Any]:
    """greenpool-serve has no IOLoop-thread mode: with DJANGO_ALLOW_ASYNC_UNSAFE (the only way
    Django's ORM would run there) its Tornado worker refuses to boot. Record what it says."""
    env = stacks.env_for(
        stacks.Command("probe", []),
        {**bench.db_env, **stacks.django_env("greenpool"), "DJANGO_ALLOW_ASYNC_UNSAFE": "1"},
    )
    argv = [
        str(stacks.VENV_BIN / "greenpool-serve"),
        "--server",
        "tornado",
        "-w",
        "1",
        "-b",
        f"127.0.0.1:{free_ports(1)}",
        "--check-config",
    ]
    proc = subprocess.run(
        argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "ERROR" in line]
    message = lines[0].split("] ", 3)[-1] if lines else (proc.stdout + proc.stderr).strip()[-300:]
    return {
        "type": "cannot_serve",
        "stack": "gp-tornado-ioloop",
        "label": "greenpool-serve tornado, Django on the IOLoop thread (DJANGO_ALLOW_ASYNC_UNSAFE=1)",
        "path": "(boot)",
        "status": f"exit {proc.returncode}",
        "serves": False,
        "errors": [{"count": 1, "line": message}],
    }


# -- the plan ---------------------------------------------------------------------------


def select_stacks(args: argparse.Namespace, plan: dict[str, Any]) -> list[Stack]:
    chosen = list(stacks.STACKS) + (list(stacks.TUNED) if plan["tuned"] else [])
    if args.stacks:
        wanted = set(args.stacks.split(","))
        unknown = wanted - set(stacks.ALL)
        if unknown:
            raise SystemExit(f"unknown stack(s) {sorted(unknown)}; known: {', '.join(stacks.ALL)}")
        chosen = [stacks.ALL[k] for k in stacks.ALL if k in wanted]
    if not stacks.nginx_available():
        skipped = [s.key for s in chosen if s.needs_nginx]
        if skipped:
            log(f"nginx not found: skipping {skipped}")
        chosen = [s for s in chosen if not s.needs_nginx]
    # A program that is not installed would end the run at its stack's first cell
    # (Popen raises): say so before anything starts.
    measured = [s for s in chosen if set(s.paths) & set(plan["paths"])]
    missing = {s.key: program for s in measured if (program := stacks.missing_executable(s))}
    if missing:
        raise SystemExit(
            "not installed: "
            + ", ".join(f"{program} (stack {key})" for key, program in missing.items())
            + "; pip install -e '.[test,bench]' (make bench does), or choose other stacks with --stacks"
        )
    return chosen


def cells(chosen: list[Stack], plan: dict[str, Any]) -> list[tuple[str, int, list[Stack], int]]:
    """(path, clients, stacks in the order measured, round) for every cell; a cell of
    plan["round_paths"] comes back plan["rounds"] times (round 0 with every stack,
    later rounds with stacks.ROUND_STACKS only), each time in another order."""
    out = []
    index = 0
    for path in plan["paths"]:
        for clients in plan["concurrency"]:
            serving = [s for s in chosen if path in s.paths]
            if not serving:
                continue
            shift = index % len(serving)
            out.append((path, clients, serving[shift:] + serving[:shift], 0))
            index += 1
            if path not in plan.get("round_paths", ()):
                continue
            again = [s for s in serving if s.key in stacks.ROUND_STACKS]
            for rnd in range(1, plan.get("rounds", 1)):
                if not again:
                    break
                shift = (index + rnd) % len(again)
                out.append((path, clients, again[shift:] + again[:shift], rnd))
    return out


def machine() -> dict[str, Any]:
    import platform

    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "platform": platform.platform(),
        "mem_gb": round(mem_kb / 1024 / 1024, 1),
    }


def server_facts() -> dict[str, Any]:
    conn = connect_admin()
    try:
        cur = conn.cursor()
        cur.execute("SELECT VERSION(), @@max_connections, @@have_ssl, @@thread_handling")
        version, max_conn, have_ssl, threads = cur.fetchone()
        return {
            "version": version,
            "max_connections": int(max_conn),
            "have_ssl": have_ssl,
            "thread_handling": threads,
            "host": f"{admin_params()['host']}:{admin_params()['port']}",
        }
    finally:
        conn.close()


def git_state() -> dict[str, Any]:
    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": git("rev-parse", "--short", "HEAD") or "unknown",
        "dirty": bool(git("status", "--porcelain", "--", "greenpool")),
    }


# -- extras: the slow-query experiment and the latency study ------------------------------


def slow_mixed(bench: Bench, key: str) -> dict[str, Any]:
    """/slow at 200 clients with /hello next to it on the same greenpool workers (two wrk at once)."""
    plan = bench.plan
    seconds = plan["slow_seconds"]
    clients = plan["slow_clients"]
    stack = stacks.ALL[key]
    assert stack.bound is not None
    target = stack.bound / 0.05  # workers x max_size connections, each busy 0.05 s per request
    monitor = bench.monitor
    assert monitor is not None
    running = start(stack, bench.tmp, bench.db_env, "slowmix")
    rec: dict[str, Any] = {
        "type": "slow_mixed",
        "stack": stack.key,
        "label": stack.label,
        "slow_clients": clients,
        "hello_clients": 10,
        "seconds": seconds,
        "target_rps": target,
        "loadavg": list(os.getloadavg()),
        "commands": [wrk_command(clients, seconds, "URL/slow?s=0.05"), wrk_command(10, seconds, "URL/hello")],
    }
    try:
        problem = wait_ready(running)
        if problem:
            rec["failed"] = problem
            bench.emit(rec)
            return rec
        base = running.base
        wrk(base + "/slow?s=0.05", clients, 2)  # warm-up: fill the pools
        wrk(base + "/hello", 10, 1)
        wait_quiet(running, monitor)
        alone, slow_alone, mixed_hello, mixed_slow, rss_peak = [], [], [], [], []
        peaks = []
        for _round in range(3):
            # Each round: /hello alone, /slow alone, then both at once.
            alone.append(wrk(base + "/hello", 10, seconds))
            monitor.set_phase("slowmix")
            slow_alone.append(wrk(base + "/slow?s=0.05", clients, seconds))
            wait_quiet(running, monitor)
            box: dict[str, Any] = {}
            t = threading.Thread(target=lambda box=box: box.update(slow=wrk(base + "/slow?s=0.05", clients, seconds)))
            t.start()
            time.sleep(0.2)
            mixed_hello.append(wrk(base + "/hello", 10, seconds))
            pids = running.pids()
            rss_peak.append(sum(rss_kb(p) for p in pids["workers"]))
            t.join()
            monitor.set_phase("idle")
            peaks.append(monitor.take("slowmix")["ours"])
            mixed_slow.append(box["slow"])
            wait_quiet(running, monitor)
        gp = settled_greenpool_stats(running)
        med = lambda rows, key="rps": statistics.median(r.get(key, 0) or 0 for r in rows)  # noqa: E731
        rec.update(
            {
                "hello_alone": alone,
                "slow_alone": slow_alone,
                "hello_mixed": mixed_hello,
                "slow_mixed": mixed_slow,
                "hello_alone_rps": med(alone),
                "hello_mixed_rps": med(mixed_hello),
                "slow_rps": med(mixed_slow),
                "slow_alone_rps": med(slow_alone),
                "slow_alone_p99_ms": med(slow_alone, "p99_ms"),
                "slow_alone_vs_target": round(med(slow_alone) / target, 3),
                "slow_p99_ms": med(mixed_slow, "p99_ms"),
                "hello_kept": round(med(mixed_hello) / med(alone), 3) if med(alone) else None,
                "slow_vs_target": round(med(mixed_slow) / target, 3),
                "errors": sum(
                    (r.get("non2xx", 0) or 0) + (r.get("timeouts", 0) or 0) + (r.get("socket_errors", 0) or 0)
                    for r in mixed_slow + mixed_hello + alone + slow_alone
                ),
                "peak_connections": max(peaks) if peaks else None,
                "bound": stack.bound,
                "worker_rss_kb_total": max(rss_peak) if rss_peak else None,
                "master_rss_kb": sum(rss_kb(p) for p in running.pids()["masters"]),
                "greenpool": gp,
            }
        )
    finally:
        stop(running)
        shutil.rmtree(running.workdir, ignore_errors=True)
    bench.emit(rec)
    log(
        f"slow {key}: /slow alone {rec.get('slow_alone_rps')} req/s, next to /hello {rec.get('slow_rps')} "
        f"(target {target:.0f}), /hello kept {rec.get('hello_kept')}"
    )
    return rec


def memory_match(bench: Bench, rec: dict[str, Any], matrix: list[dict[str, Any]]) -> None:
    """gunicorn sync with as many workers as it needs for greenpool's /slow throughput (alone
    at 200 clients): memory."""
    if "slow_alone_rps" not in rec:
        return
    goal = rec["slow_alone_rps"]
    stack = stacks.ALL[rec["stack"]]
    clients = rec["slow_clients"]
    seconds = rec["seconds"]
    monitor = bench.monitor
    assert monitor is not None
    per_worker = None
    for row in matrix:
        if row.get("stack") == "sync-persist" and row.get("path") == "/slow" and row.get("clients") == 10:
            rps = (row.get("wrk") or {}).get("rps")
            if rps:
                per_worker = rps / stacks.WORKERS
    per_worker = per_worker or 1 / 0.055
    needed = max(stacks.WORKERS, math.ceil(goal / per_worker))
    attempts = []
    for _attempt in range(2):
        sync = stacks.gunicorn_sync_with(needed)
        running = start(sync, bench.tmp, bench.db_env, f"memory{needed}")
        try:
            problem = wait_ready(running)
            if problem:
                attempts.append({"workers": needed, "failed": problem})
                break
            time.sleep(1.0 + needed * 0.1)  # every worker loads Django
            wrk(running.base + "/slow?s=0.05", clients, 2)
            wait_quiet(running, monitor)
            result = wrk(running.base + "/slow?s=0.05", clients, seconds)
            pids = running.pids()
            attempts.append(
                {
                    "workers": needed,
                    "wrk": result,
                    "worker_rss_kb_total": sum(rss_kb(p) for p in pids["workers"]),
                    "worker_count_seen": len(pids["workers"]),
                    "master_rss_kb": sum(rss_kb(p) for p in pids["masters"]),
                }
            )
        finally:
            stop(running)
            shutil.rmtree(running.workdir, ignore_errors=True)
        got = attempts[-1].get("wrk", {}).get("rps", 0)
        if got >= 0.95 * goal or not got:
            break
        needed = math.ceil(needed * goal / got) + 1
    best = attempts[-1]
    memory = {
        "type": "memory_match",
        "greenpool_stack": stack.key,
        "greenpool_label": stack.label,
        "greenpool_slow_rps": goal,
        "greenpool_worker_rss_kb_total": rec["worker_rss_kb_total"],
        "greenpool_workers": stacks.WORKERS,
        "per_sync_worker_rps_estimate": round(per_worker, 2),
        "attempts": attempts,
        "sync_workers": best.get("workers"),
        "sync_slow_rps": best.get("wrk", {}).get("rps"),
        "sync_worker_rss_kb_total": best.get("worker_rss_kb_total"),
        "loadavg": list(os.getloadavg()),
    }
    if memory["sync_worker_rss_kb_total"] and memory["greenpool_worker_rss_kb_total"]:
        memory["rss_ratio"] = round(memory["sync_worker_rss_kb_total"] / memory["greenpool_worker_rss_kb_total"], 2)
    bench.emit(memory)
    log(
        f"memory: sync needs {memory['sync_workers']} workers for {memory['sync_slow_rps']} req/s; ratio {memory.get('rss_ratio')}"
    )


@dataclass(frozen=True)
class StudyRow:
    stack: str
    path: str
    clients: int = 100
    # A CPU-bound process runs next to the stack while wrk, the probe and the second
    # client measure: contention for the CPU without a second worker (one-worker rows).
    cpu_hog: bool = False


STUDY = (
    StudyRow("gp-gevent", "/read"),
    StudyRow("gp-gevent-reuseport", "/read"),
    StudyRow("gevent-persist", "/read"),
    StudyRow("sync-persist", "/read"),
    # One worker with its share of the 100 clients: how evenly a worker serves its
    # own connections when it has a core to itself, and when it must share one.
    StudyRow("gp-gevent-w1", "/read", 50),
    StudyRow("sync-persist-w1", "/read", 50),
    StudyRow("gp-gevent-w1", "/read", 50, cpu_hog=True),
    StudyRow("sync-persist-w1", "/read", 50, cpu_hog=True),
    StudyRow("gp-gevent", "/hello"),
    StudyRow("bare", "/hello"),
)
# Stacks with no cells of their own (no paths) that the study runs whatever --stacks chose.
STUDY_ONLY = {row.stack for row in STUDY if not stacks.ALL[row.stack].paths}


def cpu_hog(seconds: float) -> subprocess.Popen:
    """A busy loop that ends by itself after ``seconds`` (bounded even if we die)."""
    code = f"import time\nend = time.monotonic() + {seconds:.1f}\nwhile time.monotonic() < end:\n    pass\n"
    return subprocess.Popen([sys.executable, "-c", code])


def latency_study(bench: Bench, chosen: list[Stack]) -> None:
    """wrk and a second client (bench/client.py) on the same stacks, 100 clients (50 for one worker)."""
    plan = bench.plan
    seconds = plan["study_seconds"]
    keys = {s.key for s in chosen} | STUDY_ONLY
    for row in STUDY:
        if row.stack not in keys:
            continue
        key, path, clients = row.stack, row.path, row.clients
        stack = stacks.ALL[key]
        running = start(stack, bench.tmp, bench.db_env, f"study{path.strip('/')}")
        rec: dict[str, Any] = {
            "type": "latency_study",
            "stack": key,
            "label": stack.label,
            "path": path,
            "clients": clients,
            "workers": stack.workers,
            "cpu_hog": row.cpu_hog,
            "seconds": seconds,
            "loadavg": list(os.getloadavg()),
        }
        hog: subprocess.Popen | None = None
        # The probe, killed in finally if an error cuts the row short
        # (communicate()'s timeout, unlike subprocess.run's, leaves it running).
        probe: subprocess.Popen | None = None
        try:
            problem = wait_ready(running)
            if problem:
                rec["failed"] = problem
                bench.emit(rec)
                continue
            url = running.base + path
            wrk(url, clients, 2)
            assert bench.monitor is not None
            wait_quiet(running, bench.monitor)
            if row.cpu_hog:
                # wrk, the probe and the second client, with margin; stopped in finally.
                hog = cpu_hog(2 * seconds + 30)
            probe = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.client",
                    "probe",
                    url,
                    "--clients",
                    "2",
                    "--interval",
                    "0.02",
                    "--duration",
                    str(seconds),
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=stacks.env_for(stacks.Command("client", []), {}),
            )
            workers = running.pids()["workers"]
            before = sched_stats(workers)
            rec["wrk"] = wrk(url, clients, seconds)
            after = sched_stats(workers)
            # How the kernel ran the workers during wrk: a worker that sleeps on every
            # query is scheduled in on every answer; a busy event loop runs in slices.
            rec["sched"] = {
                "cpu_s": (after[0] - before[0]) / 1e9,
                "runqueue_wait_s": (after[1] - before[1]) / 1e9,
                "scheduled_in": after[2] - before[2],
            }
            out, err = probe.communicate(timeout=seconds + 60)
            rec["probe_during_wrk"] = json.loads(out) if out.strip() else {"failed": err[-300:]}
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.client",
                    "closed",
                    url,
                    "--clients",
                    str(clients),
                    "--duration",
                    str(seconds),
                    "--warmup",
                    "1",
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=seconds + 90,
                env=stacks.env_for(stacks.Command("client", []), {}),
            )
            rec["client"] = json.loads(proc.stdout) if proc.stdout.strip() else {"failed": proc.stderr[-300:]}
            # Keep-alive connections stay on the worker that accepted them, and a
            # worker's share of them sets how long each waits (the client tells the
            # workers apart by X-Greenpool-Worker).
            by_worker = rec["client"].get("per_worker")
            if by_worker:
                rec["client_connections_per_worker"] = [w["connections"] for w in by_worker]
            gp = settled_greenpool_stats(running)
            if gp:
                rec["per_worker"] = gp.get("per_worker")
        finally:
            if probe is not None and probe.poll() is None:
                probe.kill()
                probe.communicate(timeout=10)
            if hog is not None:
                hog.kill()
                hog.wait(timeout=10)
            stop(running)
            shutil.rmtree(running.workdir, ignore_errors=True)
        bench.emit(rec)
        w, c = rec.get("wrk", {}), rec.get("client", {})
        log(
            f"study {key} {path} c={clients}{' +cpu hog' if row.cpu_hog else ''}: "
            f"wrk p99 {w.get('p99_ms')} little {w.get('little_ratio')}; "
            f"client raw p99 {c.get('raw', {}).get('p99_ms')} corrected p99 {c.get('wrk_corrected', {}).get('p99_ms')}"
        )


# -- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: fewer cells, short runs; no docs unless --docs"
    )
    parser.add_argument("--out", default=str(RESULTS), help=f"JSON lines (default {RESULTS.relative_to(ROOT)})")
    parser.add_argument(
        "--docs", default=None, help="rewrite this page's section (default docs/benchmarks.md for a full run)"
    )
    parser.add_argument("--no-docs", action="store_true", help="write JSON only")
    parser.add_argument("--stacks", default=None, help="comma-separated stack keys (default: all)")
    parser.add_argument("--paths", default=None, help="comma-separated paths, e.g. /hello,/read")
    parser.add_argument("--concurrency", default=None, help="comma-separated client counts, e.g. 10,100,500")
    parser.add_argument("--duration", type=int, default=None, help="measured seconds per run (integer)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up seconds per run (integer)")
    parser.add_argument("--no-extras", action="store_true", help="skip the slow-query experiment and latency study")
    parser.add_argument(
        "--study-only",
        action="store_true",
        help=f"run the latency study alone (no cells, no slow-query experiment), JSON to "
        f"{STUDY_RESULTS.relative_to(ROOT)} unless --out; never rewrites the docs",
    )
    parser.add_argument(
        "--max-user-connections",
        type=int,
        default=BENCH_MAX_USER_CONNECTIONS,
        help=f"MAX_USER_CONNECTIONS of the benchmark's account (default {BENCH_MAX_USER_CONNECTIONS})",
    )
    args = parser.parse_args(argv)
    plan = dict(QUICK if args.quick else FULL)
    if args.paths:
        plan["paths"] = tuple(args.paths.split(","))
    if args.concurrency:
        plan["concurrency"] = tuple(int(x) for x in args.concurrency.split(","))
    if args.duration:
        plan["duration"] = args.duration
    if args.warmup:
        plan["warmup"] = args.warmup
    if args.no_extras:
        plan["extras"] = False
    if args.study_only:
        if args.no_extras or args.docs:
            raise SystemExit("--study-only runs the latency study only: drop --no-extras and --docs")
        # Its own file: the report takes the last full run of servers.jsonl, which needs cells.
        plan.update(paths=(), study_only=True)
        if args.out == str(RESULTS):
            args.out = str(STUDY_RESULTS)
        args.no_docs = True
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk; .ci/bootstrap.sh installs it)")

    bench = Bench(args, plan)
    started = time.monotonic()
    chosen = select_stacks(args, plan)
    plan_cells = cells(chosen, plan)
    log(f"run {bench.run_id}: {len(chosen)} stacks, {sum(len(c[2]) for c in plan_cells)} measurements; tmp {bench.tmp}")
    bench.db_env = prepare_database(args.max_user_connections)
    nginx_source = {}
    if any(s.needs_nginx for s in chosen):
        from bench import nginx_conf

        probe_dir = bench.tmp / "nginx-probe"
        probe_dir.mkdir()
        nginx_conf.write(probe_dir, app_port=18000, workers=stacks.WORKERS, listen_port=18080)
        nginx_source = dict(nginx_conf.last_source)
        nginx_source["config"] = (probe_dir / "nginx" / "nginx.conf").read_text()
    bench.emit(
        {
            "type": "meta",
            "quick": args.quick,
            "argv": sys.argv[1:] if argv is None else argv,
            "command": ".venv/bin/python -m bench.run"
            + (
                " " + " ".join(sys.argv[1:] if argv is None else argv)
                if (sys.argv[1:] if argv is None else argv)
                else ""
            ),
            "plan": {k: list(v) if isinstance(v, tuple) else v for k, v in plan.items()},
            "wrk_command": wrk_command(0, plan["duration"]).replace("-c0", "-cCLIENTS"),
            "wrk_timeout_s": WRK_TIMEOUT_S,
            "reference": stacks.REFERENCE,
            "stacks": [
                {
                    "key": s.key,
                    "label": s.label,
                    "series": s.series,
                    "paths": list(s.paths),
                    "bound": s.bound,
                    "settings": s.settings,
                    "note": s.note,
                    "probe_only": list(s.probe_only),
                }
                for s in chosen
            ],
            "versions": stacks.versions(),
            "machine": machine(),
            "server": server_facts(),
            "git": git_state(),
            "loadavg_start": list(os.getloadavg()),
            "mysql_account": f"{BENCH_USER}@127.0.0.1",
            "max_user_connections": args.max_user_connections,
            "nginx": nginx_source,
        }
    )
    bench.monitor = Monitor()
    bench.monitor.start()
    matrix: list[dict[str, Any]] = []
    try:
        probing = [] if plan.get("study_only") else chosen
        if any(s.key == "gp-tornado" for s in probing):
            bench.emit(probe_greenpool_ioloop(bench))
        for stack in probing:
            for path in stack.probe_only:
                rec = bench.probe_cannot_serve(stack, path)
                bench.emit(rec)
                log(f"{stack.key} {path}: status {rec.get('status')} {rec.get('errors', [{}])[:1]}")
        total = sum(len(c[2]) for c in plan_cells)
        done = 0
        for index, (path, clients, order, rnd) in enumerate(plan_cells):
            for stack in order:
                done += 1
                rec = bench.measure(stack, path, clients, f"{index}")
                rec["cell"] = index
                rec["round"] = rnd
                bench.emit(rec)
                matrix.append(rec)
                w = rec.get("wrk", {})
                c = rec.get("connections", {})
                log(
                    f"[{done}/{total}] {stack.key:22s} {path:6s} c={clients:<4d} r{rnd} {w.get('rps', 0):8.1f} req/s "
                    f"p50 {w.get('p50_ms', 0):7.1f} p99 {w.get('p99_ms', 0):8.1f} ms  non2xx {w.get('non2xx')} "
                    f"to {w.get('timeouts')} conns {c.get('peak_ours')} new/1k {c.get('new_per_1000')}"
                    + (f"  FAILED {rec['failed'][:200]}" if rec.get("failed") else "")
                )
        if plan["extras"]:
            keys = {s.key for s in chosen}
            if "gp-gevent" in keys and not plan.get("study_only"):
                rec = slow_mixed(bench, "gp-gevent")
                memory_match(bench, rec, matrix)
                if plan["slow_pool_series"]:
                    # The same with a pool sized for the slow queries (labelled as such).
                    memory_match(bench, slow_mixed(bench, "gp-gevent-pool20"), matrix)
            latency_study(bench, chosen)
    finally:
        bench.monitor.close()
        bench.emit(
            {"type": "end", "loadavg_end": list(os.getloadavg()), "elapsed_s": round(time.monotonic() - started, 1)}
        )
        shutil.rmtree(bench.tmp, ignore_errors=True)
    log(f"run {bench.run_id} done in {time.monotonic() - started:.0f}s; results in {bench.out_path}")
    docs = None if args.no_docs else (args.docs or (None if args.quick else str(ROOT / "docs" / "benchmarks.md")))
    if docs:
        from bench import report

        report.main(["--run", bench.run_id, "--results", str(bench.out_path), "--docs", docs])
    return 0


if __name__ == "__main__":
    sys.exit(main())
