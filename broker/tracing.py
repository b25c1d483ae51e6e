"""RabbitMQ's firehose tracer: copies of what is published and delivered in a vhost, published
to its ``amq.rabbitmq.trace`` exchange.

Theory of operation
-------------------
Every vhost has the internal topic exchange ``amq.rabbitmq.trace`` (as in RabbitMQ).  Tracing
is off by default: ``VHost.tracer`` is None and the publish and delivery paths pay one
attribute check.  ``broker trace-on -p VHOST`` (``PUT /api/vhosts/VHOST`` with
``{"tracing": true}``) sets a :class:`Tracer` there; from then on

- every publish from a client channel makes a copy with routing key ``publish.<exchange>``
  (``publish.`` for the default exchange), after it was routed, with the ``routed_queues``;
- every delivery (Basic.Deliver or Basic.Get-Ok) makes a copy with routing key
  ``deliver.<queue>`` and ``redelivered``;
- publishes and gets through the management API are traced the same way, with ``connection``
  ``HTTP API`` and channel 1 (RabbitMQ's management plugin uses an internal channel for them).

A copy has the original body and, as its only property, RabbitMQ's firehose headers:
``exchange_name``, ``routing_keys`` (the routing key and the CC / BCC keys), ``properties``
(the original properties as a table), ``node``, then ``vhost``, ``connection``, ``channel`` and
``user``, and ``routed_queues`` (publish) or ``redelivered`` (deliver).  Copies are transient,
published at most once through :meth:`VHost.publish` (not counted as client publishes), and
messages published to ``amq.rabbitmq.trace`` itself are never traced, so a tracer's own
consumer does not feed the firehose.  As in RabbitMQ the switch is not kept across restarts.
"""

from __future__ import annotations

import platform
import struct
from collections.abc import Collection, Iterable
from typing import Any, Protocol

from protocol import fields, framing
from protocol.names import shortstr

from .message import Message

TRACE_EXCHANGE = "amq.rabbitmq.trace"
_TRACE_EXCHANGE_RAW = shortstr(TRACE_EXCHANGE.encode())
_HEADER_HEAD = struct.Struct(">HHQH")  # class, weight, body size, property flags
MAX_KEY_BYTES = 255  # a routing key is a short string
HTTP_CONNECTION = "HTTP API"  # the connection name traced for the management API's publishes and gets


def node_name() -> str:
    """The node's name, as the management API gives it."""
    return f"burrowmq@{platform.node() or 'localhost'}"


class TraceHost(Protocol):
    """What a tracer needs of its vhost: its name, the trace exchange, the publish entry point."""

    name: str
    exchanges: dict[str, Any]

    def publish(self, exchange: Any, msg: Message, mandatory: bool = False, skip: Any = None,
                from_client: bool = True) -> Any: ...


def _longstr(raw: bytes) -> bytes:
    return b"S" + struct.pack(">I", len(raw)) + raw


def properties_table(header: bytes) -> bytes:
    """A message's properties as a field table (with its length), RabbitMQ's way: strings as
    long strings, numbers as integers, ``headers`` as its table, unset properties left out."""
    _prefix, props = fields.split_properties(header)
    entries: list[tuple[str, bytes]] = []
    for name, kind in fields.PROPERTIES:
        raw = props.get(name)
        if raw is None:
            continue
        if kind == "s":
            entries.append((name, _longstr(raw[1:])))
        elif kind == "F":
            entries.append((name, b"F" + raw))
        elif kind == "o":
            entries.append((name, fields.encode_value(raw[0])))
        else:  # T: a 64-bit timestamp
            entries.append((name, fields.encode_value(struct.unpack(">Q", raw)[0])))
    return fields.encode_table_entries(entries)


def _key(prefix: str, name: str) -> str:
    key = f"{prefix}.{name}"
    raw = key.encode()
    if len(raw) <= MAX_KEY_BYTES:
        return key
    return raw[:MAX_KEY_BYTES].decode("utf-8", "ignore")  # the headers keep the whole name


class Tracer:
    """The firehose of one vhost (present only while tracing is on)."""

    __slots__ = ("vhost", "exchange", "node")

    def __init__(self, vhost: TraceHost) -> None:
        self.vhost = vhost
        self.exchange = vhost.exchanges[TRACE_EXCHANGE]
        self.node = node_name()

    def published(self, msg: Message, queues: Iterable[Any], connection: str, channel: int, user: str) -> None:
        """A client published ``msg``; it was routed to ``queues``."""
        if msg.exchange == TRACE_EXCHANGE:
            return
        extra = self._who(connection, channel, user)
        extra.append(("routed_queues", fields.encode_value([q.name for q in queues])))
        self._emit(_key("publish", msg.exchange), msg, extra)

    def delivered(self, msg: Message, queue: str, redelivered: bool, connection: str, channel: int,
                  user: str) -> None:
        """``msg`` went from ``queue`` to a client."""
        if msg.exchange == TRACE_EXCHANGE:
            return
        extra = [("redelivered", fields.encode_value(1 if redelivered else 0))]
        extra += self._who(connection, channel, user)
        self._emit(_key("deliver", queue), msg, extra)

    def _who(self, connection: str, channel: int, user: str) -> list[tuple[str, bytes]]:
        return [
            ("vhost", fields.encode_value(self.vhost.name)),
            ("connection", fields.encode_value(connection)),
            ("channel", fields.encode_value(channel)),
            ("user", fields.encode_value(user)),
        ]

    def _emit(self, key: str, msg: Message, extra: list[tuple[str, bytes]]) -> None:
        routing_keys: Collection[str] = (msg.routing_key, *msg.cc)
        entries = [
            ("exchange_name", fields.encode_value(msg.exchange)),
            ("routing_keys", fields.encode_value(list(routing_keys))),
            ("properties", b"F" + properties_table(msg.header)),
            ("node", fields.encode_value(self.node)),
            *extra,
        ]
        header = _HEADER_HEAD.pack(60, 0, len(msg.body), framing.FLAG_HEADERS) + fields.encode_table_entries(entries)
        copy = Message(TRACE_EXCHANGE, key, _TRACE_EXCHANGE_RAW, shortstr(key.encode()), header, msg.body)
        self.vhost.publish(self.exchange, copy, from_client=False)
