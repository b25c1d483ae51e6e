"""Names the management API still imports from here; the queue types live in :mod:`broker.queues`.

Remove once broker/management/ imports from broker.queues.
"""

from .queues import PUSH_OK, PUSH_REJECTED, PUSH_SYNC, Queue, now_ms

__all__ = ["PUSH_OK", "PUSH_REJECTED", "PUSH_SYNC", "Queue", "now_ms"]
