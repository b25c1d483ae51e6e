"""AMQP 0-9-1 framing, sans-IO.

Theory of operation
-------------------
:class:`FrameReader` is fed the bytes a socket produced and hands back complete
frames as ``(frame_type, channel, payload)`` tuples.  It does the framing itself
(pamqp rejects partial frames and legal empty body frames): a 7-byte header
``type:u8 channel:u16 size:u32``, ``size`` payload bytes, then the end byte 0xCE.
A frame whose payload exceeds ``frame_max - 8`` or whose end byte is wrong raises
:class:`~protocol.errors.FrameError`.  An incomplete frame is kept as a list of
chunks until enough bytes have arrived, so a peer trickling one byte at a time
costs O(n), not O(n^2).

Method payloads are decoded by :func:`decode_method` with pamqp, except for the
hot path: Basic.Publish and Basic.Ack are parsed by hand (:func:`parse_publish`,
:func:`parse_ack`), and Basic.Deliver, Basic.GetOk, Basic.Ack and Basic.Return are
built by hand with :mod:`struct`.  Every hand-rolled codec is tested
byte-for-byte against pamqp (tests/test_protocol_unit.py).
"""

from __future__ import annotations

import functools
import struct
from typing import Any

from pamqp import commands
from pamqp import frame as pframe
from pamqp.exceptions import UnmarshalingException

from .errors import COMMAND_INVALID, ConnectionError, FrameError
from .names import shortstr
from .setup_methods import DECODERS

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"

# frame types (the first byte of every frame), the one definition for protocol/ and broker/
FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE
FRAME_MIN_SIZE = 8192  # the least frame_max a client may ask for, and the limit before Tune-Ok (RabbitMQ 4.1)
FRAME_END_BYTE = bytes((FRAME_END,))

HEARTBEAT_FRAME = bytes((FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END))  # channel 0, empty payload

# method indexes (class_id << 16 | method_id)
IDX_BASIC_PUBLISH = (60 << 16) | 40
IDX_BASIC_ACK = (60 << 16) | 80

_hdr = struct.Struct(">BHI")
_u16 = struct.Struct(">H")
_u32 = struct.Struct(">I")
_ack_tail = struct.Struct(">QB")
_method_head = struct.Struct(">BHIHH")
_deliver_tail = struct.Struct(">QB")
_content_head = struct.Struct(">BHI")
_confirm = struct.Struct(">BHIHHQBB")
_getok_tail = struct.Struct(">QB")
_return_head = struct.Struct(">BHIHHH")


class FrameReader:
    """Turns a byte stream into ``(type, channel, payload)`` frames."""

    __slots__ = ("max_payload", "_chunks", "_have", "_need")

    def __init__(self, frame_max: int = 131072) -> None:
        # RabbitMQ accepts a payload of up to frame_max bytes (not frame_max - 8): so do we
        self.max_payload = frame_max
        self._chunks: list[bytes] = []
        self._have = 0
        self._need = 0

    def set_frame_max(self, frame_max: int) -> None:
        self.max_payload = frame_max

    @property
    def buffered(self) -> int:
        return self._have

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """Consume ``data``; return every frame it completes, in order."""
        if self._chunks:
            self._chunks.append(data)
            self._have += len(data)
            if self._have < self._need:
                return []
            data = b"".join(self._chunks)
            self._chunks = []
            self._have = 0
        frames: list[tuple[int, int, bytes]] = []
        append = frames.append
        n = len(data)
        off = 0
        unpack = _hdr.unpack_from
        maxp = self.max_payload
        while n - off >= 7:
            ftype, ch, size = unpack(data, off)
            if size > maxp:
                raise FrameError(
                    f"frame of type {ftype} on channel {ch} has a payload of {size} bytes, "
                    f"over the negotiated frame_max {maxp}"
                )
            end = off + 7 + size
            if end >= n:
                break
            if data[end] != FRAME_END:
                raise FrameError(
                    f"invalid frame end byte 0x{data[end]:02x} (expected 0xce) "
                    f"on a frame of type {ftype}, channel {ch}"
                )
            append((ftype, ch, data[off + 7 : end]))
            off = end + 1
        if off < n:
            rest = data[off:]
            self._chunks = [rest]
            self._have = len(rest)
            if len(rest) >= 7:
                self._need = 8 + _hdr.unpack_from(rest, 0)[2]
            else:
                self._need = 7
        return frames


