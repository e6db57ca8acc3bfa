"""OPTIONS["pool"]: parse and validate at start-up, naming the bad key."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured

from greenpool import pool_options

#: The backend's defaults where a Django site wants other than the bare Pool's
#: (a request should not wait 30 s for a connection).
BACKEND_DEFAULTS: dict[str, Any] = {"timeout": 10.0}

#: The backend's own options, beyond the pool's: name -> (default, help). Its
#: keepalive replaces the pool's (None or seconds) with 'auto', seconds or False.
BACKEND_OPTIONS: dict[str, tuple[Any, str]] = {
    "keepalive": (
        "auto",
        "ping idle connections this often: 'auto' (half of the shortest session "
        "@@wait_timeout, at most 120 s), seconds, or False",
    ),
    "reset_session": (
        "auto",
        "session reset at checkin: 'auto' (only when the session changed), True (always), False (roll back only)",
    ),
    "reply_wait": (
        0.0003,
        "under gevent: seconds to wait for a statement's reply before yielding to the hub, "
        "at most 0.01 (0 or False: off)",
    ),
    "name": (None, "pool name in logs, errors and /metrics (default: the alias)"),
}

#: Every option OPTIONS["pool"] takes: name -> (default, help), the pool's
#: first (with the backend's defaults), then the backend's own.
POOL_OPTIONS: dict[str, tuple[Any, str]] = {
    **{
        name: (BACKEND_DEFAULTS.get(name, option.default), option.help)
        for name, option in pool_options.OPTIONS.items()
        if name not in BACKEND_OPTIONS
    },
    **BACKEND_OPTIONS,
}

#: keepalive 'auto' pings at least this often (seconds): twice within the idle
#: cuts of common load balancers and NATs (4-10 minutes; Azure's default is 4),
#: for those that count only data and not TCP keepalive probes.
KEEPALIVE_AUTO_MAX = 120.0

#: reply_wait blocks the whole worker while it waits: more than this would be
#: a stall, not a wait for a reply on its way.
REPLY_WAIT_MAX = 0.01


# Django builds a DatabaseWrapper per thread, and so per greenlet: per request
# under gevent. Each distinct setting is parsed once per process and the
# result reused (read-only), which also gives the wrappers of one setting one
# dict, whose identity base.py's pool fingerprint uses.
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
    if not (
        reply_wait is False or reply_wait == 0 or (_is_positive_seconds(reply_wait) and reply_wait <= REPLY_WAIT_MAX)
    ):
        raise ImproperlyConfigured(
            f"DATABASES[{alias!r}]['OPTIONS']['pool']['reply_wait']={reply_wait!r} is invalid: "
            f"expected seconds from 0 to {REPLY_WAIT_MAX} (0.0003 is 300 µs), or False"
        )
    # The pool's rules, from their one declaration.
    try:
        pool_options.validate(
            {name: value for name, value in pool_kwargs(alias, options).items() if name in pool_options.OPTIONS}
        )
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASES[{alias!r}]['OPTIONS']['pool']: {exc}") from None
    return options


def pool_kwargs(alias: str, options: dict[str, Any]) -> dict[str, Any]:
    """What Pool() takes of the options: the pool's own, the keepalive it
    starts with ('auto' is learnt later; False is none) and the name."""
    kwargs = {name: options[name] for name in pool_options.OPTIONS if name not in BACKEND_OPTIONS}
    keepalive = options["keepalive"]
    kwargs["keepalive"] = keepalive if _is_positive_seconds(keepalive) else None
    kwargs["name"] = options["name"] or alias
    return kwargs


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
