"""The master's control directory: one stats socket per worker, and master.json, which
lists the workers for `greenpool-serve stats` and /metrics.

It is private to the user (another user must not be able to put sockets or a
master.json of theirs there) and belongs to one master at a time. By default it is
under the shared temporary directory (config.control_root()), so its parent must be
private too.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
from typing import Any

from greenpool.launch import processes, sockets
from greenpool.launch.config import control_root
from greenpool.launch.errors import ExitCode, LaunchError

logger = logging.getLogger("greenpool.launch")

STATE_FILE = "master.json"
#: AF_UNIX socket paths have at most 107 bytes (108 with the final NUL).
_UNIX_PATH_MAX = 107
#: The longest stats socket name the master gives a worker (worker_socket()).
_LONGEST_SOCKET_NAME = "w999-g9999999.sock"


class ControlDir:
    def __init__(self, path: str) -> None:
        self.path = path

    def prepare(self) -> None:
        """Make (or check) the directory, refuse it while another master uses it, and
        clear what a master that is gone left there (LaunchError naming the problem)."""
        longest = os.fsencode(os.path.join(self.path, _LONGEST_SOCKET_NAME))
        if len(longest) > _UNIX_PATH_MAX:
            raise LaunchError(
                ExitCode.USAGE,
                f"--control-dir {self.path}: too long for a unix socket path (the "
                f"stats sockets in it need up to {len(longest)} bytes, at most {_UNIX_PATH_MAX}); "
                f"give a shorter --control-dir",
            )
        try:
            if os.path.dirname(self.path) == control_root():
                _make_private_dir(control_root())
            else:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
            _make_private_dir(self.path)
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename and exc.filename != self.path else ""
            raise LaunchError(ExitCode.USAGE, f"--control-dir {self.path}: {exc.strerror or exc}{where}") from None
        previous = read_state(self.path) or {}
        other = previous.get("pid")
        if other != os.getpid() and processes.running(other, previous.get("started")):
            raise LaunchError(
                ExitCode.BIND_ERROR,
                f"another greenpool-serve (master {other}) uses the control "
                f"directory {self.path}; give this one its own --control-dir",
            )
        for name in os.listdir(self.path):
            if name.endswith(".sock") or name == STATE_FILE:
                sockets.remove_file(os.path.join(self.path, name))

    def worker_socket(self, index: int, generation: int) -> str:
        return os.path.join(self.path, f"w{index}-g{generation}.sock")

    def write_state(self, state: dict[str, Any]) -> None:
        """master.json, replaced whole (a reader never sees half of it)."""
        path = os.path.join(self.path, STATE_FILE)
        tmp = path + ".tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(state, f, indent=1)
            os.replace(tmp, path)
        except OSError as exc:
            logger.debug("could not write %s: %s", path, exc)

    def remove(self) -> None:
        """At the master's end: master.json, then the directory if nothing else is left."""
        sockets.remove_file(os.path.join(self.path, STATE_FILE))
        self.remove_if_empty()

    def remove_if_empty(self) -> None:
        """The directory, if this master made it and left nothing in it (one that another
        master or the user keeps files in stays)."""
        try:
            os.rmdir(self.path)
        except OSError as exc:
            logger.debug("left the control directory %s: %s", self.path, exc)


def read_state(path: str) -> dict[str, Any] | None:
    """The master.json in control directory ``path``, or None (none there, damaged, not ours)."""
    try:
        with open(os.path.join(path, STATE_FILE)) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _make_private_dir(path: str) -> None:
    """Make ``path`` with mode 0700 whatever the umask, or check the one there."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not os.path.isdir(path):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path) from None
    else:
        os.chmod(path, 0o700)
    _require_private_dir(path)


def _require_private_dir(path: str) -> None:
    """Refuse a control directory that is a symlink, is not ours, or that others can
    write to (they could replace master.json or put sockets of their own there).
    Others may read it: the sockets themselves are mode 0600, and a directory made
    by an earlier version (<tmp>/greenpool-serve-<uid>, 0755) or by systemd's
    RuntimeDirectory= (0755) must keep working."""
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o022:
        raise LaunchError(
            ExitCode.BIND_ERROR,
            f"control directory {path} is not private (owner uid {info.st_uid}, "
            f"mode {stat.S_IMODE(info.st_mode):04o}{', a symlink' if stat.S_ISLNK(info.st_mode) else ''}): "
            f"it must be a directory of uid {os.getuid()} that no one else can write to (e.g. mode "
            "0700); remove it or give --control-dir",
        )
