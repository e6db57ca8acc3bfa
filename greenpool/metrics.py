"""The pool's numbers as Prometheus series.

Two halves, so that the hot path needs nothing but this module:

* recording, in the process that runs the pools: ``Histogram`` (fixed buckets,
  a few list operations per observation), the checkout-wait histogram each
  ``Pool`` keeps, and ``HOLDS``, the connection hold times by alias and Django
  view (``record_hold``), with the view label set per request by
  ``set_view`` (greenpool.middleware.ViewLabelMiddleware calls it);
* rendering, wherever a scrape is answered: ``snapshot()`` turns this
  process's pools into plain data (JSON for the launcher's stats socket), and
  ``Collector`` turns snapshots of one or more processes into metric
  families of prometheus_client, labelled by worker when there are several.

Names and units follow Prometheus conventions: base units (seconds),
``_total`` for counters.
"""

from __future__ import annotations

import atexit
import contextvars
import json
import logging
import os
import re
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from greenpool import _fork

logger = logging.getLogger("greenpool")

#: Checkout wait: most checkouts wait not at all; a pool at its cap waits up to
#: its timeout (10 s by default in the Django backend).
WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Connection hold, from checkout to checkin: one request's database time and
#: whatever else it did while it held the connection.
HOLD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: A request in greenpool-serve, from its headers read to its response sent.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: Distinct view labels kept per process; later ones count under OTHER_VIEW, so a
#: site with many views (or a bug that labels by path) cannot grow the series
#: without bound.
MAX_VIEWS = 100
OTHER_VIEW = "other"
#: The label of holds outside a resolved Django view (management commands,
#: Celery tasks, a request that failed before its view was found).
NO_VIEW = "none"


class Histogram:
    """Counts per bucket (upper bounds in ``bounds``, plus +Inf) and a sum.

    Not locked: the pool observes under its own lock, and ``HoldHistograms``
    under one of its own."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def snapshot(self) -> dict[str, Any]:
        return {"bounds": list(self.bounds), "counts": list(self.counts), "sum": self.total}


class HoldHistograms:
    """Connection hold seconds by (pool name, view), bounded in views."""

    def __init__(self, bounds: tuple[float, ...] = HOLD_BUCKETS, max_views: int = MAX_VIEWS) -> None:
        self._bounds = bounds
        self._max_views = max_views
        self._by_key: dict[tuple[str, str], Histogram] = {}
        self._views: set[str] = set()
        self._lock = threading.Lock()

    def observe(self, pool: str, view: str, seconds: float) -> None:
        key = (pool, view)
        with self._lock:
            histogram = self._by_key.get(key)
            if histogram is None:
                if view not in self._views:
                    if len(self._views) >= self._max_views:
                        key = (pool, OTHER_VIEW)
                    else:
                        self._views.add(view)
                histogram = self._by_key.get(key)
                if histogram is None:
                    histogram = self._by_key[key] = Histogram(self._bounds)
            histogram.observe(seconds)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"pool": pool, "view": view, **h.snapshot()} for (pool, view), h in sorted(self._by_key.items())]

    def clear(self) -> None:
        with self._lock:
            self._by_key.clear()
            self._views.clear()


HOLDS = HoldHistograms()

# The Django view of the request this greenlet (or thread) serves; contextvars
# are per greenlet under gevent, per thread otherwise.
_current_view: contextvars.ContextVar[str] = contextvars.ContextVar("greenpool_view", default=NO_VIEW)


def set_view(label: str) -> None:
    _current_view.set(label)


def record_hold(pool: str, seconds: float) -> None:
    HOLDS.observe(pool, _current_view.get(), seconds)


# -- snapshots ------------------------------------------------------------------------


# This process's open pools by alias: greenpool.registry installs its pools() here when
# it is imported (before that no pool was asked for). A hook, not an import, because
# the registry builds pools, and pools import this module for their histograms.
pool_source: list[Callable[[], dict[str, Any]]] = []


def snapshot() -> dict[str, Any]:
    """This process's pools and hold histograms, as plain data (JSON-ready)."""
    pools: dict[str, Any] = {}
    for source in pool_source:
        for alias, pool in source().items():
            pools[alias] = {"name": pool.name, "stats": pool.get_stats(), "wait": pool.wait_histogram()}
    return {"pools": pools, "holds": HOLDS.snapshot()}


# -- many processes, one scrape: the spool directory ------------------------------------

