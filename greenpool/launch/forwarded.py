"""Which peers may set the proxy headers (--forwarded-allow-ips), and what they set."""

from __future__ import annotations

import ipaddress
from typing import Any


class ForwardedPolicy:
    """Which peers may set X-Forwarded-For / X-Real-IP / X-Forwarded-Proto."""

    def __init__(self, allow: list[str]) -> None:
        self.any = "*" in allow
        self.networks = [ipaddress.ip_network(a, strict=False) for a in allow if a != "*"]

    def trusts(self, peer: str | None) -> bool:
        if self.any or not peer:  # unix-socket peers have no address: always trusted
            return True
        try:
            ip = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def apply(self, environ: dict[str, Any]) -> None:
        """Tornado's xheaders rules, for the gevent worker: the last
        X-Forwarded-For hop, overridden by X-Real-IP; the scheme from
        X-Scheme or X-Forwarded-Proto."""
        if not self.trusts(environ.get("REMOTE_ADDR")):
            return
        ip = environ.get("HTTP_X_FORWARDED_FOR", "").split(",")[-1].strip()
        ip = environ.get("HTTP_X_REAL_IP", ip).strip()
        if ip and _is_ip(ip):
            environ["REMOTE_ADDR"] = ip
        proto = environ.get("HTTP_X_SCHEME", environ.get("HTTP_X_FORWARDED_PROTO", "")).split(",")[-1].strip().lower()
        if proto in ("http", "https"):
            environ["wsgi.url_scheme"] = proto


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False
