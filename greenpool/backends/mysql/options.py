"""OPTIONS["pool"]: parse and validate at start-up, naming the bad key."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured

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
    "keepalive": ("auto", "ping idle connections this often: 'auto' (half of the shortest session @@wait_timeout, at most 120 s), seconds, or False"),
    "leak_threshold": (None, "log a connection held longer than this many seconds, with the stack that took it"),
    "reset_session": (
        "auto",
        "session reset at checkin: 'auto' (only when the session changed), True (always), False (roll back only)",
    ),
    "reply_wait": (
        0.0003,
        "under gevent: seconds to wait for a statement's reply before yielding to the hub, at most 0.01 (0 or False: off)",
    ),
    "name": (None, "pool name in logs and errors (default: the alias)"),
    "metrics": (True, "record the checkout-wait and hold-time histograms of /metrics (docs/observability.md); "
                      "False: counters and gauges only"),
}

#: keepalive 'auto' pings at least this often (seconds): twice within the idle
#: cuts of common load balancers and NATs (4-10 minutes; Azure's default is 4),
#: for those that count only data and not TCP keepalive probes.
KEEPALIVE_AUTO_MAX = 120.0

#: reply_wait blocks the whole worker while it waits: more than this would be
#: a stall, not a wait for a reply on its way.
REPLY_WAIT_MAX = 0.01


# Django builds a DatabaseWrapper per thread, and so per greenlet: per request
# under gevent. Validating builds a throwaway Pool (~23 µs), so each distinct
# setting is validated once per process and the result reused (read-only).
_parsed: dict[tuple[str, str], dict[str, Any]] = {}


def parse_pool_options(alias: str, raw: Any) -> dict[str, Any] | None:
    """Return the full option dict (shared: do not mutate), or None when
    pooling is off."""
    if raw is None or raw is False:
        return None
    key = (alias, repr(raw))
    options = _parsed.get(key)
    if options is None:
        # setdefault: two threads parsing at once end up sharing one dict,
        # so their wrappers agree on the pool (base.py's fingerprint).
        options = _parsed.setdefault(key, _parse(alias, raw))
    return options


def _parse(alias: str, raw: Any) -> dict[str, Any]:
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
    if not (keepalive in ("auto", False, None) or _is_positive_seconds(keepalive)):
        raise ImproperlyConfigured(
            f"DATABASES[{alias!r}]['OPTIONS']['pool']['keepalive']={keepalive!r} is invalid: "
            "expected 'auto', a number of seconds > 0, or False"
        )
    reset = options["reset_session"]
    if not (reset == "auto" or isinstance(reset, bool)):
        raise ImproperlyConfigured(
            f"DATABASES[{alias!r}]['OPTIONS']['pool']['reset_session']={options['reset_session']!r} is invalid: "
            "expected 'auto', True or False"
        )
    reply_wait = options["reply_wait"]
    if not (reply_wait is False or reply_wait == 0 or
            (_is_positive_seconds(reply_wait) and reply_wait <= REPLY_WAIT_MAX)):
        raise ImproperlyConfigured(
            f"DATABASES[{alias!r}]['OPTIONS']['pool']['reply_wait']={reply_wait!r} is invalid: "
            f"expected seconds from 0 to {REPLY_WAIT_MAX} (0.0003 is 300 µs), or False"
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
        "keepalive": keepalive if _is_positive_seconds(keepalive) else None,
        "name": options["name"] or alias,
        "metrics": options["metrics"],
    }


def _is_positive_seconds(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def markdown_reference() -> str:
    """The OPTIONS["pool"] reference for docs/settings.md, from POOL_OPTIONS."""
    lines = [
        "<!-- Generated by `python -m greenpool.backends.mysql.options`; do not edit by hand. -->",
        "",
        "| option | default | what it does |",
        "|---|---|---|",
    ]
    for name, (default, help_text) in POOL_OPTIONS.items():
        lines.append(f"| `{name}` | `{default!r}` | {help_text} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(markdown_reference())
