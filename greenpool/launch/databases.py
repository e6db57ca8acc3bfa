"""A worker's Django databases: every alias's pool opened at boot (so a bad
setting or an unreachable server shows before the worker serves), their stats,
and their closing at exit."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from greenpool import mysql_errors
from greenpool.launch.errors import ExitCode, LaunchError

logger = logging.getLogger("greenpool.launch")


def django_ready() -> bool:
    if "django" not in sys.modules:
        return False
    from django.apps import apps
    from django.conf import settings

    return bool(settings.configured and apps.ready)


def describe_db(settings_dict: dict[str, Any]) -> str:
    return f"{settings_dict.get('USER') or '?'}@{settings_dict.get('HOST') or 'localhost'}:{settings_dict.get('PORT') or 3306}/{settings_dict.get('NAME')}"


#: The least time open_pools gives one alias, once --db-boot-timeout is used up.
_BOOT_WAIT_FLOOR = 0.25


def open_pools(boot_timeout: float, require_db: bool) -> dict[str, str]:
    """Build and open the pool of every alias in settings.DATABASES.

    Touching ``connections[alias]`` validates its OPTIONS (ImproperlyConfigured
    -> CONFIG_ERROR). A pool opens min_size connections and one is checked
    out and back, so an unreachable server shows at boot. A database that
    refuses the login (wrong password, unknown database) or whose host name
    does not resolve is a configuration error (CONFIG_ERROR): waiting will not
    cure it. Returns alias -> "ok" / the reason it is unavailable.
    """
    if not django_ready():
        return {}
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.db import connections

    status: dict[str, str] = {}
    # One deadline for every alias (a short floor each, so that one dead server
    # does not leave the next one no time at all).
    deadline = time.monotonic() + boot_timeout
    for alias in settings.DATABASES:
        try:
            wrapper = connections[alias]
            pool = getattr(wrapper, "pool", None)
        except ImproperlyConfigured as exc:
            raise LaunchError(ExitCode.CONFIG_ERROR, f"DATABASES[{alias!r}] is invalid: {exc}") from None
        if pool is None:
            status[alias] = "not pooled"
            continue
        where = describe_db(wrapper.settings_dict)
        try:
            pool.open(wait=True, timeout=max(deadline - time.monotonic(), _BOOT_WAIT_FLOOR))
            # A checkout proves the server answers, also with min_size=0,
            # where open(wait=True) opens nothing.
            with pool.connection(timeout=max(deadline - time.monotonic(), _BOOT_WAIT_FLOOR)):
                pass
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            permanent = mysql_errors.permanent_connect_error(exc)
            if permanent is not None:
                raise LaunchError(
                    ExitCode.CONFIG_ERROR,
                    f"database {alias!r} ({where}) cannot be used: {permanent}; "
                    f"check DATABASES[{alias!r}] (USER, PASSWORD, NAME, HOST): waiting will not help",
                ) from None
            if require_db:
                raise LaunchError(
                    ExitCode.DATABASE_UNAVAILABLE,
                    f"database {alias!r} ({where}) did not answer within {boot_timeout:g}s at boot: {reason}",
                ) from None
            logger.warning(
                "database %r (%s) unavailable at boot: %s; serving anyway, requests that need it get "
                "503 until it answers (use --require-db to exit instead)",
                alias,
                where,
                reason,
            )
            status[alias] = reason
            continue
        logger.info("pool %r open: %s, min_size=%d max_size=%d", pool.name, where, pool.min_size, pool.max_size)
        status[alias] = "ok"
    return status


def close_pools(timeout: float = 5.0) -> None:
    """Close this process's pools: idle connections say goodbye (COM_QUIT), so
    the server's Aborted_clients does not rise."""
    try:
        from greenpool import registry

        registry.close_all(timeout)
    except Exception as exc:  # at exit: report, do not mask the exit
        logger.warning("closing the pools failed: %s", exc)


def pool_stats() -> dict[str, Any]:
    if "greenpool.registry" not in sys.modules:
        return {}
    from greenpool import registry

    return {alias: pool.get_stats() for alias, pool in registry.pools().items()}