#: Set to a directory (the same for every process of a host's gunicorn, uWSGI or
#: Celery workers) to have each process write its snapshot there, so that one
#: scrape (greenpool.django_metrics.metrics_view) shows them all.
SPOOL_ENV = "GREENPOOL_METRICS_DIR"
#: How often each process rewrites its snapshot, in seconds.
SPOOL_INTERVAL = 5.0

_spool_pid = [0]


def spool_file(directory: str, pid: int) -> str:
    return os.path.join(directory, f"greenpool-{pid}.json")


def write_spool(directory: str) -> None:
    """This process's snapshot to its file in ``directory``, atomically."""
    path = spool_file(directory, os.getpid())
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(snapshot(), f)
    os.replace(tmp, path)


def start_spool_writer() -> None:
    """With GREENPOOL_METRICS_DIR set, write this process's snapshot there every
    SPOOL_INTERVAL seconds (a daemon thread, or a greenlet under gevent), and
    once more at exit. Once per process: a forked child starts its own."""
    directory = os.environ.get(SPOOL_ENV)
    if not directory or _spool_pid[0] == _fork.pid():
        return
    _spool_pid[0] = pid = _fork.pid()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    from greenpool import _compat

    def loop() -> None:
        prims = _compat.Primitives(_compat.resolve_mode("auto"))
        while _fork.pid() == pid:  # a gevent greenlet survives fork: the child has its own writer
            try:
                write_spool(directory)
            except OSError as exc:
                logger.warning("metrics: cannot write %s: %s", spool_file(directory, pid), exc)
            prims.sleep(SPOOL_INTERVAL)

    def remove_at_exit() -> None:
        if _fork.pid() == pid:
            try:
                os.unlink(spool_file(directory, pid))
            except FileNotFoundError:
                pass

    atexit.register(remove_at_exit)
    _compat.Primitives(_compat.resolve_mode("auto")).spawn_background(f"greenpool-metrics-spool[{pid}]", loop)


