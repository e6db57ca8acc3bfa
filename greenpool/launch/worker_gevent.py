"""The gevent worker: gevent.pywsgi with a bounded greenlet pool.

The master starts it as ``python -c BOOT`` where BOOT monkey-patches first and
imports this module after, so Django, PyMySQL and ssl are imported patched
(no "Monkey-patching ssl after ssl has already been imported" warning).
Importing this module in an unpatched process is an error.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from typing import Any

from gevent import monkey

if not monkey.is_module_patched("socket"):
    raise ImportError("greenpool.launch.worker_gevent must be imported after gevent.monkey.patch_all()")

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import gevent.pool  # noqa: E402
import gevent.server  # noqa: E402
import gevent.socket  # noqa: E402
from gevent.pywsgi import OldMessage, WSGIHandler, WSGIServer  # noqa: E402

from greenpool.launch import client_sockets, databases, http_rules, logs, worker, worker_life  # noqa: E402
from greenpool.launch.errors import ExitCode, LaunchError  # noqa: E402

logger = logging.getLogger("greenpool.launch")


class GreenpoolHandler(WSGIHandler):
    """pywsgi's handler with keep-alive timeout, drain, stats and access log."""

    idle_since: float | None = None
    # pywsgi's per-request state, read below (declared here for the type checker).
    headers_sent: bool
    provided_content_length: int | None

    def handle(self) -> None:
        server = self.server
        state: worker.WorkerState = server.greenpool_state
        server.greenpool_handlers.add(self)
        state.connections_open += 1
        state.connections_total += 1
        try:
            super().handle()
        finally:
            state.connections_open -= 1
            server.greenpool_handlers.discard(self)

    def read_requestline(self) -> str:
        self.yield_before_request()
        self.idle_since = time.monotonic()
        line = b""
        try:
            with gevent.Timeout(self.server.greenpool_state.settings["keep_alive"], False):
                # A line end past the limit is not read: the line is then over it (414).
                line = self.rfile.readline(self.server.greenpool_state.settings["limit_request_line"] + 3)
        finally:
            self.idle_since = None
        return line.decode("latin-1")

    def read_request(self, raw_requestline: str) -> bool:
        """pywsgi reads the headers with no time limit of its own: a client that
        sends a request line and stalls would hold a greenlet (and a
        --worker-connections slot, and a graceful stop) for ever. They get the
        --keep-alive time, as the request line does; then a 400 and the
        connection is closed (pywsgi's answer to a request it cannot read)."""
        seconds = self.server.greenpool_state.settings["keep_alive"]
        line = raw_requestline.rstrip("\r\n").encode("latin-1")
        http_rules.check_request_line(line, self.server.greenpool_state.settings["limit_request_line"])
        timer = gevent.Timeout(seconds)
        timer.start()
        try:
            return super().read_request(raw_requestline)
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            raise ValueError(f"request headers not complete after {seconds:g}s (--keep-alive)") from None
        finally:
            timer.close()

    def MessageClass(self, fp: Any, *args: Any) -> Any:  # noqa: N802 - pywsgi's name
        """The header block, read and checked by greenpool's rules (http_rules), in the
        message class pywsgi reads. pywsgi's own reader (http.client's) takes folded
        lines, lines without a colon, whitespace before the colon, control bytes and
        any Host or framing headers, and stops at 99 fields whatever the limit."""
        settings = self.server.greenpool_state.settings
        field_limit, count_limit = settings["limit_request_field_size"], settings["limit_request_fields"]
        fields: list[tuple[bytes, bytes]] = []
        while True:
            line = fp.readline(field_limit + 3)
            if not line:
                raise http_rules.RequestRefused(400, "the header block ended before its blank line")
            if line in (b"\r\n", b"\n"):
                break
            if not line.endswith(b"\n"):
                raise http_rules.RequestRefused(431, f"a header field over --limit-request-field-size {field_limit}")
            fields.append(http_rules.check_field_line(line.rstrip(b"\r\n"), field_limit))
            if len(fields) > count_limit:
                break  # check_fields names it; the rest is not read
        http_rules.check_fields(self.request_version.encode("latin-1"), fields, count_limit)
        message = OldMessage()
        for name, value in fields:
            message[name.decode("latin-1")] = value.decode("latin-1")
        return message

    def _handle_client_error(self, ex: BaseException) -> Any:
        """A refused request gets its own status and a body that names the problem. Every
        request answered here counts in the worker's stats by its status (log_request)."""
        self.server.greenpool_state.request_started()
        self._greenpool_counted = True
        if isinstance(ex, http_rules.RequestRefused):
            client = self.client_address[0] if isinstance(self.client_address, tuple) else self.client_address
            logger.info("refused a request from %s: %d %s", client or "unix socket", ex.status, ex.why)
            return str(ex.status), ex.response()
        return super()._handle_client_error(ex)

    def yield_before_request(self) -> None:
        """Let the worker's other greenlets run before this connection's next request.

        pywsgi serves a keep-alive connection in a loop, and when the next request
        is already in the socket buffer the read does not block: without a yield,
        one busy connection is served over and over while the others wait. The
        yield goes through the hub's poll when that request has arrived:
        gevent.sleep(0) only queues the greenlet as a callback, which the hub runs
        in the same callback phase, so busy connections would take turns for ~50
        requests before greenlets whose database answers were waiting resumed.
        (Measured: docs/tuning.md and CHANGELOG; tests/test_launch_worker_gevent.py.)
        """
        if client_sockets.has_unread_bytes(self.socket):
            try:
                # Readable already: this returns at the hub's next poll.
                gevent.socket.wait_read(
                    self.socket.fileno(), timeout=self.server.greenpool_state.settings["keep_alive"]
                )
            except TimeoutError:
                logger.debug("a request in the socket buffer was not reported readable; reading it anyway")
        else:
            # Nothing arrived yet (the read below waits through the poll), or the
            # request is in pywsgi's own buffer (a pipelining client).
            gevent.sleep(0)

    def get_environ(self) -> dict[str, Any]:
        env = super().get_environ()
        state: worker.WorkerState = self.server.greenpool_state
        state.forwarded.apply(env)
        env["greenpool.worker"] = state.worker_id
        return env

    def start_response(self, status: Any, headers: list, exc_info: Any = None) -> Any:
        state: worker.WorkerState = self.server.greenpool_state
        headers = list(headers)
        headers.append(("X-Greenpool-Worker", state.worker_id))
        if state.closing:
            headers = [(k, v) for (k, v) in headers if k.lower() != "connection"]
            headers.append(("Connection", "close"))
        return super().start_response(status, headers, exc_info)

    def process_result(self) -> None:
        """A complete body (Django's non-streaming HttpResponse, or a list) goes out
        with its headers and a Content-Length in one write. pywsgi writes the
        headers, the body and the terminating chunk in separate sendall calls: a
        worker killed between two of them leaves nginx holding the start of a
        response it has already begun to pass on, which it can no longer retry
        on another worker; the client gets a truncated answer."""
        result = self.result
        complete = getattr(result, "streaming", None) is False or isinstance(result, (list, tuple))
        if not complete or self.headers_sent or not self.status or self.command == "HEAD" or self.code in (204, 304):
            super().process_result()
            return
        body = b"".join(result)
        if self.provided_content_length is None:
            self.response_headers.append((b"Content-Length", str(len(body)).encode("latin-1")))
            self.provided_content_length = len(body)
        self.headers_sent = True
        self.finalize_headers()
        head = [b"HTTP/1.1 ", self.status, b"\r\n"]
        for name, value in self.response_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"\r\n")
        self._sendall(b"".join(head) + body)

    def handle_one_response(self) -> None:
        state: worker.WorkerState = self.server.greenpool_state
        state.request_started()
        self._greenpool_counted = True
        super().handle_one_response()

    def log_request(self) -> None:
        state: worker.WorkerState = self.server.greenpool_state
        try:
            status = int((self._orig_status or self.status or "0").split()[0])
        except (ValueError, AttributeError):
            status = 0
        seconds = (self.time_finish or time.time()) - self.time_start
        if getattr(self, "_greenpool_counted", False):
            self._greenpool_counted = False
            state.request_finished(status, seconds)
        client = self.client_address[0] if isinstance(self.client_address, tuple) else None
        remote = (self.environ or {}).get("REMOTE_ADDR", client) if getattr(self, "environ", None) else client
        state.access_log(remote, self.requestline or "", status, self.response_length or None, seconds)


