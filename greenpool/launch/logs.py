"""greenpool-serve's logs: one clock, one time zone, text or JSON.

The master and every worker write to the same log. Django sets the process's
time zone from settings.TIME_ZONE (os.environ["TZ"] and time.tzset()) in each
worker, after logging is set up, so a formatter that uses local time would
stamp the master's lines and the workers' lines in different zones. Every
timestamp here is UTC, written with its offset (ISO 8601,
``2026-12-04T21:57:03.123+00:00``), from the record's own epoch time: nothing
the process does to TZ changes it.

``--log-format json`` writes one JSON object per line (time, level, pid,
worker, logger, message; access lines add remote, method, path, protocol,
status, length and duration_s) for log shippers.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any

#: Logger of the access log (one line per request, written by the workers).
ACCESS_LOGGER = "greenpool.access"
#: Fields an access line carries (logging ``extra``), in the order JSON shows them.
ACCESS_FIELDS = ("remote", "method", "path", "protocol", "status", "length", "duration_s")


def utc_timestamp(created: float) -> str:
    """ISO 8601 in UTC with milliseconds and the explicit offset."""
    moment = datetime.datetime.fromtimestamp(created, datetime.UTC)
    return moment.isoformat(timespec="milliseconds")


def clf_timestamp(created: float) -> str:
    """The access log's Common Log Format time, in UTC: 04/Dec/2026:21:57:03 +0000."""
    moment = datetime.datetime.fromtimestamp(created, datetime.UTC)
    return moment.strftime("%d/%b/%Y:%H:%M:%S %z")


class TextFormatter(logging.Formatter):
    """``[time] [pid tag] [LEVEL] logger: message``, the time in UTC."""

    def __init__(self, tag: str) -> None:
        super().__init__(f"[%(asctime)s] [%(process)d {tag}] [%(levelname)s] %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        return utc_timestamp(record.created)


class AccessTextFormatter(logging.Formatter):
    """Common Log Format, then the duration in seconds and the worker:
    ``127.0.0.1 - - [04/Dec/2026:21:57:03 +0000] "GET /read HTTP/1.1" 200 123 0.004211 0-4242``."""

    def format(self, record: logging.LogRecord) -> str:
        fields = record.__dict__
        length = fields.get("length")
        return (
            f'{fields.get("remote", "-")} - - [{clf_timestamp(record.created)}] "{fields.get("request_line", "")}" '
            f"{fields.get('status', 0)} {length if length is not None else '-'} "
            f"{fields.get('duration_s', 0.0):.6f} {fields.get('worker_id', '-')}"
        )


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the worker is its tag (``master``, ``gevent.0``)."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": utc_timestamp(record.created),
            "level": record.levelname,
            "pid": record.process,
            "worker": self.tag,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ACCESS_FIELDS:
            if name in record.__dict__:
                entry[name] = record.__dict__[name]
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _handler(target: str | None, stream: Any) -> logging.Handler:
    return logging.StreamHandler(stream) if target in (None, "-") else logging.FileHandler(target)


def setup_logging(settings: dict[str, Any], tag: str) -> None:
    """The error log (root logger) and the access log, the same in the master and every worker."""
    as_json = settings.get("log_format") == "json"
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = _handler(settings["error_logfile"], sys.stderr)
    handler.setFormatter(JsonFormatter(tag) if as_json else TextFormatter(tag))
    root.addHandler(handler)
    root.setLevel(getattr(logging, settings["log_level"].upper()))
    access_logger = logging.getLogger(ACCESS_LOGGER)
    access_logger.propagate = False
    for h in list(access_logger.handlers):
        access_logger.removeHandler(h)
    access = settings.get("access_logfile")
    if access:
        ah = _handler(access, sys.stdout)
        ah.setFormatter(JsonFormatter(tag) if as_json else AccessTextFormatter())
        access_logger.addHandler(ah)
        access_logger.setLevel(logging.INFO)
        access_logger.disabled = False
    else:
        access_logger.disabled = True


def log_access(
    remote: str | None, request_line: str, status: int, length: int | None, seconds: float, worker_id: str
) -> None:
    """One access line. Its parts travel as record fields: the text formatter writes them in
    Common Log Format, the JSON one as keys. The time is the record's (UTC when written)."""
    access_logger = logging.getLogger(ACCESS_LOGGER)
    if access_logger.disabled:
        return
    method, _, rest = request_line.partition(" ")
    path, _, protocol = rest.rpartition(" ") if " " in rest else (rest, "", "")
    fields = {
        "remote": remote or "-",
        "method": method or None,
        "path": path or None,
        "protocol": protocol or None,
        "status": status,
        "length": length,
        "duration_s": round(seconds, 6),
        "request_line": request_line,
        "worker_id": worker_id,
    }
    access_logger.info('"%s" %d', request_line, status, extra=fields)
