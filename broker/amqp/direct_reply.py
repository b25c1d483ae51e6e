"""Direct reply-to (RabbitMQ's ``amq.rabbitmq.reply-to``): replies without a queue.

Theory of operation
-------------------
A client that wants replies consumes, with no-ack, from the pseudo-queue
``amq.rabbitmq.reply-to``: its channel gets a :class:`ReplyConsumer` with a
random token and registers itself under that token with the broker.  When the
client then publishes a request whose ``reply_to`` is the pseudo-queue, the
channel rewrites it to ``amq.rabbitmq.reply-to.<token>``.  A responder that
publishes to that name through the default exchange reaches the requesting
channel directly (:func:`reply_token`), which delivers it with the next delivery
tag as an unacked-free delivery (:func:`reply_frames`).  Cancelling the consumer
or closing the channel unregisters the token; replies to it are then unroutable.

There is at most one reply consumer per channel; it cannot ack.
"""

from __future__ import annotations

import base64
import os

from protocol import errors, framing, names
from protocol.errors import ChannelError

from ..message import Message
from ..reply_to import REPLY_TO_PREFIX


class ReplyConsumer:
    """The pseudo-consumer of one channel on ``amq.rabbitmq.reply-to``."""

    __slots__ = ("tag", "tag_raw", "token")

    def __init__(self, tag: str, token: str) -> None:
        self.tag = tag
        self.tag_raw = names.shortstr(tag)
        self.token = token

    @property
    def reply_to(self) -> str:
        """The name a responder publishes to (through the default exchange)."""
        return REPLY_TO_PREFIX + self.token


def new_reply_token() -> str:
    """A random, unguessable token naming one reply consumer."""
    return base64.urlsafe_b64encode(os.urandom(18)).decode()


def reply_token(name: str) -> str | None:
    """The token in ``amq.rabbitmq.reply-to.<token>``, or None if ``name`` is not such a name."""
    if not name.startswith(REPLY_TO_PREFIX):
        return None
    return name[len(REPLY_TO_PREFIX) :]


def check_consume(no_ack: bool, existing: ReplyConsumer | None) -> None:
    """RabbitMQ's refusals of a Basic.Consume on the pseudo-queue (406, closing the channel)."""
    if not no_ack:
        raise ChannelError(errors.PRECONDITION_FAILED, "reply consumer cannot acknowledge", 60, 20)
    if existing is not None:
        raise ChannelError(errors.PRECONDITION_FAILED, "reply consumer already set", 60, 20)


def reply_frames(channel: int, consumer: ReplyConsumer, tag: int, msg: Message, max_body: int) -> list[bytes]:
    """Basic.Deliver of a reply and its content frames."""
    parts = framing.content_frames(channel, msg.header, msg.body, max_body)
    parts.insert(0, framing.deliver_frame(channel, consumer.tag_raw, tag, False, msg.ex_raw, msg.rk_raw))
    return parts
