"""greenpool/launch/worker_gevent.py: how the gevent worker schedules keep-alive
requests, in a real greenpool-serve process (the rest of the worker is exercised
by tests/test_launch_serve.py)."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from pathlib import Path

from tests.support.serve import ServeProcess

# /burn: half a millisecond of CPU, counted. /wait?PORT: a stand-in for a database
# query: send a byte to the test's echo server, wait for the answer, and report how
# many /burn requests the worker served between sending and being resumed.
BURN_APP = (
    "import socket, time\n"
    "served = 0\n"
    "def app(environ, start_response):\n"
    "    global served\n"
    "    if environ['PATH_INFO'] == '/burn':\n"
    "        served += 1\n"
    "        end = time.perf_counter() + 0.0005\n"
    "        while time.perf_counter() < end:\n"
    "            pass\n"
    "        body = b'burn'\n"
    "    else:\n"
    "        with socket.create_connection(('127.0.0.1', int(environ['QUERY_STRING'])), timeout=5) as s:\n"
    "            s.sendall(b'?')\n"
    "            before = served\n"
    "            s.recv(1)\n"
    "            body = str(served - before).encode()\n"
    "    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])\n"
    "    return [body]\n"
)

REQUEST = b"GET /burn HTTP/1.1\r\nHost: test\r\n\r\n"


def echo_server(stop: threading.Event) -> tuple[socket.socket, threading.Thread]:
    """Answers every byte at once (the 'database'), until stop is set."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                if conn.recv(1):
                    conn.sendall(b"!")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def busy_keep_alive_client(port: int, stop: threading.Event, counts: list[int]) -> threading.Thread:
    """One keep-alive connection with two /burn requests outstanding: the next request is
    sent when a response arrives, so it is already in the worker's socket when the
    worker finishes the one before it."""

    def run() -> None:
        deadline = time.monotonic() + 30
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(REQUEST)
            sock.sendall(REQUEST)
            pending = b""
            while not stop.is_set() and time.monotonic() < deadline:
                pending += sock.recv(65536)
                while b"\r\n\r\nburn" in pending:
                    pending = pending.split(b"\r\n\r\nburn", 1)[1]
                    counts[0] += 1
                    sock.sendall(REQUEST)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_greenlet_whose_answer_arrived_runs_before_the_next_keep_alive_request(tmp_path: Path, mysql_params):
    # Yielding with sleep(0) between keep-alive requests left the greenlet in gevent's
    # callback phase, which runs callbacks queued during it in the same phase and looks
    # at the clock only every 50: a connection whose next request had already arrived
    # was served ~50 times before the hub polled and resumed a greenlet whose database
    # answer was waiting. The worker now waits for such a request through the poll.
    (tmp_path / "burnapp.py").write_text(BURN_APP)
    server = ServeProcess(tmp_path, mysql_params, "burnapp:app", workers=1)
    stop = threading.Event()
    listener, echo = echo_server(stop)
    burns = [0]
    try:
        server.start()
        client = busy_keep_alive_client(server.port, stop, burns)
        deadline = time.monotonic() + 10
        while burns[0] < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert burns[0] >= 200, "the busy connection was not served"
        between = []
        for _ in range(10):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("GET", f"/wait?{listener.getsockname()[1]}")
            response = conn.getresponse()
            assert response.status == 200
            between.append(int(response.read()))
            conn.close()
        before = burns[0]
        time.sleep(0.2)
        assert burns[0] > before, "the busy connection stopped being served during the measurement"
        # At most one poll's worth of the busy connection's requests (a few), not ~50.
        assert max(between) <= 5, between
    finally:
        stop.set()
        server.stop()
        echo.join(timeout=10)  # it polls stop every 0.2 s; then the socket can go
        listener.close()
    client.join(timeout=10)
