"""Dead-lettering: the message a queue republishes to its dead-letter exchange.

As RabbitMQ (3.x) writes it: the ``x-death`` header is an array of tables,
newest first, one per (queue, reason), each with ``count`` (long), ``reason``,
``queue``, ``time`` (timestamp), ``exchange``, ``routing-keys`` (array) and,
when the message had a per-message TTL, ``original-expiration``; a second
dead-lettering from the same queue for the same reason increments ``count``
and moves the entry to the front.  ``x-first-death-{reason,queue,exchange}`` are
set once, ``x-last-death-{reason,queue,exchange}`` every time.  The
``expiration`` property is removed so that the copy does not expire again.
Every other property and header keeps its bytes.
"""

from __future__ import annotations

import datetime
import time
from decimal import Decimal
from typing import Any

from pamqp import decode

from protocol import fields, names

from .message import Message


def _decode_array(raw_value: bytes) -> list:
    """A type-tagged array value ('A' + length + items) -> Python list."""
    if not raw_value or raw_value[:1] != b"A":
        return []
    try:
        _n, items = decode.field_array(raw_value[1:])
    except Exception:
        return []
    return list(items)


def _as_str(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def string_items(raw_value: bytes) -> list[str]:
    """The strings of a type-tagged array value (CC / BCC headers)."""
    return [i.decode() if isinstance(i, bytes) else i for i in _decode_array(raw_value) if isinstance(i, (str, bytes))]


def dead_letter(
    msg: Message, queue_name: str, reason: str, dlx: str, dlrk: str | None
) -> tuple[Message, set[str], bool]:
    """The copy of ``msg`` to publish to ``dlx`` after it died in ``queue_name``, with
    the queues of its x-death history and whether any of those deaths was a rejection
    (RabbitMQ drops a dead-letter cycle that has no rejection in it)."""
    prefix, props = fields.split_properties(msg.header)
    entries = fields.table_entries(props["headers"]) if "headers" in props else []
    deaths: list[dict] = []
    rest: list[tuple[str, bytes]] = []
    have_first = False
    cc: list[str] = []  # BCC was removed on publish: what is left is CC
    for k, v in entries:
        if k == "CC":
            cc = string_items(v)
        if k == "x-death":
            deaths = [d for d in _decode_array(v) if isinstance(d, dict)]
        elif k.startswith("x-last-death-"):
            continue
        else:
            if k.startswith("x-first-death-"):
                have_first = True
            rest.append((k, v))

    original_expiration = None
    if "expiration" in props:
        raw = props.pop("expiration")
        original_expiration = raw[1:].decode("utf-8", "replace")

    found = None
    for i, d in enumerate(deaths):
        if _as_str(d.get("queue", "")) == queue_name and _as_str(d.get("reason", "")) == reason:
            found = deaths.pop(i)
            break
    if found is not None:
        entry = {k: v for k, v in found.items()}
        entry["count"] = fields.Long(int(entry.get("count", 1)) + 1)
    else:
        entry = {
            "count": fields.Long(1),
            "reason": reason,
            "queue": queue_name,
            "time": fields.Timestamp(int(time.time())),
            "exchange": msg.exchange,
            "routing-keys": [msg.routing_key] + cc,
        }
        if original_expiration is not None:
            entry["original-expiration"] = original_expiration
    # keep RabbitMQ's types for entries we carry over
    for d in deaths:
        if "count" in d:
            d["count"] = fields.Long(int(d["count"]))
    deaths.insert(0, entry)
    history = {_as_str(d.get("queue", "")) for d in deaths}
    rejected = any(_as_str(d.get("reason", "")) == "rejected" for d in deaths)

    new_entries = rest
    if not have_first:
        new_entries += [
            ("x-first-death-exchange", fields.encode_value(msg.exchange)),
            ("x-first-death-queue", fields.encode_value(queue_name)),
            ("x-first-death-reason", fields.encode_value(reason)),
        ]
    new_entries += [
        ("x-last-death-exchange", fields.encode_value(msg.exchange)),
        ("x-last-death-queue", fields.encode_value(queue_name)),
        ("x-last-death-reason", fields.encode_value(reason)),
        ("x-death", fields.encode_value(deaths)),
    ]
    props["headers"] = fields.encode_table_entries(new_entries)
    header = fields.join_properties(prefix, props)
    rk = dlrk if dlrk is not None else msg.routing_key
    m = Message(dlx, rk, names.shortstr(dlx), names.shortstr(rk), header, msg.body)
    if dlrk is None:
        m.cc = tuple(cc)  # dead letters go out with the original keys, BCC excepted
    return m, history, rejected


def _plain(v: Any) -> Any:
    """A decoded field value as JSON can carry it (text for bytes, seconds for timestamps)."""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, datetime.datetime):
        return int(v.timestamp())
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Decimal):
        return str(v)
    return v


def death_history(msg: Message) -> list[dict]:
    """The message's ``x-death`` entries (newest first), as plain values; [] if it never died."""
    _prefix, props = fields.split_properties(msg.header)
    if "headers" not in props:
        return []
    for k, v in fields.table_entries(props["headers"]):
        if k == "x-death":
            return [_plain(d) for d in _decode_array(v) if isinstance(d, dict)]
    return []
