"""Write docs/benchmarks.md's server section and its plots from bench/results/servers.jsonl.

    .venv/bin/python -m bench.report                 # the last full run in the results
    .venv/bin/python -m bench.report --run RUN_ID    # a given run

bench.run calls this at the end of a full run. Only the text between
``<!-- servers:start -->`` and ``<!-- servers:end -->`` is replaced (the section is
appended when the markers are absent); every other section of the page, the
pool_micro one included, is left as it is. Plots go to docs/img/servers-*.png.
Every figure on the page comes from the JSON lines: to change them, rerun the benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

from bench.stacks import DBPOOL_CEILING

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "servers.jsonl"
DOCS = ROOT / "docs" / "benchmarks.md"
IMG = ROOT / "docs" / "img"
# The section of docs/benchmarks.md this module writes (write_section's default name).
SECTION = "servers"
MARK_START = f"<!-- {SECTION}:start -->"
MARK_END = f"<!-- {SECTION}:end -->"
MB = 1024.0

GP = "gp-gevent"
GP_NGINX = "gp-nginx"
SYNC_NGINX = "sync-nginx"  # gunicorn sync behind the same nginx config
P99_TARGET = 1.1  # issue 23: greenpool's p99 at most this times gunicorn sync's, in each topology
# greenpool's ENGINE under another server (bench/stacks.py): greenpool-backed, but not
# greenpool-serve. The targets do not count them among the "other" stacks; they get
# informational rows, and their plot lines are solid like greenpool-serve's, thinner.
GP_FIELD = ("gevent-greenpool", "uwsgi-gevent-greenpool")
# Colours of their own (tab20 would give them its greys, by their place in the list).
FIELD_COLORS = {"gevent-greenpool": "#1b9e77", "uwsgi-gevent-greenpool": "#7570b3"}
# greenpool-serve gevent with its pool sized for slow queries (series "slow-pool"), and the
# stack whose pools may open as many connections: the pair of the equal-budget table.
GP_POOL20 = "gp-gevent-pool20"
DBPOOL = "gevent-dbpool"
SLOW_BUDGET_PNG = "servers-slow-budget.png"
# /slow is /slow?s=0.05: a request holds its server connection for SELECT SLEEP(0.05).
SLOW_QUERY_S = 0.05


def greenpool_backed(key: str) -> bool:
    return key.startswith("gp-") or key in GP_FIELD


def load(path: Path, run: str | None) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if run is None:
        full = [r["run"] for r in rows if r.get("type") == "meta" and not r.get("quick")]
        if not full:
            raise SystemExit(f"{path}: no full run found (pass --run RUN_ID for a quick one)")
        run = full[-1]
    picked = [r for r in rows if r.get("run") == run]
    if not picked:
        raise SystemExit(f"{path}: no lines of run {run}")
    return picked


# -- helpers ----------------------------------------------------------------------------


def fmt(value: Any, digits: int = 1, dash: str = "—") -> str:
    if value is None:
        return dash
    if isinstance(value, float):
        if value >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def errors_of(cell: dict[str, Any]) -> int:
    w = cell.get("wrk") or {}
    return int((w.get("non2xx") or 0) + (w.get("timeouts") or 0) + (w.get("socket_errors") or 0))


def completed(cell: dict[str, Any]) -> bool:
    return bool((cell.get("wrk") or {}).get("requests"))


def clean(cell: dict[str, Any] | None) -> bool:
    return bool(cell) and not cell.get("failed") and completed(cell) and errors_of(cell) == 0


def merge_rounds(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell measured in several rounds, as one record: the round with the median
    rate stands for the cell (its latencies, connections, RSS), with the median rate,
    p99 and CPU per request of all rounds, and every round's errors added up (a cell is
    clean only if every round was)."""
    if len(recs) == 1:
        return recs[0]
    done = [r for r in recs if not r.get("failed") and completed(r)]
    if not done:
        return recs[0]
    done.sort(key=lambda r: r["wrk"]["rps"])
    merged = dict(done[(len(done) - 1) // 2])
    w = dict(merged["wrk"])
    w["rps"] = statistics.median(r["wrk"]["rps"] for r in done)
    w["p99_ms"] = statistics.median(r["wrk"]["p99_ms"] for r in done)
    for k in ("non2xx", "timeouts", "socket_errors"):
        w[k] = sum((r.get("wrk") or {}).get(k) or 0 for r in recs)
    merged["wrk"] = w
    cpus = [(r.get("cpu") or {}).get("stack_us_per_request") for r in done]
    if all(cpus):
        merged["cpu"] = {**(merged.get("cpu") or {}), "stack_us_per_request": statistics.median(cpus)}
    conns = dict(merged.get("connections") or {})
    for k in ("peak_ours", "peak_ours_warmup", "new"):
        values = [(r.get("connections") or {}).get(k) for r in recs]
        if all(v is not None for v in values):
            conns[k] = max(values) if k.startswith("peak") else sum(values)
    for k in ("excess_run", "excess_warmup"):  # whose connections, in the round with the most
        seen = [(r.get("connections") or {}).get(k) for r in recs]
        conns[k] = max((e for e in seen if e), key=lambda e: e["ours"], default=None)
    merged["connections"] = conns
    merged["rounds"] = [{"rps": r["wrk"]["rps"], "p99_ms": r["wrk"]["p99_ms"]} for r in done]
    merged["failed_rounds"] = len(recs) - len(done)
    return merged


class Run:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.meta = next(r for r in rows if r["type"] == "meta")
        self.end = next((r for r in rows if r["type"] == "end"), {})
        self.cells = [r for r in rows if r["type"] == "cell"]
        rounds: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
        for c in self.cells:
            rounds.setdefault((c["stack"], c["path"], c["clients"]), []).append(c)
        self.by = {key: merge_rounds(recs) for key, recs in rounds.items()}
        self.rounds = max((len(v) for v in rounds.values()), default=1)
        self.stacks = self.meta["stacks"]
        self.labels = {s["key"]: s["label"] for s in self.stacks}
        self.reference = self.meta["reference"]
        self.paths = [p for p in self.meta["plan"]["paths"]]
        self.concurrency = list(self.meta["plan"]["concurrency"])
        self.cannot = [r for r in rows if r["type"] == "cannot_serve"]
        self.slow = [r for r in rows if r["type"] == "slow_mixed"]
        self.memories = [r for r in rows if r["type"] == "memory_match"]
        self.study = [r for r in rows if r["type"] == "latency_study"]

    def cell(self, stack: str, path: str, clients: int) -> dict[str, Any] | None:
        return self.by.get((stack, path, clients))

    def rps(self, stack: str, path: str, clients: int) -> float | None:
        c = self.cell(stack, path, clients)
        if not c or c.get("failed"):
            return None
        return (c.get("wrk") or {}).get("rps")

    def ratio(self, stack: str, path: str, clients: int) -> float | None:
        mine, ref = self.rps(stack, path, clients), self.rps(self.reference, path, clients)
        if mine is None or not ref:
            return None
        return mine / ref

    def cpu(self, stack: str, path: str, clients: int) -> float | None:
        c = self.cell(stack, path, clients)
        if not c or c.get("failed") or not completed(c):
            return None
        return (c.get("cpu") or {}).get("stack_us_per_request")

    def cpu_ratio(self, stack: str, path: str, clients: int) -> float | None:
        mine, ref = self.cpu(stack, path, clients), self.cpu(self.reference, path, clients)
        if mine is None or not ref:
            return None
        return mine / ref

    def loadavgs(self) -> list[float]:
        return [c["loadavg"][0] for c in self.cells if c.get("loadavg")]


# -- tables -------------------------------------------------------------------------------


def stacks_table(run: Run) -> list[str]:
    out = ["| key | stack | series | settings |", "|---|---|---|---|"]
    for s in run.stacks:
        note = f" *{s['note']}*" if s.get("note") else ""
        out.append(f"| `{s['key']}` | {s['label']} | {s['series']} | {s['settings']}{note} |")
    return out


# How a row of a series other than "default" is marked in the tables.
SERIES_MARK = {"tuned": " *(tuned)*", "slow-pool": " *(pool sized for slow queries)*"}


def path_table(run: Run, path: str) -> list[str]:
    head = (
        "| stack | clients | req/s | × ref | p50 ms | p99 ms | wrk mean×rate/clients | errors (non-2xx / timeouts / socket) "
        "| peak server conns (bound) | new conns per 1k req | stack CPU ms/req | CPU × ref | RSS per worker MB |"
    )
    out = [head, "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for s in run.stacks:
        key = s["key"]
        for clients in run.concurrency:
            c = run.cell(key, path, clients)
            if c is None:
                continue
            label = run.labels[key] + SERIES_MARK.get(s["series"], "")
            if c.get("failed"):
                out.append(f"| {label} | {clients} | failed: {c['failed'][:120]} ||||||||||")
                continue
            w = c.get("wrk") or {}
            conns = c.get("connections") or {}
            ratio = run.ratio(key, path, clients)
            done = completed(c)
            p50 = fmt(w.get("p50_ms")) if done else "—"
            p99 = fmt(w.get("p99_ms")) if done else "— (none completed)"
            errs = f"{w.get('non2xx', 0)} / {w.get('timeouts', 0)} / {w.get('socket_errors', 0)}"
            if not done:
                errs = f"**nothing answered in {w.get('duration_s', 0):.0f} s**"
            if errors_of(c):
                errs = f"**{errs}**"
                top = (c.get("log_errors") or [{}])[0].get("line")
                if top:
                    errs += f" ({_short(top)})"
            bound = conns.get("bound")
            peak = conns.get("peak_ours")
            peak_s = f"{peak}" + (f" ({bound})" if bound else "")
            if bound and peak is not None and peak > bound:
                peak_s = f"**{peak_s}**"
            cpu = (c.get("cpu") or {}).get("stack_us_per_request")
            cpu_ratio = run.cpu_ratio(key, path, clients)
            rss = c.get("rss_worker_mean_kb")
            out.append(
                f"| {label} | {clients} | {fmt(w.get('rps'))} | {fmt(ratio, 2)} | {p50} | {p99} | "
                f"{fmt(w.get('little_ratio'), 2) if done else '—'} | {errs} | {peak_s} | {fmt(conns.get('new_per_1000'), 1)} | "
                f"{fmt(cpu / 1000 if cpu else None, 2)} | {fmt(cpu_ratio, 2)} | {fmt(rss / MB if rss else None, 0)} |"
            )
    return out


def _short(line: str) -> str:
    line = line.replace("|", "/").replace("Internal Server Error: ", "")
    for marker in ("OperationalError: ", "Exception: ", "Error: "):
        if marker in line:
            line = line.split(marker, 1)[1]
            break
    return line[:90]


def memory_label(run: Run, m: dict[str, Any]) -> str:
    """The greenpool stack a memory_match record measured, as the docs name it."""
    return m.get("greenpool_label") or run.labels.get(m["greenpool_stack"], m["greenpool_stack"])


def excess_owners(run: Run, key: str, conc: list[int]) -> str:
    """Whose were the account's connections at the highest sample above the bound
    (bench.run's Monitor records them), as text to append; empty when not recorded."""
    seen = [
        (c.get("connections") or {}).get(k)
        for p in run.paths
        for cc in conc
        for c in [run.cell(key, p, cc)]
        if c
        for k in ("excess_run", "excess_warmup")
    ]
    top = max((e for e in seen if e and "by_owner" in e), key=lambda e: e["ours"], default=None)
    if top is None:
        return ""
    owners = sorted(top["by_owner"].items(), key=lambda kv: -kv[1])
    return f" (at that sample, {top['ours']} by owner: " + ", ".join(f"{n} {who}" for who, n in owners) + ")"


def targets(run: Run) -> tuple[list[str], list[dict[str, Any]]]:
    """The targets of issue 6, measured; one row per target."""
    rows: list[dict[str, Any]] = []
    conc = run.concurrency
    # The stacks users run today: neither greenpool-serve nor greenpool's ENGINE elsewhere.
    others = [s["key"] for s in run.stacks if not greenpool_backed(s["key"]) and s["key"] != "bare"]

    for key in (GP,):
        if not any(run.cell(key, "/read", c) for c in conc):
            continue
        who = run.labels.get(key, key)
        # 1. ORM read path vs the best clean stack, per concurrency.
        worst, detail, ok = None, [], True
        for c in conc:
            mine = run.rps(key, "/read", c)
            best_key, best = best_other(run, others, "/read", c)
            if mine is None or not best:
                continue
            r = mine / best
            ok &= r >= 1.0
            worst = r if worst is None else min(worst, r)
            detail.append(f"{c}: {r:.2f}x {best_key}")
        rows.append(
            {
                "target": "ORM read (/read) ≥ 1.0x the best other stack with zero errors, every concurrency",
                "stack": who,
                "measured": "; ".join(detail),
                "met": ok and worst is not None,
            }
        )
        detail, ok, any_row = [], True, False
        for c in conc:
            ref = run.cell("gevent-persist", "/read", c)
            mine = run.rps(key, "/read", c)
            if not clean(ref) or mine is None:
                detail.append(f"{c}: gevent CONN_MAX_AGE=None had errors")
                continue
            any_row = True
            r = mine / ref["wrk"]["rps"]
            ok &= r >= 0.97
            detail.append(f"{c}: {r:.2f}x")
        rows.append(
            {
                "target": "/read ≥ 0.97x gunicorn gevent CONN_MAX_AGE=None where it had no errors",
                "stack": who,
                "measured": "; ".join(detail),
                "met": ok if any_row else None,
            }
        )
        detail, ok, any_row = [], True, False
        for ref_key in ("gevent-persist+tuned", "gevent-persist"):
            for c in conc:
                mine, ref = run.cpu(key, "/read", c), run.cpu(ref_key, "/read", c)
                ref_cell = run.cell(ref_key, "/read", c)
                if mine is None or ref is None or not clean(ref_cell):
                    continue
                any_row = True
                ok &= mine / ref <= 1.03
                detail.append(f"{c} vs {ref_key}: {mine / ref:.2f}x")
            if any_row:
                break
        rows.append(
            {
                "target": "same, as CPU per request (less noisy here): ≤ 1.03x gunicorn gevent CONN_MAX_AGE=None's "
                "(tuned, else default) where it had no errors",
                "stack": who,
                "measured": "; ".join(detail) or "no clean row",
                "met": ok if any_row else None,
            }
        )
        # 2. Flat curve.
        lo, hi = run.rps(key, "/read", min(conc)), run.rps(key, "/read", max(conc))
        if lo and hi is not None:
            rows.append(
                {
                    "target": f"flat curve: /read at {max(conc)} clients ≥ 90% of the rate at {min(conc)}",
                    "stack": who,
                    "measured": f"{hi / lo:.1%}",
                    "met": hi / lo >= 0.9,
                }
            )
        # 3. Tails, in each topology: directly, and behind the same nginx config.
        for mine_key, ref_key, where in ((key, run.reference, "directly"), (GP_NGINX, SYNC_NGINX, "behind nginx")):
            detail, ok = [], True
            for c in [x for x in conc if x >= 100]:
                mine, ref = run.cell(mine_key, "/read", c), run.cell(ref_key, "/read", c)
                if not mine or not ref or not completed(mine) or not completed(ref):
                    continue
                a, b = mine["wrk"]["p99_ms"], ref["wrk"]["p99_ms"]
                ok &= a <= P99_TARGET * b
                detail.append(f"{c}: {a:.0f} vs {b:.0f} ms ({a / b:.2f}x)")
            if detail or where == "directly":
                rows.append(
                    {
                        "target": f"/read p99 at 100 and 500 clients ≤ {P99_TARGET}x gunicorn sync "
                        f"CONN_MAX_AGE=None's, {where} (wrk)",
                        "stack": run.labels.get(mine_key, mine_key),
                        "measured": "; ".join(detail),
                        "met": ok if detail else None,
                    }
                )
        errs = sum(errors_of(run.cell(key, p, c)) for p in run.paths for c in conc if run.cell(key, p, c))
        rows.append(
            {
                "target": "zero errors, zero wrk timeouts (every path and concurrency)",
                "stack": who,
                "measured": f"{errs} errors",
                "met": errs == 0,
            }
        )
        # 4. Connections.
        new = [
            run.cell(key, p, c)["connections"]["new"]
            for p in run.paths
            for c in conc
            if run.cell(key, p, c) and not run.cell(key, p, c).get("failed")
        ]
        peaks = [
            (run.cell(key, p, c)["connections"]["peak_ours"], run.cell(key, p, c)["connections"]["peak_ours_warmup"])
            for p in run.paths
            for c in conc
            if run.cell(key, p, c) and not run.cell(key, p, c).get("failed")
        ]
        bound = next((s["bound"] for s in run.stacks if s["key"] == key), None)
        rows.append(
            {
                "target": "0 new server connections per 1,000 requests after warm-up",
                "stack": who,
                "measured": f"{sum(new)} new connections in all measured runs together",
                "met": sum(new) == 0,
            }
        )
        top = max((max(a, b) for a, b in peaks), default=None)
        # PROCESSLIST counts every connection of the benchmark account; when it shows more
        # than the bound while the stack made no connect, read the stack's own pools.
        own = [
            ((c.get("greenpool") or {}).get("pool") or {}).get("pool_size")
            for c in (run.cell(key, p, cc) for p in run.paths for cc in conc)
            if c and not c.get("failed")
        ]
        own = [x for x in own if x is not None]
        if own and top is not None and bound is not None and top > bound and sum(new) == 0:
            rows.append(
                {
                    "target": "never more server connections than workers x max_size",
                    "stack": who,
                    "measured": f"pools' size after each run at most {max(own)} (bound {bound}) and no connect during any "
                    f"measured run; PROCESSLIST peak {top} counted connections of the account that "
                    f"this stack did not make{excess_owners(run, key, conc)}",
                    "met": max(own) <= bound,
                }
            )
        else:
            rows.append(
                {
                    "target": "never more server connections than workers x max_size",
                    "stack": who,
                    "measured": f"peak {top} (bound {bound}), warm-ups included",
                    "met": top is not None and bound is not None and top <= bound,
                }
            )
    rows += field_rows(run, others)
    # 5. Slow path and memory. Shares against a threshold get one decimal: a
    # rounded "90%" next to "not met" reads as a contradiction.
    for rec in run.slow:
        who = rec.get("label", rec["stack"])
        if "slow_rps" not in rec:
            continue
        if "slow_alone_rps" in rec:
            rows.append(
                {
                    "target": f"/slow at {rec['slow_clients']} clients within 10% of workers x max_size / 0.05 s "
                    f"= {rec['target_rps']:.0f} req/s (alone)",
                    "stack": who,
                    "measured": f"{rec['slow_alone_rps']:.0f} req/s ({rec['slow_alone_vs_target']:.1%})",
                    "met": rec["slow_alone_vs_target"] >= 0.9,
                }
            )
        rows.append(
            {
                "target": "same, while /hello runs on the same workers",
                "stack": who,
                "measured": f"{rec['slow_rps']:.0f} req/s ({rec['slow_vs_target']:.1%})",
                "met": rec["slow_vs_target"] >= 0.9,
            }
        )
        rows.append(
            {
                "target": "/hello on the same workers keeps ≥ 80% of its unloaded rate",
                "stack": who,
                "measured": f"{rec['hello_mixed_rps']:.0f} of {rec['hello_alone_rps']:.0f} req/s "
                f"({rec['hello_kept']:.1%})",
                "met": rec["hello_kept"] >= 0.8,
            }
        )
    for m in run.memories:
        if not m.get("rss_ratio"):
            continue
        rows.append(
            {
                "target": "memory for that /slow throughput: gunicorn sync worker RSS ≥ 5x greenpool's",
                "stack": memory_label(run, m),
                "measured": f"{m['rss_ratio']:.1f}x ({m['sync_workers']} sync workers, "
                f"{m['sync_worker_rss_kb_total'] / MB:.0f} MB for {m['sync_slow_rps']:.0f} req/s; "
                f"greenpool 2 workers, {m['greenpool_worker_rss_kb_total'] / MB:.0f} MB for "
                f"{m['greenpool_slow_rps']:.0f} req/s)",
                "met": m["rss_ratio"] >= 5,
            }
        )
    # 6. Tornado.
    detail, ok = [], True
    for c in conc:
        mine, ref = run.rps("gp-tornado", "/read", c), run.rps("tornado-stock", "/read", c)
        if mine is None or not ref:
            continue
        ok &= mine / ref >= 1.0
        detail.append(f"{c}: {mine / ref:.2f}x")
    if detail:
        rows.append(
            {
                "target": "greenpool-serve tornado /read ≥ 1.0x Tornado's WSGIContainer + executor, CONN_MAX_AGE=None",
                "stack": run.labels.get("gp-tornado", "gp-tornado"),
                "measured": "; ".join(detail),
                "met": ok,
            }
        )
    out = ["| target | greenpool | measured | |", "|---|---|---|---|"]
    for r in rows:
        verdict = "informational" if r.get("info") else {True: "**met**", False: "**not met**", None: "n/a"}[r["met"]]
        out.append(f"| {r['target']} | {r['stack']} | {r['measured']} | {verdict} |")
    return out, rows


def best_other(run: Run, others: list[str], path: str, clients: int) -> tuple[str | None, float]:
    """The fastest of ``others`` in that cell among those with zero errors: (key, req/s)."""
    best_key, best = None, 0.0
    for other in others:
        cell = run.cell(other, path, clients)
        if clean(cell) and cell["wrk"]["rps"] > best:
            best_key, best = other, cell["wrk"]["rps"]
    return best_key, best


def ratios_to(measure: Any, key: str, ref: str, conc: list[int]) -> str:
    """``measure(stack, "/read", clients)`` of ``key`` over ``ref``'s, per concurrency."""
    detail = []
    for c in conc:
        mine, theirs = measure(key, "/read", c), measure(ref, "/read", c)
        if mine is not None and theirs:
            detail.append(f"{c}: {mine / theirs:.2f}x")
    return "; ".join(detail) or "—"


def field_rows(run: Run, others: list[str]) -> list[dict[str, Any]]:
    """greenpool's ENGINE under gunicorn gevent and uWSGI: the same measures as
    greenpool-serve's targets, as information (no target of issue 6 is theirs)."""
    rows: list[dict[str, Any]] = []
    conc = run.concurrency
    for key in GP_FIELD:
        if not any(run.cell(key, "/read", c) for c in conc):
            continue
        who = run.labels.get(key, key)
        detail = []
        for c in conc:
            mine = run.rps(key, "/read", c)
            best_key, best = best_other(run, others, "/read", c)
            if mine is not None and best:
                detail.append(f"{c}: {mine / best:.2f}x {best_key}")
        rows.append(
            {
                "target": "/read against the best other stack with zero errors",
                "stack": who,
                "measured": "; ".join(detail) or "—",
            }
        )
        gp_label = run.labels.get(GP, GP)
        for target, measure in (
            (f"/read against {gp_label} (the same pool under greenpool-serve)", run.rps),
            (f"/read CPU per request against {gp_label}'s", run.cpu),
        ):
            rows.append({"target": target, "stack": who, "measured": ratios_to(measure, key, GP, conc)})
        measured = [c for c in (run.cell(key, p, cc) for p in run.paths for cc in conc) if c and not c.get("failed")]
        errs = sum(errors_of(c) for c in measured)
        new = sum((c.get("connections") or {}).get("new") or 0 for c in measured)
        peaks = [
            max(
                (c.get("connections") or {}).get("peak_ours") or 0,
                (c.get("connections") or {}).get("peak_ours_warmup") or 0,
            )
            for c in measured
        ]
        bound = next((s["bound"] for s in run.stacks if s["key"] == key), None)
        rows.append(
            {
                "target": "errors; server connections: peak against workers x max_size, new ones during measured runs",
                "stack": who,
                "measured": f"{errs} errors; peak {max(peaks, default=None)} (bound {bound}), warm-ups included; "
                f"{new} new connections in all measured runs together",
            }
        )
    for row in rows:
        row.update(met=None, info=True)
    return rows


def budget_of(run: Run, key: str) -> tuple[int | None, str]:
    """The most server connections a stack may hold, and what says so: greenpool's bound
    (workers x max_size, from the run's meta), django-db-connection-pool's ceiling
    (workers x (pool_size + max_overflow) of its defaults), else none."""
    bound = next((s.get("bound") for s in run.stacks if s["key"] == key), None)
    if bound:
        return bound, "bound"
    if key == DBPOOL:
        return DBPOOL_CEILING, "pool ceiling"
    return None, "no bound"


def budget_text(run: Run, key: str) -> str:
    n, what = budget_of(run, key)
    return f"{what} {n}" if n else what


def slow_budget_keys(run: Run) -> list[str]:
    """The stacks with /slow cells: greenpool with max_size 20, django-db-connection-pool
    (the same budget) and greenpool's default row first, then the others as the run lists them."""
    keys = [s["key"] for s in run.stacks if any(run.cell(s["key"], "/slow", c) for c in run.concurrency)]
    first = [k for k in (GP_POOL20, DBPOOL, GP) if k in keys]
    return first + [k for k in keys if k not in first]


def slow_budget_table(run: Run) -> list[str]:
    series = {s["key"]: s["series"] for s in run.stacks}
    out = [
        "| clients | stack | server connections it may hold | peak server conns | req/s | req/s per server connection "
        "| errors (non-2xx / timeouts / socket) |",
        "|---:|---|---|---:|---:|---:|---|",
    ]
    for c in run.concurrency:
        for key in slow_budget_keys(run):
            cell = run.cell(key, "/slow", c)
            if cell is None:
                continue
            label = run.labels.get(key, key) + SERIES_MARK.get(series.get(key, ""), "")
            if cell.get("failed"):
                out.append(f"| {c} | {label} | {budget_text(run, key)} | failed: {cell['failed'][:100]} ||||")
                continue
            w = cell.get("wrk") or {}
            peak = (cell.get("connections") or {}).get("peak_ours")
            rate = w.get("rps") if completed(cell) else None
            errs = f"{w.get('non2xx', 0)} / {w.get('timeouts', 0)} / {w.get('socket_errors', 0)}"
            if not completed(cell):
                errs = f"**nothing answered in {w.get('duration_s', 0):.0f} s**"
            elif errors_of(cell):
                errs = f"**{errs}**"
            per_conn = rate / peak if rate is not None and peak else None
            out.append(
                f"| {c} | {label} | {budget_text(run, key)} | {fmt(peak)} | {fmt(rate)} | {fmt(per_conn, 1)} | {errs} |"
            )
    return out


def slow_budget_findings(run: Run) -> list[str]:
    """The equal-budget pair side by side, and req/s per connection of the featured rows."""
    out: list[str] = []
    conc = run.concurrency

    def rate_peak(key: str, c: int) -> tuple[float | None, int | None]:
        cell = run.cell(key, "/slow", c)
        if not cell or cell.get("failed") or not completed(cell):
            return None, None
        return (cell.get("wrk") or {}).get("rps"), (cell.get("connections") or {}).get("peak_ours")

    pair = []
    for c in conc:
        (a, pa), (b, pb) = rate_peak(GP_POOL20, c), rate_peak(DBPOOL, c)
        if a is not None and b:
            pair.append(
                f"{c} clients {a:.0f} against {b:.0f} req/s ({a / b:.2f}x), at most {pa} against {pb} connections"
            )
    if pair:
        out.append(
            f"- The same budget ({budget_text(run, GP_POOL20)}, {budget_text(run, DBPOOL)}): "
            f"{run.labels.get(GP_POOL20, GP_POOL20)} against {run.labels.get(DBPOOL, DBPOOL)}: " + "; ".join(pair) + "."
        )
    per = []
    for key in (GP_POOL20, DBPOOL, GP):
        values = []
        for c in conc:
            rate, peak = rate_peak(key, c)
            values.append(fmt(rate / peak, 1) if rate is not None and peak else "—")
        if any(v != "—" for v in values):
            per.append(f"{run.labels.get(key, key)} {' / '.join(values)}")
    if per:
        out.append(
            f"- req/s per server connection at {' / '.join(str(c) for c in conc)} clients: " + "; ".join(per) + "."
        )
    return out


def slow_budget_section(run: Run, files: list[str]) -> list[str]:
    """The /slow rows side by side at the connections each stack may hold."""
    if not slow_budget_keys(run):
        return []
    gp_n, _ = budget_of(run, GP)
    pool_n, _ = budget_of(run, GP_POOL20)
    cap = run.meta.get("max_user_connections")
    lines = ["#### /slow at an equal connection budget", ""]
    text = (
        f"On `/slow` every request holds a server connection for `SELECT SLEEP({SLOW_QUERY_S})`, so one connection "
        f"serves at most {1 / SLOW_QUERY_S:.0f} req/s and a stack's rate is set by how many connections it may "
        f"open, not by its server. greenpool's default rows may hold {gp_n or '—'} (2 workers × max_size 5); "
        f"django-db-connection-pool's default POOL_OPTIONS let `{DBPOOL}` open up to {DBPOOL_CEILING} (2 workers × "
        f"(pool_size 10 + max_overflow 10)); Django's own backend under gunicorn gevent opens one per request in "
        f"flight, up to the benchmark account's MAX_USER_CONNECTIONS ({cap}). At an equal budget the comparison "
        f"is greenpool-serve with its pool sized for slow queries (max_size 20: {pool_n or 40} connections, labelled "
        f"so) against `{DBPOOL}`: the table puts them first, then greenpool's default row and the others, "
        f"with each rate divided by the most server connections the stack held in that run."
    )
    if not any(run.cell(GP_POOL20, "/slow", c) for c in run.concurrency):
        text += (
            " This run measured the max_size 20 pool only in the slow-query experiment below (200 clients), "
            "not in these cells."
        )
    lines += [text, ""]
    lines += slow_budget_table(run)
    lines.append("")
    found = slow_budget_findings(run)
    if found:
        lines += found + [""]
    if SLOW_BUDGET_PNG in files:
        lines += [f"![{SLOW_BUDGET_PNG}](img/{SLOW_BUDGET_PNG})", ""]
    return lines


def cannot_table(run: Run) -> list[str]:
    if not run.cannot:
        return []
    out = ["| stack | path | answer | error in its log |", "|---|---|---|---|"]
    for r in run.cannot:
        err = (r.get("errors") or [{}])[0].get("line", "") or r.get("failed", "")
        out.append(f"| {r['label']} | {r['path']} | {r.get('status')} | `{err.replace('|', '/')[:200]}` |")
    return out


def slow_section(run: Run) -> list[str]:
    out: list[str] = []
    if run.slow:
        out += [
            "| stack | /slow alone req/s | of target | /slow alone p99 ms | /hello alone req/s | "
            "/hello next to /slow req/s | kept | /slow next to /hello req/s | of target | /slow p99 ms | errors | "
            "peak server conns (bound) | worker RSS MB (2 workers) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in run.slow:
            if "slow_rps" not in r:
                out.append(f"| {r['label']} | failed: {r.get('failed', '')[:150]} ||||||||")
                continue
            out.append(
                f"| {r['label']} | {fmt(r.get('slow_alone_rps'))} | "
                f"{r['slow_alone_vs_target']:.0%} | {fmt(r.get('slow_alone_p99_ms'))} | "
                if "slow_alone_rps" in r
                else f"| {r['label']} | — | — | — | "
            )
            out[-1] += (
                f"{fmt(r['hello_alone_rps'])} | {fmt(r['hello_mixed_rps'])} | "
                f"{r['hello_kept']:.0%} | {fmt(r['slow_rps'])} | {r['slow_vs_target']:.0%} | "
                f"{fmt(r['slow_p99_ms'])} | {r['errors']} | {r['peak_connections']} ({r['bound']}) | "
                f"{fmt(r['worker_rss_kb_total'] / MB, 0)} |"
            )
    for m in run.memories:
        out += [
            "",
            "| stack | workers | /slow req/s at 200 clients | worker RSS total MB | per worker MB |",
            "|---|---:|---:|---:|---:|",
        ]
        out.append(
            f"| {memory_label(run, m)} | {m['greenpool_workers']} | {fmt(m['greenpool_slow_rps'])} | "
            f"{fmt(m['greenpool_worker_rss_kb_total'] / MB, 0)} | "
            f"{fmt(m['greenpool_worker_rss_kb_total'] / MB / m['greenpool_workers'], 0)} |"
        )
        for a in m["attempts"]:
            if "wrk" not in a:
                out.append(
                    f"| gunicorn sync, CONN_MAX_AGE=None | {a['workers']} | failed: {a.get('failed', '')[:100]} |||"
                )
                continue
            out.append(
                f"| gunicorn sync, CONN_MAX_AGE=None | {a['workers']} | {fmt(a['wrk']['rps'])} | "
                f"{fmt(a['worker_rss_kb_total'] / MB, 0)} | {fmt(a['worker_rss_kb_total'] / MB / a['workers'], 0)} |"
            )
    return out


def study_section(run: Run) -> list[str]:
    if not run.study:
        return []
    out = [
        "| stack | path | clients | wrk req/s | wrk p50 / p99 ms | wrk mean×rate/clients | paced probe during wrk: p50 / p99 ms (n) "
        "| second client req/s | its raw p50 / p99 ms | its mean×rate/clients | its p99 after wrk's correction | "
        "requests per connection min–max | longest wait between two answers on one connection, ms (median / max) "
        "| requests per worker (whole row) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    # Runs before the scheduler figures were recorded render without their column.
    with_sched = any(r.get("sched") for r in run.study)
    if with_sched:
        out[0] += " workers during wrk, per request: run-queue wait ms / times scheduled in |"
        out[1] += "---:|"
    for r in run.study:
        if r.get("failed"):
            out.append(f"| {r['label']} | {r['path']} | {study_clients(r)} | failed: {r['failed'][:100]} ||||||||||")
            continue
        w, p, c = r.get("wrk") or {}, (r.get("probe_during_wrk") or {}).get("raw") or {}, r.get("client") or {}
        raw, cor = c.get("raw") or {}, c.get("wrk_corrected") or {}
        per, gap = c.get("per_connection_requests") or {}, c.get("max_gap_ms") or {}
        wrk_lat = f"{fmt(w.get('p50_ms'))} / {fmt(w.get('p99_ms'))}" if w.get("requests") else "— (none completed)"
        out.append(
            f"| {r['label']} | {r['path']} | {study_clients(r)} | {fmt(w.get('rps'))} | {wrk_lat} | {_wrk_little(r)} | "
            f"{fmt(p.get('p50_ms'))} / {fmt(p.get('p99_ms'))} ({p.get('n', 0)}) | {fmt(c.get('rps'))} | "
            f"{fmt(raw.get('p50_ms'))} / {fmt(raw.get('p99_ms'))} | {fmt(c.get('little_ratio'), 2)} | "
            f"{fmt(cor.get('p99_ms'))} | {per.get('min', '—')}–{per.get('max', '—')} | "
            f"{fmt(gap.get('median'), 0)} / {fmt(gap.get('max'), 0)} | "
            f"{' / '.join(str(w.get('requests')) for w in (r.get('per_worker') or [])) or '—'} |"
            + (f" {_sched(r)} |" if with_sched else "")
        )
    return out


def _sched(row: dict[str, Any]) -> str:
    """The workers' run-queue wait and scheduling-in count per wrk request, or —."""
    sched, requests = row.get("sched"), (row.get("wrk") or {}).get("requests")
    if not sched or not requests:
        return "—"
    return f"{fmt(sched['runqueue_wait_s'] * 1000 / requests, 2)} / {fmt(sched['scheduled_in'] / requests, 1)}"


def study_clients(row: dict[str, Any]) -> str:
    return f"{row.get('clients', 100)}" + (", busy loop beside it" if row.get("cpu_hog") else "")


def _wrk_p99(row: dict[str, Any]) -> str:
    w = row.get("wrk") or {}
    return fmt(w.get("p99_ms")) if w.get("requests") else "none completed"


def _wrk_little(row: dict[str, Any]) -> str:
    w = row.get("wrk") or {}
    return fmt(w.get("little_ratio"), 2) if w.get("requests") else "—"


def findings(run: Run) -> list[str]:
    """What the measurements say about wrk's tails, with the numbers."""
    out: list[str] = []
    families = {
        "gevent": (
            "gp-gevent",
            GP_POOL20,
            GP_NGINX,
            *GP_FIELD,
            "gevent-cma0",
            "gevent-persist",
            "gevent-dbpool",
            "bare",
        ),
        "threads or sync": ("gp-tornado", "tornado-stock", "tornado-ioloop", "sync-cma0", "sync-persist"),
    }
    for name, keys in families.items():
        ratios = [
            c["wrk"]["little_ratio"]
            for c in run.cells
            if c["stack"] in keys and completed(c) and c["wrk"].get("little_ratio") is not None
        ]
        if ratios:
            above = sum(1 for r in ratios if r > 1.05)
            out.append(
                f"- wrk's mean×rate/clients above 1.05 (impossible for real samples): {above} of {len(ratios)} "
                f"measurements of the {name} stacks (largest {max(ratios):.2f})."
            )
    study = {(r["stack"], r["path"]): r for r in run.study if not r.get("failed") and not r.get("cpu_hog")}
    for key, path in ((GP, "/read"), ("sync-persist", "/read"), ("gevent-persist", "/read"), (GP, "/hello")):
        row = study.get((key, path))
        if not row:
            continue
        c = row.get("client") or {}
        probe = (row.get("probe_during_wrk") or {}).get("raw") or {}
        per = c.get("per_connection_requests") or {}
        out.append(
            f"- {run.labels.get(key, key)}, {path}, 100 clients: p99 by wrk {_wrk_p99(row)} ms (mean×rate/clients "
            f"{_wrk_little(row)}), by the paced probe {fmt(probe.get('p99_ms'))} ms, by the second client "
            f"{fmt((c.get('raw') or {}).get('p99_ms'))} ms raw; requests per connection {per.get('min')}–{per.get('max')}; "
            f"longest wait between two answers on one connection {fmt((c.get('max_gap_ms') or {}).get('max'), 0)} ms."
        )
    rp = study.get(("gp-gevent-reuseport", "/read"))
    if rp and study.get((GP, "/read")):
        split = lambda r: " / ".join(str(w.get("requests")) for w in (r.get("per_worker") or []))  # noqa: E731
        out.append(
            f"- Requests per worker in the /read study row, shared socket: {split(study[(GP, '/read')])}; "
            f"--reuse-port: {split(rp)}."
        )
    out.append(connection_split_finding(study.get((GP, "/read")), rp))
    out += one_worker_findings(run)
    return [line for line in out if line]


def _spread(row: dict[str, Any] | None) -> str:
    """p50 / p99 of the second client's raw latencies and their ratio, or why not."""
    if not row or row.get("failed"):
        return "not measured"
    raw = (row.get("client") or {}).get("raw") or {}
    if not raw.get("p50_ms") or raw.get("p99_ms") is None:
        return "no latencies"
    spread = f"p50 {fmt(raw['p50_ms'])} / p99 {fmt(raw['p99_ms'])} ms ({raw['p99_ms'] / raw['p50_ms']:.1f}x)"
    sched = _sched(row)
    if sched != "—":
        spread += f", workers' run-queue wait / times scheduled in per request {sched}"
    return spread


def connection_split_finding(shared: dict[str, Any] | None, reuse_port: dict[str, Any] | None) -> str:
    """How the second client's keep-alive connections were spread over the
    workers, where a row recorded it: counted midway through its run from
    greenpool-serve stats up to run 0553f0da3eef, by the client itself after."""
    parts = []
    for name, row in (("shared socket", shared), ("--reuse-port", reuse_port)):
        counts = (row or {}).get("client_connections_per_worker")
        if counts:
            part = f"{name} {' / '.join(str(n) for n in counts)}"
            workers = ((row or {}).get("client") or {}).get("per_worker") or []
            if len(workers) > 1:
                part += (
                    f" (its latencies by the worker that answered: p50 "
                    f"{' / '.join(fmt(w['p50_ms']) for w in workers)} ms, p99 "
                    f"{' / '.join(fmt(w['p99_ms']) for w in workers)} ms)"
                )
            parts.append(part)
    if not parts:
        return ""
    return (
        f"- The second client's connections on each worker in its /read run: {'; '.join(parts)} "
        f"(a worker serving more of them makes each wait longer; docs/tuning.md)."
    )


def one_worker_findings(run: Run) -> list[str]:
    """The /read tail with one worker (its own core, then a shared one) against two workers."""
    rows = {(r["stack"], bool(r.get("cpu_hog"))): r for r in run.study if r["path"] == "/read"}
    out = []
    for gp_key, sync_key, hog, what in (
        (GP, "sync-persist", False, "2 workers, 100 clients"),
        ("gp-gevent-w1", "sync-persist-w1", False, "1 worker, 50 clients"),
        ("gp-gevent-w1", "sync-persist-w1", True, "1 worker, 50 clients, a busy loop beside it"),
    ):
        gp, sync = rows.get((gp_key, hog)), rows.get((sync_key, hog))
        if gp or sync:
            out.append(
                f"- /read, {what}, second client's raw latencies: {run.labels.get(GP, GP)} {_spread(gp)}; "
                f"{run.labels.get('sync-persist', 'sync')} {_spread(sync)}."
            )
    return out


# -- plots -----------------------------------------------------------------------------------


def plots(run: Run, img: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    default = [s for s in run.stacks if s["series"] == "default"]
    styles = {}
    markers = "osD^v<>pPXh*"
    cmap = plt.get_cmap("tab20")
    for i, s in enumerate(default):
        # greenpool-serve thick and solid; greenpool's ENGINE under another server solid and
        # thinner (greenpool-backed, another launcher); everything else thin and dashed.
        gp_serve, field = s["key"].startswith("gp-"), s["key"] in GP_FIELD
        styles[s["key"]] = {
            "color": FIELD_COLORS.get(s["key"]) or cmap(i % 20),
            "marker": markers[i % len(markers)],
            "linewidth": 2.6 if gp_serve else 1.7 if field else 1.3,
            "linestyle": "-" if gp_serve or field else "--",
        }
    # Rows of other series are not lines of the main plots; the equal-budget plot shows the
    # pool sized for slow queries, in a style of its own.
    for i, s in enumerate(x for x in run.stacks if x["key"] not in styles):
        styles[s["key"]] = {
            "color": cmap((len(default) + i) % 20),
            "marker": markers[(len(default) + i) % len(markers)],
            "linewidth": 1.3,
            "linestyle": ":",
        }
    if GP_POOL20 in styles:
        styles[GP_POOL20] = {"color": "black", "marker": "*", "markersize": 11, "linewidth": 2.6, "linestyle": "-."}
    files = []

    def figure(metric: str, ylabel: str, name: str, title: str, log: bool) -> None:
        fig, axes = plt.subplots(2, 2, figsize=(13, 9.5))
        for ax, path in zip(axes.flat, ["/hello", "/read", "/tx", "/slow"]):
            for s in default:
                xs, ys = [], []
                for c in run.concurrency:
                    cell = run.cell(s["key"], path, c)
                    if not cell or cell.get("failed"):
                        continue
                    value = metric_of(cell, metric)
                    if value is None:
                        continue
                    xs.append(c)
                    ys.append(value)
                if xs:
                    ax.plot(xs, ys, label=s["label"], **styles[s["key"]])
            if metric == "conns":
                ax.axhline(10, color="black", linewidth=0.8, linestyle=":")
                ax.annotate(
                    "greenpool's bound: 2 workers x max_size 5",
                    xy=(0.02, 10),
                    xycoords=("axes fraction", "data"),
                    xytext=(0, 3),
                    textcoords="offset points",
                    fontsize=8,
                )
                cap = run.meta.get("max_user_connections")
                if cap and path != "/hello":
                    ax.axhline(cap, color="grey", linewidth=0.8, linestyle="-.")
                    ax.annotate(
                        f"the benchmark account's MAX_USER_CONNECTIONS ({cap})",
                        xy=(0.02, cap),
                        xycoords=("axes fraction", "data"),
                        xytext=(0, -10),
                        textcoords="offset points",
                        fontsize=8,
                        color="grey",
                    )
                ax.set_ylim(bottom=0)
            ax.set_title(path)
            ax.set_xscale("log")
            ax.set_xticks(run.concurrency)
            ax.set_xticklabels([str(c) for c in run.concurrency])
            if log:
                ax.set_yscale("log")
            ax.set_xlabel("concurrent clients (wrk connections)")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
        seen: dict[str, Any] = {}
        for ax in axes.flat:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                seen.setdefault(label, handle)
        order = [s["label"] for s in default if s["label"] in seen]
        fig.legend([seen[k] for k in order], order, loc="lower center", ncol=3, fontsize=9, frameon=False)
        fig.suptitle(title, fontsize=12)
        fig.tight_layout(rect=(0, 0.11, 1, 0.96))
        fig.savefig(img / name, dpi=90)
        plt.close(fig)
        files.append(name)

    figure(
        "rps",
        "requests/s (log)",
        "servers-throughput.png",
        f"Throughput vs concurrency (run {run.meta['run']}; 2 workers per stack, 2 cores)",
        True,
    )
    figure(
        "conns",
        "most server connections seen",
        "servers-connections.png",
        f"MySQL connections held by the stack vs concurrency (run {run.meta['run']})",
        False,
    )
    figure(
        "p99",
        "wrk p99 latency, ms (log)",
        "servers-p99.png",
        f"wrk p99 latency vs concurrency (run {run.meta['run']}; see the latency study on how wrk computes it)",
        True,
    )
    if slow_budget_plot(run, img, styles, plt):
        files.append(SLOW_BUDGET_PNG)
    return files


def slow_budget_plot(run: Run, img: Path, styles: dict[str, dict[str, Any]], plt: Any) -> bool:
    """/slow req/s, and req/s per server connection held, vs clients, for every stack with
    /slow cells in this run (a stack or cell the run lacks is left out); False when none."""
    keys = slow_budget_keys(run)
    if not keys:
        return False
    featured = {GP_POOL20, DBPOOL, GP}
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 6.2))
    flagged: list[tuple[int, float, float]] = []  # cells with errors: (clients, req/s, per connection)
    for key in keys:
        xs, rates, per_conn = [], [], []
        for c in run.concurrency:
            cell = run.cell(key, "/slow", c)
            if not cell or cell.get("failed") or not completed(cell):
                continue
            rate = (cell.get("wrk") or {}).get("rps")
            peak = (cell.get("connections") or {}).get("peak_ours")
            if not rate:
                continue
            xs.append(c)
            rates.append(rate)
            per_conn.append(rate / peak if peak else float("nan"))
            if errors_of(cell):
                flagged.append((c, rate, per_conn[-1]))
        if not xs:
            continue
        style = dict(styles.get(key, {}))
        if key not in featured:
            style["alpha"] = 0.45
        label = f"{run.labels.get(key, key)} ({budget_text(run, key)})"
        left.plot(xs, rates, label=label, **style)
        right.plot(xs, per_conn, label=label, **style)
    if flagged:
        mark = {"marker": "x", "color": "red", "markersize": 12, "linestyle": "none", "markeredgewidth": 2}
        left.plot([f[0] for f in flagged], [f[1] for f in flagged], label="a cell with errors (see the table)", **mark)
        right.plot([f[0] for f in flagged], [f[2] for f in flagged], **mark)
    limit = 1 / SLOW_QUERY_S
    right.axhline(limit, color="black", linewidth=0.8, linestyle=":")
    right.annotate(
        f"one connection, {SLOW_QUERY_S * 1000:.0f} ms per request: {limit:.0f} req/s at most",
        xy=(0.02, limit),
        xycoords=("axes fraction", "data"),
        xytext=(0, 3),
        textcoords="offset points",
        fontsize=8,
    )
    for ax, ylabel, title in (
        (left, "requests/s", "/slow req/s"),
        (right, "req/s per server connection (most held in the run)", "/slow req/s per server connection"),
    ):
        ax.set_title(title)
        ax.set_xscale("log")
        ax.set_xticks(run.concurrency)
        ax.set_xticklabels([str(c) for c in run.concurrency])
        ax.set_ylim(bottom=0)
        ax.set_xlabel("concurrent clients (wrk connections)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    right.set_ylim(top=limit * 1.15)
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8.5, frameon=False)
    rows = -(-len(labels) // 2)
    fig.suptitle(
        f"/slow?s=0.05 at the connection budget each stack has (run {run.meta['run']}; 2 workers per stack)",
        fontsize=12,
    )
    fig.tight_layout(rect=(0, min(0.45, 0.035 * rows + 0.02), 1, 0.95))
    fig.savefig(img / SLOW_BUDGET_PNG, dpi=90)
    plt.close(fig)
    return True


def metric_of(cell: dict[str, Any], metric: str) -> float | None:
    w = cell.get("wrk") or {}
    if metric == "rps":
        return w.get("rps") or None
    if metric == "p99":
        return w.get("p99_ms") if w.get("requests") else None
    if metric == "conns":
        return (cell.get("connections") or {}).get("peak_ours")
    return None


# -- the page --------------------------------------------------------------------------------


def section(run: Run, files: list[str]) -> str:
    m = run.meta
    v = m["versions"]
    mach = m["machine"]
    srv = m["server"]
    loads = run.loadavgs()
    lines: list[str] = []
    add = lines.append
    add("## Servers side by side (bench/run.py)")
    add("")
    add(
        "Generated by the command below from `bench/results/servers.jsonl`; do not edit by hand, rerun it "
        "(bench/README.md explains the method)."
    )
    add("")
    add("```")
    add(m["command"])
    add("```")
    add("")
    add(
        f"Run `{m['run']}` at {m['time']}, {run.end.get('elapsed_s', 0) / 60:.0f} min; {mach['nproc']} CPUs "
        f"({mach['cpu_model']}), {mach['mem_gb']} GB; load average (the benchmark's own processes included) "
        f"{m['loadavg_start'][0]:.2f} at start, {run.end.get('loadavg_end', [0])[0]:.2f} at end, "
        f"{min(loads):.2f}–{max(loads):.2f} (median {statistics.median(loads):.2f}) across the measurements. "
        f"Python {v['python']}, Django {v['Django']}, gevent {v['gevent']}, greenlet {v['greenlet']}, PyMySQL "
        f"{v['PyMySQL']}, gunicorn {v['gunicorn']}, Tornado {v['tornado']}, django-db-connection-pool "
        f"{v['django-db-connection-pool']} (SQLAlchemy {v['SQLAlchemy']}), greenpool {v['greenpool']} (git "
        f"{m['git']['commit']}{', uncommitted changes in greenpool/' if m['git']['dirty'] else ''}), {v['wrk']}, "
        f"{v['nginx']}. Server {srv['version']} on {srv['host']} ({srv['thread_handling']}, max_connections "
        f"{srv['max_connections']}, TLS {srv['have_ssl']}), the same server for every stack."
    )
    add("")
    plan = m["plan"]
    add("How each figure was made (details in bench/README.md):")
    add("")
    add(
        f"- Every stack runs the same demo site (greenpool.demo's views, through `bench/django_settings.py`) with "
        f"2 worker processes, from a **fresh start for every measurement**; cells (path × clients) are measured "
        f"stack after stack in an order that rotates from cell to cell, so each ratio compares runs made within "
        f"a minute or two of each other. **× ref** is the stack's req/s over `{run.labels.get(run.reference, run.reference)}` "
        f"in the same cell."
    )
    add(
        f"- Load: `{m['wrk_command']}` after a {plan['warmup']} s warm-up with the same clients (and a wait "
        f"until the stack has finished what the warm-up left queued); {plan['duration']} s measured. "
        f"`/slow` is `/slow?s=0.05`. wrk counts a response of status ≥ 400 as non-2xx; timeouts are requests "
        f"without an answer after {m['wrk_timeout_s']} s. wrk records only the requests answered before the "
        f"run ends: a request that waits longer than the run is neither a latency nor a timeout, so a p99 close "
        f'to {plan["duration"]} s (or "nothing answered") marks a saturated stack, not a bounded tail.'
    )
    add(
        "- **wrk mean×rate/clients** is Little's law's check: for real samples of a closed loop it is at most "
        "1. Above 1, wrk's own coordinated-omission correction has added synthetic samples to its latencies "
        "(see the latency study below): p50/p99 of such rows overstate what any request waited."
    )
    add(
        f"- **peak server conns**: the most connections of the benchmark's MySQL account "
        f"(`{m['mysql_account']}`, used by that stack only) in `information_schema.PROCESSLIST`, polled every 50 ms "
        f"during the measured run (the JSON also has SHOW GLOBAL STATUS Threads_connected minus the other clients' "
        f"baseline). The account has MAX_USER_CONNECTIONS {m['max_user_connections']} so that a stack without a "
        f"bound cannot take the shared server's last connections from the other developers: such a stack fails "
        f"with error 1226 at {m['max_user_connections']} connections where it would otherwise fail with 1040 a "
        f"little later."
    )
    add(
        "- **new conns per 1k req**: connects the stack made during the measured run (counted in each worker "
        "by `bench/connect_counter.py`, so other clients of the server do not count) per 1,000 requests."
    )
    add(
        "- **stack CPU ms/req**: CPU time of all the stack's processes during the measured run over its requests: "
        "less disturbed by the other load on the machine than req/s. **RSS per worker**: VmRSS after the run."
    )
    if run.rounds > 1:
        rs = ", ".join(f"`{k}`" for k in sorted({c["stack"] for c in run.cells if c.get("round")}))
        add(
            f"- **Rounds**: the /read cells of {rs} were measured {run.rounds} times, each round in another order "
            f"and from a fresh start; their rows show the round with the median req/s, with the median req/s, p99 "
            f"and CPU per request of all rounds, and the errors of all rounds added up. Every other cell was "
            f"measured once."
        )
    add(
        "- Default PyMySQL settings for every stack (PyMySQL 1.2 then builds a TLS context on every connect); "
        "rows marked *(tuned)* add `ssl_disabled: True`."
    )
    if any(s["series"] == "slow-pool" and any(c["stack"] == s["key"] for c in run.cells) for s in run.stacks):
        add(
            "- Rows marked *(pool sized for slow queries)* are greenpool-serve with max_size = min_size = 20 "
            "(40 server connections), measured on `/slow` only; they are not lines of the plots below and no "
            "target compares them (see /slow at an equal connection budget)."
        )
    if m.get("nginx", {}).get("source"):
        add(
            f"- nginx: config from {m['nginx']['source']} (`{m['nginx'].get('command', '')}`), run as "
            f"`nginx -p PREFIX -c PREFIX/nginx.conf -g 'daemon off;'` in a temporary prefix."
        )
    add("")
    add("### Stacks")
    add("")
    lines += stacks_table(run)
    add("")
    if run.cannot:
        add("### Stacks that cannot serve a path")
        add("")
        add("Probed with one request each (three tries) instead of a load run:")
        add("")
        lines += cannot_table(run)
        add("")
    add("### Plots")
    add("")
    for name in files:
        if name == SLOW_BUDGET_PNG:
            continue  # shown with its table, under /slow
        add(f"![{name}](img/{name})")
        add("")
    for path in run.paths:
        add(f"### {path}")
        add("")
        lines.extend(path_table(run, path))
        add("")
        if path == "/slow":
            lines.extend(slow_budget_section(run, files))
    add("### Targets (issue 6)")
    add("")
    if run.rounds > 1:
        add(
            f"Read from the /read rows, where the stacks that the targets compare were measured in "
            f"{run.rounds} rounds: medians of the rounds (the rows above show the same medians)."
        )
        add("")
    table, target_rows = targets(run)
    if any(r.get("info") for r in target_rows):
        add(
            "Rows marked *informational* are greenpool's ENGINE under gunicorn gevent and uWSGI: greenpool-backed, "
            'so not among the "other stacks" greenpool-serve is compared with, and no target of issue 6 is theirs; '
            "they show the same measures."
        )
        add("")
    lines.extend(table)
    add("")
    if run.slow or run.memories:
        add("### Slow queries: /slow at 200 clients next to /hello on the same workers")
        add("")
        s0 = run.slow[0] if run.slow else {}
        if s0.get("commands"):
            # Slow rows with different bounds (workers x max_size): some ran a pool sized for the slow queries.
            tuned_pool = (
                "The rows with a larger max_size are the same server with its pool sized for the slow "
                "queries: a tuning, labelled so. "
                if len({r.get("bound") for r in run.slow}) > 1
                else ""
            )
            goals = "; ".join(f"{r.get('label')}: {r.get('target_rps', 0):.0f} req/s" for r in run.slow)
            add(
                f"{s0.get('seconds')} s wrk runs, three rounds (each round: /hello alone, /slow alone, then both at "
                f"once on the same workers); medians. `{s0['commands'][0]}` and `{s0['commands'][1]}`. Target: workers × max_size / 0.05 s = "
                f"{goals}. "
                f"{tuned_pool}Memory: gunicorn sync, CONN_MAX_AGE=None with as many workers "
                f"as it needs for greenpool's /slow rate alone (estimated from its /slow rate at 10 clients, then "
                f"corrected once), the same wrk at 200 clients, worker RSS summed (masters left out on both sides)."
            )
            add("")
        lines.extend(slow_section(run))
        add("")
    if run.study:
        add("### Latency study: how much of the gevent tail is the servers, how much is wrk")
        add("")
        add(
            "Each row: a fresh stack, its clients (100; 50 for one worker), a warm-up; then wrk for the measured "
            "seconds with a *paced probe* "
            "running next to it (2 extra keep-alive connections, one request every ~20 ms each, so a probe request "
            "never queues behind its own: the wait of a request that arrives at the loaded server); then the "
            "*second client* (`bench/client.py closed`, gevent, as many keep-alive connections back to back like wrk) "
            "which keeps every raw latency, and also reports them after the same correction wrk applies. The one-worker "
            "rows give a single worker the share of clients each of two workers has, first with the machine's second "
            "core for wrk and MariaDB, then with a busy loop (`bench.run.cpu_hog`) competing for the CPU as a second "
            "worker would."
        )
        add("")
        lines.extend(study_section(run))
        add("")
        found = findings(run)
        if found:
            add("What the numbers say:")
            add("")
            lines.extend(found)
            add("")
    return "\n".join(lines).rstrip() + "\n"


def write_section(path: Path, body: str, name: str = SECTION) -> None:
    """Replace only the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``
    (append the section when the markers are absent, create the page when it is);
    every bench script that writes to docs/benchmarks.md goes through here."""
    mark_start, mark_end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{mark_start}\n{body.rstrip(chr(10))}\n{mark_end}"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    start, end = text.find(mark_start), text.find(mark_end)
    if start == -1 and end == -1:
        new = text.rstrip("\n") + "\n\n" + block + "\n"
    elif start != -1 and end > start and text.count(mark_start) == 1 and text.count(mark_end) == 1:
        new = text[:start] + block + text[end + len(mark_end) :]
    else:
        raise SystemExit(
            f"{path}: the {mark_start} / {mark_end} markers are unbalanced; fix them by hand, nothing was written"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default=None, help="run id (default: the last full run)")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--docs", default=str(DOCS))
    parser.add_argument("--img", default=None, help="plot directory (default: img/ beside --docs)")
    args = parser.parse_args(argv)
    rows = load(Path(args.results), args.run)
    run = Run(rows)
    run.meta["run"] = rows[0]["run"]
    run.meta.setdefault("time", rows[0].get("time"))
    docs = Path(args.docs)
    files = plots(run, Path(args.img) if args.img else docs.parent / "img")
    write_section(docs, section(run, files))
    print(f"wrote {docs} (run {run.meta['run']}) and {', '.join(files)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
