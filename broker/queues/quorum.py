"""The quorum queue: a durable queue that logs every message and counts its deliveries.

Theory of operation
-------------------
A quorum queue is a :class:`~broker.queues.classic.ClassicQueue` with
RabbitMQ 4's quorum rules on top; the FIFO, dispatch, TTL, max-length, single
active consumer and consumer priorities are the classic queue's.  What differs:

- **Declare.** Durable only, never exclusive or auto-delete, and the classic
  and stream arguments (``x-max-priority``, ``x-queue-mode``, ...) are refused,
  each with RabbitMQ's 406 text.  A redeclare compares the quorum arguments.
- **Every message is logged** (delivery mode 1 too) and a publisher confirm
  waits for its fsync: :meth:`push` answers ``PUSH_SYNC``.
- **Delivery counts.** Each time a delivered message comes back (nack or reject
  with requeue, a closed channel, a cancelled consumer) its count goes up, is
  appended to the log (the segment's returns file, so it survives a restart)
  and rides on the next delivery as the ``x-delivery-count`` header, as
  RabbitMQ 4.0-4.2 count.  A message that comes back more often than the
  delivery limit (``x-delivery-limit``, default 20, negative: no limit) is
  dead-lettered with reason ``delivery_limit``, or dropped.
- **Two priority levels.** Priority above 4 is high; once a high message
  arrives, the ready messages move into a
  :class:`~broker.queues.priority.TwoLevelMessages` (high about 2:1).
- **Dead-letter strategy.** ``at-most-once`` (the default) is the classic
  queue's: the message leaves, then its copy is published.  ``at-least-once``
  (with a dead-letter exchange and ``reject-publish`` overflow, as RabbitMQ
  requires) keeps the message's record in this queue's log until the target
  queues have it on disk: a copy that needs an fsync waits in
  :class:`PendingCommits` for its epoch; one that no queue took is tried again
  every :data:`DEAD_LETTER_RETRY_S` seconds.

Ready for replication: a message's place in the log (its ref, see
:mod:`storage.records`) is a stable, growing index that names one record for
good (:meth:`storage.log.QueueLog.read_full` reads it), so a follower could be
sent the log from any ref on.  When logged work is safe (a publisher confirm,
an at-least-once dead letter leaving its source) is decided in one place, the
store's fsync epochs (:class:`storage.interfaces.SyncWaiter`); a cluster would extend
it to "and a majority of members has the epoch".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from protocol import errors, fields, framing
from protocol.errors import ChannelError

from ..exchange import field_type_name
from ..logsafe import printable
from ..message import Message
from ..net import node_name
from .arguments import int_arg, str_arg
from .base import PUSH_REJECTED, PUSH_SYNC, QueueHost, Recovered
from .classic import ClassicQueue
from .priority import HIGH_PRIORITY_ABOVE, TwoLevelMessages, seq_of

log = logging.getLogger("broker.queue")

# RabbitMQ's name of the type in its texts ("... of queue type rabbit_quorum_queue")
TYPE_MODULE = "rabbit_quorum_queue"
# the arguments a quorum queue takes, compared on a redeclare (RabbitMQ 4.0-4.2's list)
QUORUM_ARGS = (
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-overflow",
    "x-single-active-consumer",
    "x-queue-type",
    "x-quorum-initial-group-size",
    "x-delivery-limit",
    "x-message-ttl",
    "x-queue-leader-locator",
)
# other queue types' arguments: refused on a quorum queue
REFUSED_ARGS = (
    "x-max-priority",
    "x-queue-mode",
    "x-queue-version",
    "x-queue-master-locator",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-stream-filter-size-bytes",
    "x-initial-cluster-size",
)
DEAD_LETTER_STRATEGIES = ("at-most-once", "at-least-once")
DEFAULT_DELIVERY_LIMIT = 20
DEAD_LETTER_RETRY_S = 1.0


def check_declare(vhost: str, name: str, durable: bool, exclusive: bool, auto_delete: bool, args: dict) -> None:
    """RabbitMQ's 406s for a quorum queue declare, in RabbitMQ's order."""
    what = f"queue '{name}' in vhost '{vhost}'"
    if "x-dead-letter-strategy" in args:
        v = args["x-dead-letter-strategy"]
        if not isinstance(v, (str, bytes)):
            detail = f"{{unacceptable_type,{field_type_name(v)}}}"
        elif str_arg(args, "x-dead-letter-strategy") not in DEAD_LETTER_STRATEGIES:
            detail = "invalid_dlx_strategy"
        else:
            detail = ""
        if detail:
            raise ChannelError(errors.PRECONDITION_FAILED, f"invalid arg 'x-dead-letter-strategy' for {what}: {detail}")
    for key in args:
        if key in REFUSED_ARGS:
            raise ChannelError(
                errors.PRECONDITION_FAILED, f"invalid arg '{key}' for {what} of queue type {TYPE_MODULE}"
            )
    for refused, prop in ((auto_delete, "auto-delete"), (exclusive, "exclusive-owner"), (not durable, "non-durable")):
        if refused:
            raise ChannelError(errors.PRECONDITION_FAILED, f"invalid property '{prop}' for {what}")


class PendingCommits:
    """Dead letters waiting for the fsync epoch that holds their copies, in epoch order.

    Whether logged work is safe is decided in one place for every waiter: the
    store's group commit wakes the sync waiters (a confirming channel, this
    queue) when an epoch is on disk.  A replicated
    queue would extend that one decision (an epoch counts once a majority of
    members has it); this class only remembers what waits for which epoch."""

    def __init__(self) -> None:
        self.waiting: list[tuple[int, Message, str]] = []  # (epoch, message, dead-letter reason)

    def add(self, epoch: int, msg: Message, reason: str) -> None:
        self.waiting.append((epoch, msg, reason))

    def committed(self, epoch: int) -> list[tuple[Message, str]]:
        """The work that is safe (or failed) now that ``epoch`` is done."""
        done = [(m, r) for e, m, r in self.waiting if e <= epoch]
        self.waiting = [w for w in self.waiting if w[0] > epoch]
        return done

    def __len__(self) -> int:
        return len(self.waiting)


class QuorumQueue(ClassicQueue):
    """RabbitMQ 4's quorum queue on one node (see the module doc)."""

    type_name = "quorum"
    equivalence_args = QUORUM_ARGS
    server_named = False

    def __init__(
        self,
        vhost: QueueHost,
        name: str,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict | None = None,
        owner: Any = None,
    ) -> None:
        check_declare(vhost.name, name, durable, exclusive, auto_delete, arguments or {})
        self.returns: dict[int, int] = {}  # seq -> times it came back (only for those that did)
        self.commits = PendingCommits()  # at-least-once dead letters waiting for the target's fsync
        self.dead_letter_retry: list[tuple[Message, str]] = []  # at-least-once dead letters no queue took
        self.retry_timer: asyncio.TimerHandle | None = None
        super().__init__(vhost, name, durable, exclusive, auto_delete, arguments, owner)

    def configure(self) -> None:
        """The classic settings, then the quorum rules for overflow, delivery limit and strategy
        (all read from ``effective``: arguments merged with policies, see broker.queues.settings)."""
        super().configure()
        self.max_priority = None
        if self.overflow == "reject-publish-dlx":  # RabbitMQ: not for quorum queues, drop-head instead
            log.warning("queue '%s': overflow reject-publish-dlx is not supported by quorum queues; "
                        "using drop-head", printable(self.name))
            self.overflow = "drop-head"
        limit = int_arg(self.effective, "x-delivery-limit")
        self.delivery_limit = DEFAULT_DELIVERY_LIMIT if limit is None else limit
        strategy = str_arg(self.effective, "x-dead-letter-strategy", "at-most-once")
        self.at_least_once = (
            self.dlx is not None and strategy == "at-least-once" and self.overflow == "reject-publish"
        )
        if self.dlx is not None and strategy == "at-least-once" and not self.at_least_once:
            log.warning("queue '%s': dead-letter-strategy at-least-once needs overflow reject-publish; "
                        "using at-most-once", printable(self.name))

    # -- messages in -------------------------------------------------------------
    def push(self, msg: Message, persistent: bool = False) -> int:
        """Every message goes to the log, whatever its delivery mode."""
        if framing.property_flags(msg.header) & framing.FLAG_PRIORITY:
            msg.priority = framing.priority(msg.header)
            if msg.priority > HIGH_PRIORITY_ABOVE and not isinstance(self.messages, TwoLevelMessages):
                self.messages = TwoLevelMessages(self.messages)
        return super().push(msg, True)

    def _marked(self, msg: Message) -> bool:
        return msg.priority > HIGH_PRIORITY_ABOVE

    def _keep_in_memory(self, msg: Message) -> bool:
        return msg.priority > HIGH_PRIORITY_ABOVE or super()._keep_in_memory(msg)

    def _full(self, incoming: int) -> bool:
        """Dead letters still on their way out count towards the limits (RabbitMQ)."""
        if self.max_length is not None and len(self.messages) + self.dead_lettering + 1 > self.max_length:
            return True
        if self.max_bytes is not None and self.bytes_ready + self.dead_letter_bytes + incoming > self.max_bytes:
            return True
        return False

    @property
    def dead_lettering(self) -> int:
        """At-least-once dead letters not yet safe in their target queues."""
        return len(self.commits) + len(self.dead_letter_retry)

    @property
    def dead_letter_bytes(self) -> int:
        """The body bytes of :attr:`dead_lettering`."""
        waiting = sum(len(m.body) for _e, m, _r in self.commits.waiting)
        return waiting + sum(len(m.body) for m, _r in self.dead_letter_retry)

    # -- deliveries ----------------------------------------------------------------
    def _take(self) -> Message:
        return self._with_count(super()._take())

    def peek(self, offset: int, count: int) -> list[Message]:
        return [self._with_count(m) for m in super().peek(offset, count)]

    def _with_count(self, m: Message) -> Message:
        """``m`` with its delivery count in the ``x-delivery-count`` header, if it came back before."""
        n = self.returns.get(m.seq) if self.returns else None
        if n:
            m.replace_header(fields.set_headers(m.header, {"x-delivery-count": fields.encode_value(fields.Long(n))}))
        return m

    def requeue(self, msgs: Iterable[Message]) -> None:
        """Count the return of each message; past the delivery limit it leaves the queue."""
        if self.deleted:
            return
        back = []
        for m in msgs:
            n = self.returns.get(m.seq, 0) + 1
            self.returns[m.seq] = n
            if self.log is not None and m.ref is not None:
                self.log.count_return(m.ref)
            if 0 <= self.delivery_limit < n:
                self.unacked -= 1
                self._drop(m, "delivery_limit")
            else:
                back.append(m)
        super().requeue(back)

    def settle(self, msg: Message) -> None:
        super().settle(msg)
        if self.returns:
            self.returns.pop(msg.seq, None)

    def _drop(self, msg: Message, reason: str) -> None:
        self.returns.pop(msg.seq, None)
        if self.at_least_once:
            self._dead_letter_safely(msg, reason)
        else:
            super()._drop(msg, reason)

    def purge(self) -> int:
        for e in self.messages:
            self.returns.pop(seq_of(e), None)
        return super().purge()

    # -- at-least-once dead-lettering ------------------------------------------------
    def _dead_letter_safely(self, msg: Message, reason: str) -> None:
        """Publish the dead letter; the source record goes once the targets have it safe."""
        status = self._dead_letter(msg, reason)
        if status is None or status == PUSH_REJECTED:
            self.dead_letter_retry.append((msg, reason))
            self._arm_retry()
        elif status == PUSH_SYNC and self._store is not None:
            self.commits.add(self._store.want_sync(), msg, reason)
            self._store.sync_waiters.add(self)
        else:
            self._forget(msg)

    def _forget(self, msg: Message) -> None:
        if msg.ref is not None and self.log is not None:
            self.log.settle(msg.ref)

    def synced(self, epoch: int) -> bool:
        """The store made ``epoch`` durable: dead letters waiting for it leave this queue."""
        for m, _reason in self.commits.committed(epoch):
            self._forget(m)
        return bool(self.commits)

    def sync_failed(self, epoch: int, exc: Exception) -> bool:
        """The targets' write failed: those dead letters are tried again."""
        self.dead_letter_retry += self.commits.committed(epoch)
        self._arm_retry()
        return bool(self.commits)

    def _arm_retry(self) -> None:
        loop = self.vhost.loop
        if self.retry_timer is None and loop is not None and not self.deleted:
            self.retry_timer = loop.call_later(DEAD_LETTER_RETRY_S, self._retry_dead_letters)

    def _retry_dead_letters(self) -> None:
        self.retry_timer = None
        if self.deleted:
            return
        pending, self.dead_letter_retry = self.dead_letter_retry, []
        for msg, reason in pending:
            if self.at_least_once:
                self._dead_letter_safely(msg, reason)
            else:  # the policy changed: as at-most-once
                super()._drop(msg, reason)

    def cancel_timers(self) -> None:
        super().cancel_timers()
        if self.retry_timer is not None:
            self.retry_timer.cancel()
            self.retry_timer = None

    def delete(self) -> int:
        store = self._store
        if store is not None:
            store.sync_waiters.discard(self)
        self.commits.waiting.clear()
        self.dead_letter_retry.clear()
        self.returns.clear()
        return super().delete()

    # -- the store ---------------------------------------------------------------------
    def recover(self) -> Recovered | None:
        """The classic recovery, plus the delivery counts and the high-priority messages."""
        r = super().recover()
        if r is None or self.log is None:
            return r
        self.returns = dict(self.log.recovered_returns)
        high = self.log.recovered_marked  # the records of high-priority messages, in log order
        if high:
            ready = {seq_of(e) for e in self.messages}  # recovery may have expired some already
            high = [r for r in high if r in ready]
            high_refs = set(high)
            two = TwoLevelMessages([e for e in self.messages if seq_of(e) not in high_refs])
            for seq in high:
                m = self._load(seq)
                m.priority = framing.priority(m.header)
                two.append(m)
            self.messages = two
        return r

    # -- listings ------------------------------------------------------------------------
    def describe(self) -> dict:
        """RabbitMQ's quorum fields beside the common ones."""
        d = super().describe()
        node = node_name()
        returned = sorted(self.returns.values())
        d.update(
            type=self.type_name,
            leader=node,
            members=[node],
            online=[node],
            delivery_limit=self.delivery_limit,
            dead_letter_strategy="at-least-once" if self.at_least_once else "at-most-once",
            messages_dlx=self.dead_lettering,
            message_bytes_dlx=self.dead_letter_bytes,
            messages_returned=len(returned),
            delivery_count_max=returned[-1] if returned else 0,
        )
        return d

