"""An unknown host name without a DNS query leaving the machine.

Looking up a name that is not in /etc/hosts asks the nameserver of
/etc/resolv.conf, which is not on this machine: a test must not send it anything.
``NXDomainServer`` answers every query on 127.0.0.1:53 with NXDOMAIN ("no such
name"), and ``private_resolv_conf()`` gives the command prefix that runs a process
in a mount namespace of its own where /etc/resolv.conf names only 127.0.0.1. The
process then meets a real "Name or service not known" (EAI_NONAME) from the C
library, as a user with a mistyped host name does. Needs root and unshare(1).
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import threading
from pathlib import Path


class NXDomainServer:
    """A UDP DNS responder on 127.0.0.1:53 that says NXDOMAIN to every question."""

    def __init__(self, host: str = "127.0.0.1", port: int = 53) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))  # OSError if taken or not allowed
        self.sock.settimeout(0.2)
        self.queries: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="nxdomain-dns", daemon=True)

    def __enter__(self) -> "NXDomainServer":
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
            except socket.timeout:
                continue
            except OSError:
                return
            if len(data) < 12:
                continue
            (query_id, flags, qdcount) = struct.unpack("!HHH", data[:6])
            question = _question(data)
            if question is None:
                continue
            self.queries.append(question)
            # QR=1, opcode as asked, RD copied, RA=1, RCODE=3 (NXDOMAIN); one question, no answers.
            reply_flags = 0x8000 | (flags & 0x7900) | 0x0080 | 3
            header = struct.pack("!HHHHHH", query_id, reply_flags, 1, 0, 0, 0)
            try:
                self.sock.sendto(header + question, peer)
            except OSError:
                pass


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
    probe = subprocess.run([unshare, "--mount", "--propagation", "private", "sh", "-c",
                            'mount --bind "$0" /etc/resolv.conf && grep -q 127.0.0.1 /etc/resolv.conf', str(conf)],
                           capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    if probe.returncode != 0:  # no mount namespaces in this sandbox
        return None
    return [unshare, "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(conf)]
