"""A stream's declare and consume arguments, with RabbitMQ's checks and texts.

Declaring: only the arguments RabbitMQ's stream type accepts (``x-max-length-bytes``,
``x-max-age``, ``x-stream-max-segment-size-bytes``, ...); any other argument another
queue type knows is refused (406) as RabbitMQ refuses it, and a stream is durable,
not exclusive and not auto-delete.

Consuming: ``x-stream-offset`` (``first``, ``last``, ``next``, a number, an AMQP
timestamp, or an interval such as ``1h`` or ``7D``) says where a consumer starts;
``x-stream-filter`` (a string or a list of strings) with ``x-stream-match-unfiltered``
selects messages by their ``x-stream-filter-value`` header.
"""

from __future__ import annotations

import datetime
import re
import time
from dataclasses import dataclass
from typing import Any

from protocol import errors
from protocol.errors import ChannelError, ConnectionError

from ..exchange import field_type_name

# the queue arguments of RabbitMQ's stream type
STREAM_ARGUMENTS = frozenset(
    ("x-queue-type", "x-max-length-bytes", "x-max-age", "x-stream-max-segment-size-bytes",
     "x-stream-filter-size-bytes", "x-initial-cluster-size", "x-queue-leader-locator")
)
# arguments other queue types take, which RabbitMQ refuses for a stream
OTHER_TYPES_ARGUMENTS = frozenset(
    ("x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-dead-letter-strategy",
     "x-max-length", "x-max-in-memory-length", "x-max-in-memory-bytes", "x-max-priority", "x-overflow",
     "x-queue-mode", "x-queue-version", "x-single-active-consumer", "x-quorum-initial-group-size",
     "x-delivery-limit", "x-queue-master-locator")
)
MAX_SEGMENT_SIZE = 3_000_000_000  # RabbitMQ's ceiling for x-stream-max-segment-size-bytes
MIN_SEGMENT_SIZE = 16 * 1024  # ours: a smaller segment would cost a segment (and its index) per message
MAX_FILTER_VALUES = 256  # values one consumer may filter on
MAX_FILTER_VALUE_BYTES = 255  # a longer filter value is compared on its first 255 bytes

_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "D": 86_400_000, "M": 30 * 86_400_000, "Y": 365 * 86_400_000}
_INTERVAL = re.compile(r"([0-9]{1,12})([YMDhms])")


def interval_ms(text: str) -> int | None:
    """RabbitMQ's ``x-max-age`` / interval syntax (a positive integer and one of
    ``Y M D h m s``) in milliseconds, or None if it is not one."""
    m = _INTERVAL.fullmatch(text)
    if m is None or int(m.group(1)) <= 0:
        return None
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def check_stream_declare(
    what: str, durable: bool, exclusive: bool, auto_delete: bool, arguments: dict
) -> None:
    """RabbitMQ's refusals of a stream declaration (406), in RabbitMQ's order."""
    for key in arguments:
        if key in OTHER_TYPES_ARGUMENTS:
            raise ChannelError(
                errors.PRECONDITION_FAILED, f"invalid arg '{key}' for {what} of queue type rabbit_stream_queue"
            )
    if "x-max-age" in arguments:
        v = arguments["x-max-age"]
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        if not isinstance(v, str):
            raise ChannelError(
                errors.PRECONDITION_FAILED,
                f"invalid arg 'x-max-age' for {what}: {{unacceptable_type,{field_type_name(v)}}}",
            )
        if interval_ms(v) is None:
            raise ChannelError(errors.PRECONDITION_FAILED, f"invalid arg 'x-max-age' for {what}: invalid_max_age")
    for key in ("x-stream-max-segment-size-bytes", "x-stream-filter-size-bytes"):
        if key not in arguments:
            continue
        v = arguments[key]
        if isinstance(v, bool) or not isinstance(v, int):
            raise ChannelError(
                errors.PRECONDITION_FAILED,
                f"invalid arg '{key}' for {what}: \"expected integer, got {field_type_name(v)}\"",
            )
        if v < 0:
            raise ChannelError(errors.PRECONDITION_FAILED, f"invalid arg '{key}' for {what}: {{value_negative,{v}}}")
    seg = arguments.get("x-stream-max-segment-size-bytes")
    if isinstance(seg, int) and seg > MAX_SEGMENT_SIZE:
        raise ChannelError(errors.PRECONDITION_FAILED, "Exceeded max value for x-stream-max-segment-size-bytes")
    fsize = arguments.get("x-stream-filter-size-bytes")
    if isinstance(fsize, int) and not 16 <= fsize <= 255:
        raise ChannelError(errors.PRECONDITION_FAILED, "Invalid value for  x-stream-filter-size-bytes")
    if auto_delete:
        raise ChannelError(errors.PRECONDITION_FAILED, f"invalid property 'auto-delete' for {what}")
    if exclusive:
        raise ChannelError(errors.PRECONDITION_FAILED, f"invalid property 'exclusive-owner' for {what}")
    if not durable:
        raise ChannelError(errors.PRECONDITION_FAILED, f"invalid property 'non-durable' for {what}")