def method_index(payload: bytes) -> int:
    if len(payload) < 4:
        raise FrameError("method frame too short")
    return _u32.unpack_from(payload, 0)[0]


def decode_method(payload: bytes) -> Any:
    """Decode a method frame payload: the methods of a connection's set-up by hand where they are
    well-formed (:mod:`protocol.setup_methods`), everything else with pamqp (control methods)."""
    idx = method_index(payload)
    cls = commands.INDEX_MAPPING.get(idx)
    if cls is None:
        raise ConnectionError(
            COMMAND_INVALID,
            f"unknown method class {idx >> 16} method {idx & 0xFFFF}",
            idx >> 16,
            idx & 0xFFFF,
        )
    fast = DECODERS.get(idx)
    if fast is not None:
        decoded = fast(payload)
        if decoded is not None:
            return decoded
    method = cls()
    try:
        method.unmarshal(payload[4:])
    except RecursionError:
        raise FrameError(f"cannot decode {method.name} frame: field tables nested too deeply") from None
    except UnicodeDecodeError:
        field = _field_not_utf8(cls, payload[4:])
        raise FrameError(f"cannot decode {method.name} frame: '{field}' is not valid UTF-8") from None
    except (struct.error, ValueError, IndexError, UnmarshalingException) as exc:
        raise FrameError(f"cannot decode {method.name} frame: {exc}") from None
    return method


def _field_not_utf8(cls: Any, args: bytes) -> str:
    """The argument of a method that pamqp could not decode as UTF-8.

    pamqp sets the arguments in order and stops at the bad one, so on an
    instance made without ``__init__`` (no defaults) it is the first one unset.
    """
    bare = cls.__new__(cls)
    try:
        bare.unmarshal(args)
    except UnicodeDecodeError:
        pass
    return next((a for a in cls.__slots__ if not hasattr(bare, a)), "?")


def parse_publish(p: bytes) -> tuple[bytes, bytes, int]:
    """Basic.Publish payload -> (exchange shortstr, routing-key shortstr, bits).

    The names are returned as received, *with* their length byte, so that they
    can be copied into Basic.Deliver as they are.
    """
    try:
        elen = p[6]
        o = 7 + elen
        rlen = p[o]
        e = o + 1 + rlen
        bits = p[e]
    except IndexError:
        raise FrameError("cannot decode basic.publish frame: truncated") from None
    return p[6:o], p[o:e], bits


def parse_ack(p: bytes) -> tuple[int, bool]:
    try:
        tag, bits = _ack_tail.unpack_from(p, 4)
    except struct.error:
        raise FrameError("cannot decode basic.ack frame: truncated") from None
    return tag, bool(bits & 1)


def method_frame(channel: int, method: Any) -> bytes:
    """Marshal a control method with pamqp (one that carries no client-chosen
    name: those are in :mod:`protocol.methods`)."""
    return pframe.marshal(method, channel)


@functools.lru_cache(maxsize=1024)
def reply_frame(channel: int, method_class: type) -> bytes:
    """The frame of a reply that carries no arguments (Channel.OpenOk, Basic.QosOk, Connection.OpenOk):
    encoded by pamqp once per channel number and method, not once per reply."""
    return pframe.marshal(method_class(), channel)


def deliver_frame(channel: int, ctag: bytes, tag: int, redelivered: bool, exchange: bytes, rkey: bytes) -> bytes:
    """Basic.Deliver; ``ctag``, ``exchange`` and ``rkey`` are length-prefixed shortstrs."""
    size = 13 + len(ctag) + len(exchange) + len(rkey)
    return b"".join(
        (
            _method_head.pack(FRAME_METHOD, channel, size, 60, 60),
            ctag,
            _deliver_tail.pack(tag, 1 if redelivered else 0),
            exchange,
            rkey,
            FRAME_END_BYTE,
        )
    )


def get_ok_frame(channel: int, tag: int, redelivered: bool, exchange: bytes, rkey: bytes, count: int) -> bytes:
    size = 17 + len(exchange) + len(rkey)
    return b"".join(
        (
            _method_head.pack(FRAME_METHOD, channel, size, 60, 71),
            _getok_tail.pack(tag, 1 if redelivered else 0),
            exchange,
            rkey,
            _u32.pack(count),
            FRAME_END_BYTE,
        )
    )


