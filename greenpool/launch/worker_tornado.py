"""The Tornado worker: HTTPServer(xheaders=True) and a WSGIContainer whose
application runs in a ThreadPoolExecutor of --threads threads.

Django never runs on the IOLoop thread (Tornado 6 runs on asyncio, where the
ORM raises SynchronousOnlyOperation) and DJANGO_ALLOW_ASYNC_UNSAFE is never set.
Each request runs start to end in one executor thread: the application call,
the iteration of its response and the response's close(), which sends
Django's request_finished and so returns the thread's connection to the pool.
(Tornado's own WSGIContainer calls close() on the IOLoop thread, where
Django's request_finished would close the IOLoop thread's connections, not
the one the request used: every executor thread would keep its connection.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import time
import traceback
from typing import Any

from tornado import httputil
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.wsgi import WSGIContainer

from greenpool.launch import client_sockets, databases, http_rules, logs, worker, worker_life
from greenpool.launch.config import DEFAULT_THREADS
from greenpool.launch.errors import ExitCode, LaunchError

logger = logging.getLogger("greenpool.launch")


_ERROR_BODY = b"Internal Server Error\n"
_BAD_REQUEST_BODY = b"Bad Request\n"


class GreenpoolWSGIContainer(WSGIContainer):
    def __init__(self, app: Any, executor: concurrent.futures.Executor, state: worker.WorkerState) -> None:
        super().__init__(app, executor=executor)
        self.state = state

    def _run(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        """In one executor thread: call the app, read its body, close it."""
        data: dict[str, Any] = {}
        body: list[bytes] = []

        def start_response(status: str, headers: list, exc_info: Any = None) -> Any:
            if exc_info is not None and data.get("sent"):
                raise exc_info[1].with_traceback(exc_info[2])
            data["status"] = status
            data["headers"] = list(headers)
            return body.append

        result = self.wsgi_application(environ, start_response)
        try:
            for chunk in result:
                if chunk:
                    data["sent"] = True
                    body.append(chunk)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        if "status" not in data:
            raise RuntimeError("the WSGI application did not call start_response")
        return data["status"], data["headers"], b"".join(body)

    async def handle_request(self, request: httputil.HTTPServerRequest) -> None:
        state = self.state
        state.request_started()
        started = time.monotonic()
        code, length = 500, 0
        try:
            code, length = await self._respond(request)
        finally:
            # Counted once whatever happened (a bad request, the task cancelled
            # at a stop): a graceful stop waits while in_flight is above zero.
            seconds = time.monotonic() - started
            state.request_finished(code, seconds)
            state.access_log(
                request.remote_ip, f"{request.method} {request.uri} {request.version}", code, length, seconds
            )

    async def _respond(self, request: httputil.HTTPServerRequest) -> tuple[int, int]:
        """Run the application for one request and send its answer: (status code, body length)."""
        state = self.state
        try:
            environ = self.environ(request)
        except ValueError as exc:  # Tornado's WSGIContainer: a Host port that is not a number
            logger.info("bad request from %s: %s (Host: %r)", request.remote_ip, exc, request.host)
            code, status, headers, body = 400, "400 Bad Request", [("Content-Type", "text/plain")], _BAD_REQUEST_BODY
        else:
            environ["greenpool.worker"] = state.worker_id
            environ["wsgi.multithread"] = True
            try:
                status, headers, body = await asyncio.get_running_loop().run_in_executor(
                    self.executor, self._run, environ
                )
                code = int(status.partition(" ")[0])  # a status that starts with no number is the app's error too
            except Exception:
                logging.getLogger("greenpool.wsgi").error("error in the WSGI application:\n%s", traceback.format_exc())
                code, status, headers, body = (
                    500,
                    "500 Internal Server Error",
                    [("Content-Type", "text/plain")],
                    _ERROR_BODY,
                )
        reason = status.partition(" ")[2]
        header_obj = httputil.HTTPHeaders()
        has_length = False
        for key, value in headers:
            lower = key.lower()
            if lower == "connection":
                if value.lower() == "close":
                    _disconnect_on_finish(request)
                continue
            has_length = has_length or lower == "content-length"
            header_obj.add(key, value)
        if code != 304 and not has_length and code >= 200 and code not in (204,):
            header_obj.add("Content-Length", str(len(body)))
        header_obj.add("X-Greenpool-Worker", state.worker_id)
        if state.closing:
            _disconnect_on_finish(request)
        assert request.connection is not None
        chunk = None if request.method == "HEAD" else body
        try:
            request.connection.write_headers(
                httputil.ResponseStartLine("HTTP/1.1", code, reason), header_obj, chunk=chunk
            )
            request.connection.finish()
        except Exception as exc:  # the client went away
            logger.debug("could not send the response: %s", exc)
        return code, len(body)


def _disconnect_on_finish(request: httputil.HTTPServerRequest) -> None:
    if request.connection is not None:
        _disconnect_on_finish_of(request.connection)


def _disconnect_on_finish_of(conn: httputil.HTTPConnection) -> None:
    # HTTP1Connection adds "Connection: close" for HTTP/1.1 and closes after
    # the response when this is set.
    if hasattr(conn, "_disconnect_on_finish"):
        conn._disconnect_on_finish = True  # type: ignore[attr-defined]


def check_request(start_line: Any, headers: httputil.HTTPHeaders, settings: dict[str, Any]) -> None:
    """greenpool's request rules (http_rules) on what Tornado parsed. Tornado already
    refuses malformed field lines and folded ones; the limits, Host and body framing are
    checked here."""
    line = f"{start_line.method} {start_line.path} {start_line.version}".encode("latin-1", "replace")
    http_rules.check_request_line(line, settings["limit_request_line"])
    field_limit = settings["limit_request_field_size"]
    fields = []
    for name, value in headers.get_all():
        raw = f"{name}: {value}".encode("latin-1", "replace")
        fields.append(http_rules.check_field_line(raw, field_limit))
    http_rules.check_fields(start_line.version.encode("latin-1"), fields, settings["limit_request_fields"])


class _Tracking(httputil.HTTPMessageDelegate):
    """Marks a connection busy from the moment a request's headers arrive, and answers a
    request that greenpool's rules refuse without passing it on."""

    def __init__(
        self,
        delegate: httputil.HTTPMessageDelegate,
        server: GreenpoolHTTPServer,
        server_conn: object,
        request_conn: httputil.HTTPConnection,
    ) -> None:
        self.delegate = delegate
        self.server = server
        self.server_conn = server_conn
        self.request_conn = request_conn
        self.refused = False

    def headers_received(self, start_line: Any, headers: Any) -> Any:
        self.server.idle.pop(self.server_conn, None)
        try:
            check_request(start_line, headers, self.server.state.settings)
        except http_rules.RequestRefused as exc:
            self.refuse(start_line, exc)
            return None
        return self.delegate.headers_received(start_line, headers)

    def refuse(self, start_line: Any, exc: http_rules.RequestRefused) -> None:
        self.refused = True
        context = getattr(self.request_conn, "context", None)
        remote = getattr(context, "remote_ip", None)
        logger.info("refused a request from %s: %d %s", remote or "unix socket", exc.status, exc.why)
        body = exc.body
        headers = httputil.HTTPHeaders({"Content-Type": "text/plain", "Content-Length": str(len(body))})
        _disconnect_on_finish_of(self.request_conn)
        self.request_conn.write_headers(
            httputil.ResponseStartLine("HTTP/1.1", exc.status, exc.reason), headers, chunk=body
        )
        self.request_conn.finish()
        self.server.state.request_started()
        self.server.state.request_finished(exc.status, 0.0)
        self.server.state.access_log(
            remote, f"{start_line.method} {start_line.path} {start_line.version}", exc.status, len(body), 0.0
        )

    def data_received(self, chunk: bytes) -> Any:
        return None if self.refused else self.delegate.data_received(chunk)

    def finish(self) -> None:
        if not self.refused:
            self.delegate.finish()

    def on_connection_close(self) -> None:
        if not self.refused:
            self.delegate.on_connection_close()


