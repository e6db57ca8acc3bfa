"""What a request must look like before a worker hands it to the application.

Both workers refuse the same requests, with the same status, before any application code
runs (docs/http-input.md lists them with the tests that send them):

- a request line that is not ``METHOD SP TARGET SP HTTP/1.x``, a method that is not an
  RFC 9110 token, a target with control bytes: 400; a request line over
  --limit-request-line: 414;
- more header fields than --limit-request-fields, or one longer than
  --limit-request-field-size: 431;
- a field line without a colon, with whitespace before the colon, with a name that is not
  a token, with control bytes in its value, or folded onto the next line (obs-fold): 400;
- HTTP/1.1 without exactly one Host, or a Host that is not ``name[:digits]``: 400 (RFC 9112
  section 3.2);
- request smuggling's raw material: Content-Length that is not plain digits, two different
  Content-Lengths, Content-Length beside Transfer-Encoding, and any Transfer-Encoding other
  than ``chunked``: 400. RFC 9112 answers an unknown coding with 501; greenpool answers
  400 so that a scanner's junk never reads as a server error in 5xx alerts.

The gevent worker reads the header block itself with these rules (gevent.pywsgi's own
parser accepts most of the above). Tornado's parser already refuses the malformed field
lines; the Tornado worker applies the limits and the Host and body rules to what it parsed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: RFC 9110 section 5.6.2: token = 1*tchar.
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VERSION = re.compile(rb"^HTTP/1\.[01]$")
#: Control bytes other than HTAB (and DEL), which no field value or target may carry.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
#: reg-name or IPv4 (RFC 3986, percent-encoded bytes allowed), or an IPv6 literal; then an
#: optional port of digits.
_HOST = re.compile(rb"^(?:[A-Za-z0-9\-._~!$&'()*+,;=%]*|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?$")
_DIGITS = re.compile(rb"^[0-9]+$")


class RequestRefused(ValueError):
    """A request the worker answers itself, with ``status``, without calling the application.

    A ValueError so that gevent.pywsgi treats it as the client's error, never as the
    server's (no traceback, no 500)."""

    REASONS = {400: "Bad Request", 414: "URI Too Long", 431: "Request Header Fields Too Large"}

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why

    @property
    def reason(self) -> str:
        return self.REASONS[self.status]

    @property
    def body(self) -> bytes:
        """One line naming the problem."""
        return f"{self.status} {self.reason}: {self.why}\n".encode("latin-1", "replace")

    def response(self) -> bytes:
        """The whole answer, for a worker that writes raw bytes: status line, headers, body."""
        body = self.body
        return (
            f"HTTP/1.1 {self.status} {self.reason}\r\nConnection: close\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1") + body


def check_request_line(line: bytes, limit: int) -> tuple[bytes, bytes, bytes]:
    """``line`` without its line end -> (method, target, version), or RequestRefused."""
    if len(line) > limit:
        raise RequestRefused(414, f"request line of {len(line)} bytes, over --limit-request-line {limit}")
    words = line.split(b" ")
    if len(words) != 3 or not all(words):
        raise RequestRefused(400, "the request line is not METHOD TARGET HTTP/1.x")
    method, target, version = words
    if not _TOKEN.match(method):
        raise RequestRefused(400, "the method is not a token")
    if _CONTROL.search(target) or b"\t" in target:
        raise RequestRefused(400, "control bytes in the request target")
    if not _VERSION.match(version):
        raise RequestRefused(400, "the version is not HTTP/1.0 or HTTP/1.1")
    return method, target, version


def check_field_line(line: bytes, limit: int) -> tuple[bytes, bytes]:
    """One field line without its line end -> (name, value), or RequestRefused."""
    if len(line) > limit:
        raise RequestRefused(431, f"a header field of {len(line)} bytes, over --limit-request-field-size {limit}")
    if line[:1] in (b" ", b"\t"):
        raise RequestRefused(400, "a header field folded onto the next line (obs-fold)")
    name, colon, value = line.partition(b":")
    if not colon:
        raise RequestRefused(400, "a header line without a colon")
    if not _TOKEN.match(name):
        raise RequestRefused(400, "a header name that is not a token (or whitespace before the colon)")
    value = value.strip(b" \t")
    if _CONTROL.search(value):
        raise RequestRefused(400, f"control bytes in the {name.decode('latin-1')} header")
    return name, value


def check_fields(version: bytes, fields: Iterable[tuple[bytes, bytes]], count_limit: int) -> None:
    """The rules across fields: how many, Host, and how the body is framed."""
    fields = list(fields)
    if len(fields) > count_limit:
        raise RequestRefused(431, f"{len(fields)} header fields, over --limit-request-fields {count_limit}")
    hosts = [value for name, value in fields if name.lower() == b"host"]
    if version == b"HTTP/1.1" and len(hosts) != 1:
        raise RequestRefused(400, "HTTP/1.1 needs exactly one Host header" if not hosts else "two Host headers")
    if len(hosts) > 1:
        raise RequestRefused(400, "two Host headers")
    if hosts and not _HOST.match(hosts[0]):
        raise RequestRefused(400, "a Host that is not a host name with an optional port of digits")
    lengths = {value for name, value in fields if name.lower() == b"content-length"}
    codings = [value for name, value in fields if name.lower() == b"transfer-encoding"]
    if any(not _DIGITS.match(value) for value in lengths):
        raise RequestRefused(400, "a Content-Length that is not a number of digits")
    if len(lengths) > 1:
        raise RequestRefused(400, "two different Content-Lengths")
    if codings:
        if lengths:
            raise RequestRefused(400, "both Content-Length and Transfer-Encoding")
        if version != b"HTTP/1.1" or len(codings) > 1 or codings[0].lower() != b"chunked":
            raise RequestRefused(400, "a Transfer-Encoding other than chunked")
