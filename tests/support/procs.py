"""Stopping the process groups that tests start (greenpool-serve masters and their workers)."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_process_group(proc: subprocess.Popen, first_signal: int = signal.SIGTERM, grace: float = 30.0) -> None:
    """Send ``first_signal`` to the process we started, wait up to ``grace``
    seconds, then SIGKILL its whole session (master and workers) and reap it.
    Only ever the group of a process this test started (start_new_session)."""
    if proc.poll() is None:
        os.kill(proc.pid, first_signal)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass  # the SIGKILL below ends it
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone
    proc.wait(10)


def pid_alive(pid: int) -> bool:
    """True while a process with this PID exists (a zombie counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
