"""The queue types, chosen once from ``x-queue-type``: the only place that names them.

A new type (stream) is a :class:`~broker.queues.base.Queue` subclass added
to :data:`QUEUE_TYPES`; until one lands, declaring it is refused with 406 and a
text that says what to declare instead.
"""

from __future__ import annotations

from protocol import errors
from protocol.errors import ChannelError

from .base import Queue
from .classic import ClassicQueue
from .quorum import QuorumQueue

DEFAULT_TYPE = "classic"
QUEUE_TYPES: dict[str, type[Queue]] = {ClassicQueue.type_name: ClassicQueue, QuorumQueue.type_name: QuorumQueue}
NOT_YET = ("stream",)  # RabbitMQ's types that BurrowMQ does not have yet


def queue_class(arguments: dict, what: str) -> type[Queue]:
    """The class for a queue about to be created with ``arguments`` (406 if there is none)."""
    v = arguments.get("x-queue-type", DEFAULT_TYPE)
    v = v.decode() if isinstance(v, bytes) else v
    cls = QUEUE_TYPES.get(v) if isinstance(v, str) else None
    if cls is not None:
        return cls
    if v in NOT_YET:
        raise ChannelError(
            errors.PRECONDITION_FAILED,
            f"invalid arg 'x-queue-type' for {what}: {v} queues are not supported by BurrowMQ; "
            "declare a durable classic queue",
        )
    raise ChannelError(
        errors.PRECONDITION_FAILED, f"invalid arg 'x-queue-type' for {what}: \"unsupported queue type '{v}'\""
    )