class GreenpoolHTTPServer(HTTPServer):
    """HTTPServer that knows which connections are idle (for the drain) and
    applies the proxy headers only from --forwarded-allow-ips peers."""

    def initialize(self, *args: Any, state: worker.WorkerState, **kwargs: Any) -> None:  # type: ignore[override]
        super().initialize(*args, **kwargs)
        self.state = state
        self.idle: dict[object, float] = {}  # server connection -> idle since

    def add_listener(self, sock: socket.socket, shared_by: int) -> None:
        """TCPServer.add_sockets for one socket, with an accept handler that takes
        this worker's share of the queue per wake-up (client_sockets.accept_budget)
        instead of up to 128 connections; shared_by workers accept from it."""
        self._sockets[sock.fileno()] = sock
        self._handlers[sock.fileno()] = _add_batched_accept_handler(sock, shared_by, self._handle_connection)

    def handle_stream(self, stream: Any, address: Any) -> None:
        self.state.connections_open += 1
        self.state.connections_total += 1
        super().handle_stream(stream, address)

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        self.idle[server_conn] = time.monotonic()
        context = getattr(request_conn, "context", None)
        trusted = True
        if context is not None and getattr(context, "address_family", None) in (socket.AF_INET, socket.AF_INET6):
            trusted = self.state.forwarded.trusts(getattr(context, "_orig_remote_ip", None))
        xheaders = self.xheaders
        self.xheaders = xheaders and trusted
        try:
            delegate = super().start_request(server_conn, request_conn)
        finally:
            self.xheaders = xheaders
        return _Tracking(delegate, self, server_conn, request_conn)

    def on_close(self, server_conn: object) -> None:
        self.state.connections_open -= 1
        self.idle.pop(server_conn, None)
        super().on_close(server_conn)


