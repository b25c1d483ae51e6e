"""Publisher confirms of one channel, as a pure data structure.

Theory of operation (after RabbitMQ's ``rabbit_confirms``)
----------------------------------------------------------
In confirm mode every completed publish takes the next sequence number
(:meth:`next_seq`, from 1).  Once routed, a publish is one of:

- confirmable now (:meth:`routed`): transient, unroutable, or into transient
  queues only.  Acks coalesce: only the highest such number is remembered
  (``ack_upto``) and the channel sends one Basic.Ack(multiple) for everything up
  to it when the connection flushes (:meth:`take_ack`), after any Basic.Return
  written meanwhile;
- waiting for the disk (:meth:`wait_for_disk`): persistent into a durable
  queue; it waits for the store's fsync epoch that covers its record;
- refused by a queue (:meth:`refused`, ``x-overflow reject-publish``): a
  Basic.Nack.

Confirms go out in publish order.  So once anything waits, every later publish
queues behind it in ``waiting`` as ``(seq, epoch)``: epoch 0 for "no disk
needed", -1 for a nack.  A tx.commit that routed persistent messages waits in
the same queue as seq -1 (:meth:`commit_waits`); a channel is either
transactional or in confirm mode, never both.

When the store reports an epoch durable (:meth:`synced`) or failed
(:meth:`failed`), the head of the queue up to that epoch is released; both
return what to send now, in order, as :data:`Signal` tuples.  Acks released by
:meth:`synced` are coalesced into ``ack_upto`` unless a nack must follow them.
Nothing here writes a frame: the channel asks what to send and sends it.
"""

from __future__ import annotations

from collections import deque

ACK = 0  # (ACK, upto, n): Basic.Ack of n publishes up to ``upto`` (``multiple`` when n > 1)
NACK = 1  # (NACK, seq, 1): Basic.Nack of one publish
COMMIT_OK = 2  # (COMMIT_OK, 0, 0): a tx.commit's records are durable
COMMIT_FAILED = 3  # (COMMIT_FAILED, 0, 0): a tx.commit's records could not be written

Signal = tuple[int, int, int]  # (kind, delivery tag, how many publishes it settles)

NO_DISK = 0  # epoch of a waiting publish that needs no fsync
NACKED = -1  # epoch of a waiting publish that a queue refused
COMMIT = -1  # sequence number of a waiting tx.commit


class Confirms:
    """Sequence numbers and outstanding confirms of one channel."""

    __slots__ = ("seq", "waiting", "ack_upto", "ack_sent")

    def __init__(self) -> None:
        self.seq = 0  # the last sequence number handed out
        self.waiting: deque[tuple[int, int]] = deque()  # (seq or COMMIT, fsync epoch or NO_DISK or NACKED)
        self.ack_upto = 0  # every seq up to this one may be acked
        self.ack_sent = 0  # every seq up to this one has been acked or nacked

    def next_seq(self) -> int:
        """Number a completed publish."""
        self.seq += 1
        return self.seq

    def routed(self, seq: int) -> bool:
        """``seq`` needs no disk.  True if it can be acked at the next flush
        (the caller then arranges a :meth:`take_ack`); False if it waits its turn."""
        if self.waiting:
            self.waiting.append((seq, NO_DISK))
            return False
        self.ack_upto = seq
        return True

    def wait_for_disk(self, seq: int, epoch: int) -> None:
        """``seq`` is confirmed once the store has made ``epoch`` durable."""
        self.waiting.append((seq, epoch))

    def refused(self, seq: int) -> list[Signal]:
        """A queue refused ``seq``: what to send now (acks due before it, then its nack),
        or nothing if it waits its turn behind publishes waiting for the disk."""
        if self.waiting:
            self.waiting.append((seq, NACKED))
            return []
        out = self._due_ack()
        out.append((NACK, seq, 1))
        self.ack_sent = self.ack_upto = seq
        return out

    def commit_waits(self, epoch: int) -> None:
        """A tx.commit is answered once the store has made ``epoch`` durable."""
        self.waiting.append((COMMIT, epoch))

    def take_ack(self) -> Signal | None:
        """The coalesced Basic.Ack due now, if any (marked as sent)."""
        upto = self.ack_upto
        sent = self.ack_sent
        if upto <= sent:
            return None
        self.ack_sent = upto
        return (ACK, upto, upto - sent)

    def _due_ack(self) -> list[Signal]:
        a = self.take_ack()
        return [a] if a is not None else []

    def synced(self, epoch: int) -> list[Signal]:
        """The store made ``epoch`` durable: release what waited for it.  Returns what
        must be sent now (nacks, with the acks due before each, and commit answers);
        acks after the last nack are left coalesced in ``ack_upto`` for :meth:`take_ack`."""
        w = self.waiting
        out: list[Signal] = []
        upto = 0
        while w and w[0][1] <= epoch:
            seq, e = w.popleft()
            if seq == COMMIT:
                out.append((COMMIT_OK, 0, 0))
            elif e == NACKED:
                if upto:
                    self.ack_upto = upto
                    out += self._due_ack()
                    upto = 0
                out.append((NACK, seq, 1))
                self.ack_sent = self.ack_upto = seq
            else:
                upto = seq
        if upto:
            self.ack_upto = upto
        return out

    def failed(self, epoch: int) -> list[Signal]:
        """Writing or syncing ``epoch`` failed: nack what waited for the disk (and what was
        refused), ack what did not need it, fail waiting commits; all to be sent now."""
        w = self.waiting
        out = self._due_ack()
        while w and w[0][1] <= epoch:
            seq, e = w.popleft()
            if seq == COMMIT:
                out.append((COMMIT_FAILED, 0, 0))
                continue
            out.append((NACK if e != NO_DISK else ACK, seq, 1))
            self.ack_sent = self.ack_upto = seq
        return out

    def clear(self) -> None:
        """The channel is going: nothing more will be confirmed."""
        self.waiting.clear()
