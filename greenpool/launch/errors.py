"""Exit codes of greenpool-serve, and the error that carries one.

Every way the launcher can refuse to run has a name and a number, so scripts
and supervisors (systemd's RestartPreventExitStatus=) can tell a typo from a
database outage. A worker that fails at boot exits with one of these; the
master then stops the other workers and exits with the same code.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    #: Stopped as asked (TERM, INT, QUIT), or the command succeeded.
    OK = 0
    #: Something unexpected: a bug, or a crash with a traceback.
    FAILURE = 1
    #: A bad flag, a bad value (command line, GREENPOOL_* environment or
    #: --config file) or an unreadable config file.
    USAGE = 2
    #: Django's settings are wrong: ImproperlyConfigured at boot, including a
    #: bad OPTIONS["pool"], or DJANGO_SETTINGS_MODULE cannot be imported.
    CONFIG_ERROR = 3
    #: APP (module:callable) cannot be imported, lacks the callable, or is not callable.
    APP_LOAD_ERROR = 4
    #: An address in --bind cannot be bound: taken, or not allowed.
    BIND_ERROR = 5
    #: --require-db or --check-config, and a database did not answer at boot.
    DATABASE_UNAVAILABLE = 6
    #: A worker failed at boot for another reason (its traceback is in the log),
    #: or died before it was ready.
    WORKER_BOOT_ERROR = 7

    def describe(self) -> str:
        return f"{self.value} ({self.name})"


#: Exit codes with which a worker says "I cannot boot, do not restart me".
BOOT_FAILURES = frozenset(
    {
        ExitCode.USAGE,
        ExitCode.CONFIG_ERROR,
        ExitCode.APP_LOAD_ERROR,
        ExitCode.BIND_ERROR,
        ExitCode.DATABASE_UNAVAILABLE,
        ExitCode.WORKER_BOOT_ERROR,
    }
)


def describe_exit(returncode: int) -> str:
    """'3 (CONFIG_ERROR)', 'signal 9 (SIGKILL)' or '42' for a process's return code."""
    if returncode < 0:
        import signal

        try:
            return f"signal {-returncode} ({signal.Signals(-returncode).name})"
        except ValueError:
            return f"signal {-returncode}"
    try:
        return ExitCode(returncode).describe()
    except ValueError:
        return str(returncode)


class LaunchError(Exception):
    """A clear, user-facing reason to stop, with the exit code to stop with."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message