def accept_batch(sock: socket.socket, shared_by: int, on_connection: Any) -> int:
    """Accept at most client_sockets.accept_budget() waiting connections from the non-blocking
    listening socket, handing each to on_connection(connection, address); returns how many."""
    accepted = 0
    for _ in range(client_sockets.accept_budget(sock, shared_by)):
        try:
            connection, address = sock.accept()
        except BlockingIOError:  # nothing left: a sibling took it, or all were taken
            break
        except ConnectionAbortedError:  # closed by the peer while queued
            continue
        on_connection(connection, address)
        accepted += 1
    return accepted


def _add_batched_accept_handler(sock: socket.socket, shared_by: int, on_connection: Any) -> Any:
    """tornado.netutil.add_accept_handler with accept_batch() per readiness event
    instead of up to 128 accepts; returns the callable that removes the handler."""
    io_loop = IOLoop.current()
    removed = False

    def on_readable(_fd: Any, _events: int) -> None:
        if not removed:
            accept_batch(sock, shared_by, on_connection)

    def remove() -> None:
        nonlocal removed
        io_loop.remove_handler(sock)
        removed = True

    io_loop.add_handler(sock, on_readable, IOLoop.READ)
    return remove


def executor_threads(setting: int | str) -> int:
    """--threads: a number, or auto: the default database's pool max_size (more
    threads only queue on it), or config.DEFAULT_THREADS without a pool.
    Read after Django is set up."""
    if setting != "auto":
        return int(setting)
    from django.db import DEFAULT_DB_ALIAS, connections

    pool = getattr(connections[DEFAULT_DB_ALIAS], "pool", None)
    return pool.max_size if pool is not None else DEFAULT_THREADS


