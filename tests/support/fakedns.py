"""Host name lookups answered on this machine, never by the real nameserver.

Looking up a name that is not in /etc/hosts asks the nameserver of
/etc/resolv.conf, which is not on this machine: a test must not send it anything.
``FakeDNSServer`` answers every query on 127.0.0.1:53 as a test tells it to: "no
such name" (NXDOMAIN, what ``NXDomainServer`` always says), "cannot answer now"
(SERVFAIL) or an IPv4 address. ``private_resolv_conf()`` gives the command prefix
that runs a process in a mount namespace of its own where /etc/resolv.conf names
only 127.0.0.1. The process then meets the C library's real errors: "Name or
service not known" (EAI_NONAME) as a user with a mistyped host name does, or
"Temporary failure in name resolution" (EAI_AGAIN) as one whose resolver is down.
Needs root and unshare(1).
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

#: DNS response codes a test can ask for.
NOERROR, SERVFAIL, NXDOMAIN = 0, 2, 3
_TYPE_A = 1


class FakeDNSServer:
    """A UDP DNS responder on 127.0.0.1:53. ``answer(name)`` says what to reply
    for a name: NXDOMAIN, SERVFAIL, or an IPv4 address as a string (then an A
    question gets that address and any other type an empty NOERROR)."""

    def __init__(self, answer: Callable[[str], int | str], host: str = "127.0.0.1", port: int = 53) -> None:
        self.answer = answer
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))  # OSError if taken or not allowed
        self.sock.settimeout(0.2)
        self.queries: list[bytes] = []
        self.replies: list[tuple[str, int]] = []  # (name, rcode) in the order sent
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fake-dns", daemon=True)

    def __enter__(self) -> FakeDNSServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) < 12:
                continue
            (query_id, flags) = struct.unpack("!HH", data[:4])
            question = _question(data)
            if question is None:
                continue
            self.queries.append(question)
            name = _name(question)
            verdict = self.answer(name)
            rcode, records = (verdict, b"") if isinstance(verdict, int) else (NOERROR, _a_record(question, verdict))
            self.replies.append((name, rcode))
            # QR=1, opcode as asked, RD copied, RA=1; one question, then the answers.
            reply_flags = 0x8000 | (flags & 0x7900) | 0x0080 | rcode
            header = struct.pack("!HHHHHH", query_id, reply_flags, 1, 1 if records else 0, 0, 0)
            try:
                self.sock.sendto(header + question + records, peer)
            except OSError as exc:  # the asker gave up and closed its socket: nothing to answer
                self.replies.append((f"{name} (reply not sent: {exc})", rcode))


class NXDomainServer(FakeDNSServer):
    """Says NXDOMAIN to every question."""

    def __init__(self, host: str = "127.0.0.1", port: int = 53) -> None:
        super().__init__(lambda name: NXDOMAIN, host, port)


def _a_record(question: bytes, address: str) -> bytes:
    """The answer to an A question (TTL 0, so nothing caches it); b"" for other types."""
    (qtype,) = struct.unpack("!H", question[-4:-2])
    if qtype != _TYPE_A:
        return b""
    # A pointer to the question's name (offset 12), type A, class IN, TTL 0, 4 bytes.
    return struct.pack("!HHHIH", 0xC00C, _TYPE_A, 1, 0, 4) + socket.inet_aton(address)


def _name(question: bytes) -> str:
    labels, i = [], 0
    while question[i]:
        labels.append(question[i + 1 : i + 1 + question[i]].decode("ascii", "replace"))
        i += 1 + question[i]
    return ".".join(labels).lower()


def _question(packet: bytes) -> bytes | None:
    """The question section (name, type, class) of a one-question query."""
    i = 12
    while i < len(packet):
        length = packet[i]
        if length == 0:
            end = i + 1 + 4
            return packet[12:end] if end <= len(packet) else None
        if length & 0xC0:
            return None
        i += 1 + length
    return None


def private_resolv_conf(workdir: Path) -> list[str] | None:
    """Command prefix running a program with /etc/resolv.conf = "nameserver 127.0.0.1"
    in a private mount namespace, or None when that cannot be done here."""
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or not unshare:
        return None
    conf = workdir / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1\noptions attempts:1 timeout:1\n")
    probe = subprocess.run(
        [
            unshare,
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            'mount --bind "$0" /etc/resolv.conf && grep -q 127.0.0.1 /etc/resolv.conf',
            str(conf),
        ],
        capture_output=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    if probe.returncode != 0:  # no mount namespaces in this sandbox
        return None
    return [
        unshare,
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount --bind "$0" /etc/resolv.conf && exec "$@"',
        str(conf),
    ]
