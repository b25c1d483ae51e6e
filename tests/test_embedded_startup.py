"""The in-process broker's start-up: AMQP first, the management API in the background.

What only some features need (the HTTP side with aiohttp, cryptography for TLS, prometheus_client
for metrics, pika for `broker trace`, uvloop unless asked for) is not imported before the embedded
broker answers AMQP.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pika
import pytest

from broker.embedded import EmbeddedBroker, EmbeddedBrokerError

ROOT = Path(__file__).resolve().parent.parent
OPTIONAL = ("aiohttp", "cryptography", "prometheus_client", "pika", "uvloop")

COLD = r"""
import json, socket, sys, tempfile, threading


class WhoImports:
    # records which thread first imports each optional package (finds nothing itself)
    seen = {{}}

    def find_spec(self, name, path=None, target=None):
        if name in {OPTIONAL!r} and name not in self.seen:
            self.seen[name] = threading.current_thread().name
        return None


sys.meta_path.insert(0, WhoImports())
from broker.embedded import EmbeddedBroker

b = EmbeddedBroker(tempfile.mkdtemp()).start(wait_for_management=False)
# what start() itself imported (anything the management thread imports is not on this path)
loaded = sorted(m for m, thread in WhoImports.seen.items() if thread != "burrowmq-management")
s = socket.create_connection((b.host, b.port), timeout=30)
s.sendall(b"AMQP\x00\x00\x09\x01")
start = s.recv(7)
# asked before the API is up: the request waits in the socket's backlog and is answered
h = socket.create_connection((b.host, b.management_port), timeout=30)
h.sendall(b"GET /api/overview HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n"
          b"Connection: close\r\n\r\n")
answer = b""
while chunk := h.recv(65536):
    answer += chunk
print(json.dumps({{"loaded": loaded, "start": start.hex(), "http": answer.split(b"\r\n")[0].decode(),
                  "aiohttp_now": "aiohttp" in sys.modules}}))
b.stop()
"""


def _fresh(code: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                       cwd=str(ROOT))
    assert r.returncode == 0, r.stderr[-3000:]
    result: dict = json.loads(r.stdout.strip().splitlines()[-1])
    return result


def test_amqp_answers_before_the_optional_imports() -> None:
    out = _fresh(COLD.format(OPTIONAL=OPTIONAL))
    assert out["loaded"] == [], f"imported before AMQP was ready: {out['loaded']}"
    assert out["start"].startswith("01000000"), out  # a method frame on channel 0: Connection.Start
    assert out["http"] == "HTTP/1.1 200 OK"
    assert out["aiohttp_now"] is True  # the management thread imported it after start() returned


def test_engine_alone_imports_no_optional_package() -> None:
    code = ("import json, sys; import broker.server, broker.runner as _r; "
            f"print(json.dumps(sorted(m for m in {('cryptography', 'prometheus_client', 'pika')!r} "
            "if m in sys.modules)))")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout) == []


def _overview(port: int) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as h:
        h.sendall(b"GET /api/overview HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n"
                  b"Connection: close\r\n\r\n")
        answer = b""
        while chunk := h.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    data: dict = json.loads(body)
    return data


def test_wait_management_then_restart_on_the_same_ports(tmp_path: Path) -> None:
    b = EmbeddedBroker(str(tmp_path / "data")).start(wait_for_management=False)
    try:
        b.wait_management()
        assert _overview(b.management_port)["product_name"]
        amqp, mgmt = b.port, b.management_port
        b.restart()  # waits for the API by default
        assert (b.port, b.management_port) == (amqp, mgmt)
        assert _overview(mgmt)["product_name"]
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        assert conn.is_open
        conn.close()
    finally:
        b.stop()


STOP_EARLY = r"""
import json, socket, sys, tempfile, threading
from broker.embedded import EmbeddedBroker

b = EmbeddedBroker(tempfile.mkdtemp()).start(wait_for_management=False)
starting = "broker.management.server" not in sys.modules  # a fresh process: still importing
mgmt = b.management_port
b.stop()  # lets the management start finish, then stops it with the rest
threads = [t.name for t in threading.enumerate() if t.name.startswith("burrowmq-")]
try:
    socket.create_connection(("127.0.0.1", mgmt), timeout=5).close()
    closed = False
except OSError:
    closed = True
print(json.dumps({"starting": starting, "threads": threads, "closed": closed}))
"""


def test_stop_while_the_management_api_is_starting() -> None:
    out = _fresh(STOP_EARLY)
    assert out["starting"] is True  # stop() came while the management thread was importing
    assert out["threads"] == []
    assert out["closed"] is True


def test_management_port_taken_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        b = EmbeddedBroker(str(tmp_path / "data"), management_port=port)
        with pytest.raises(EmbeddedBrokerError) as ei:
            b.start(wait_for_management=False)
    assert str(ei.value).startswith(f"the embedded broker cannot listen on 127.0.0.1:{port} for the management API")
    assert not b.running


def test_without_management_there_is_nothing_to_wait_for(tmp_path: Path) -> None:
    b = EmbeddedBroker(str(tmp_path / "data"), management=False).start()
    try:
        b.wait_management()  # returns at once
        assert b.management_url is None
    finally:
        b.stop()


def test_on_uvloop_when_asked(tmp_path: Path) -> None:
    b = EmbeddedBroker(str(tmp_path / "data"), uvloop=True).start()
    try:
        assert type(b.call(_running_loop())).__module__.startswith("uvloop")
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        ch = conn.channel()
        ch.queue_declare("on-uvloop")
        ch.basic_publish("", "on-uvloop", b"m")
        assert ch.basic_get("on-uvloop", auto_ack=True)[2] == b"m"
        conn.close()
        assert _overview(b.management_port)["product_name"]
    finally:
        b.stop()


async def _running_loop() -> object:
    import asyncio

    return asyncio.get_running_loop()
