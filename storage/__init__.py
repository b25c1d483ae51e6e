"""Message and metadata storage behind a small interface.

The engine calls a :class:`MessageStore` for every durable queue it creates
(``queue_log``), and a :class:`QueueLog` for every persistent message that
enters or leaves such a queue.  :class:`MemoryStore` keeps nothing: it is what
a broker with no data directory uses, and the shape the on-disk log follows.
"""

from __future__ import annotations

from typing import Any


class QueueLog:
    """The log of one durable queue: append a message, settle it, drop it all."""

    def append(self, msg: Any) -> Any:
        """Record a message; return its reference (position) in the log."""
        return None

    def settle(self, ref: Any) -> None:
        """The message at ``ref`` is acked or dropped."""

    def delete(self) -> None:
        """The queue is deleted: its log goes."""


class MessageStore:
    """Where durable queues keep their messages, and the broker its metadata."""

    def queue_log(self, vhost: str, queue: str) -> QueueLog:
        return QueueLog()

    def save_definitions(self, definitions: dict) -> None:
        """Replace the stored durable metadata (exchanges, queues, bindings...)."""

    def load_definitions(self) -> dict:
        return {}

    async def sync(self) -> None:
        """Resolve once everything appended so far is on disk."""

    def close(self) -> None:
        """Release files and locks."""


class MemoryStore(MessageStore):
    """Nothing is persisted: a broker with this store forgets everything on stop."""
