"""A publish's checks and its outcome: the one place that validates what a publisher sent.

Every publish (AMQP Basic.Publish, the HTTP API's publish) goes through
:func:`check_properties` once, then through :meth:`broker.vhost.VHost.publish`,
which routes it and returns a :class:`PublishOutcome`.  The texts are
RabbitMQ's (406 PRECONDITION_FAILED): ``invalid expiration 'x': no_integer`` /
``{value_negative,-1}``, ``user_id property set to 'a' but authenticated user was
'b'``, ``fast reply consumer does not exist``.

Properties are decoded only when their flag is set: the common publish (no
expiration, reply-to, headers or user-id) costs one flag test.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

from protocol import errors, fields, framing, names
from protocol.errors import ChannelError

from .deadletter import string_items
from .message import Message
from .queues.base import PUSH_REJECTED, PUSH_SYNC
from .reply_to import REPLY_TO_PREFIX, REPLY_TO_RAW

# property flags that need a look at the properties before routing
CHECKED_FLAGS = framing.FLAG_EXPIRATION | framing.FLAG_REPLY_TO | framing.FLAG_HEADERS | framing.FLAG_USER_ID


class PublishOutcome:
    """What became of one publish: where it went, and what the publisher is owed."""

    __slots__ = ("routed", "queues", "returned", "status")

    def __init__(self, routed: bool, queues: Collection[Any], returned: bool, status: int) -> None:
        self.routed = routed  # some queue (or a direct reply-to consumer) took it
        self.queues = queues  # the queues it was offered to
        self.returned = returned  # mandatory and unroutable: the publisher gets a Basic.Return
        self.status = status  # the worst queue answer: PUSH_OK < PUSH_SYNC < PUSH_REJECTED

    @property
    def needs_sync(self) -> bool:
        """A confirm must wait for the fsync of the record (persistent into a durable queue)."""
        return self.status == PUSH_SYNC

    @property
    def rejected(self) -> bool:
        """A queue refused it (x-overflow reject-publish, the disk guard): nack the publisher."""
        return self.status == PUSH_REJECTED


def check_properties(msg: Message, user: str, reply_token: str | None) -> None:
    """Validate and apply what the properties ask, before routing: per-message TTL,
    direct reply-to's ``reply_to`` rewrite (``reply_token``: the publishing channel's,
    None if it consumes no replies), CC/BCC routing keys (BCC removed), user-id."""
    flags = framing.property_flags(msg.header)
    if not flags & CHECKED_FLAGS:
        return
    if flags & framing.FLAG_EXPIRATION:
        _expiration(msg)
    if flags & framing.FLAG_REPLY_TO:
        _reply_to(msg, reply_token)
    if flags & framing.FLAG_HEADERS and (b"\x02CC" in msg.header or b"\x03BCC" in msg.header):
        _sender_selected(msg)
    if flags & framing.FLAG_USER_ID:
        uid = msg.properties.user_id
        if uid != user:
            raise ChannelError(
                errors.PRECONDITION_FAILED,
                f"user_id property set to '{uid}' but authenticated user was '{user}'",
                60,
                40,
            )


def _expiration(msg: Message) -> None:
    text = framing.expiration(msg.header)
    if text is None:
        return
    try:
        ttl = int(text)
        if ttl < 0:
            raise ValueError
    except ValueError:
        detail = f"{{value_negative,{text}}}" if text.lstrip("-").isdigit() else "no_integer"
        raise ChannelError(errors.PRECONDITION_FAILED, f"invalid expiration '{text}': {detail}", 60, 40) from None
    msg.exp_deadline = msg.deadline = int(time.time() * 1000) + ttl


def _reply_to(msg: Message, reply_token: str | None) -> None:
    prefix, props = fields.split_properties(msg.header)
    raw = props.get("reply_to")
    if raw is None or raw[1:] != REPLY_TO_RAW:
        return
    if reply_token is None:
        raise ChannelError(errors.PRECONDITION_FAILED, "fast reply consumer does not exist", 60, 40)
    props["reply_to"] = names.shortstr(REPLY_TO_PREFIX + reply_token)
    msg.header = fields.join_properties(prefix, props)
    msg._props = None


def _sender_selected(msg: Message) -> None:
    """CC and BCC headers add routing keys; BCC is removed before delivery."""
    prefix, props = fields.split_properties(msg.header)
    entries = fields.table_entries(props["headers"])
    extra: list[str] = []
    kept = []
    for k, v in entries:
        if k in ("CC", "BCC"):
            extra += string_items(v)
            if k == "BCC":
                continue
        kept.append((k, v))
    if len(kept) != len(entries):
        props["headers"] = fields.encode_table_entries(kept)
        msg.header = fields.join_properties(prefix, props)
        msg._props = None
    msg.cc = tuple(extra)
