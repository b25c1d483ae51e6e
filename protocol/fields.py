"""Content-header properties and field tables at the byte level.

The broker mostly passes a publisher's content header on untouched.  Where it
must change one property (dead-lettering writes ``x-death`` into ``headers``
and drops ``expiration``; direct reply-to rewrites ``reply_to``) it splices the
raw property list: every other property, and every other header entry, keeps
its bytes and so its exact AMQP type.  Values the broker writes itself use
RabbitMQ's types (long ``l`` counts, ``T`` timestamps, ``S`` strings, ``A``
arrays, ``F`` tables) via :func:`encode_value`.
"""

from __future__ import annotations

import datetime
import struct
from decimal import Decimal
from typing import Any

from .errors import FrameError
from .names import shortstr

# basic properties in flag order (bit 15 first) and their wire types
PROPERTIES = (
    ("content_type", "s"),
    ("content_encoding", "s"),
    ("headers", "F"),
    ("delivery_mode", "o"),
    ("priority", "o"),
    ("correlation_id", "s"),
    ("reply_to", "s"),
    ("expiration", "s"),
    ("message_id", "s"),
    ("timestamp", "T"),
    ("type", "s"),
    ("user_id", "s"),
    ("app_id", "s"),
    ("cluster_id", "s"),
)
_BIT = {name: 1 << (15 - i) for i, (name, _t) in enumerate(PROPERTIES)}

_u16 = struct.Struct(">H")
_u32 = struct.Struct(">I")


class Long(int):
    """An int to be written as AMQP long-long ('l'), as RabbitMQ writes counts."""


def split_properties(header: bytes) -> tuple[bytes, dict[str, bytes]]:
    """(the 12-byte class/weight/size prefix, {property name: raw value bytes})."""
    try:
        flags = _u16.unpack_from(header, 12)[0]
        off = 14
        out: dict[str, bytes] = {}
        for name, t in PROPERTIES:
            if not flags & _BIT[name]:
                continue
            if t == "s":
                n = 1 + header[off]
            elif t == "F":
                n = 4 + _u32.unpack_from(header, off)[0]
            elif t == "o":
                n = 1
            else:  # T
                n = 8
            if off + n > len(header):
                raise IndexError
            out[name] = bytes(header[off : off + n])
            off += n
    except (IndexError, struct.error):
        raise FrameError("cannot decode content header properties") from None
    return bytes(header[:12]), out


def join_properties(prefix: bytes, props: dict[str, bytes]) -> bytes:
    flags = 0
    parts = []
    for name, _t in PROPERTIES:
        raw = props.get(name)
        if raw is not None:
            flags |= _BIT[name]
            parts.append(raw)
    return prefix + _u16.pack(flags) + b"".join(parts)


def table_entries(raw_table: bytes) -> list[tuple[str, bytes]]:
    """The entries of a raw field table (with its 4-byte length) as
    (key, raw type-tagged value) pairs, values untouched.  A key that is not
    UTF-8 keeps its bytes (as surrogate escapes) for :func:`encode_table_entries`."""
    n = _u32.unpack_from(raw_table, 0)[0]
    end = 4 + n
    off = 4
    out = []
    while off < end:
        kl = raw_table[off]
        key = raw_table[off + 1 : off + 1 + kl].decode("utf-8", "surrogateescape")
        off += 1 + kl
        vend = _skip_value(raw_table, off)
        out.append((key, bytes(raw_table[off:vend])))
        off = vend
    return out


_FIXED = {
    b"t": 1, b"b": 1, b"B": 1, b"s": 2, b"u": 2, b"I": 4, b"i": 4, b"l": 8, b"L": 8, b"f": 4, b"d": 8, b"D": 5, b"T": 8,
    b"V": 0,
}


def _skip_value(buf: bytes, off: int) -> int:
    t = buf[off : off + 1]
    off += 1
    if t in _FIXED:
        return off + _FIXED[t]
    if t in (b"S", b"x", b"F", b"A"):
        return off + 4 + _u32.unpack_from(buf, off)[0]
    raise FrameError(f"unknown field type {t!r} in a field table")


