"""TLS everywhere: AMQPS with pika, aio-pika and kombu; EXTERNAL login with a client certificate;
refusals (no certificate under ``require``, TLS 1.1, plain AMQP on the TLS port, a silent client);
bad certificate files at start; certificate reload; HTTPS for the management API and metrics.

Certificates are made by the tests with ``trustme`` (a private CA and its leaf certificates).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path
from urllib.parse import quote

import aio_pika
import pika
import pika.exceptions
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kombu import Connection as KombuConnection
from kombu import Queue as KombuQueue
from pamqp import commands as C
from pamqp import frame as pamqp_frame

from amqp_raw import broker_socket_buffers
from broker.server import Broker
from broker.tls import CertFiles, ReloadableContext, TLSConfigError
from cli import serve
from conftest import ROOT, _make

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
MGMT = re.compile(r"management API listening on (https?)://\S+:(\d+)")
METRICS = re.compile(r"Prometheus metrics listening on (https?)://\S+:(\d+)/metrics")


# -- certificates ------------------------------------------------------------------------------------

class PKI:
    """A CA, a server certificate for localhost, and client certificates, as files in ``root``."""

    def __init__(self, root: Path, ca: trustme.CA | None = None, name: str = "ca") -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.ca = ca or trustme.CA(organization_name=f"BurrowMQ tests {name}")
        self.ca_file = self.write(f"{name}.pem", self.ca.cert_pem.bytes())
        server = self.ca.issue_cert("localhost", "127.0.0.1", common_name="localhost")
        self.server_cert = self.write(f"{name}-server.crt", b"".join(p.bytes() for p in server.cert_chain_pems))
        self.server_key = self.write(f"{name}-server.key", server.private_key_pem.bytes())
        self.server = server

    def write(self, name: str, data: bytes) -> str:
        path = self.root / name
        path.write_bytes(data)
        return str(path)

    def client(self, common_name: str, **kw) -> tuple[str, str]:
        """(certificate file, key file) of a client certificate with this CN."""
        leaf = self.ca.issue_cert(f"{common_name}.client.test", common_name=common_name, **kw)
        tag = re.sub(r"\W", "_", common_name) + "-" + os.urandom(3).hex()
        return (self.write(f"client-{tag}.crt", leaf.cert_chain_pems[0].bytes()),
                self.write(f"client-{tag}.key", leaf.private_key_pem.bytes()))

    def client_context(self, cert: tuple[str, str] | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if cert is not None:
            ctx.load_cert_chain(*cert)
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki"))


def tls_args(pki: PKI, *extra: str) -> list[str]:
    return ["--tls-port", "0", "--tls-cert", pki.server_cert, "--tls-key", pki.server_key, *extra]


def port_of(b, pattern: re.Pattern) -> tuple[str, int]:
    m = pattern.search(b.log_text())
    assert m, b.log_text()
    return m.group(1), int(m.group(2))


@pytest.fixture(scope="module")
def tls_broker(pki, tmp_path_factory):
    """A broker with a plain and an AMQPS listener, checking client certificates when sent."""
    b = _make(tmp_path_factory.mktemp("tls-broker"), tls_args(pki, "--tls-ca", pki.ca_file)).start()
    yield b
    b.stop()


def api(b, path: str, method: str = "GET", body=None, user: str = "guest", password: str = "guest",
        context: ssl.SSLContext | None = None):
    scheme, port = port_of(b, MGMT)
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{scheme}://localhost:{port}/api/{path}", data=data, method=method, headers={
        "Authorization": "Basic " + b64encode(f"{user}:{password}".encode()).decode(),
        "Content-Type": "application/json",
    })
    with urllib.request.urlopen(req, timeout=10, context=context) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def pika_params(b, pki: PKI, cert=None, credentials=None) -> pika.ConnectionParameters:
    kw = {"credentials": credentials} if credentials is not None else {}
    return pika.ConnectionParameters(
        "localhost", b.tls_port, ssl_options=pika.SSLOptions(pki.client_context(cert), "localhost"),
        connection_attempts=1, **kw,
    )


def connection_json(b, client_port: int) -> dict:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for c in api(b, "connections"):
            if c["peer_port"] == client_port:
                return c
        time.sleep(0.05)
    raise AssertionError(f"no connection from port {client_port}")


def local_port(conn: pika.BlockingConnection) -> int:
    return conn._impl._transport._sock.getsockname()[1]


def round_trip(ch, queue: str) -> None:
    ch.queue_declare(queue, auto_delete=True)
    ch.basic_publish("", queue, b"over tls")
    got = None
    for _ in range(50):
        got = ch.basic_get(queue, auto_ack=True)
        if got[0] is not None:
            break
        time.sleep(0.02)
    assert got is not None and got[2] == b"over tls"


# -- clients over TLS --------------------------------------------------------------------------------

def test_pika_over_tls_shows_tls_details(tls_broker, pki, uid):
    conn = pika.BlockingConnection(pika_params(tls_broker, pki))
    try:
        round_trip(conn.channel(), f"tls-pika-{uid}")
        info = connection_json(tls_broker, local_port(conn))
    finally:
        conn.close()
    assert info["ssl"] is True
    assert info["ssl_protocol"] in ("tlsv1.3", "tlsv1.2")
    assert info["ssl_cipher"] and info["ssl_hash"] and info["ssl_key_exchange"]
    assert info["peer_cert_subject"] is None  # no client certificate sent
    assert info["auth_mechanism"] == "PLAIN"
    assert info["port"] == tls_broker.tls_port


def test_plain_listener_stays_and_says_no_tls(tls_broker, uid):
    conn = pika.BlockingConnection(pika.ConnectionParameters("localhost", tls_broker.port))
    try:
        round_trip(conn.channel(), f"tls-plain-{uid}")
        info = connection_json(tls_broker, local_port(conn))
    finally:
        conn.close()
    assert info["ssl"] is False
    assert info["ssl_protocol"] is None and info["peer_cert_subject"] is None


async def test_aio_pika_over_tls(tls_broker, pki, uid):
    conn = await aio_pika.connect(f"amqps://guest:guest@localhost:{tls_broker.tls_port}/",
                                  ssl_context=pki.client_context())
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(f"tls-aio-{uid}", auto_delete=True)
        await ch.default_exchange.publish(aio_pika.Message(b"aio over tls"), routing_key=q.name)
        msg = await q.get(timeout=5)
        await msg.ack()
        assert msg.body == b"aio over tls"


def test_kombu_over_tls(tls_broker, pki, uid):
    ssl_opts = {"ca_certs": pki.ca_file, "cert_reqs": ssl.CERT_REQUIRED, "server_hostname": "localhost"}
    with KombuConnection(f"amqp://guest:guest@localhost:{tls_broker.tls_port}//", ssl=ssl_opts) as conn:
        queue = KombuQueue(f"tls-kombu-{uid}", routing_key=f"tls-kombu-{uid}", auto_delete=True)
        with conn.Producer() as producer:
            producer.publish({"hello": "tls"}, routing_key=queue.name, declare=[queue], serializer="json")
        simple = conn.SimpleQueue(queue)
        msg = simple.get(timeout=5)
        msg.ack()
        simple.close()
        assert msg.payload == {"hello": "tls"}


# -- EXTERNAL ----------------------------------------------------------------------------------------

def test_external_login_with_client_certificate(tls_broker, pki, uid):
    cert = pki.client("guest")
    conn = pika.BlockingConnection(pika_params(tls_broker, pki, cert, pika.credentials.ExternalCredentials()))
    try:
        round_trip(conn.channel(), f"tls-ext-{uid}")
        info = connection_json(tls_broker, local_port(conn))
    finally:
        conn.close()
    assert info["user"] == "guest"
    assert info["auth_mechanism"] == "EXTERNAL"
    assert info["peer_cert_subject"].startswith("CN=guest,")
    assert "O=BurrowMQ tests ca" in info["peer_cert_issuer"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ - \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
                        info["peer_cert_validity"])


async def test_aio_pika_external_login(tls_broker, pki, uid):
    ctx = pki.client_context(pki.client("guest"))
    conn = await aio_pika.connect(f"amqps://localhost:{tls_broker.tls_port}/?auth=external", ssl_context=ctx)
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(f"tls-aio-ext-{uid}", auto_delete=True)
        assert q.name == f"tls-aio-ext-{uid}"


def test_external_refused_for_unknown_user(tls_broker, pki):
    cert = pki.client("nobody-here")
    with pytest.raises(pika.exceptions.AMQPConnectionError) as exc:
        pika.BlockingConnection(pika_params(tls_broker, pki, cert, pika.credentials.ExternalCredentials()))
    assert "403" in repr(exc.value) or "ACCESS_REFUSED" in repr(exc.value), repr(exc.value)
    deadline = time.monotonic() + 5
    while "login refused: user 'nobody-here' - invalid credentials" not in tls_broker.log_text():
        assert time.monotonic() < deadline, tls_broker.log_text()[-2000:]
        time.sleep(0.05)


def test_tcp_buffer_options_apply_to_the_amqps_listener(pki, tmp_path):
    b = _make(tmp_path, tls_args(pki, "--tcp-recbuf", "16384", "--tcp-sndbuf", "32768")).start()
    try:
        conn = pika.BlockingConnection(pika_params(b, pki))
        assert broker_socket_buffers(b.tls_port) == [(32768, 65536)]
        conn.close()
    finally:
        b.stop()


def _start_frame(sock) -> C.Connection.Start:
    sock.sendall(PROTOCOL_HEADER)
    data = b""
    while True:
        chunk = sock.recv(65536)
        assert chunk, "closed before Connection.Start"
        data += chunk
        if len(data) >= 7 and len(data) >= 8 + int.from_bytes(data[3:7], "big"):
            break
    _, _, method = pamqp_frame.unmarshal(data)
    assert isinstance(method, C.Connection.Start)
    return method


def _start_ok(sock, mechanism: str, response: str) -> bytes:
    """Send Start-Ok; return what the broker answers (until it closes or 2 s pass)."""
    from pamqp import frame as f

    sock.sendall(f.marshal(C.Connection.StartOk(
        client_properties={"capabilities": {"authentication_failure_close": True}},
        mechanism=mechanism, response=response), 0))
    sock.settimeout(2)
    out = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
    except (TimeoutError, ssl.SSLError, ConnectionResetError):
        pass
    return out


def _tls_socket(b, pki: PKI, cert=None):
    raw = socket.create_connection(("127.0.0.1", b.tls_port), timeout=5)
    return pki.client_context(cert).wrap_socket(raw, server_hostname="localhost")


def test_external_offered_only_with_a_verified_certificate(tls_broker, pki):
    with _tls_socket(tls_broker, pki, pki.client("guest")) as s:
        assert _start_frame(s).mechanisms.split() == ["PLAIN", "AMQPLAIN", "EXTERNAL"]
    with _tls_socket(tls_broker, pki) as s:
        assert "EXTERNAL" not in _start_frame(s).mechanisms.split()
    with socket.create_connection(("127.0.0.1", tls_broker.port), timeout=5) as s:
        assert "EXTERNAL" not in _start_frame(s).mechanisms.split()
        # asked for anyway: RabbitMQ's answer to a mechanism it did not offer
        answer = _start_ok(s, "EXTERNAL", "")
    _, _, close = pamqp_frame.unmarshal(answer)
    assert isinstance(close, C.Connection.Close)
    assert (close.reply_code, close.reply_text) == (503, "COMMAND_INVALID - invalid authentication mechanism "
                                                         "'EXTERNAL'")


def test_external_refusal_text(tls_broker, pki):
    with _tls_socket(tls_broker, pki, pki.client("nobody-either")) as s:
        _start_frame(s)
        answer = _start_ok(s, "EXTERNAL", "")
    _, _, close = pamqp_frame.unmarshal(answer)
    assert (close.reply_code, close.reply_text) == (
        403, "ACCESS_REFUSED - Login was refused using authentication mechanism EXTERNAL. "
             "For details see the broker logfile.")


def test_external_login_from_distinguished_name(broker_factory, pki, uid):
    b = broker_factory(tls_args(pki, "--tls-ca", pki.ca_file, "--tls-login-from", "distinguished_name"))
    cert_file, key_file = pki.client(f"dn-{uid}")
    subject = x509.load_pem_x509_certificate(Path(cert_file).read_bytes()).subject
    dn = ",".join(reversed([f"{a.rfc4514_attribute_name}={a.value}" for a in subject]))  # no character to escape
    assert dn.startswith(f"CN=dn-{uid},OU=Testing cert ")
    api(b, f"users/{quote(dn, safe='')}", "PUT", {"password": os.urandom(8).hex(), "tags": ""})
    api(b, f"permissions/%2F/{quote(dn, safe='')}", "PUT", {"configure": ".*", "write": ".*", "read": ".*"})
    conn = pika.BlockingConnection(pika_params(b, pki, (cert_file, key_file), pika.credentials.ExternalCredentials()))
    try:
        info = connection_json(b, local_port(conn))
    finally:
        conn.close()
    assert info["user"] == dn


# -- refusals ----------------------------------------------------------------------------------------

def test_require_refuses_a_client_without_certificate(broker_factory, pki, uid):
    b = broker_factory(tls_args(pki, "--tls-ca", pki.ca_file, "--tls-verify", "require"))
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(pika_params(b, pki))
    assert refused(pki.client_context(), b.tls_port)
    # a certificate from another CA is refused too
    other = PKI(pki.root / f"other-{uid}", name="other")
    assert refused(pki.client_context(other.client("guest")), b.tls_port)
    wait_for_log(b, "TLS handshake failed: PEER_DID_NOT_RETURN_A_CERTIFICATE")
    wait_for_log(b, "TLS handshake failed: CERTIFICATE_VERIFY_FAILED (unable to get local issuer certificate)")
    # with a certificate signed by the CA, the same broker lets the client in
    good = pki.client("guest")
    assert not refused(pki.client_context(good), b.tls_port)
    conn = pika.BlockingConnection(pika_params(b, pki, good))
    try:
        round_trip(conn.channel(), f"tls-req-{uid}")
    finally:
        conn.close()


def refused(ctx: ssl.SSLContext, port: int) -> bool:
    """Whether the broker refuses this client's TLS handshake (under TLS 1.3 the refusal may come
    only after the client has finished its side, so a Connection.Start is waited for)."""
    try:
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                             server_hostname="localhost") as s:
            s.sendall(PROTOCOL_HEADER)
            return s.recv(100) == b""
    except (ssl.SSLError, ConnectionResetError):
        return True


def _tls11_client() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_1_is_refused(tls_broker, pki):
    # control: this client does speak TLS 1.1 with a server that allows it
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_1
    server_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    server_ctx.load_cert_chain(pki.server_cert, pki.server_key)
    listener = socket.create_server(("127.0.0.1", 0))
    versions: list[str | None] = []

    def serve_one() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as s:
            versions.append(s.version())

    t = threading.Thread(target=serve_one)
    t.start()
    with _tls11_client().wrap_socket(socket.create_connection(listener.getsockname(), timeout=5)) as s:
        assert s.version() == "TLSv1.1"
    t.join(5)
    listener.close()
    assert versions == ["TLSv1.1"]
    # the broker refuses the same client, and says so
    with pytest.raises(ssl.SSLError):
        with socket.create_connection(("127.0.0.1", tls_broker.tls_port), timeout=5) as raw:
            port = raw.getsockname()[1]
            _tls11_client().wrap_socket(raw)
    wait_for_log(tls_broker, f"AMQPS connection 127.0.0.1:{port}: TLS handshake failed: UNSUPPORTED_PROTOCOL")


def wait_for_log(b, text: str) -> None:
    deadline = time.monotonic() + 5
    while text not in b.log_text():
        assert time.monotonic() < deadline, f"{text!r} not in the log:\n{b.log_text()[-3000:]}"
        time.sleep(0.05)


def test_plain_amqp_on_the_tls_port_gets_no_connection_start(tls_broker):
    with socket.create_connection(("127.0.0.1", tls_broker.tls_port), timeout=5) as s:
        port = s.getsockname()[1]
        s.sendall(PROTOCOL_HEADER)
        got = b""
        try:
            while chunk := s.recv(4096):
                got += chunk
        except ConnectionResetError:
            pass
    assert not got.startswith(b"\x01\x00\x00")  # no method frame on channel 0: no Connection.Start
    assert not got.startswith(b"AMQP")
    assert got == b"" or got[0] == 0x15  # at most a TLS alert record
    wait_for_log(tls_broker, f"AMQPS connection 127.0.0.1:{port}: TLS handshake failed: ")


# -- the handshake timeout (in-process: a short timeout) -------------------------------------------------

async def test_tls_handshake_counts_in_the_handshake_timeout(pki):
    b = Broker(host="127.0.0.1", port=0, handshake_timeout=2.0, tls_port=0,
               tls=ReloadableContext("AMQPS listener", CertFiles(pki.server_cert, pki.server_key)))
    await b.start()
    try:
        # a client that opens a socket and sends nothing is dropped
        t0 = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", b.tls_port)
        try:
            assert await asyncio.wait_for(reader.read(), 10) == b""
        except ConnectionResetError:
            pass
        silent = time.monotonic() - t0
        writer.close()
        # a slow TLS handshake then nothing: closed 2 s after the accept, not 2 s after the handshake
        t0 = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", b.tls_port)
        await asyncio.sleep(1.4)
        await writer.start_tls(pki.client_context(), server_hostname="localhost")
        try:
            assert await asyncio.wait_for(reader.read(), 10) == b""
        except (ConnectionResetError, ssl.SSLError):
            pass
        slow = time.monotonic() - t0
        writer.close()
    finally:
        await b.stop()
    assert 1.5 < silent < 4.0
    assert 1.5 < slow < 3.0, slow  # 3.4 if the AMQP timer had started after the TLS handshake


# -- bad certificate files stop the start -------------------------------------------------------------

def check_fails(*args: str) -> str:
    """The error the start's TLS check gives for these serve options (in-process: the same code
    `broker serve` runs before it starts anything)."""
    from broker.config import ServeSettings
    from broker.runner import make_broker

    ctx = serve.make_context("serve", ["--data-dir", "unused", *args])
    with pytest.raises(TLSConfigError) as exc:
        make_broker(ServeSettings(**ctx.params))
    return str(exc.value)


def test_bad_certificate_files(tmp_path, pki):
    missing = str(tmp_path / "missing.pem")
    line = check_fails("--tls-cert", missing, "--tls-key", pki.server_key)
    assert missing in line and "--tls-cert" in line and "No such file" in line

    other = PKI(tmp_path / "other", name="other")
    line = check_fails("--tls-cert", pki.server_cert, "--tls-key", other.server_key)
    assert "does not match" in line and other.server_key in line and pki.server_cert in line

    line = check_fails("--tls-cert", pki.server_key, "--tls-key", pki.server_key)
    assert "holds no PEM certificate" in line

    unreadable = tmp_path / "unreadable.crt"
    unreadable.mkdir()
    line = check_fails("--tls-cert", str(unreadable), "--tls-key", pki.server_key)
    assert str(unreadable) in line and "cannot be read" in line

    line = check_fails("--tls-cert", pki.server_cert, "--tls-key", pki.server_key, "--tls-verify", "require")
    assert "--tls-ca" in line
    line = check_fails("--tls-cert", pki.server_cert, "--tls-key", pki.server_key, "--tls-ca", missing)
    assert missing in line and "--tls-ca" in line
    assert "--no-plain needs --tls-cert" in check_fails("--no-plain")
    assert "--tls-cert needs --tls-key" in check_fails("--tls-cert", pki.server_cert)
    line = check_fails("--management-tls-cert", pki.server_cert, "--management-tls-key", other.server_key)
    assert "--management-tls-key" in line and "does not match" in line

    key = serialization.load_pem_private_key(Path(pki.server_key).read_bytes(), password=None)
    encrypted = pki.write("encrypted.key", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret")))
    line = check_fails("--tls-cert", pki.server_cert, "--tls-key", encrypted)
    assert encrypted in line and "--tls-key-password" in line
    line = check_fails("--tls-cert", pki.server_cert, "--tls-key", encrypted, "--tls-key-password", "nope")
    assert encrypted in line and "wrong password" in line


def test_expired_certificate_stops_broker_serve(tmp_path, pki):
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2)
    expired = pki.ca.issue_cert("localhost", not_before=past - datetime.timedelta(days=30), not_after=past)
    cert = pki.write("expired.crt", expired.cert_chain_pems[0].bytes())
    key = pki.write("expired.key", expired.private_key_pem.bytes())
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run(
        [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", "0", "--management-port", "-1",
         "--metrics-port", "-1", "--data-dir", str(tmp_path / "data"), "--tls-cert", cert, "--tls-key", key],
        capture_output=True, text=True, cwd=str(ROOT), env=env, timeout=30,
    )
    assert r.returncode == 1, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    assert cert in errors[0] and f"expired on {past:%Y-%m-%d}" in errors[0]
    assert "ready" not in r.stderr


def test_encrypted_key_tls_only_from_config_file_and_env(tmp_path, pki, broker_factory, uid):
    key = serialization.load_pem_private_key(Path(pki.server_key).read_bytes(), password=None)
    encrypted = pki.write(f"enc-{uid}.key", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret")))
    # the password from the environment, the listener from a config file; TLS only
    config = tmp_path / "tls.toml"
    config.write_text(f'tls-cert = "{pki.server_cert}"\ntls-key = "{encrypted}"\ntls-port = 0\nno-plain = true\n')
    b = broker_factory(["--config", str(config)], env={"BROKER_TLS_KEY_PASSWORD": "s3cret"})
    assert "ready: amqps://" in b.log_text() and "amqp://127" not in b.log_text().split("ready:")[1]
    assert "tls-key-password=**** (env)" in b.log_text()
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "localhost", b.port, ssl_options=pika.SSLOptions(pki.client_context(), "localhost")))
    try:
        round_trip(conn.channel(), f"tls-enc-{uid}")
    finally:
        conn.close()


# -- certificate reload ----------------------------------------------------------------------------------

def served_issuer(port: int, pki: PKI) -> bool:
    """Whether the certificate served on ``port`` is signed by ``pki``'s CA."""
    try:
        with pki.client_context().wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                                              server_hostname="localhost"):
            return True
    except ssl.SSLCertVerificationError:
        return False


