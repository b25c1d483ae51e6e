"""``broker where MESSAGE-ID``: where a message is, answered from the queue logs and the engine.

Every durable queue logs each message it takes (see :mod:`storage.log`), and a record stays
on disk until its whole segment is settled.  :func:`where` reads the segment files of the
queues of the given vhosts (in a worker thread, after the store has written what it buffers),
keeps the records whose ``message_id`` property is the one asked for, and then asks the engine
what became of each copy:

- ``ready``: still in the queue, waiting for a consumer;
- ``unacked``: delivered and not yet acked, with the connection, channel, consumer tag
  (none for Basic.Get) and delivery tag;
- ``settled``: gone from the queue: ``acked``, or dropped because it ``expired``, was
  ``rejected`` or pushed out by a length limit (``maxlen``), and then dead-lettered when the
  queue has a dead-letter exchange.  The drop reasons are remembered for the latest drops of
  each queue (:attr:`ClassicQueue.drop_reasons`), not across a restart.

A dead-lettered copy is found in its new queue like any other, with its ``x-death`` history.
No tracing is needed beforehand; nothing is changed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from protocol import fields
from protocol.names import shortstr
from storage.records import REC_MSG, decode_message_full, scan_records

from .deadletter import death_history
from .message import Message

MAX_MATCHES = 1000  # copies reported for one id; a fanout to more queues is cut, saying so


@dataclass
class _Found:
    """One logged copy of the message: its queue, its ref, and the record's fields."""

    queue: Any
    ref: int
    persistent: bool
    deadline: int
    msg: Message


def _scan_files(files: list[tuple[Any, int, str]], wanted: bytes) -> list[_Found]:
    """Read segment files (queue, segment id, path) and keep the records whose message_id is ``wanted``
    (a short string).  Runs in a worker thread: only reads files."""
    out: list[_Found] = []
    for queue, sid, path in files:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:  # settled and deleted since the list was made
            continue
        if wanted not in data:
            continue
        for off, rtype, payload in scan_records(data):
            if rtype != REC_MSG or data.find(wanted, off + 9, off + 9 + len(payload)) < 0:
                continue
            persistent, deadline, ex_raw, rk_raw, header, body = decode_message_full(payload)
            if fields.split_properties(header)[1].get("message_id") != wanted:
                continue
            msg = Message(ex_raw[1:].decode("utf-8", "replace"), rk_raw[1:].decode("utf-8", "replace"),
                          ex_raw, rk_raw, header, body)
            out.append(_Found(queue, (sid << 32) | off, persistent, deadline, msg))
            if len(out) >= MAX_MATCHES:
                return out
    return out


def _segment_files(vhosts: Iterable[Any]) -> list[tuple[Any, int, str]]:
    files = []
    for vh in vhosts:
        for q in vh.queues.values():
            qlog = q.log
            if qlog is None:
                continue
            for sid in sorted(qlog.segments):
                files.append((q, sid, qlog.segments[sid].path))
    return files


def _unacked(connections: Iterable[Any]) -> dict[tuple[int, int], dict]:
    """Every unacked delivery of a logged message: (id of its queue, ref) -> who holds it."""
    out: dict[tuple[int, int], dict] = {}
    for conn in connections:
        for ch in list(conn.channels.values()):
            for tag, (msg, q, consumer) in ch.unacked.items():
                if msg.ref is not None:
                    out[(id(q), msg.ref)] = {
                        "connection": conn.name,
                        "user": conn.username,
                        "channel": ch.number,
                        "consumer_tag": None if consumer is None else consumer.tag,
                        "delivery_tag": tag,
                    }
    return out


def _ready_refs(queue: Any) -> set[int]:
    """The refs of a queue's ready messages (entries are refs or Messages, see ClassicQueue)."""
    return {e if type(e) is int else e.ref for e in getattr(queue, "messages", ())}


def _describe(f: _Found, ready: set[int], unacked: dict[tuple[int, int], dict], now_ms: int) -> dict:
    q = f.queue
    msg = f.msg
    d: dict[str, Any] = {
        "vhost": q.vhost.name,
        "queue": q.name,
        "exchange": msg.exchange,
        "routing_key": msg.routing_key,
        "persistent": f.persistent,
        "payload_bytes": len(msg.body),
        "delivered_before": q.log is not None and f.ref <= q.log.delivered_upto,
    }
    if f.deadline:
        d["expires_at_ms"] = f.deadline
    holder = unacked.get((id(q), f.ref))
    if f.ref in ready:
        d["state"] = "ready"
        if f.deadline and f.deadline <= now_ms:
            d["state"] = "ready (expired: dropped when it reaches the head of the queue)"
    elif holder is not None:
        d["state"] = "unacked"
        d["delivered_to"] = holder
    else:
        reason = q.drop_reasons.get(f.ref)
        d["state"] = "settled"
        d["settled"] = reason or "acked"
        dlx = getattr(q, "dlx", None)
        if reason is not None and dlx is not None:
            d["dead_lettered_to"] = dlx
    deaths = death_history(msg)
    if deaths:
        d["x_death"] = deaths
    return d


async def where(message_id: str, vhosts: list[Any], connections: Iterable[Any], store: Any) -> dict:
    """Every logged copy of the message ``message_id`` in ``vhosts``, with its state."""
    wanted = shortstr(message_id)
    if store is not None:
        store.flush()  # what is buffered is on disk (in the page cache) before it is read
    found = await asyncio.to_thread(_scan_files, _segment_files(vhosts), wanted)
    unacked = _unacked(connections) if found else {}
    ready_by_queue: dict[int, set[int]] = {}
    now_ms = int(time.time() * 1000)
    copies = []
    for f in sorted(found, key=lambda f: (f.queue.vhost.name, f.queue.name, f.ref)):
        ready = ready_by_queue.get(id(f.queue))
        if ready is None:
            ready = ready_by_queue[id(f.queue)] = _ready_refs(f.queue)
        copies.append(_describe(f, ready, unacked, now_ms))
    return {"message_id": message_id, "copies": copies, "truncated": len(found) >= MAX_MATCHES}

