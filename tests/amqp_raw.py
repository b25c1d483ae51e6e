"""A tiny raw-socket AMQP 0-9-1 client for tests that must send bad bytes.

It does the handshake by hand with pamqp (guest/guest, PLAIN), then lets a
test send arbitrary bytes and read what the broker answers, frame by frame,
until a Connection.Close / Channel.Close arrives or the socket is closed.

    c = RawClient(port)
    c.handshake()
    c.open_channel(1)
    c.send(b"...anything...")
    close = c.read_until_close()          # Connection.Close / Channel.Close / None (EOF)
    assert c.wait_eof()
"""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import time
from typing import Any

from pamqp import body as pbody
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader
from pamqp import heartbeat as pheartbeat
from pamqp.exceptions import UnmarshalingException

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_END = b"\xce"


def frame(frame_type: int, channel: int, payload: bytes, end: bytes = FRAME_END) -> bytes:
    """A frame built by hand (so that tests can make it wrong)."""
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + end


def method(channel: int, m: Any) -> bytes:
    """A method frame marshalled by pamqp."""
    return pframe.marshal(m, channel)


def method_payload(m: Any) -> bytes:
    """Just the payload of a method frame (class, method, arguments)."""
    return method(0, m)[7:-1]


def content_header(channel: int, body_size: int, properties: C.Basic.Properties | None = None) -> bytes:
    return pframe.marshal(pheader.ContentHeader(0, body_size, properties or C.Basic.Properties()), channel)


def content_body(channel: int, data: bytes) -> bytes:
    return frame(3, channel, data)


def publish_frames(channel: int, exchange: str, routing_key: str, body: bytes,
                   properties: C.Basic.Properties | None = None, mandatory: bool = False) -> bytes:
    """Basic.Publish + content header + one body frame (if any body)."""
    out = method(channel, C.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory))
    out += content_header(channel, len(body), properties)
    if body:
        out += content_body(channel, body)
    return out


class Undecodable:
    """A frame from the broker that pamqp cannot decode."""

    def __init__(self, frame_type: int, raw: bytes) -> None:
        self.frame_type = frame_type
        self.raw = raw

    def __repr__(self) -> str:
        return f"Undecodable(type={self.frame_type}, {self.raw[:40]!r})"


