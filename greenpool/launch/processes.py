"""Is the process that wrote master.json still running?

A PID alone can be reused: after a master is SIGKILLed (or OOM-killed) its
master.json stays, and a later process may get the same PID. master.json
therefore also records the master's start time as the kernel counts it, and a
PID whose start time differs is another process.
"""

from __future__ import annotations

import os
from typing import Any


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (/proc/PID/stat field 22);
    None where there is no /proc or no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19])


def running(pid: Any, started: Any = None) -> bool:
    """True when ``pid`` is alive and, if ``started`` is given, is the process that
    started then (not a later one that got the same PID)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's: the start time still tells
        return _started_at(pid, started)
    return _started_at(pid, started)


def _started_at(pid: int, started: Any) -> bool:
    """``pid`` started at ``started`` (clock ticks), or nothing says otherwise."""
    if not isinstance(started, int):
        return True  # no start time recorded: the PID is all there is to go on
    now = start_ticks(pid)
    return now is None or now == started