_KIND_OF_BIT = tuple((_BIT[name], t) for name, t in PROPERTIES)
_OCTET_BITS = _BIT["delivery_mode"] | _BIT["priority"]
_VARIABLE_BITS = sum(bit for bit, t in _KIND_OF_BIT if t in ("s", "F"))
FLAG_CONTINUATION = 0x0001
BAD_PROPERTIES = "cannot decode content header properties"


def check_properties(header: bytes) -> None:
    """Raise :class:`FrameError` unless the property list of a content header payload
    (at least 14 bytes) is well formed: every property the flags announce fits in
    the payload, and a ``headers`` table is a valid field table all the way down.

    This is the only check a publisher's properties get before they are passed on
    to consumers as received, so a malformed header is refused when it arrives,
    not delivered to a consumer whose client cannot decode it."""
    flags = (header[12] << 8) | header[13]
    if not flags:
        return
    if flags & FLAG_CONTINUATION:
        raise FrameError(f"{BAD_PROPERTIES}: continuation flag words are not defined for class basic")
    if not flags & _VARIABLE_BITS:  # the common case (delivery mode, priority, timestamp): sizes fixed
        need = 14 + (flags & _OCTET_BITS).bit_count() + (8 if flags & _BIT["timestamp"] else 0)
        if need > len(header):
            raise FrameError(BAD_PROPERTIES)
        return
    off = 14
    try:
        for bit, kind in _KIND_OF_BIT:
            if not flags & bit:
                continue
            if kind == "s":
                off += 1 + header[off]
            elif kind == "F":
                end = off + 4 + _u32.unpack_from(header, off)[0]
                check_table(header, off + 4, end)
                off = end
            elif kind == "o":
                off += 1
            else:  # T
                off += 8
    except (IndexError, struct.error):
        raise FrameError(BAD_PROPERTIES) from None
    if off > len(header):
        raise FrameError(BAD_PROPERTIES)


def check_table(buf: bytes, off: int, end: int) -> None:
    """Raise :class:`FrameError` unless ``buf[off:end]`` is a well-formed field table
    body (keys and type-tagged values; nested tables and arrays inside their own
    lengths).  Walked with an explicit stack: no nesting exhausts the recursion limit,
    and each step moves forward, so the work is linear in the bytes."""
    if end > len(buf):
        raise FrameError(BAD_PROPERTIES)
    stack: list[tuple[bool, int]] = []  # (is a table, end) of each enclosing table or array
    is_table = True
    try:
        while True:
            if off >= end:
                if off > end:
                    raise FrameError(BAD_PROPERTIES)
                if not stack:
                    return
                off = end
                is_table, end = stack.pop()
                continue
            if is_table:
                off += 1 + buf[off]  # the key
                if off >= end:
                    raise FrameError(BAD_PROPERTIES)
            t = buf[off : off + 1]
            off += 1
            fixed = _FIXED.get(t)
            if fixed is not None:
                off += fixed
            elif t in (b"S", b"x"):
                off += 4 + _u32.unpack_from(buf, off)[0]
            elif t in (b"F", b"A"):
                inner_end = off + 4 + _u32.unpack_from(buf, off)[0]
                if inner_end > end:
                    raise FrameError(BAD_PROPERTIES)
                stack.append((is_table, end))
                is_table, off, end = t == b"F", off + 4, inner_end
            else:
                raise FrameError(f"{BAD_PROPERTIES}: unknown field type {t!r} in a field table")
    except (IndexError, struct.error):
        raise FrameError(BAD_PROPERTIES) from None


