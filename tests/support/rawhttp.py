"""Raw HTTP/1.1 over a socket, for tests that send what no HTTP client library would.

``exchange(port, data)`` sends bytes as they are, reads until the server closes the
connection or stays silent for ``idle`` seconds (bounded by ``deadline``), and returns
what came back as a list of responses and how the connection ended.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from dataclasses import dataclass, field

_STATUS_LINE = re.compile(rb"HTTP/(\d)\.(\d) (\d{3})[^\r\n]*\r\n")


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Outcome:
    responses: list[Response] = field(default_factory=list)
    #: "closed": the server closed (FIN or RST); "open": still open after ``idle`` s of
    #: silence; "hang": the deadline passed with neither a response nor a close.
    ended: str = "open"
    #: Bytes that did not parse as a response (a server that answered with junk).
    junk: bytes = b""

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]

    def kind(self) -> str:
        """'5xx' if any answer was, else the first answer's class ('2xx', '4xx', ...), else
        'close' or 'hang'/'open' when nothing was answered."""
        if any(s >= 500 for s in self.statuses):
            return "5xx"
        final = [s for s in self.statuses if s >= 200]
        if final:
            return f"{final[0] // 100}xx"
        return "close" if self.ended == "closed" else self.ended


def parse(data: bytes) -> tuple[list[Response], bytes]:
    """Responses in ``data`` (Content-Length or chunked bodies), and what was left over."""
    responses: list[Response] = []
    rest = data
    while rest:
        match = _STATUS_LINE.match(rest)
        head_end = rest.find(b"\r\n\r\n")
        if not match or head_end < 0:
            break
        headers: dict[str, str] = {}
        for line in rest[match.end() : head_end].split(b"\r\n"):
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        status = int(match.group(3))
        body_start = head_end + 4
        if status < 200 or status in (204, 304):
            body, rest = b"", rest[body_start:]
        elif "content-length" in headers:
            end = body_start + int(headers["content-length"])
            if end > len(rest):
                break
            body, rest = rest[body_start:end], rest[end:]
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body, consumed = _dechunk(rest[body_start:])
            if consumed < 0:
                break
            rest = rest[body_start + consumed :]
        else:  # read until close
            body, rest = rest[body_start:], b""
        responses.append(Response(status, headers, body))
    return responses, rest


def _dechunk(data: bytes) -> tuple[bytes, int]:
    body, pos = b"", 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return body, -1
        size = int(data[pos:eol].split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            end = data.find(b"\r\n", pos)
            return (body, end + 2) if end >= 0 else (body, -1)
        body += data[pos : pos + size]
        pos += size + 2


def exchange(
    port: int,
    data: bytes | list[bytes],
    *,
    idle: float = 1.0,
    deadline: float = 10.0,
    pause: float = 0.05,
    host: str = "127.0.0.1",
    half_close: bool = False,
) -> Outcome:
    """Send ``data`` (a list: parts sent ``pause`` apart), then read as described above."""
    parts = [data] if isinstance(data, bytes) else list(data)
    received = b""
    ended = "open"
    with socket.create_connection((host, port), timeout=deadline) as sock:
        try:
            for i, part in enumerate(parts):
                if i:
                    time.sleep(pause)
                sock.sendall(part)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server closed while we were still sending
            ended = "closed"
        stop = time.monotonic() + deadline
        last = time.monotonic()
        while ended == "open":
            now = time.monotonic()
            if now >= stop:
                ended = "hang" if not received else "open"
                break
            if received and now - last >= idle:
                break
            sock.settimeout(min(0.2, stop - now))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                ended = "closed"
                break
            if not chunk:
                ended = "closed"
                break
            received += chunk
            last = time.monotonic()
        if ended == "open" and not received:
            ended = "hang"
    responses, junk = parse(received)
    return Outcome(responses, ended, junk)


def reset_after_sending(port: int, data: bytes, wait: float = 0.05, host: str = "127.0.0.1") -> None:
    """Send ``data``, wait, then close with a TCP RST (SO_LINGER 0) instead of a FIN."""
    sock = socket.create_connection((host, port), timeout=5)
    try:
        sock.sendall(data)
        time.sleep(wait)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        sock.close()
