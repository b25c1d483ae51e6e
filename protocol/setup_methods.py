"""Hand-written decoders for the methods every new connection sends, and for their field tables.

A client's set-up is Start-Ok (with a table of client properties), Tune-Ok, Open, Channel.Open,
Basic.Qos and Basic.Consume.  pamqp decodes a method by walking its attributes with a type
lookup each, and a table by re-slicing the rest of the buffer for every value: 85 us of the
broker's CPU per connection, more than the rest of the handshake's Python work together.
These decoders read the same bytes with :mod:`struct` in 1-5 us.

They are a fast path only.  Each returns the same pamqp object that pamqp's ``unmarshal`` would
(``Connection.TuneOk`` etc., every attribute set), but only for a payload whose every field lies
within it and which ends where its last field ends, whose strings are valid UTF-8 (except a
long string, which pamqp too hands over as bytes), and whose tables hold only the value types
clients put in client properties and consumer arguments (``S`` ``t`` ``F`` ``I`` ``l``, nested
at most ``MAX_DEPTH`` deep).  For anything else they return None and
:func:`protocol.framing.decode_method` asks pamqp, so malformed input meets exactly the checks
and errors it met before.  tests/test_setup_methods.py checks, on generated payloads, that a
decoder's answer is always None or equal to pamqp's.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from pamqp import commands as C

_u32 = struct.Struct(">I")
_i32 = struct.Struct(">i")
_i64 = struct.Struct(">q")
_tune_ok = struct.Struct(">HIH")
_qos = struct.Struct(">IHB")

MAX_DEPTH = 4  # nested tables decoded here; deeper ones go to pamqp

_S, _t, _F, _I, _l = b"StFIl"


def field_table(buf: bytes, off: int, end: int, depth: int = 0) -> tuple[dict[str, Any], int] | None:
    """The table at ``buf[off:]`` (its 4-byte size first), which must end by ``end``:
    (table, offset after it), or None if it is not one this fast path decodes."""
    if off + 4 > end:
        return None
    stop = off + 4 + _u32.unpack_from(buf, off)[0]
    if stop > end:
        return None
    off += 4
    out: dict[str, Any] = {}
    while off < stop:
        key_end = off + 1 + buf[off]
        if key_end >= stop:  # a key needs a value type after it
            return None
        try:
            key = buf[off + 1 : key_end].decode("utf-8")
        except UnicodeDecodeError:
            return None
        kind = buf[key_end]
        off = key_end + 1
        value: Any
        if kind == _S:
            if off + 4 > stop:
                return None
            value_end = off + 4 + _u32.unpack_from(buf, off)[0]
            if value_end > stop:
                return None
            raw = buf[off + 4 : value_end]
            try:
                value = raw.decode("utf-8")
            except UnicodeDecodeError:
                value = raw  # as pamqp: a long string that is not UTF-8 stays bytes
            off = value_end
        elif kind == _t:
            if off >= stop:
                return None
            value = bool(buf[off])
            off += 1
        elif kind == _F:
            if depth >= MAX_DEPTH:
                return None
            inner = field_table(buf, off, stop, depth + 1)
            if inner is None:
                return None
            value, off = inner
        elif kind == _I:
            if off + 4 > stop:
                return None
            value = _i32.unpack_from(buf, off)[0]
            off += 4
        elif kind == _l:
            if off + 8 > stop:
                return None
            value = _i64.unpack_from(buf, off)[0]
            off += 8
        else:
            return None
        out[key] = value
    return out, stop


def _short_str(buf: bytes, off: int) -> tuple[str, int] | None:
    """The short string at ``buf[off:]``: (text, offset after it), or None."""
    if off >= len(buf):
        return None
    end = off + 1 + buf[off]
    if end > len(buf):
        return None
    try:
        return buf[off + 1 : end].decode("utf-8"), end
    except UnicodeDecodeError:
        return None


def start_ok(p: bytes) -> C.Connection.StartOk | None:
    """Connection.Start-Ok: client properties, mechanism, response, locale."""
    props = field_table(p, 4, len(p))
    if props is None:
        return None
    table, off = props
    mech = _short_str(p, off)
    if mech is None:
        return None
    mechanism, off = mech
    if off + 4 > len(p):
        return None
    resp_end = off + 4 + _u32.unpack_from(p, off)[0]
    if resp_end > len(p):
        return None
    raw = p[off + 4 : resp_end]
    response: str | bytes
    try:
        response = raw.decode("utf-8")
    except UnicodeDecodeError:
        response = raw
    loc = _short_str(p, resp_end)
    if loc is None or loc[1] != len(p):
        return None
    m = C.Connection.StartOk.__new__(C.Connection.StartOk)
    m.client_properties = table
    m.mechanism = mechanism
    m.response = response  # type: ignore[assignment]  # pamqp too leaves a non-UTF-8 response as bytes
    m.locale = loc[0]
    return m


def tune_ok(p: bytes) -> C.Connection.TuneOk | None:
    if len(p) != 4 + _tune_ok.size:
        return None
    m = C.Connection.TuneOk.__new__(C.Connection.TuneOk)
    m.channel_max, m.frame_max, m.heartbeat = _tune_ok.unpack_from(p, 4)
    return m


def open_(p: bytes) -> C.Connection.Open | None:
    vh = _short_str(p, 4)
    if vh is None:
        return None
    caps = _short_str(p, vh[1])
    if caps is None or caps[1] + 1 != len(p):
        return None
    m = C.Connection.Open.__new__(C.Connection.Open)
    m.virtual_host = vh[0]
    m.capabilities = caps[0]
    m.insist = bool(p[-1] & 1)
    return m


def qos(p: bytes) -> C.Basic.Qos | None:
    if len(p) != 4 + _qos.size:
        return None
    m = C.Basic.Qos.__new__(C.Basic.Qos)
    m.prefetch_size, m.prefetch_count, bits = _qos.unpack_from(p, 4)
    m.global_ = bool(bits & 1)
    return m


def consume(p: bytes) -> C.Basic.Consume | None:
    """Basic.Consume: ticket, queue, consumer tag, four bits, arguments."""
    if len(p) < 6:
        return None
    queue = _short_str(p, 6)
    if queue is None:
        return None
    tag = _short_str(p, queue[1])
    if tag is None or tag[1] >= len(p):
        return None
    bits = p[tag[1]]
    args = field_table(p, tag[1] + 1, len(p))
    if args is None or args[1] != len(p):
        return None
    m = C.Basic.Consume.__new__(C.Basic.Consume)
    m.ticket = (p[4] << 8) | p[5]
    m.queue = queue[0]
    m.consumer_tag = tag[0]
    m.no_local = bool(bits & 1)
    m.no_ack = bool(bits & 2)
    m.exclusive = bool(bits & 4)
    m.nowait = bool(bits & 8)
    m.arguments = args[0]
    return m


DECODERS: dict[int, Callable[[bytes], Any]] = {
    (10 << 16) | 11: start_ok,
    (10 << 16) | 31: tune_ok,
    (10 << 16) | 40: open_,
    (60 << 16) | 10: qos,
    (60 << 16) | 20: consume,
}
"""Method index (class id << 16 | method id) -> its decoder, for the payload with the index."""
