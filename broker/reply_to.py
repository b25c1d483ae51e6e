"""Direct reply-to (RabbitMQ's ``amq.rabbitmq.reply-to``): names and the registry of reply channels.

A channel that consumes from the pseudo-queue ``amq.rabbitmq.reply-to`` gets a
token; a request it publishes carries ``reply_to = amq.rabbitmq.reply-to.<token>``,
and a reply published to the default exchange with that routing key goes
straight to that channel (:meth:`ReplyRegistry.deliver`), through no queue.
"""

from __future__ import annotations

from typing import Protocol

from .message import Message

REPLY_TO = "amq.rabbitmq.reply-to"
REPLY_TO_RAW = REPLY_TO.encode()
REPLY_TO_PREFIX = REPLY_TO + "."


class ReplyTarget(Protocol):
    """What the registry needs of a channel that takes replies."""

    @property
    def closing(self) -> bool: ...

    @property
    def reply_consumer(self) -> str | None: ...

    def deliver_reply(self, msg: Message) -> None: ...


class ReplyRegistry(dict[str, ReplyTarget]):
    """token -> the channel consuming replies under that token."""

    def deliver(self, msg: Message) -> bool:
        """Hand a reply (routing key ``amq.rabbitmq.reply-to.<token>``) to its channel;
        False if that consumer is gone."""
        ch = self.get(msg.routing_key[len(REPLY_TO_PREFIX):])
        if ch is None or ch.closing or ch.reply_consumer is None:
            return False
        ch.deliver_reply(msg)
        return True