def read_spool(directory: str) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """Every live process's snapshot in ``directory`` ((labels, snapshot) with a
    pid label), this process's read live; files of processes gone are removed."""
    entries: list[tuple[dict[str, str], dict[str, Any]]] = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        names = []
    own = os.getpid()
    for name in names:
        match = _SPOOL_NAME.fullmatch(name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid == own:
            continue
        path = os.path.join(directory, name)
        if not _alive(pid):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            continue
        try:
            with open(path, encoding="utf-8") as f:
                entries.append(({"pid": str(pid)}, json.load(f)))
        except (OSError, ValueError) as exc:  # being replaced, or torn: next scrape
            logger.debug("metrics: skipping %s: %s", path, exc)
    entries.append(({"pid": str(own)}, snapshot()))
    return entries


_SPOOL_NAME = re.compile(r"greenpool-(\d+)\.json")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive, and not ours to judge
        return True
    return True


# -- rendering -----------------------------------------------------------------------

#: Pool gauges: series name -> (stats key, help).
_GAUGES = {
    "greenpool_pool_connections": ("pool_size", "Connections open or being opened"),
    "greenpool_pool_connections_idle": ("pool_available", "Connections idle in the pool"),
    "greenpool_pool_connections_in_use": ("pool_in_use", "Connections checked out"),
    "greenpool_pool_waiting": ("requests_waiting", "Checkouts waiting for a connection"),
    "greenpool_pool_max_connections": ("pool_max", "The pool's max_size"),
    "greenpool_pool_min_connections": ("pool_min", "The pool's min_size"),
}
#: Pool counters: series name without _total -> (stats key, help).
_COUNTERS = {
    "greenpool_pool_checkouts": ("requests_num", "Checkouts served"),
    "greenpool_pool_checkouts_queued": ("requests_queued", "Checkouts that had to wait"),
    "greenpool_pool_timeouts": ("requests_timeouts", "Checkouts that ended in PoolTimeout"),
    "greenpool_pool_too_many_requests": ("requests_errors", "Checkouts refused with TooManyRequests (max_waiting)"),
    "greenpool_pool_connects": ("connections_num", "Connections opened"),
    "greenpool_pool_connect_errors": ("connections_errors", "Connects that failed"),
    "greenpool_pool_connections_lost": ("connections_lost", "Connections found dead at checkout"),
    "greenpool_pool_connections_recycled": ("connections_recycled", "Connections closed for max_lifetime or max_idle"),
    "greenpool_pool_discarded_at_checkin": ("returns_bad", "Connections discarded at checkin"),
    "greenpool_pool_keepalive_pings": ("keepalive_num", "Keepalive pings sent"),
    "greenpool_pool_keepalive_lost": ("keepalive_lost", "Keepalive pings that found a dead connection"),
    "greenpool_pool_leaks_reported": ("leaks_reported", "Connections reported held past leak_threshold"),
}


def cumulative_buckets(data: dict[str, Any]) -> list[tuple[str, float]]:
    """prometheus_client's cumulative (le, count) pairs from per-bucket counts."""
    out, running = [], 0
    for bound, count in zip([*map(_le, data["bounds"]), "+Inf"], data["counts"]):
        running += count
        out.append((bound, running))
    return out


def _le(bound: float) -> str:
    return repr(float(bound))


class Collector:
    """A prometheus_client collector over snapshots.

    ``source()`` returns ``[(labels, snapshot), ...]``: one entry for a single
    process (labels ``{}``), or one per worker (``{"worker": "0"}``).
    ``extra()`` may add families of the caller's own (the launcher's request
    and restart series)."""

    def __init__(self, source: Any, extra: Any = None) -> None:
        self._source = source
        self._extra = extra

    def describe(self) -> list[Any]:
        return []  # unchecked collector: the series depend on what is running

    def collect(self) -> Iterator[Any]:
        yield from families(self._source())
        if self._extra is not None:
            yield from self._extra()


def families(entries: Iterable[tuple[dict[str, str], dict[str, Any]]]) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    entries = list(entries)
    names = sorted({k for labels, _ in entries for k in labels})
    pool_labels = [*names, "alias"]
    gauges = {n: GaugeMetricFamily(n, h, labels=pool_labels) for n, (_, h) in _GAUGES.items()}
    counters = {n: CounterMetricFamily(n, h, labels=pool_labels) for n, (_, h) in _COUNTERS.items()}
    wait = HistogramMetricFamily(
        "greenpool_pool_checkout_wait_seconds",
        HISTOGRAMS["greenpool_pool_checkout_wait_seconds"][1],
        labels=pool_labels,
    )
    hold = HistogramMetricFamily(
        "greenpool_pool_connection_hold_seconds",
        HISTOGRAMS["greenpool_pool_connection_hold_seconds"][1],
        labels=[*names, "pool", "view"],
    )
    for labels, snap in entries:
        values = [labels.get(k, "") for k in names]
        for alias, pool in sorted(snap.get("pools", {}).items()):
            stats = pool["stats"]
            for name, (key, _) in _GAUGES.items():
                gauges[name].add_metric([*values, alias], stats[key])
            for name, (key, _) in _COUNTERS.items():
                counters[name].add_metric([*values, alias], stats[key])
            if pool["wait"] is not None:  # None: the pool's metrics option is off
                wait.add_metric([*values, alias], cumulative_buckets(pool["wait"]), pool["wait"]["sum"])
        for entry in snap.get("holds", []):
            hold.add_metric([*values, entry["pool"], entry["view"]], cumulative_buckets(entry), entry["sum"])
    yield from gauges.values()
    yield from counters.values()
    yield wait
    yield hold


#: The histograms, for the reference: name -> (labels, help).
HISTOGRAMS = {
    "greenpool_pool_checkout_wait_seconds": ("alias", "Time a checkout waited for a connection (0 when one was idle)"),
    "greenpool_pool_connection_hold_seconds": (
        "pool, view",
        "Time a connection was held, from checkout to checkin, by Django view (ViewLabelMiddleware)",
    ),
}


def markdown_reference(launcher_series: Iterable[tuple[str, str, str, str]] = ()) -> str:
    """The series table of docs/observability.md: these, plus ``launcher_series``
    ((name, type, labels, help), greenpool-serve's own)."""
    rows = [(name, "gauge", "alias", help_text) for name, (_key, help_text) in _GAUGES.items()]
    rows += [(f"{name}_total", "counter", "alias", help_text) for name, (_key, help_text) in _COUNTERS.items()]
    rows += [(name, "histogram", labels, help_text) for name, (labels, help_text) in HISTOGRAMS.items()]
    rows += list(launcher_series)
    lines = [
        "<!-- Generated by `python -m greenpool.launch.metrics_server`; do not edit by hand. -->",
        "",
        "| series | type | labels | what it counts |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{name}` | {kind} | {labels} | {help_text} |" for name, kind, labels, help_text in rows]
    return "\n".join(lines) + "\n"


def render(collector: Collector, openmetrics: bool = False) -> tuple[bytes, str]:
    """(body, content type) of one scrape."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.openmetrics import exposition as om

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    if openmetrics:
        return om.generate_latest(registry), om.CONTENT_TYPE_LATEST
    from prometheus_client import CONTENT_TYPE_LATEST

    return generate_latest(registry), CONTENT_TYPE_LATEST