def admin(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, cwd=str(ROOT), env=env,
                       timeout=30)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_certificate_reload(broker_factory, tmp_path, pki, uid):
    live = PKI(tmp_path / "live", name="live")  # the files the broker reads; rotated below
    first = PKI(tmp_path / "first", ca=live.ca, name="first")
    second = PKI(tmp_path / "second", name="second")
    b = broker_factory(tls_args(live, "--tls-ca", live.ca_file))
    guest_of_second = second.client("guest")
    assert served_issuer(b.tls_port, first) and not served_issuer(b.tls_port, second)
    # new server certificate and client CA from the second CA; SIGHUP
    for src, dst in ((second.server_cert, live.server_cert), (second.server_key, live.server_key),
                     (second.ca_file, live.ca_file)):
        Path(dst).write_bytes(Path(src).read_bytes())
    b.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "TLS certificate reloaded for the AMQPS listener" not in b.log_text():
        assert time.monotonic() < deadline, b.log_text()[-2000:]
        time.sleep(0.05)
    assert served_issuer(b.tls_port, second) and not served_issuer(b.tls_port, first)
    conn = pika.BlockingConnection(pika_params(b, second, guest_of_second, pika.credentials.ExternalCredentials()))
    conn.close()  # the second CA's client certificate is now accepted
    # a broken rotation (key of another certificate) changes nothing, and says why
    Path(live.server_key).write_bytes(Path(first.server_key).read_bytes())
    _, mport = port_of(b, MGMT)
    r = admin("reload-certs", "--url", f"http://127.0.0.1:{mport}", check=False)
    assert r.returncode == 1 and "does not match" in r.stderr and live.server_key in r.stderr, r.stderr
    assert served_issuer(b.tls_port, second)
    # fixed: reload-certs from the CLI
    Path(live.server_key).write_bytes(Path(second.server_key).read_bytes())
    r = admin("reload-certs", "--url", f"http://127.0.0.1:{mport}")
    assert "AMQPS listener: " + live.server_cert in r.stdout and "CN=localhost" in r.stdout


