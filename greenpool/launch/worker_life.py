"""The life cycle both worker kinds share, whatever loop runs it.

A worker (greenpool/launch/worker_gevent.py, worker_tornado.py) boots, opens the
listening sockets the master passed it, serves stats on its control socket, sends a
heartbeat, stops on a signal and says what it did, in the same words. Each kind keeps
only what its loop needs: how it waits, how it accepts, how it drains.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time

from greenpool.launch import sockets, worker

logger = logging.getLogger("greenpool.launch")

#: The signals a worker stops on: True for a graceful stop (drain), False for a quick one.
STOP_SIGNALS = {signal.SIGTERM: True, signal.SIGINT: False, signal.SIGQUIT: False}
#: Signals for the master (reload, more or fewer workers), which a worker ignores.
MASTER_SIGNALS = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)


def open_listeners(state: worker.WorkerState, *, blocking: bool) -> list[tuple[socket.socket, int]]:
    """The listening sockets of the master's spec, each with how many workers accept
    from it; under --reuse-port the worker binds its own."""
    socks = []
    for item in state.spec["listen"]:
        if "fd" in item:
            sock = socket.socket(fileno=item["fd"])
        else:
            sock = sockets.bind(sockets.parse_address(item["address"]), state.settings["backlog"], reuse_port=True)
        sockets.set_nodelay(sock)
        sock.setblocking(blocking)
        socks.append((sock, item.get("shared_by", 1)))
    return socks


def control_socket_path(state: worker.WorkerState) -> str | None:
    """Where this worker serves `greenpool-serve stats`, a stale socket there removed;
    None for a worker with none (a --check-config worker)."""
    path = worker.control_path(state.spec)
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    return path


def control_reply(state: worker.WorkerState, command: bytes) -> bytes:
    """The answer to one control-socket command line."""
    if command.strip() == b"stats":
        return worker.serialize_stats(state)
    return b'{"error": "unknown command"}\n'


def ignore_master_signals() -> None:
    for signum in MASTER_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def heartbeat(state: worker.WorkerState) -> bool:
    """One heartbeat to the master (and a repeated --max-requests request); False when
    the master is gone and the worker should stop."""
    if not state.master.send("hb") or not state.master.master_alive():
        logger.warning("the master is gone: stopping")
        return False
    state.repeat_recycle()
    return True


def announce_ready(state: worker.WorkerState, kind: str, capacity: str) -> None:
    state.ready = True
    state.master.send("ready")
    logger.info(
        "%s worker %s ready: %s, %s", kind, state.worker_id, ", ".join(state.spec.get("listen_names", [])), capacity
    )


def log_stopping(graceful: bool, connections: int, in_flight: int) -> float:
    """The stop's first line; returns when it started."""
    logger.info(
        "%s stop: %d connections open, %d requests in flight",
        "graceful" if graceful else "quick",
        connections,
        in_flight,
    )
    return time.monotonic()


def log_cut(busy: int, graceful_timeout: float) -> None:
    logger.warning("%d requests still running after --graceful-timeout=%gs: cutting them", busy, graceful_timeout)


def log_stopped(state: worker.WorkerState, started: float) -> None:
    logger.info("worker stopped after %.2fs, served %d requests", time.monotonic() - started, state.requests)


def flush_logs() -> None:
    """At the end of main(): every record written, before the process exits."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
