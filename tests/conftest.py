"""Shared test set-up: no test may reach the network; shared fixtures.

Every test runs with outbound connections and host-name lookups refused except
for loopback and Unix sockets (Jupyter kernels and torch.distributed talk over
loopback). A test that tries to reach the internet fails loudly with
``NetworkBlocked`` instead of hanging or passing by luck on a connected machine.

Plain helpers the tests call (image and CSV writers, the CLI runner) are in
``support.py``.
"""
from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


# The real-browser tests (tests/browser, `make browser-test`) have a conftest.py of their own;
# the default run does not even load it, so `import conftest` always means this file.
if os.environ.get("BOOK_BROWSER_TEST") != "1":
    collect_ignore = ["browser"]


class NetworkBlocked(RuntimeError):
    """Raised when code under test tries to open a non-loopback connection."""


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo
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


def _guarded_getaddrinfo(host, *args, **kwargs):
    """Name lookups are network traffic too (a DNS query): only local and numeric hosts pass."""
    name = host.decode() if isinstance(host, bytes) else host
    if name not in (None, "", "localhost"):
        try:
            ipaddress.ip_address(name)
        except ValueError:
            attempts.append(name)
            raise NetworkBlocked(f"tests may not look up host names (tried {name!r})") from None
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True, scope="session")
def _block_network():
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex
    socket.getaddrinfo = _guarded_getaddrinfo
    yield
    socket.socket.connect = _real_connect
    socket.socket.connect_ex = _real_connect_ex
    socket.getaddrinfo = _real_getaddrinfo


@pytest.fixture
def image_frame(tmp_path: Path) -> pd.DataFrame:
    """Six readable images (PNG and JPEG, different sizes), one corrupt JPEG, one missing file.

    The bad rows are ``support.BAD_ROWS`` (3: corrupt, 6: missing).
    """
    from PIL import Image
    from support import lesion

    rows = []
    labels = ["MEL", "NV", "BCC", "UNK", "SCC", "NV", "MEL", "NV"]
    for i in range(8):
        image_id = f"ISIC_{i:07d}"
        path = tmp_path / f"{image_id}.{'png' if i % 2 else 'jpg'}"
        if i == 3:
            path.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
        elif i == 6:
            pass  # missing file
        else:
            Image.fromarray(lesion(40 + 4 * i, 50 + 2 * i, i)).save(path)
        rows.append({"image_id": image_id, "patient_id": f"IP_{i // 2:07d}", "label": labels[i],
                     "target": int(labels[i] == "MEL"), "path": str(path),
                     "age_approx": [45.0, np.nan, 70.0, 30.0, 55.0, np.nan, 80.0, 20.0][i],
                     "sex": ["male", "female", None, "male", "female", "unknown", "male", "female"][i],
                     "anatom_site": ["torso", "head/neck", None, "palms/soles", "torso", "oral/genital",
                                     "lower extremity", "upper extremity"][i]})
    frame = pd.DataFrame(rows)
    frame["target"] = frame["target"].astype("Int8")
    return frame