def set_headers(header: bytes, values: dict[str, bytes]) -> bytes:
    """``header`` with the ``headers`` entries named in ``values`` (raw type-tagged
    values) replaced or added; every other property and header keeps its bytes."""
    prefix, props = split_properties(header)
    entries = table_entries(props["headers"]) if "headers" in props else []
    entries = [(k, v) for k, v in entries if k not in values] + list(values.items())
    props["headers"] = encode_table_entries(entries)
    return join_properties(prefix, props)


def encode_table_entries(entries: list[tuple[str, bytes]]) -> bytes:
    body = b"".join(shortstr(k.encode("utf-8", "surrogateescape")) + v for k, v in entries)
    return _u32.pack(len(body)) + body


def encode_value(v: Any) -> bytes:
    """A type-tagged field value, with RabbitMQ's choice of types."""
    if isinstance(v, bool):
        return b"t" + (b"\x01" if v else b"\x00")
    if isinstance(v, Timestamp):
        return encode_timestamp(v)
    if isinstance(v, Long):
        return b"l" + struct.pack(">q", v)
    if isinstance(v, int):
        if -(2**31) <= v < 2**31:
            return b"I" + struct.pack(">i", v)
        return b"l" + struct.pack(">q", v)
    if isinstance(v, str):
        raw = v.encode("utf-8")
        return b"S" + _u32.pack(len(raw)) + raw
    if isinstance(v, bytes):
        return b"S" + _u32.pack(len(v)) + v
    if isinstance(v, float):
        return b"d" + struct.pack(">d", v)
    if isinstance(v, Decimal):
        sign, digits, exp = v.as_tuple()
        scale = -exp if isinstance(exp, int) and exp < 0 else 0
        return b"D" + struct.pack(">Bi", scale, int(v.scaleb(scale)))
    if isinstance(v, datetime.datetime):
        return b"T" + struct.pack(">Q", int(v.timestamp()))
    if isinstance(v, dict):
        return b"F" + encode_table(v)
    if isinstance(v, (list, tuple)):
        body = b"".join(encode_value(x) for x in v)
        return b"A" + _u32.pack(len(body)) + body
    if v is None:
        return b"V"
    raise ValueError(f"cannot encode {type(v).__name__} as a field value")


def encode_table(d: dict) -> bytes:
    return encode_table_entries([(str(k), encode_value(v)) for k, v in d.items()])


class Timestamp(int):
    """Seconds since the epoch, written as an AMQP timestamp ('T')."""


def encode_timestamp(seconds: int) -> bytes:
    return b"T" + struct.pack(">Q", seconds)


# Bounds on the field tables the broker keeps in its durable metadata (queue,
# exchange and binding arguments): deep or huge tables would make every later
# metadata save slow or impossible.  RabbitMQ's own arguments are flat.
MAX_TABLE_DEPTH = 32
MAX_TABLE_BYTES = 64 * 1024


def table_bounds_problem(table: Any) -> str | None:
    """Why ``table`` (decoded: dicts, lists, scalars) is over the bounds, or None.

    Walks the value with an explicit stack, so that no nesting can exhaust
    Python's recursion limit; sizes are counted roughly as AMQP encodes them.
    """
    size = 0
    stack: list[tuple[Any, int]] = [(table, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            if depth > MAX_TABLE_DEPTH:
                return f"field tables nested more than {MAX_TABLE_DEPTH} levels deep"
            for k, x in v.items():
                size += 2 + len(str(k).encode("utf-8", "replace"))
                stack.append((x, depth + 1))
        elif isinstance(v, (list, tuple)):
            if depth > MAX_TABLE_DEPTH:
                return f"field tables nested more than {MAX_TABLE_DEPTH} levels deep"
            size += 5
            stack.extend((x, depth + 1) for x in v)
        elif isinstance(v, str):
            size += 5 + len(v.encode("utf-8", "replace"))
        elif isinstance(v, (bytes, bytearray, memoryview)):
            size += 5 + len(v)
        else:
            size += 9
        if size > MAX_TABLE_BYTES:
            return f"arguments larger than {MAX_TABLE_BYTES} bytes"
    return None
