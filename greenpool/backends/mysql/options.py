"""OPTIONS["pool"]: parse and validate at start-up, naming the bad key."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured

from greenpool.mysql import RESET_MODES
from greenpool.pool import Pool

# name: (default, help). Defaults differ from the bare Pool's where a Django
# site wants something else (see docs/settings.md).
POOL_OPTIONS: dict[str, tuple[Any, str]] = {
    "min_size": (0, "connections opened when the pool opens and kept through idle periods"),
    "max_size": (10, "most connections this process holds for this alias"),
    "timeout": (10.0, "seconds a request waits for a free connection before PoolTimeout"),
    "max_waiting": (0, "most requests waiting at once before TooManyRequests (0: no limit)"),
    "max_lifetime": (3600.0, "seconds after which a connection is replaced (5 % jitter)"),
    "max_idle": (600.0, "seconds idle after which a connection above min_size is closed"),
    "check_window": (1.0, "with CONN_HEALTH_CHECKS: skip the checkout ping if used this recently"),
    "keepalive": ("auto", "ping idle connections this often: 'auto' (half of @@wait_timeout, at most 300 s), seconds, or False"),
    "leak_threshold": (None, "log a connection held longer than this many seconds, with the stack that took it"),
    "reset_session": ("auto", "session reset at checkin: 'auto' (only when the session changed), True (always), False (roll back only)"),
    "name": (None, "pool name in logs and errors (default: the alias)"),
}


def parse_pool_options(alias: str, raw: Any) -> dict[str, Any] | None:
    """Return the full option dict, or None when pooling is off."""
    if raw is None or raw is False:
        return None
    if raw is True:
        raw = {}
    if not isinstance(raw, dict):
        raise ImproperlyConfigured(
            f"DATABASES[{alias!r}]['OPTIONS']['pool'] must be True or a dict of pool options, got {raw!r}"
        )
    unknown = sorted(set(raw) - set(POOL_OPTIONS))
    if unknown:
        raise ImproperlyConfigured(
            f"DATABASES[{alias!r}]['OPTIONS']['pool'] has unknown option(s) {', '.join(unknown)}; "
            f"valid options are: {', '.join(POOL_OPTIONS)}"
        )
    options = {name: raw.get(name, default) for name, (default, _help) in POOL_OPTIONS.items()}
    keepalive = options["keepalive"]
    if not (keepalive in ("auto", False, None) or (isinstance(keepalive, (int, float)) and not isinstance(keepalive, bool) and keepalive > 0)):
        raise ImproperlyConfigured(
            f"DATABASES[{alias!r}]['OPTIONS']['pool']['keepalive']={keepalive!r} is invalid: "
            "expected 'auto', a number of seconds > 0, or False"
        )
    if options["reset_session"] not in RESET_MODES or isinstance(options["reset_session"], int) and not isinstance(options["reset_session"], bool):
        raise ImproperlyConfigured(
            f"DATABASES[{alias!r}]['OPTIONS']['pool']['reset_session']={options['reset_session']!r} is invalid: "
            "expected 'auto', True or False"
        )
    # Let the pool itself validate the rest, so the rules live in one place.
    try:
        Pool(lambda: None, **pool_kwargs(alias, options))
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASES[{alias!r}]['OPTIONS']['pool']: {exc}") from None
    return options


def pool_kwargs(alias: str, options: dict[str, Any]) -> dict[str, Any]:
    """The subset of options that Pool() takes directly."""
    keepalive = options["keepalive"]
    return {
        "min_size": options["min_size"],
        "max_size": options["max_size"],
        "timeout": options["timeout"],
        "max_waiting": options["max_waiting"],
        "max_lifetime": options["max_lifetime"],
        "max_idle": options["max_idle"],
        "check_window": options["check_window"],
        "leak_threshold": options["leak_threshold"],
        "keepalive": keepalive if isinstance(keepalive, (int, float)) and not isinstance(keepalive, bool) else None,
        "name": options["name"] or alias,
    }
