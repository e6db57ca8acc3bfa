"""The pools under a load step, as /metrics shows them over time.

    .venv/bin/python -m bench.metrics_timeline            # ~30 s; JSON line + docs/img/metrics-timeline.png
    .venv/bin/python -m bench.metrics_timeline --no-plot  # JSON only

greenpool-serve (the demo site, 2 gevent workers, max_size 5) with
--metrics-bind; the load is three steps of /slow?s=0.05 from greenpool's own
load client (10, then 100, then 10 keep-alive clients); this script scrapes the
master's /metrics every 0.5 s and parses each scrape with prometheus_client's
parser, as Prometheus would. The series plotted, summed over the workers:
connections in use, checkouts waiting, and the pool's size. The numbers go to
bench/results/metrics_timeline.jsonl (one line per run) and the picture to
docs/img/metrics-timeline.png, which docs/observability.md shows.

The database: GREENPOOL_MYSQL_HOST/_PORT/_USER/_PASSWORD/_DATABASE (default
root@127.0.0.1:3306, database test); the demo migrates and seeds its tables
there. Only 127.0.0.1 is targeted.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "metrics_timeline.jsonl"
PLOT = ROOT / "docs" / "img" / "metrics-timeline.png"
WORKERS, MAX_SIZE = 2, 5
PATH = "/slow?s=0.05"
#: (clients, seconds) of each load step.
STEPS = ((10, 8.0), (100, 10.0), (10, 8.0))
SCRAPE_EVERY = 0.5
SERIES = {
    "in use": "greenpool_pool_connections_in_use",
    "waiting": "greenpool_pool_waiting",
    "pool size": "greenpool_pool_connections",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"greenpool-serve exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout}s")


def _scrape(port: int) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    totals = dict.fromkeys(SERIES, 0.0)
    wanted = {name: label for label, name in SERIES.items()}
    for family in text_string_to_metric_families(text):
        label = wanted.get(family.name)
        if label is not None:
            totals[label] += sum(sample.value for sample in family.samples)
    return totals


def run(args: argparse.Namespace) -> dict[str, Any]:
    app_port, metrics_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(GREENPOOL_DEMO_POOL_MAX_SIZE=str(MAX_SIZE), GREENPOOL_DEMO_POOL_TIMEOUT="10")
    control = tempfile.mkdtemp(prefix="gp-timeline-")
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "greenpool.launch",
            "--server",
            "gevent",
            "-w",
            str(WORKERS),
            f"--bind=127.0.0.1:{app_port}",
            f"--metrics-bind=127.0.0.1:{metrics_port}",
            f"--control-dir={control}/ctl",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    points: list[dict[str, float]] = []
    steps: list[dict[str, Any]] = []
    stop = threading.Event()
    try:
        _wait_ready(f"http://127.0.0.1:{app_port}/hello", serve)
        _wait_ready(f"http://127.0.0.1:{metrics_port}/metrics", serve)
        started = time.monotonic()

        def scraper() -> None:
            while not stop.is_set():
                at = time.monotonic() - started
                try:
                    points.append({"t": round(at, 3), **_scrape(metrics_port)})
                except OSError as exc:
                    print(f"scrape at {at:.1f}s failed: {exc}", file=sys.stderr)
                stop.wait(SCRAPE_EVERY)

        thread = threading.Thread(target=scraper, daemon=True)
        thread.start()
        for clients, seconds in STEPS:
            step_start = time.monotonic() - started
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "greenpool.launch.loadgen",
                    f"http://127.0.0.1:{app_port}{PATH}",
                    "--clients",
                    str(clients),
                    "--requests",
                    "10000000",
                    "--duration",
                    str(seconds),
                ],
                capture_output=True,
                text=True,
                timeout=seconds + 60,
            )
            result = json.loads(out.stdout)
            steps.append(
                {
                    "clients": clients,
                    "from_s": round(step_start, 3),
                    "to_s": round(time.monotonic() - started, 3),
                    "load": result,
                }
            )
            print(
                f"{clients} clients for {seconds:g}s: {json.dumps({k: result.get(k) for k in ('ok', 'failed', 'by_status')})}",
                file=sys.stderr,
            )
        time.sleep(2.0)
    finally:
        stop.set()
        os.killpg(serve.pid, signal.SIGTERM)
        try:
            serve.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait(10)
    return {
        "run_id": uuid.uuid4().hex[:12],
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "-m", "bench.metrics_timeline", *sys.argv[1:]]),
        "workers": WORKERS,
        "max_size": MAX_SIZE,
        "path": PATH,
        "scrape_every_s": SCRAPE_EVERY,
        "steps": steps,
        "points": points,
    }


def plot(record: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=110)
    t = [p["t"] for p in record["points"]]
    for label, style in (("pool size", ":"), ("in use", "-"), ("waiting", "--")):
        ax.plot(t, [p[label] for p in record["points"]], style, label=f"sum over workers: {label}")
    ax.axhline(record["workers"] * record["max_size"], color="grey", linewidth=0.8)
    ax.annotate(
        f"workers x max_size = {record['workers'] * record['max_size']}",
        (0, record["workers"] * record["max_size"]),
        textcoords="offset points",
        xytext=(4, 4),
        fontsize=8,
    )
    for step in record["steps"]:
        ax.axvspan(step["from_s"], step["to_s"], alpha=0.06 if step["clients"] > 10 else 0.0, color="C1")
        ax.annotate(
            f"{step['clients']} clients", (step["from_s"], 0), textcoords="offset points", xytext=(3, -14), fontsize=8
        )
    ax.set_xlabel("seconds")
    ax.set_ylabel("connections / checkouts")
    ax.set_title(
        f"/metrics every {record['scrape_every_s']:g} s, {record['path']} (run {record['run_id']})", fontsize=9
    )
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-plot", action="store_true", help="write the JSON line only")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help=f"JSON lines file (default {RESULTS.relative_to(ROOT)})"
    )
    parser.add_argument("--plot", type=Path, default=PLOT, help=f"PNG (default {PLOT.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    record = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
    peak = {label: max(p[label] for p in record["points"]) for label in SERIES}
    print(f"run {record['run_id']}: {len(record['points'])} scrapes; peaks {peak}; appended to {args.out}")
    if not args.no_plot:
        plot(record, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
