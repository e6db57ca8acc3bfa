"""greenpool/launch/listeners.py: the master's sockets, bound for real, without workers."""

from __future__ import annotations

import os
import socket

import pytest

from greenpool.launch.errors import LaunchError
from greenpool.launch.listeners import Listeners
from greenpool.launch.sockets import parse_address


def _listeners(tmp_path, *binds: str, worker_ports: bool = False, reuse_port: bool = False) -> Listeners:
    addresses = [parse_address(b.replace("TMP", str(tmp_path))) for b in binds]
    return Listeners(addresses, 64, worker_ports=worker_ports, reuse_port=reuse_port)


def _free_port_pair() -> int:
    """A port p with p + 1 free too (nothing may take them between here and the bind)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as second:
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports")


def test_shared_sockets_are_inherited_by_every_worker_and_named_alike(tmp_path):
    listeners = _listeners(tmp_path, "127.0.0.1:0", "unix:TMP/app.sock")
    listeners.bind(workers=3)
    try:
        first, fds = listeners.for_worker(0, workers=3)
        second, _ = listeners.for_worker(2, workers=3)
        assert first == second and [entry["shared_by"] for entry in first] == [3, 3]
        assert fds == [s.fileno() for s in listeners.shared]
        assert listeners.names(1)[1] == f"unix:{tmp_path}/app.sock"
        assert listeners.urls()[0].startswith("http://127.0.0.1:")
    finally:
        listeners.close()
    assert not os.path.exists(tmp_path / "app.sock"), "close() removes the socket files it made"


def test_worker_ports_give_each_worker_its_own_socket_and_take_it_back(tmp_path):
    port = _free_port_pair()
    listeners = _listeners(tmp_path, f"127.0.0.1:{port}", "unix:TMP/w.sock", worker_ports=True)
    listeners.bind(workers=2)
    try:
        listen, fds = listeners.for_worker(1, workers=2)
        assert [entry["address"] for entry in listen] == [f"127.0.0.1:{port + 1}", f"unix:{tmp_path}/w.sock.1"]
        assert [entry["shared_by"] for entry in listen] == [1, 1] and len(fds) == 2
        assert listeners.urls() == [
            f"http://127.0.0.1:{port}",
            f"http+unix://{tmp_path}/w.sock.0",
            f"http://127.0.0.1:{port + 1}",
            f"http+unix://{tmp_path}/w.sock.1",
        ]
        listeners.unbind_worker(1)
        assert not os.path.exists(tmp_path / "w.sock.1") and os.path.exists(tmp_path / "w.sock.0")
        assert listeners.for_worker(1, workers=1) == ([], [])
    finally:
        listeners.close()


def test_a_worker_port_past_65535_is_named_before_binding(tmp_path):
    listeners = _listeners(tmp_path, "127.0.0.1:65534", worker_ports=True)
    assert listeners.port_past_max(1) is None
    assert "port 65536" in (listeners.port_past_max(2) or "")


def test_a_taken_port_fails_naming_it_and_leaves_nothing_bound(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        listeners = _listeners(tmp_path, "unix:TMP/first.sock", f"127.0.0.1:{port}", worker_ports=True)
        with pytest.raises(LaunchError) as info:
            listeners.bind(workers=1)
    assert str(port) in info.value.message
    assert listeners.per_worker == {}
    listeners.close()
    assert not os.path.exists(tmp_path / "first.sock.0")


def test_reuse_port_leaves_the_binding_to_each_worker(tmp_path):
    port = _free_port_pair()
    listeners = _listeners(tmp_path, f"127.0.0.1:{port}", reuse_port=True)
    listeners.bind(workers=2)
    assert listeners.for_worker(0, workers=2) == ([{"address": f"127.0.0.1:{port}"}], [])
    assert listeners.names(1) == [f"127.0.0.1:{port}"]
    with socket.socket() as probe:  # the master's test bind did not keep the port
        probe.bind(("127.0.0.1", port))