# where a consumer starts: ("first"|"last"|"next", 0), ("offset", n) or ("time", ms since the epoch)
OffsetSpec = tuple[str, int]


def _erl_term(v: Any) -> str:
    """A consumer argument as RabbitMQ prints it in its error text: ``{longstr,<<"x">>}``."""
    if isinstance(v, (str, bytes)):
        s = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
        return '{longstr,<<"' + s.replace("\\", "\\\\").replace('"', '\\"') + '">>}'
    return "{" + field_type_name(v) + "," + str(v) + "}"


def parse_offset(arguments: dict, what: str) -> OffsetSpec:
    """The ``x-stream-offset`` of a Basic.Consume (``next`` when absent); a bad one is
    refused with 406 on the channel, with RabbitMQ's text."""
    if "x-stream-offset" not in arguments:
        return ("next", 0)
    v = arguments["x-stream-offset"]
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if isinstance(v, str):
        if v in ("first", "last", "next"):
            return (v, 0)
        ms = interval_ms(v)
        if ms is not None:
            return ("time", int(time.time() * 1000) - ms)
    elif isinstance(v, datetime.datetime):
        ts = v if v.tzinfo is not None else v.replace(tzinfo=datetime.UTC)
        return ("time", int(ts.timestamp()) * 1000)
    elif isinstance(v, int) and not isinstance(v, bool):
        return ("offset", v)
    raise ChannelError(
        errors.PRECONDITION_FAILED,
        f"invalid arg 'x-stream-offset' for {what}: {{invalid_stream_offset_arg,{_erl_term(v)}}}",
    )


@dataclass(frozen=True)
class FilterSpec:
    """What a consumer filters on: the values it wants, and whether it also wants
    messages published without a filter value."""

    values: frozenset[bytes]
    match_unfiltered: bool

    def matches(self, value: bytes) -> bool:
        if not value:
            return self.match_unfiltered
        return value in self.values


def _filter_value(v: Any) -> bytes | None:
    if isinstance(v, str):
        v = v.encode("utf-8")
    return v[:MAX_FILTER_VALUE_BYTES] if isinstance(v, bytes) else None


def parse_filter(arguments: dict, what: str) -> FilterSpec | None:
    """``x-stream-filter`` (a string or an array of strings; other entries are ignored,
    as RabbitMQ ignores them) and ``x-stream-match-unfiltered``; None: no filtering."""
    raw = arguments.get("x-stream-filter")
    if raw is None:
        return None
    items = raw if isinstance(raw, (list, tuple)) else [raw]
    if len(items) > MAX_FILTER_VALUES:
        raise ChannelError(
            errors.PRECONDITION_FAILED,
            f"invalid arg 'x-stream-filter' for {what}: more than {MAX_FILTER_VALUES} filter values",
        )
    values = frozenset(b for b in (_filter_value(x) for x in items) if b)
    if not values and not isinstance(raw, (list, tuple)):
        return None  # not a string: RabbitMQ does not filter
    return FilterSpec(values, arguments.get("x-stream-match-unfiltered") is True)


# consumer arguments of other queue types, which RabbitMQ refuses for a stream
OTHER_TYPES_CONSUMER_ARGUMENTS = frozenset(("x-priority", "x-cancel-on-ha-failover"))


def check_consume(what: str, no_ack: bool, prefetch: int, global_prefetch: int, arguments: dict) -> None:
    """RabbitMQ's refusals of a stream consumer: other types' consumer arguments (406); it
    needs a prefetch count (406) and manual acknowledgements (540); channel-wide (global)
    QoS is not supported (540)."""
    for key in arguments:
        if key in OTHER_TYPES_CONSUMER_ARGUMENTS:
            raise ChannelError(
                errors.PRECONDITION_FAILED, f"invalid arg '{key}' for {what} of queue type rabbit_stream_queue"
            )
    if not prefetch:
        raise ChannelError(errors.PRECONDITION_FAILED, f"consumer prefetch count is not set for stream {what}")
    if no_ack:
        raise ConnectionError(
            errors.NOT_IMPLEMENTED, f"automatic acknowledgement not supported by stream {what}", 60, 20
        )
    if global_prefetch:
        raise ConnectionError(errors.NOT_IMPLEMENTED, f"{what} does not support global qos", 60, 20)
