"""The stock ``guest`` may log in from this machine only: one loopback test, shared by every listener.

In-process: :func:`broker.net.is_loopback` on the address spellings a socket
reports.  End to end: a broker listening on every address refuses ``guest``
over AMQP, the management API and the per-object metrics when the client comes
from this machine's own non-loopback address, and lets it in over 127.0.0.1.
"""

from __future__ import annotations

import base64
import re
import socket
import urllib.error
import urllib.request

import pika
import pika.exceptions
import pytest

from broker.net import is_loopback


@pytest.mark.parametrize("host", [
    "127.0.0.1", "127.1.2.3", "::1", "0:0:0:0:0:0:0:1", "::1%lo", "::ffff:127.0.0.1", "localhost",
])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", [
    "", "10.0.0.1", "192.168.1.127", "128.0.0.1", "::2", "fe80::1", "::ffff:10.0.0.1",
    "127.0.0.1.example.com", "localhost.example.com", "not an address",
])
def test_other_addresses(host: str) -> None:
    assert not is_loopback(host)


def _own_address() -> str:
    """This machine's IPv4 address on its default route (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            pytest.skip("no non-loopback IPv4 address on this machine")
        addr = s.getsockname()[0]
    if addr.startswith("127."):
        pytest.skip("no non-loopback IPv4 address on this machine")
    return addr


def _get(host: str, port: int, path: str) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://{host}:{port}{path}")
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _port(b, pattern: str) -> int:
    m = re.search(pattern, b.log_text())
    assert m, f"no {pattern!r} in the broker log"
    return int(m.group(1))


def test_guest_only_from_loopback_on_every_listener(broker_factory):
    own = _own_address()
    b = broker_factory(extra=["--host", "0.0.0.0"])
    mgmt = _port(b, r"management API listening on http://\S+:(\d+)")
    metrics = _port(b, r"Prometheus metrics listening on http://\S+:(\d+)/metrics")

    # from 127.0.0.1: in
    pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port, connection_attempts=1)).close()
    assert _get("127.0.0.1", mgmt, "/api/whoami")[0] == 200
    assert _get("127.0.0.1", metrics, "/metrics/per-object")[0] == 200

    # from this machine's own address: refused, with the reason
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(pika.ConnectionParameters(own, b.port, connection_attempts=1))
    assert "user 'guest' can only connect via localhost" in b.log_text()
    status, body = _get(own, mgmt, "/api/whoami")
    assert (status, body) == (401, b'{"error":"not_authorized","reason":"User can only log in via localhost"}')
    status, body = _get(own, metrics, "/metrics/per-object")
    assert status == 401 and b"User can only log in via localhost" in body