class TornadoWorker:
    def __init__(self, state: worker.WorkerState, app: Any) -> None:
        self.state = state
        self.settings = state.settings
        self.threads = executor_threads(self.settings["threads"])
        self.executor = concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="greenpool-wsgi")
        self.container = GreenpoolWSGIContainer(app, self.executor, state)
        # body_timeout: a body that stops short of its Content-Length (or its last chunk)
        # would hold the connection for ever; it gets the --keep-alive time, as headers do.
        self.server = GreenpoolHTTPServer(
            self.container,
            xheaders=True,
            state=state,
            idle_connection_timeout=self.settings["keep_alive"],
            body_timeout=self.settings["keep_alive"],
        )
        self.stop_task: asyncio.Task | None = None
        self.graceful = True
        self.done = asyncio.Event()
        self.control: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        for sock, shared_by in worker_life.open_listeners(self.state, blocking=False):
            self.server.add_listener(sock, shared_by)
        path = worker_life.control_socket_path(self.state)
        if path:
            self.control = await asyncio.start_unix_server(self.serve_control, path)
            os.chmod(path, 0o600)
        loop = asyncio.get_running_loop()
        for signum, graceful in worker_life.STOP_SIGNALS.items():
            loop.add_signal_handler(signum, self.request_stop, graceful)
        worker_life.ignore_master_signals()
        self.heartbeat_task = asyncio.ensure_future(self.heartbeat())

    async def serve_control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(worker_life.control_reply(self.state, await asyncio.wait_for(reader.readline(), 5)))
            await writer.drain()
        except Exception as exc:
            logger.debug("control connection failed: %s", exc)
        finally:
            writer.close()

    async def heartbeat(self) -> None:
        interval = worker.heartbeat_interval(self.settings)
        while self.stop_task is None:
            if not worker_life.heartbeat(self.state):
                self.request_stop(True)
                return
            await asyncio.sleep(interval)

    def request_stop(self, graceful: bool) -> None:
        if self.stop_task is not None:
            if not graceful:
                self.graceful = False
            return
        self.graceful = graceful
        self.stop_task = asyncio.ensure_future(self.stop())

    async def stop(self) -> None:
        state = self.state
        state.draining = True
        started = worker_life.log_stopping(self.graceful, len(self.server._connections), state.in_flight)
        self.server.stop()  # stop accepting; the master keeps the socket
        deadline = started + self.settings["graceful_timeout"]
        while self.graceful and (self.server._connections or state.in_flight) and time.monotonic() < deadline:
            now = time.monotonic()
            for conn, since in list(self.server.idle.items()):
                if now - since >= worker.DRAIN_IDLE_SECONDS and not client_sockets.has_unread_bytes(conn.stream.socket):  # type: ignore[attr-defined]
                    conn.stream.close()  # type: ignore[attr-defined]
            await asyncio.sleep(0.05)
        if state.in_flight and self.graceful:
            worker_life.log_cut(state.in_flight, self.settings["graceful_timeout"])
        for conn in list(self.server._connections):
            conn.stream.close()  # type: ignore[attr-defined]
        self.executor.shutdown(wait=False, cancel_futures=True)
        if state.in_flight == 0:
            databases.close_pools(timeout=2.0)
        # else: threads still hold connections; closing idle ones is all we can do
        else:
            databases.close_pools(timeout=0.5)
        if self.control is not None:
            self.control.close()
        worker_life.log_stopped(state, started)
        self.done.set()


async def _amain(state: worker.WorkerState, app: Any) -> None:
    tw = TornadoWorker(state, app)
    try:
        await tw.start()
    except LaunchError as exc:
        worker.fail(exc.code, exc.message)
    worker_life.announce_ready(state, "tornado", f"{tw.threads} threads")
    await tw.done.wait()


def main() -> None:
    spec = worker.read_spec()
    state = worker.WorkerState(spec, None)
    logs.setup_logging(state.settings, f"tornado.{state.index}")
    if os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE"):
        # Measured: with it Django opened a server connection per request.
        worker.fail(
            ExitCode.CONFIG_ERROR,
            "DJANGO_ALLOW_ASYNC_UNSAFE is set: the tornado worker runs Django in executor "
            "threads and must not run it on the IOLoop; unset it",
        )
    app = worker.boot(state)
    if spec.get("check_only"):
        worker.check_only_exit(state)
    asyncio.run(_amain(state, app))
    worker_life.flush_logs()
    os._exit(int(ExitCode.OK))
