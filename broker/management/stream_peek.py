"""A stream's peek in the HTTP API: where to start (``offset``) and the answer's JSON.

``POST /api/queues/VHOST/NAME/peek`` on a stream takes ``offset`` as a consumer's
``x-stream-offset`` is taken: a number (a stream offset), ``first``, ``last``,
``next``, an interval such as ``1h`` (that long ago), or an ISO 8601 time
(``2026-11-30T08:00:00Z``; without a zone it is UTC).  It answers with an object:
the ``messages`` in the get endpoint's shape plus each one's ``offset`` and
``timestamp`` (milliseconds since the epoch, when the stream appended it),
``offset`` (where the peek started, after ``first``/``last``/a time were resolved
and a number clamped to what is kept), ``next_offset`` (where the next page starts)
and the stream's ``first_offset`` and ``last_offset`` (null when it is empty).
"""

from __future__ import annotations

import datetime
from typing import Any

from ..message import Message
from ..queues.stream import StreamPeek, StreamQueue
from ..queues.stream_args import OffsetSpec, interval_ms
from .http import bad_request
from .messages import payload_json, properties_json

MAX_OFFSET = (1 << 63) - 1  # offsets are stored as u64; RabbitMQ's are signed longs
MAX_SPEC_CHARS = 64

OFFSET_FORMS = ("'offset' must be a stream offset (an integer from 0), first, last, next, "
                "an interval such as 30m, 1h or 7D, or an ISO 8601 time such as 2026-01-31T12:00:00Z")


def stream_offset_spec(raw: Any) -> OffsetSpec:
    """The ``offset`` of a stream peek as an offset spec (400 naming the field if bad)."""
    if isinstance(raw, str) and len(raw) <= MAX_SPEC_CHARS:
        text = raw.strip()
        if text.isdigit() and text.isascii():
            raw = int(text)
        elif text in ("first", "last", "next"):
            return (text, 0)
        else:
            ms = interval_ms(text)
            if ms is not None:
                return ("time", int(datetime.datetime.now(datetime.UTC).timestamp() * 1000) - ms)
            return ("time", _iso_ms(text))
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= MAX_OFFSET:
        return ("offset", raw)
    raise bad_request(OFFSET_FORMS)


def _iso_ms(text: str) -> int:
    """An ISO 8601 time in milliseconds since the epoch (UTC when it has no zone)."""
    try:
        t = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise bad_request(OFFSET_FORMS) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.UTC)
    return int(t.timestamp() * 1000)


def peek_stream_json(q: StreamQueue, found: StreamPeek, encoding: str) -> dict:
    """The answer to a stream's peek (see the module doc)."""
    messages = []
    for r in found.records:
        msg = Message(r.ex_raw[1:].decode("utf-8", "replace"), r.rk_raw[1:].decode("utf-8", "replace"),
                      r.ex_raw, r.rk_raw, r.header, r.body)
        payload, penc = payload_json(r.body, encoding)
        try:
            props = properties_json(msg)
        except Exception:  # the header bytes are the publisher's: show the rest anyway
            props = {}
        messages.append({
            "offset": r.offset,
            "timestamp": r.timestamp_ms,
            "payload_bytes": r.body_size,
            "payload_truncated": len(r.body) < r.body_size,
            "redelivered": False,
            "exchange": msg.exchange,
            "routing_key": msg.routing_key,
            "message_count": q.ready,
            "properties": props,
            "payload": payload,
            "payload_encoding": penc,
        })
    s = q.stream
    kept = s is not None and s.messages > 0
    return {
        "offset": found.start,
        "next_offset": found.next_offset,
        "first_offset": s.first_offset if s is not None and kept else None,
        "last_offset": s.next_offset - 1 if s is not None and kept else None,
        "messages": messages,
    }
