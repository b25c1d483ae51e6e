"""Server-sent methods that carry a client's names, encoded by hand.

pamqp checks queue and exchange names against the AMQP spec's ASCII-only
pattern whenever it builds a method (``Queue.DeclareOk(queue="订单")`` raises),
a rule RabbitMQ never enforced: it takes any UTF-8 name of up to 255 bytes.
So every method the broker sends that carries a name (queue, consumer tag) or
a reply text quoting one is built here, with :mod:`struct` and the one short
string encoder, :func:`protocol.names.shortstr`.  Reply texts are clipped to
255 bytes at a character boundary.  Basic.Deliver, Basic.GetOk and
Basic.Return (the hot path) are built in :mod:`protocol.framing` the same way.
tests/test_protocol_unit.py checks every encoder byte-for-byte against pamqp
for the names pamqp accepts.
"""

from __future__ import annotations

import struct

from .framing import FRAME_END_BYTE, FRAME_METHOD
from .names import clip, shortstr

_head = struct.Struct(">BHIHH")  # frame type, channel, payload size, class id, method id
_u16 = struct.Struct(">H")
_counts = struct.Struct(">II")
_close_tail = struct.Struct(">HH")


def _method(channel: int, class_id: int, method_id: int, *args: bytes) -> bytes:
    size = 4 + sum(len(a) for a in args)
    return b"".join((_head.pack(FRAME_METHOD, channel, size, class_id, method_id), *args, FRAME_END_BYTE))


def queue_declare_ok(channel: int, queue: str, message_count: int, consumer_count: int) -> bytes:
    return _method(channel, 50, 11, shortstr(queue), _counts.pack(message_count, consumer_count))


def basic_consume_ok(channel: int, consumer_tag: str) -> bytes:
    return _method(channel, 60, 21, shortstr(consumer_tag))


def basic_cancel_ok(channel: int, consumer_tag: str) -> bytes:
    return _method(channel, 60, 31, shortstr(consumer_tag))


def basic_cancel(channel: int, consumer_tag: str) -> bytes:
    """The server's Basic.Cancel (consumer cancel notification), always nowait."""
    return _method(channel, 60, 30, shortstr(consumer_tag), b"\x01")


def channel_close(channel: int, code: int, text: str, class_id: int = 0, method_id: int = 0) -> bytes:
    return _method(channel, 20, 40, _u16.pack(code), shortstr(clip(text)), _close_tail.pack(class_id, method_id))


def connection_close(code: int, text: str, class_id: int = 0, method_id: int = 0) -> bytes:
    return _method(0, 10, 50, _u16.pack(code), shortstr(clip(text)), _close_tail.pack(class_id, method_id))
