"""Queue types behind one interface (:mod:`.base`), chosen by :mod:`.registry`."""

from .base import PUSH_OK, PUSH_REJECTED, PUSH_SYNC, Queue, QueueHost, Recovered, Subscriber
from .classic import ClassicQueue, now_ms
from .registry import queue_class

__all__ = [
    "PUSH_OK", "PUSH_REJECTED", "PUSH_SYNC", "ClassicQueue", "Queue", "QueueHost", "Recovered", "Subscriber",
    "now_ms", "queue_class",
]