class RawClient:
    """One raw AMQP connection; every read has a timeout."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0, source: str | None = None) -> None:
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False
        self.frames: list[tuple[int, Any]] = []  # everything read, in order
        self.tune: C.Connection.Tune | None = None

    # -- identity -------------------------------------------------------------
    @property
    def local_port(self) -> int:
        return self.sock.getsockname()[1]

    @property
    def peer_name(self) -> str:
        """How the broker names this connection in its log: ``127.0.0.1:port``."""
        host, port = self.sock.getsockname()[:2]
        return f"{host}:{port}"

    # -- output ---------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_method(self, channel: int, m: Any) -> None:
        self.send(method(channel, m))

    def trickle(self, data: bytes, delay: float = 0.0) -> None:
        """Send ``data`` one byte per send() call."""
        for i in range(len(data)):
            self.sock.sendall(data[i : i + 1])
            if delay:
                time.sleep(delay)

    # -- input ----------------------------------------------------------------
    def _recv(self, deadline: float) -> bool:
        """Read more bytes; False on EOF, socket.timeout when the deadline passes."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no data before the deadline")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_raw(self, n: int, timeout: float | None = None) -> bytes:
        """Exactly ``n`` bytes (fewer only if the socket closes first)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while len(self.buf) < n and not self.eof:
            if not self._recv(deadline):
                break
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_frame(self, timeout: float | None = None) -> tuple[int, Any] | None:
        """The next frame as ``(channel, pamqp object)``; None on EOF.

        Raises ``socket.timeout`` if nothing complete arrives in time.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if len(self.buf) >= 7:
                ftype, ch, size = struct.unpack_from(">BHI", self.buf, 0)
                if len(self.buf) >= size + 8:
                    raw, self.buf = self.buf[: size + 8], self.buf[size + 8 :]
                    if raw[-1:] != FRAME_END:
                        raise AssertionError(f"broker sent a bad frame end: {raw!r}")
                    if ftype == 3 and size == 0:
                        obj: Any = pbody.ContentBody(b"")
                    elif ftype == 8:
                        obj = pheartbeat.Heartbeat()
                    else:
                        try:
                            _n, ch, obj = pframe.unmarshal(raw)
                        except UnmarshalingException:
                            # e.g. a content header relayed as a (fuzzing) publisher sent it
                            obj = Undecodable(ftype, raw)
                    self.frames.append((ch, obj))
                    return ch, obj
            if self.eof or not self._recv(deadline):
                return None

    def expect(self, cls: type, timeout: float | None = None) -> Any:
        """Read frames (skipping heartbeats) until one of type ``cls``."""
        while True:
            f = self.read_frame(timeout)
            if f is None:
                raise AssertionError(f"connection closed while waiting for {cls.__name__}; got {self.frames!r}")
            if isinstance(f[1], pheartbeat.Heartbeat):
                continue
            if not isinstance(f[1], cls):
                raise AssertionError(f"expected {cls.__name__}, got {f[1]!r}")
            return f[1]

    def read_until_close(self, timeout: float | None = None) -> Any:
        """Frames until Connection.Close or Channel.Close (returned) or EOF (None).

        A Connection.Close is answered with CloseOk, as a client should.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            f = self.read_frame(max(0.0, deadline - time.monotonic()))
            if f is None:
                return None
            ch, obj = f
            if isinstance(obj, C.Connection.Close):
                try:
                    self.send_method(0, C.Connection.CloseOk())
                except OSError:
                    pass
                return obj
            if isinstance(obj, C.Channel.Close):
                return obj

    def wait_eof(self, timeout: float | None = None) -> bool:
        """True once the broker has closed the socket (data before EOF is kept)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        try:
            while not self.eof:
                self._recv(deadline)
        except TimeoutError:
            return False
        return True

    # -- handshake ------------------------------------------------------------
    def handshake(self, user: str = "guest", password: str = "guest", vhost: str = "/",
                  heartbeat: int = 0, frame_max: int | None = None) -> C.Connection.OpenOk:
        self.send(PROTOCOL_HEADER)
        self.expect(C.Connection.Start)
        self.send_method(0, C.Connection.StartOk(
            client_properties={"product": "amqp_raw", "capabilities": {"consumer_cancel_notify": True}},
            mechanism="PLAIN", response=f"\0{user}\0{password}", locale="en_US"))
        self.tune = tune = self.expect(C.Connection.Tune)
        self.send_method(0, C.Connection.TuneOk(
            channel_max=tune.channel_max, frame_max=tune.frame_max if frame_max is None else frame_max,
            heartbeat=heartbeat))
        self.send_method(0, C.Connection.Open(virtual_host=vhost))
        return self.expect(C.Connection.OpenOk)

    def open_channel(self, channel: int = 1) -> None:
        self.send_method(channel, C.Channel.Open())
        f = self.read_frame()
        while f is not None and isinstance(f[1], pheartbeat.Heartbeat):
            f = self.read_frame()
        assert f is not None and f[0] == channel and isinstance(f[1], C.Channel.OpenOk), f

    def call(self, channel: int, m: Any, reply: type) -> Any:
        """Send a synchronous method and wait for its reply."""
        self.send_method(channel, m)
        return self.expect(reply)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def broker_socket_buffers(port: int) -> list[tuple[int, int]]:
    """(receive, send) buffer sizes of the broker's established sockets on ``port``, as ``ss``
    (iproute2) reports them."""
    out = subprocess.run(["ss", "-tmnH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return [(int(rb), int(tb)) for rb, tb in re.findall(r"rb(\d+),t\d+,tb(\d+)", out)]
