"""greenpool/launch/sockets.py: a bind that fails, however it fails, is a LaunchError(BIND_ERROR)
naming the address, never a traceback (exit 1 would make systemd restart in a loop)."""

from __future__ import annotations

import pytest

from greenpool.launch import sockets
from greenpool.launch.errors import ExitCode, LaunchError
from tests.support.fds import no_free_descriptor


def bind_error(value: str) -> LaunchError:
    with pytest.raises(LaunchError) as info:
        sockets.bind(sockets.parse_address(value), 16)
    assert info.value.code == ExitCode.BIND_ERROR
    return info.value


def test_unix_socket_under_a_file_is_a_bind_error(tmp_path):
    (tmp_path / "file").write_text("")
    error = bind_error(f"unix:{tmp_path}/file/gp.sock")
    assert error.message == f"cannot bind unix:{tmp_path}/file/gp.sock: Not a directory"


def test_host_name_the_resolver_cannot_encode_is_a_bind_error():
    host = "a" * 64 + ".example"  # a DNS label is at most 63 characters
    error = bind_error(f"{host}:8000")
    assert error.message.startswith(f"cannot bind {host}:8000: cannot resolve {host!r}: "), error.message


def test_no_descriptor_left_for_the_socket_is_a_bind_error():
    with no_free_descriptor():
        error = bind_error("127.0.0.1:0")
    assert error.message == "cannot bind 127.0.0.1:0: Too many open files"
