"""Running out of file descriptors, for real: RLIMIT_NOFILE, not a stand-in."""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Iterator


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


@contextlib.contextmanager
def next_descriptors_from(number: int) -> Iterator[None]:
    """Inside the block, a new descriptor gets a number of at least ``number``, as in
    a process with that many open already: every free number below it is taken (by
    /dev/null), with the soft limit raised if it is lower. Descriptors opened inside
    keep their numbers after the block."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < number + 16:
        raise OSError(f"RLIMIT_NOFILE's hard limit {hard} is below {number + 16}")
    if soft != resource.RLIM_INFINITY and soft < number + 16:
        resource.setrlimit(resource.RLIMIT_NOFILE, (number + 16, hard))
    fillers: list[int] = []
    try:
        while not fillers or fillers[-1] < number - 1:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
