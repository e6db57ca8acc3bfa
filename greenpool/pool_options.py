"""The pool's options, each declared once: name, default, rule and help.

``greenpool.Pool`` takes them as keyword arguments: its signature's defaults
come from here, and it checks each value by its rule. The Django backend
(greenpool/backends/mysql/options.py) passes OPTIONS["pool"] through, with a
few defaults and options of its own, and docs/settings.md's table is
generated from both. The hooks (connect, check, reset, ...) are code, not
options, and stay Pool's own parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_seconds(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int_at_least(low: int) -> Callable[[Any], bool]:
    return lambda value: _is_int(value) and value >= low


def _seconds_above(low: float) -> Callable[[Any], bool]:
    return lambda value: _is_seconds(value) and value > low


def _optional_seconds(value: Any) -> bool:
    return value is None or (_is_seconds(value) and value > 0)


@dataclass(frozen=True)
class Option:
    name: str
    default: Any
    rule: Callable[[Any], bool]
    expected: str  # what the rule wants, for the error message
    help: str

    def check(self, value: Any) -> None:
        if not self.rule(value):
            raise ValueError(f"invalid pool option {self.name}={value!r}: expected {self.expected}")


OPTIONS: dict[str, Option] = {
    option.name: option
    for option in (
        Option(
            "min_size",
            0,
            _int_at_least(0),
            "an int >= 0",
            "connections opened when the pool opens and kept through idle periods",
        ),
        Option("max_size", 10, _int_at_least(1), "an int >= 1", "most connections the pool holds"),
        Option(
            "timeout",
            30.0,
            _seconds_above(0),
            "seconds > 0",
            "seconds a checkout waits for a free connection before PoolTimeout",
        ),
        Option(
            "max_waiting",
            0,
            _int_at_least(0),
            "an int >= 0 (0: no limit)",
            "most checkouts waiting at once before TooManyRequests (0: no limit)",
        ),
        Option(
            "max_lifetime",
            3600.0,
            _seconds_above(0),
            "seconds > 0",
            "seconds after which a connection is replaced (5 % jitter)",
        ),
        Option(
            "max_idle",
            600.0,
            _seconds_above(0),
            "seconds > 0",
            "seconds idle after which a connection above min_size is closed",
        ),
        Option(
            "check_window",
            1.0,
            lambda value: _is_seconds(value) and value >= 0,
            "seconds >= 0",
            "with health checks (CONN_HEALTH_CHECKS): skip the checkout ping for a connection used this recently",
        ),
        Option(
            "keepalive",
            None,
            _optional_seconds,
            "None or seconds > 0",
            "ping idle connections unused this long (None: never)",
        ),
        Option(
            "leak_threshold",
            None,
            _optional_seconds,
            "None or seconds > 0",
            "log a connection held longer than this many seconds, with the stack that took it",
        ),
        Option(
            "reconnect_backoff",
            0.1,
            _seconds_above(0),
            "seconds > 0",
            "first wait between failed connects, doubled after each failure",
        ),
        Option(
            "reconnect_backoff_max",
            5.0,
            _seconds_above(0),
            "seconds > 0",
            "longest wait between failed connects of the background refill",
        ),
        Option(
            "metrics",
            True,
            lambda value: isinstance(value, bool),
            "True or False",
            "record the checkout-wait and hold-time histograms of /metrics (docs/observability.md); "
            "False: counters and gauges only",
        ),
    )
}

DEFAULTS: dict[str, Any] = {name: option.default for name, option in OPTIONS.items()}


def validate(values: dict[str, Any]) -> None:
    """Check each option by its rule, then the rules between options; raise
    ValueError naming the option and the value."""
    for name, value in values.items():
        OPTIONS[name].check(value)
    if values["min_size"] > values["max_size"]:
        raise ValueError(
            f"invalid pool option min_size={values['min_size']!r}: expected <= max_size ({values['max_size']})"
        )
    if values["reconnect_backoff_max"] < values["reconnect_backoff"]:
        raise ValueError(
            f"invalid pool option reconnect_backoff_max={values['reconnect_backoff_max']!r}: "
            f"expected >= reconnect_backoff ({values['reconnect_backoff']})"
        )
