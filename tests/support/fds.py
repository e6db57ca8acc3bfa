"""Running out of file descriptors, for real: RLIMIT_NOFILE, not a stand-in."""

from __future__ import annotations

import contextlib
import os
import resource
from typing import Iterator


@contextlib.contextmanager
def no_free_descriptor() -> Iterator[None]:
    """Inside the block, opening a descriptor fails with EMFILE ("Too many open files").

    The kernel gives the lowest free number, so first every free number up to the
    highest open one is taken (by /dev/null), then the soft limit is set just above."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    fillers: list[int] = []
    try:
        while not fillers or fillers[-1] < highest:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
        resource.setrlimit(resource.RLIMIT_NOFILE, (fillers[-1] + 1, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    finally:
        for fd in fillers:
            os.close(fd)
