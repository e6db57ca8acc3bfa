"""greenpool/launch/logs.py: one clock and one time zone in every line, text or JSON.

The end-to-end form (a real master and workers whose Django TIME_ZONE is not UTC) is in
tests/test_launch_serve.py; these drive the formatters and setup_logging in-process.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from greenpool.launch import logs

ISO_UTC = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00"


@pytest.fixture
def local_zone_far_from_utc() -> Iterator[None]:
    """What Django does in a worker: TZ from settings.TIME_ZONE, then time.tzset()."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "America/Chicago"
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    access = logging.getLogger(logs.ACCESS_LOGGER)
    saved = (list(root.handlers), root.level, list(access.handlers), access.level, access.disabled, access.propagate)
    try:
        yield
    finally:
        for logger in (root, access):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        access.handlers[:] = saved[2]
        access.setLevel(saved[3])
        access.disabled, access.propagate = saved[4], saved[5]


def _record(message: str = "hello", created: float = 1796420223.5) -> logging.LogRecord:
    record = logging.LogRecord("greenpool.launch", logging.WARNING, __file__, 1, message, None, None)
    record.created = created
    return record


def test_utc_timestamp_is_iso_8601_with_its_offset_whatever_the_local_zone(local_zone_far_from_utc):
    assert time.localtime(1796420223.5).tm_gmtoff == -6 * 3600  # the zone did change
    assert logs.utc_timestamp(1796420223.5) == "2026-12-04T21:37:03.500+00:00"


def test_text_line_carries_utc_time_pid_tag_level_and_logger(local_zone_far_from_utc):
    line = logs.TextFormatter("gevent.1").format(_record())
    assert re.fullmatch(rf"\[{ISO_UTC}\] \[\d+ gevent\.1\] \[WARNING\] greenpool\.launch: hello", line), line
    assert line.startswith("[2026-12-04T21:37:03.500+00:00]")


def test_json_line_is_one_object_with_the_documented_keys():
    line = logs.JsonFormatter("master").format(_record('boot "quoted"\nsecond line'))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry == {
        "time": "2026-12-04T21:37:03.500+00:00",
        "level": "WARNING",
        "pid": os.getpid(),
        "worker": "master",
        "logger": "greenpool.launch",
        "message": 'boot "quoted"\nsecond line',
    }


def test_json_line_carries_the_traceback_of_an_exception():
    try:
        raise ValueError("bad thing")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    entry = json.loads(logs.JsonFormatter("gevent.0").format(record))
    assert entry["message"] == "failed"
    assert "ValueError: bad thing" in entry["exception"]


def _setup(tmp_path: Path, log_format: str) -> tuple[Path, Path]:
    access_path = tmp_path / "access.log"
    error_path = tmp_path / "error.log"
    logs.setup_logging(
        {
            "error_logfile": str(error_path),
            "access_logfile": str(access_path),
            "log_level": "info",
            "log_format": log_format,
        },
        "tornado.3",
    )
    return error_path, access_path


def test_access_line_in_text_is_common_log_format_in_utc_with_duration_and_worker(
    restore_logging, tmp_path, local_zone_far_from_utc
):
    _, access_path = _setup(tmp_path, "text")
    logs.log_access("10.0.0.9", "GET /read?x=1 HTTP/1.1", 200, 123, 0.0042113, "3-4242")
    logs.log_access(None, "BROKEN", 400, None, 0.0, "3-4242")
    first, second = access_path.read_text().splitlines()
    assert re.fullmatch(
        r'10\.0\.0\.9 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /read\?x=1 HTTP/1\.1" '
        r"200 123 0\.004211 3-4242",
        first,
    ), first
    assert re.fullmatch(r'- - - \[.* \+0000\] "BROKEN" 400 - 0\.000000 3-4242', second), second


def test_access_line_in_json_splits_the_request_line(restore_logging, tmp_path):
    error_path, access_path = _setup(tmp_path, "json")
    logs.log_access("10.0.0.9", "POST /tx HTTP/1.1", 201, 7, 0.25, "3-4242")
    logs.log_access(None, "NOT-A-REQUEST-LINE", 400, None, 0.001, "3-4242")
    logging.getLogger("greenpool.launch").info("serving")
    entries = [json.loads(line) for line in access_path.read_text().splitlines()]
    assert entries[0]["worker"] == "tornado.3"
    assert {k: entries[0][k] for k in logs.ACCESS_FIELDS} == {
        "remote": "10.0.0.9",
        "method": "POST",
        "path": "/tx",
        "protocol": "HTTP/1.1",
        "status": 201,
        "length": 7,
        "duration_s": 0.25,
    }
    assert (entries[1]["remote"], entries[1]["method"], entries[1]["path"], entries[1]["status"]) == (
        "-",
        "NOT-A-REQUEST-LINE",
        None,
        400,
    )
    (server_line,) = error_path.read_text().splitlines()
    assert json.loads(server_line)["message"] == "serving"
    assert "status" not in json.loads(server_line)


def test_no_access_logfile_disables_the_access_log(restore_logging, tmp_path):
    logs.setup_logging(
        {"error_logfile": str(tmp_path / "e.log"), "access_logfile": None, "log_level": "info", "log_format": "text"},
        "master",
    )
    logs.log_access("1.2.3.4", "GET / HTTP/1.1", 200, 1, 0.1, "0-1")
    assert logging.getLogger(logs.ACCESS_LOGGER).disabled
    assert (tmp_path / "e.log").read_text() == ""