def return_frame(channel: int, code: int, text: str, exchange: bytes, rkey: bytes) -> bytes:
    t = shortstr(text)
    size = 6 + len(t) + len(exchange) + len(rkey)
    return b"".join((_return_head.pack(FRAME_METHOD, channel, size, 60, 50, code), t, exchange, rkey, FRAME_END_BYTE))


def confirm_frame(channel: int, tag: int, multiple: bool, nack: bool = False, requeue: bool = False) -> bytes:
    if nack:
        bits = (1 if multiple else 0) | (2 if requeue else 0)
        return _confirm.pack(FRAME_METHOD, channel, 13, 60, 120, tag, bits, FRAME_END)
    return _confirm.pack(FRAME_METHOD, channel, 13, 60, 80, tag, 1 if multiple else 0, FRAME_END)


def content_frames(channel: int, header: bytes, body: bytes, max_body: int) -> list[bytes]:
    """The content header frame (``header`` is its payload, as received) and
    the body frames, each body frame at most ``max_body`` bytes of payload."""
    out = [_content_head.pack(FRAME_HEADER, channel, len(header)), header, FRAME_END_BYTE]
    n = len(body)
    if n <= max_body:
        if n:
            out += (_content_head.pack(FRAME_BODY, channel, n), body, FRAME_END_BYTE)
        return out
    mv = memoryview(body)
    for off in range(0, n, max_body):
        chunk = mv[off : off + max_body]
        out += (_content_head.pack(FRAME_BODY, channel, len(chunk)), chunk, FRAME_END_BYTE)  # type: ignore[arg-type]
    return out


def content_header_payload(body_size: int, properties: Any) -> bytes:
    """Build a content header payload (used where the broker makes a message)."""
    return struct.pack(">HHQ", 60, 0, body_size) + properties.marshal()


# -- content header property access without a full decode -------------------

FLAG_CONTENT_TYPE = 0x8000
FLAG_CONTENT_ENCODING = 0x4000
FLAG_HEADERS = 0x2000
FLAG_DELIVERY_MODE = 0x1000
FLAG_PRIORITY = 0x0800
FLAG_EXPIRATION = 0x0100
FLAG_USER_ID = 0x0010


def header_body_size(header: bytes) -> tuple[int, int]:
    """(class_id, body_size) of a content header payload."""
    if len(header) < 14:
        raise FrameError("content header frame too short")
    class_id, _w, size = struct.unpack_from(">HHQ", header, 0)
    return class_id, size


def property_flags(header: bytes) -> int:
    return _u16.unpack_from(header, 12)[0]


def delivery_mode(header: bytes) -> int:
    """delivery_mode of a content header payload (0 when absent)."""
    try:
        flags = _u16.unpack_from(header, 12)[0]
        if not flags & FLAG_DELIVERY_MODE:
            return 0
        off = 14
        if flags & 1:  # continuation flag words (none defined for basic)
            while _u16.unpack_from(header, off - 2)[0] & 1:
                off += 2
    except struct.error:
        raise FrameError("cannot decode content header properties") from None
    try:
        if flags & FLAG_CONTENT_TYPE:
            off += 1 + header[off]
        if flags & FLAG_CONTENT_ENCODING:
            off += 1 + header[off]
        if flags & FLAG_HEADERS:
            off += 4 + _u32.unpack_from(header, off)[0]
        return header[off]
    except (IndexError, struct.error):
        raise FrameError("cannot decode content header properties") from None


def priority(header: bytes) -> int:
    """The priority property (0 when absent)."""
    if not property_flags(header) & FLAG_PRIORITY:
        return 0
    from .fields import split_properties

    raw = split_properties(header)[1].get("priority")
    return raw[0] if raw else 0


def expiration(header: bytes) -> str | None:
    """The expiration property as text, or None."""
    if not property_flags(header) & FLAG_EXPIRATION:
        return None
    from .fields import split_properties

    raw = split_properties(header)[1].get("expiration")
    return raw[1:].decode("utf-8", "replace") if raw is not None else None


FLAG_REPLY_TO = 0x0200


def decode_properties(header: bytes) -> commands.Basic.Properties:
    """Full decode of the properties of a content header payload (slow path)."""
    from pamqp.header import ContentHeader

    ch = ContentHeader()
    try:
        ch.unmarshal(header)
    except RecursionError:
        raise FrameError("cannot decode content header properties: field tables nested too deeply") from None
    except (struct.error, ValueError, IndexError, UnicodeDecodeError, UnmarshalingException) as exc:
        raise FrameError(f"cannot decode content header properties: {exc}") from None
    return ch.properties
