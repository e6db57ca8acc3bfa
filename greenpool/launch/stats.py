"""``greenpool-serve stats``: every worker's request and pool statistics.

Each worker answers ``stats`` on a unix socket in the control directory
(mode 0600, so only the user that runs the server can read them); the master
lists its workers in master.json there. With no --bind and no --control-dir,
the command looks for running masters of this user and reads the only one.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

from greenpool.launch import config as config_module
from greenpool.launch import processes
from greenpool.launch.control_dir import read_state
from greenpool.launch.errors import ExitCode, LaunchError


def find_control_dir(config: config_module.Config) -> str:
    if config.values.get("control_dir"):
        return config.values["control_dir"]
    if config.sources.get("bind", "default") != "default":
        return config.resolved_control_dir()
    root = config_module.control_root()
    live = []
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        names = []
    for name in names:
        path = os.path.join(root, name)
        state = read_state(path)
        if state is not None and processes.running(state.get("pid"), state.get("started")):
            live.append((path, state))
    if len(live) == 1:
        return live[0][0]
    if not live:
        raise LaunchError(
            ExitCode.FAILURE,
            f"no running greenpool-serve found under {root} (give --bind as the server has it, or --control-dir)",
        )
    listing = "\n".join(f"  {p}  (master {s.get('pid')}, {', '.join(s.get('bind', []))})" for p, s in live)
    raise LaunchError(
        ExitCode.USAGE,
        f"several greenpool-serve masters are running; choose one with --bind or --control-dir:\n{listing}",
    )


def query(path: str, timeout: float = 3.0) -> dict[str, Any]:
    """Ask one worker's control socket for its stats."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(b"stats\n")
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return json.loads(b"".join(chunks))


def collect(control_dir: str) -> dict[str, Any]:
    state = read_state(control_dir)
    if state is None or not processes.running(state.get("pid"), state.get("started")):
        raise LaunchError(ExitCode.FAILURE, f"no running greenpool-serve master in {control_dir}")
    workers = []
    for w in state.get("workers", []):
        path = w.get("control")
        entry: dict[str, Any] = {"index": w["index"], "pid": w["pid"], "state": w["state"]}
        if not path:
            continue
        try:
            entry.update(query(path))
        except (OSError, ValueError) as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
        workers.append(entry)
    return {
        "master": {k: state[k] for k in ("pid", "server", "bind", "worker_ports") if k in state},
        "workers": workers,
    }


def format_table(data: dict[str, Any]) -> str:
    master = data["master"]
    lines = [
        f"master {master['pid']} ({master['server']}) on {', '.join(master['bind'])}"
        f"{' (one port per worker)' if master.get('worker_ports') else ''}",
        "",
    ]
    header = (
        f"{'worker':<8}{'pid':>8} {'state':<9}{'uptime_s':>9}{'requests':>10}{'in_flight':>10}"
        f"{'2xx':>8}{'4xx':>6}{'5xx':>6}{'mean_ms':>9}{'max_ms':>9}{'conns':>7}"
    )
    lines.append(header)
    pool_rows = []
    for w in data["workers"]:
        if "error" in w:
            lines.append(f"{w['index']:<8}{w['pid']:>8} {w['state']:<9} unreachable: {w['error']}")
            continue
        r = w["requests"]
        info = w["worker"]
        mean = r["time_ms_total"] / r["total"] if r["total"] else 0.0
        lines.append(
            f"{info['index']:<8}{info['pid']:>8} {w['state']:<9}{info['uptime_s']:>9.1f}{r['total']:>10}"
            f"{r['in_flight']:>10}{r['status_2xx']:>8}{r['status_4xx']:>6}{r['status_5xx']:>6}"
            f"{mean:>9.2f}{r['time_ms_max']:>9.1f}{r['connections_open']:>7}"
        )
        for alias, p in sorted(w.get("pools", {}).items()):
            pool_rows.append((info["index"], info["pid"], alias, p))
    if pool_rows:
        lines += [
            "",
            f"{'worker':<8}{'pid':>8} {'alias':<10}{'size/max':>9}{'in_use':>7}{'idle':>6}{'waiting':>8}"
            f"{'checkouts':>10}{'timeouts':>9}{'wait_ms':>9}{'connects':>9}{'errors':>7}{'lost':>6}",
        ]
        for index, pid, alias, p in pool_rows:
            lines.append(
                f"{index:<8}{pid:>8} {alias:<10}{str(p['pool_size']) + '/' + str(p['pool_max']):>9}"
                f"{p['pool_in_use']:>7}{p['pool_available']:>6}{p['requests_waiting']:>8}"
                f"{p['requests_num']:>10}{p['requests_timeouts']:>9}{p['requests_wait_ms']:>9}"
                f"{p['connections_num']:>9}{p['connections_errors']:>7}{p['connections_lost']:>6}"
            )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    try:
        config, namespace = config_module.parse_args(argv, command="stats")
        data = collect(find_control_dir(config))
    except LaunchError as exc:
        print(f"{config_module.PROG} stats: error: {exc.message}", file=sys.stderr)
        return int(exc.code)
    if getattr(namespace, "json", False):
        print(json.dumps(data, indent=1, sort_keys=True))
    else:
        print(format_table(data))
    return int(ExitCode.OK)
