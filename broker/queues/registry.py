"""The queue types, chosen once from ``x-queue-type``: the only place that names them.

A queue type is a :class:`~broker.queues.base.Queue` subclass listed in
:data:`QUEUE_TYPES`; any other ``x-queue-type`` is refused with RabbitMQ's 406.
"""

from __future__ import annotations

from protocol import errors
from protocol.errors import ChannelError

from .base import Queue
from .classic import ClassicQueue
from .quorum import QuorumQueue
from .stream import StreamQueue

DEFAULT_TYPE = "classic"
QUEUE_TYPES: dict[str, type[Queue]] = {
    ClassicQueue.type_name: ClassicQueue,
    QuorumQueue.type_name: QuorumQueue,
    StreamQueue.type_name: StreamQueue,
}


def queue_class(arguments: dict, what: str) -> type[Queue]:
    """The class for a queue about to be created with ``arguments`` (406 if there is none)."""
    v = arguments.get("x-queue-type", DEFAULT_TYPE)
    v = v.decode() if isinstance(v, bytes) else v
    cls = QUEUE_TYPES.get(v) if isinstance(v, str) else None
    if cls is not None:
        return cls
    raise ChannelError(
        errors.PRECONDITION_FAILED, f"invalid arg 'x-queue-type' for {what}: \"unsupported queue type '{v}'\""
    )
