"""The connection budget, checked once when greenpool-serve starts.

Each database server must hold every pool of every worker of every host:

    this host at most = (workers + 1) x the max_size of every alias on that server
    the fleet         = hosts x this host

The ``+ 1`` is the replacement worker of a rolling restart (HUP, --max-requests), which
boots while the worker it replaces still holds its pool (docs/scaling.md). The first
worker the master starts reads the server's ``max_connections``, the connections in use
and the account's ``max_user_connections``, and this module weighs the fleet against
what is free. Other clients' connections count as in use; the connections this worker
itself holds do not. The other workers of this greenpool-serve boot at the same time and
may hold their first connection already: they count as in use, at most one each.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from greenpool.launch.errors import ExitCode, LaunchError

logger = logging.getLogger("greenpool.launch")


@dataclass(frozen=True)
class ServerCounts:
    """What one server said, read over one of the pool's own connections."""

    max_connections: int
    connected: int
    #: The account's limit (the session value of max_user_connections); 0: none.
    user_limit: int
    #: Connections of the same user name (PROCESSLIST shows a user without the PROCESS
    #: privilege only its own, which is what the limit counts).
    user_connected: int


def read_counts(conn: Any) -> ServerCounts:
    """The counters, read over a PyMySQL connection (two statements; MySQL 8 has no
    information_schema.GLOBAL_STATUS, so the status comes from SHOW)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT @@GLOBAL.max_connections, @@SESSION.max_user_connections,"
            " (SELECT COUNT(*) FROM information_schema.PROCESSLIST"
            "  WHERE USER = SUBSTRING_INDEX(CURRENT_USER(), '@', 1))"
        )
        max_connections, user_limit, user_connected = cur.fetchone()
        cur.execute("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
        connected = cur.fetchone()[1]
    return ServerCounts(int(max_connections), int(connected), int(user_limit or 0), int(user_connected))


@dataclass(frozen=True)
class Budget:
    """The verdict for one server, and the sentence that says it."""

    server: str
    aliases: tuple[str, ...]
    max_size: int
    workers: int
    hosts: int
    share: float
    counts: ServerCounts
    #: Connections to this server that the checking worker holds itself.
    own: int

    @property
    def this_host(self) -> int:
        return (self.workers + 1) * self.max_size

    @property
    def fleet(self) -> int:
        return self.hosts * self.this_host

    @property
    def free(self) -> int:
        """Connections the server (and the account's limit, where set) can still give."""
        free = self.counts.max_connections - (self.counts.connected - self.own)
        if self.counts.user_limit:
            free = min(free, self.counts.user_limit - (self.counts.user_connected - self.own))
        return max(free, 0)

    @property
    def over(self) -> bool:
        return self.fleet > self.share * self.free

    def describe(self) -> str:
        counts = self.counts
        fleet = f"{self.hosts} hosts take {self.fleet}" if self.hosts > 1 else "1 host (--hosts)"
        user = (
            f", max_user_connections {counts.user_limit} with {counts.user_connected - self.own} in use"
            if counts.user_limit
            else ""
        )
        share = f"{100 * self.fleet / self.free:.0f}% of what is free" if self.free else "more than is free"
        return (
            f"connection budget of {self.server} ({', '.join(self.aliases)}): this host takes at most "
            f"{self.this_host} = ({self.workers} workers + 1) x max_size {self.max_size}; {fleet}; "
            f"the server has max_connections {counts.max_connections} with {counts.connected - self.own} in use"
            f"{user}, so {self.free} free: {self.fleet} is {share} (the limit is "
            f"{100 * self.share:g}%, --connection-budget)"
        )


def assess(
    server: str, aliases: list[str], max_size: int, settings: dict[str, Any], counts: ServerCounts, own: int
) -> Budget:
    """The budget of one server for the pools of ``aliases`` (their max_size summed)."""
    return Budget(
        server,
        tuple(aliases),
        max_size,
        int(settings["workers"]),
        int(settings["hosts"]),
        float(settings["connection_budget"]),
        counts,
        own,
    )


def check(settings: dict[str, Any]) -> list[Budget]:
    """Weigh every server that Django's pooled aliases use (their pools already open).

    Logs each budget (a warning when it is over); with --strict-connection-budget, a
    budget over its limit is a LaunchError (CONFIG_ERROR) naming the numbers.
    """
    from django.conf import settings as django_settings
    from django.db import connections

    by_server: dict[str, list[tuple[str, Any]]] = {}
    for alias in django_settings.DATABASES:
        pool = getattr(connections[alias], "pool", None)
        if pool is None:
            continue
        params = connections[alias].settings_dict
        server = f"{params.get('HOST') or 'localhost'}:{params.get('PORT') or 3306}"
        by_server.setdefault(server, []).append((alias, pool))
    budgets = []
    for server, pools in by_server.items():
        try:
            with pools[0][1].connection(timeout=5.0) as conn:
                counts = read_counts(conn)
        except Exception as exc:  # the server went between open_pools and here: nothing to weigh
            logger.warning("connection budget of %s not checked: %s: %s", server, type(exc).__name__, exc)
            continue
        own = sum(pool.get_stats()["pool_size"] for _, pool in pools)
        budget = assess(
            server, [alias for alias, _ in pools], sum(pool.max_size for _, pool in pools), settings, counts, own
        )
        budgets.append(budget)
        if not budget.over:
            logger.info("%s", budget.describe())
        elif settings["strict_connection_budget"]:
            raise LaunchError(
                ExitCode.CONFIG_ERROR,
                f"{budget.describe()}; refusing to start "
                f"(--strict-connection-budget): lower max_size or --workers, or raise max_connections",
            )
        else:
            logger.warning(
                "%s; lower max_size or --workers, or raise max_connections "
                "(--strict-connection-budget refuses to start instead)",
                budget.describe(),
            )
    return budgets