class GreenpoolServer(WSGIServer):
    """pywsgi's server taking its share of the accept queue per wake-up
    (client_sockets.accept_budget) instead of up to 100 connections."""

    shared_by = 1  # workers accepting from this socket

    @property  # type: ignore[override]
    def max_accept(self) -> int:  # read by gevent's BaseServer once per wake-up
        return client_sockets.accept_budget(self.socket, self.shared_by)

    def set_max_accept(self) -> None:
        """pywsgi would pin max_accept to 1 for wsgi.multiprocess; the budget decides."""


class GeventWorker:
    def __init__(self, state: worker.WorkerState) -> None:
        self.state = state
        self.settings = state.settings
        self.servers: list[GreenpoolServer] = []
        self.handlers: set[GreenpoolHandler] = set()
        # Every connection's greenlet, from its accept on: a handler joins
        # self.handlers only once its greenlet runs, which can be after a stop
        # handled in the same hub turn as the accept.
        self.spawn = gevent.pool.Pool(state.settings["worker_connections"])
        self.stopping: Any = None
        self.done = gevent.event.Event()
        self.control: gevent.server.StreamServer | None = None

    # -- start ---------------------------------------------------------------

    def start(self, app: Any) -> None:
        for sock, shared_by in worker_life.open_listeners(self.state, blocking=True):
            server = GreenpoolServer(
                sock,
                app,
                spawn=self.spawn,
                handler_class=GreenpoolHandler,
                log=None,
                error_log=logging.getLogger("greenpool.wsgi"),
            )
            server.shared_by = shared_by
            server.greenpool_state = self.state
            server.greenpool_handlers = self.handlers
            server.start()
            self.servers.append(server)
        self.start_control()
        for signum, graceful in worker_life.STOP_SIGNALS.items():
            gevent.signal_handler(signum, self.request_stop, graceful)
        worker_life.ignore_master_signals()
        gevent.spawn(self.heartbeat)

    def start_control(self) -> None:
        path = worker_life.control_socket_path(self.state)
        if not path:
            return
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        os.chmod(path, 0o600)
        listener.listen(16)
        self.control = gevent.server.StreamServer(listener, self.serve_control)
        self.control.start()

    def serve_control(self, sock: socket.socket, _address: Any) -> None:
        with gevent.Timeout(5, False):
            sock.sendall(worker_life.control_reply(self.state, sock.makefile("rb").readline()))
        sock.close()

    def heartbeat(self) -> None:
        interval = worker.heartbeat_interval(self.settings)
        while self.stopping is None:
            if not worker_life.heartbeat(self.state):
                self.request_stop(True)
                return
            gevent.sleep(interval)

    # -- stop ------------------------------------------------------------------

    def request_stop(self, graceful: bool) -> None:
        # Runs in the hub (signal) or a greenlet: only start the stop greenlet.
        if self.stopping is not None:
            if not graceful and self.stopping.graceful:
                self.stopping.graceful = False  # INT after TERM: hurry up
            return
        self.stopping = gevent.spawn(self.stop, graceful)
        self.stopping.graceful = graceful

    def stop(self, graceful: bool) -> None:
        state = self.state
        state.draining = True
        started = worker_life.log_stopping(graceful, len(self.handlers), state.in_flight)
        for server in self.servers:
            server.close()  # stop accepting; the master keeps the socket
        deadline = started + (self.settings["graceful_timeout"] if graceful else 0.0)
        while (self.handlers or len(self.spawn)) and time.monotonic() < deadline and self.stopping.graceful:
            now = time.monotonic()
            for handler in list(self.handlers):
                if (
                    handler.idle_since is not None
                    and now - handler.idle_since >= worker.DRAIN_IDLE_SECONDS
                    and not client_sockets.has_unread_bytes(handler.socket)
                ):
                    _shutdown(handler)
            gevent.sleep(0.05)
        if self.handlers or len(self.spawn):
            busy = sum(1 for h in self.handlers if h.idle_since is None)
            if busy and graceful:
                worker_life.log_cut(busy, self.settings["graceful_timeout"])
            for handler in list(self.handlers):
                _shutdown(handler)
            self.spawn.kill(block=True, timeout=1.0)
        databases.close_pools(timeout=2.0)
        if self.control is not None:
            self.control.close()
        worker_life.log_stopped(state, started)
        self.done.set()


def _shutdown(handler: GreenpoolHandler) -> None:
    sock = getattr(handler, "socket", None)
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def main(imported_before_patch: list[str] | None = None) -> None:
    spec = worker.read_spec()
    state = worker.WorkerState(spec, imported_before_patch)
    logs.setup_logging(state.settings, f"gevent.{state.index}")
    if imported_before_patch:
        logger.warning("modules imported before monkey-patching: %s", ", ".join(imported_before_patch))
    app = worker.boot(state)
    if spec.get("check_only"):
        worker.check_only_exit(state)
    gw = GeventWorker(state)
    try:
        gw.start(app)
    except LaunchError as exc:
        worker.fail(exc.code, exc.message)
    worker_life.announce_ready(state, "gevent", f"{state.settings['worker_connections']} connections max")
    gw.done.wait()
    worker_life.flush_logs()
    sys.stderr.flush()
    os._exit(int(ExitCode.OK))
