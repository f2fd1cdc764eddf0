"""Shared test set-up: no test may reach the network.

Every test runs with outbound connections refused except to loopback and Unix
sockets (Jupyter kernels and torch.distributed talk over loopback). A test that
tries to reach the internet fails loudly with ``NetworkBlocked`` instead of
hanging or passing by luck on a connected machine.
"""
from __future__ import annotations

import ipaddress
import socket

import pytest


class NetworkBlocked(RuntimeError):
    """Raised when code under test tries to open a non-loopback connection."""


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
attempts: list[object] = []


def _is_local(sock: socket.socket, address: object) -> bool:
    if sock.family == getattr(socket, "AF_UNIX", None):
        return True
    host = address[0] if isinstance(address, tuple) else address
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost
        return False


def _guarded_connect(self: socket.socket, address: object):
    if not _is_local(self, address):
        attempts.append(address)
        raise NetworkBlocked(f"tests may not open network connections (tried {address!r})")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object):
    if not _is_local(self, address):
        attempts.append(address)
        raise NetworkBlocked(f"tests may not open network connections (tried {address!r})")
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True, scope="session")
def _block_network():
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex
    yield
    socket.socket.connect = _real_connect
    socket.socket.connect_ex = _real_connect_ex
