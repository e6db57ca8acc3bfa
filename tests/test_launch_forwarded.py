"""greenpool/launch/forwarded.py: which peers may set the proxy headers, and what they set."""

from __future__ import annotations

from greenpool.launch.forwarded import ForwardedPolicy


def _environ(peer: str, **headers: str) -> dict:
    return {"REMOTE_ADDR": peer, "wsgi.url_scheme": "http", **headers}


def test_a_trusted_proxy_sets_the_client_address_and_scheme():
    environ = _environ("10.0.0.5", HTTP_X_FORWARDED_FOR="203.0.113.9, 10.0.0.4", HTTP_X_FORWARDED_PROTO="https")
    ForwardedPolicy(["10.0.0.0/8"]).apply(environ)
    assert environ["REMOTE_ADDR"] == "10.0.0.4", "the last hop, as Tornado's xheaders takes it"
    assert environ["wsgi.url_scheme"] == "https"


def test_x_real_ip_wins_over_x_forwarded_for():
    environ = _environ("127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9", HTTP_X_REAL_IP="198.51.100.7")
    ForwardedPolicy(["127.0.0.1"]).apply(environ)
    assert environ["REMOTE_ADDR"] == "198.51.100.7"


def test_an_untrusted_peer_changes_nothing():
    environ = _environ("192.0.2.1", HTTP_X_FORWARDED_FOR="203.0.113.9", HTTP_X_FORWARDED_PROTO="https")
    ForwardedPolicy(["127.0.0.1"]).apply(environ)
    assert environ["REMOTE_ADDR"] == "192.0.2.1" and environ["wsgi.url_scheme"] == "http"


def test_a_header_that_is_no_address_or_scheme_is_ignored():
    environ = _environ("127.0.0.1", HTTP_X_FORWARDED_FOR="not-an-ip", HTTP_X_FORWARDED_PROTO="gopher")
    ForwardedPolicy(["*"]).apply(environ)
    assert environ["REMOTE_ADDR"] == "127.0.0.1" and environ["wsgi.url_scheme"] == "http"


def test_unix_socket_peers_are_trusted_and_bad_peer_addresses_are_not():
    policy = ForwardedPolicy(["127.0.0.1"])
    assert policy.trusts(None) and policy.trusts("")
    assert not policy.trusts("garbage")
