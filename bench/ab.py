"""A short A/B of two or more stacks, interleaved, judged as ratios over rounds.

    .venv/bin/python -m bench.ab --stacks gp-gevent,sync-persist --path /read --clients 100,500 --rounds 5

The machines here are shared and noisy, so a target is judged on at least five
interleaved rounds (A B A B ..., the order turning each round) of the cells it
compares, by the median of the per-round ratios to the first stack, with their
spread. Each measurement is bench.run's (a fresh start of the stack, wrk warm-up,
wrk measured run, CPU of the stack's processes, server connections), so the
numbers mean what they mean on docs/benchmarks.md. One JSON line per measurement
and one summary line per cell go to bench/results/ab.jsonl (or --out); the table
is printed. It never rewrites the docs: a page cites the run id.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from typing import Any

from bench import run as bench_run
from bench import stacks

RESULTS = bench_run.ROOT / "bench" / "results" / "ab.jsonl"

#: (record key path, label, better): what is compared, and which way is better.
FIGURES = (
    (("wrk", "rps"), "req/s", "higher"),
    (("wrk", "p99_ms"), "p99 ms", "lower"),
    (("cpu", "stack_us_per_request"), "CPU µs/req", "lower"),
    (("wrk", "timeouts"), "timeouts (> wrk's 2 s)", "lower"),
)


def _get(record: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = record
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def summarize(records: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    """Per stack and figure: the median over rounds, and the median (min-max) of
    the per-round ratio to the first stack."""
    by_round: dict[int, dict[str, dict[str, Any]]] = {}
    for rec in records:
        by_round.setdefault(rec["round"], {})[rec["stack"]] = rec
    out: dict[str, Any] = {}
    for key in keys:
        figures: dict[str, Any] = {}
        for path, label, better in FIGURES:
            values = [v for r in by_round.values() if key in r and (v := _get(r[key], path)) is not None]
            ratios = []
            for r in by_round.values():
                a, b = (_get(r[key], path) if key in r else None), (_get(r[keys[0]], path) if keys[0] in r else None)
                if a is not None and b:
                    ratios.append(a / b)
            figures[label] = {
                "better": better,
                "rounds": values,
                "median": statistics.median(values) if values else None,
                "ratio_median": statistics.median(ratios) if ratios else None,
                "ratio_min": min(ratios) if ratios else None,
                "ratio_max": max(ratios) if ratios else None,
            }
        out[key] = figures
    return out


def table(path: str, clients: int, summary: dict[str, Any], keys: list[str]) -> str:
    lines = [f"{path} at {clients} clients (ratios to {keys[0]}: median, min-max over rounds)"]
    for key in keys:
        cells = []
        for _path, label, _better in FIGURES:
            f = summary[key][label]
            if f["median"] is None:
                cells.append(f"{label} -")
                continue
            ratio = (
                ""
                if key == keys[0] or f["ratio_median"] is None
                else f" ({f['ratio_median']:.2f}x, {f['ratio_min']:.2f}-{f['ratio_max']:.2f})"
            )
            cells.append(f"{label} {f['median']:,.1f}{ratio}")
        lines.append(f"  {key:24s} " + " | ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stacks", required=True, help="comma-separated stack keys; ratios are to the first")
    parser.add_argument("--path", default="/read", help="the path to load (default /read)")
    parser.add_argument("--clients", default="100,500", help="comma-separated client counts (default 100,500)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5; fewer is not a verdict)")
    parser.add_argument("--duration", type=int, default=bench_run.FULL["duration"], help="measured seconds per run")
    parser.add_argument("--warmup", type=int, default=bench_run.FULL["warmup"], help="warm-up seconds per run")
    parser.add_argument(
        "--out", default=str(RESULTS), help=f"JSON lines (default {RESULTS.relative_to(bench_run.ROOT)})"
    )
    parser.add_argument("--max-user-connections", type=int, default=bench_run.BENCH_MAX_USER_CONNECTIONS)
    args = parser.parse_args(argv)
    keys = args.stacks.split(",")
    unknown = [k for k in keys if k not in stacks.ALL]
    if unknown or len(keys) < 2:
        raise SystemExit(f"--stacks needs two or more of: {', '.join(stacks.ALL)} (unknown: {unknown})")
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk; .ci/bootstrap.sh installs it)")
    chosen = [stacks.ALL[k] for k in keys]
    for stack in chosen:
        if stack.needs_nginx and not stacks.nginx_available():
            raise SystemExit(f"{stack.key} needs nginx, which is not installed")
    clients_list = [int(c) for c in args.clients.split(",")]
    plan = {**bench_run.FULL, "duration": args.duration, "warmup": args.warmup}
    args.quick = False  # what bench.run's Bench reads
    bench = bench_run.Bench(args, plan)
    bench.db_env = bench_run.prepare_database(args.max_user_connections)
    command = "python -m bench.ab " + " ".join(sys.argv[1:] if argv is None else argv)
    bench.emit(
        {
            "type": "ab-meta",
            "command": command,
            "stacks": keys,
            "path": args.path,
            "clients": clients_list,
            "rounds": args.rounds,
            "versions": stacks.versions(),
            "machine": bench_run.machine(),
            "git": bench_run.git_state(),
            "loadavg_start": list(os.getloadavg()),
        }
    )
    bench.monitor = bench_run.Monitor()
    bench.monitor.start()
    started = time.monotonic()
    tables = []
    try:
        for clients in clients_list:
            records = []
            for rnd in range(args.rounds):
                order = chosen[rnd % len(chosen) :] + chosen[: rnd % len(chosen)]
                for stack in order:
                    rec = bench.measure(stack, args.path, clients, f"ab{clients}-{rnd}")
                    rec.update(type="ab-cell", round=rnd)
                    bench.emit(rec)
                    records.append(rec)
                    w = rec.get("wrk", {})
                    bench_run.log(
                        f"{stack.key:22s} c={clients:<4d} round {rnd + 1}/{args.rounds}: "
                        f"{w.get('rps', 0):8.1f} req/s p99 {w.get('p99_ms', 0):7.1f} ms "
                        f"cpu {rec.get('cpu', {}).get('stack_us_per_request')} µs/req timeouts {w.get('timeouts')}"
                        + (f"  FAILED {rec['failed'][:200]}" if rec.get("failed") else "")
                    )
            summary = summarize(records, keys)
            bench.emit(
                {
                    "type": "ab-summary",
                    "path": args.path,
                    "clients": clients,
                    "rounds": args.rounds,
                    "reference": keys[0],
                    "summary": summary,
                }
            )
            tables.append(table(args.path, clients, summary, keys))
    finally:
        bench.monitor.close()
        bench.emit(
            {"type": "end", "loadavg_end": list(os.getloadavg()), "elapsed_s": round(time.monotonic() - started, 1)}
        )
        shutil.rmtree(bench.tmp, ignore_errors=True)
    print(f"run {bench.run_id} ({command}); JSON lines in {bench.out_path}")
    print("\n\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