# -- HTTPS for the management API and metrics --------------------------------------------------------------

def test_https_management_and_metrics(broker_factory, pki, tmp_path, uid):
    b = broker_factory(tls_args(pki, "--tls-ca", pki.ca_file) + [
        "--management-tls-cert", pki.server_cert, "--management-tls-key", pki.server_key])
    scheme, mport = port_of(b, MGMT)
    mscheme, metrics_port = port_of(b, METRICS)
    assert (scheme, mscheme) == ("https", "https")  # one pair serves both
    ctx = pki.client_context()
    overview = api(b, "overview", context=ctx)
    protocols = {lst["protocol"]: lst["port"] for lst in overview["listeners"]}
    assert protocols == {"amqp": b.port, "amqp/ssl": b.tls_port, "https": mport}
    with urllib.request.urlopen(f"https://localhost:{metrics_port}/metrics", context=ctx, timeout=10) as resp:
        assert b"rabbitmq_connections" in resp.read()
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://localhost:{mport}/api/overview", timeout=10)
    # the CLI checks the API's certificate against --cacert
    url = f"https://localhost:{mport}"
    conn = pika.BlockingConnection(pika_params(b, pki, pki.client("guest"), pika.credentials.ExternalCredentials()))
    try:
        r = admin("list-connections", "--url", url, "--cacert", pki.ca_file, "user", "ssl", "ssl_protocol",
                  "auth_mechanism", "peer_cert_subject", "--json")
    finally:
        conn.close()
    rows = json.loads(r.stdout)
    assert any(row["ssl"] and row["auth_mechanism"] == "EXTERNAL" and row["peer_cert_subject"].startswith("CN=guest")
               and row["ssl_protocol"].startswith("tlsv1.") for row in rows), rows
    r = admin("list-connections", "--url", url, check=False)
    assert r.returncode == 1 and "is not trusted" in r.stderr and "--cacert" in r.stderr, r.stderr
    certs = api(b, "certificates", context=ctx)
    assert [c["listener"] for c in certs] == ["AMQPS listener", "management API", "Prometheus metrics"]


def test_a_flood_of_failed_handshakes_is_counted_not_echoed(caplog, pki):
    from broker.amqps import FAILURE_LINES_PER_SECOND, AMQPSListener

    listener = AMQPSListener("127.0.0.1", 0, ReloadableContext("AMQPS listener", CertFiles(pki.server_cert,
                                                                                          pki.server_key)),
                             1.0, asyncio.Protocol)
    with caplog.at_level(logging.WARNING, logger="broker.amqps"):
        for i in range(50):
            listener._failed(("192.0.2.1", 1000 + i), TimeoutError())
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == FAILURE_LINES_PER_SECOND
    assert lines[0] == "AMQPS connection 192.0.2.1:1000: TLS handshake failed: no TLS handshake within 1 s"
