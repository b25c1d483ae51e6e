"""What the engine asks of every queue, whatever its type.

Theory of operation
-------------------
The engine (vhost, channel, management API) talks to a queue only through
:class:`Queue`: a routed message is offered with :meth:`Queue.push`, which says
whether the queue took it (``PUSH_OK``), took it into its store so that an fsync
must come before a publisher confirm (``PUSH_SYNC``), or refused it
(``PUSH_REJECTED``: the publisher gets a nack).  Subscribers (a channel's
consumers, seen through the small :class:`Subscriber` protocol) are attached and
detached; the queue hands them messages when they have credit
(:meth:`Queue.dispatch`).  A delivered message is settled by the channel that
holds it: acked (:meth:`Queue.settle`), put back (:meth:`Queue.requeue`) or
refused (:meth:`Queue.reject`, which dead-letters where configured).

A queue sees its virtual host through :class:`QueueHost` (the event loop, the
one publish entry point for dead letters, deleting itself when it expires), not
through the vhost class, so that queues import nothing above them.

Each queue type is a subclass chosen once from ``x-queue-type`` by
:mod:`broker.queues.registry`; the classic queue (:mod:`broker.queues.classic`)
is the first.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from storage.log import LogStore, QueueLog

from ..flow import QueueFlow
from ..message import Message
from .settings import effective_arguments

PUSH_OK = 0
PUSH_SYNC = 1  # in the store: an fsync makes it safe
PUSH_REJECTED = 2  # refused (e.g. x-overflow reject-publish): nack the publisher


class SubscriberChannel(Protocol):
    """The channel behind a subscriber, as a queue being deleted sees it."""

    def queue_deleted(self, subscriber: Any) -> None: ...


class Subscriber(Protocol):
    """A consumer as queues see it: credit, delivery, identity for the listings."""

    @property
    def channel(self) -> SubscriberChannel: ...

    @property
    def tag(self) -> str: ...

    @property
    def no_ack(self) -> bool: ...

    @property
    def exclusive(self) -> bool: ...

    @property
    def priority(self) -> int: ...

    @property
    def arguments(self) -> dict: ...

    def can_take(self) -> bool:
        """True if it may be handed one more message now."""
        ...

    def deliver(self, queue: Any, msg: Message) -> None:
        """Take ``msg`` from ``queue`` (the channel writes it to the client)."""
        ...


MAX_DROP_REASONS = 10_000  # per queue


class QueueHost(Protocol):
    """The virtual host as its queues see it."""

    @property
    def name(self) -> str: ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None: ...

    @property
    def flow_threshold(self) -> int:
        """Ready messages above which a queue with consumers holds its publishers back (0: never)."""
        ...

    def publish_dead_letter(self, exchange: str, msg: Message, skip: Callable[[Any], bool]) -> int | None:
        """Route ``msg`` from exchange ``exchange`` into every queue but those ``skip`` refuses;
        the worst push status (PUSH_OK, PUSH_SYNC, PUSH_REJECTED), or None if no queue took it."""
        ...

    def delete_queue(self, q: Any, reason: str = "deleted") -> int: ...


@dataclass(frozen=True)
class PolicyRef:
    """A policy as a queue sees it: its name and definition."""

    name: str
    definition: dict[str, Any]


@dataclass
class Recovered:
    """What one queue got back from its store at start-up."""

    messages: int = 0
    redelivered: int = 0
    problems: list[str] = field(default_factory=list)


class Queue(abc.ABC):
    """One queue of one vhost: the interface every queue type implements."""

    type_name: ClassVar[str]
    # the arguments compared when the queue is declared again (None: the classic queue's list)
    equivalence_args: ClassVar[tuple[str, ...] | None] = None
    server_named: ClassVar[bool] = True  # may a declare with an empty name get an amq.gen-... name

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
        self.vhost = vhost
        self.name = name
        self.durable = durable
        self.exclusive = exclusive
        self.auto_delete = auto_delete
        self.arguments = arguments or {}
        # the policy and operator policy that match this queue (name and definition), and the
        # arguments merged with them: what the queue acts on (see broker.queues.settings)
        self.policy: PolicyRef | None = None
        self.operator_policy: PolicyRef | None = None
        self.effective: dict[str, Any] = dict(self.arguments)
        self.owner = owner  # the connection of an exclusive queue
        self.consumers: list[Subscriber] = []
        self.exclusive_consumer: Subscriber | None = None
        self.bindings: dict[tuple, Any] = {}  # (source exchange, binding key) -> Binding
        self.log: QueueLog | None = None  # the store this queue writes messages to, if any
        # why the latest logged messages left without an ack (ref -> expired, rejected, maxlen), for `broker where`
        self.drop_reasons: dict[int, str] = {}
        self.flow = QueueFlow(vhost.flow_threshold)  # whether its consumers are behind (see broker.flow)
        self.had_consumers = False
        self.deleted = False
        self.last_used = time.monotonic()
        self.unacked = 0
        # counters for stats
        self.published = 0
        self.delivered = 0
        self.acked = 0
        self.bytes_ready = 0

    def remember_drop(self, ref: int, reason: str) -> None:
        """Note why the logged message ``ref`` left without an ack (the latest MAX_DROP_REASONS)."""
        reasons = self.drop_reasons
        reasons[ref] = reason
        if len(reasons) > MAX_DROP_REASONS:
            del reasons[next(iter(reasons))]

    # -- messages in -------------------------------------------------------------
    @abc.abstractmethod
    def push(self, msg: Message, persistent: bool = False) -> int:
        """Offer a routed message: PUSH_OK, PUSH_SYNC or PUSH_REJECTED."""

    # -- subscribers ---------------------------------------------------------------
    @abc.abstractmethod
    def add_consumer(self, c: Subscriber) -> None:
        """Attach a subscriber (call :meth:`dispatch` afterwards)."""

    @abc.abstractmethod
    def remove_consumer(self, c: Subscriber) -> None:
        """Detach a subscriber; unknown ones are ignored."""

    @abc.abstractmethod
    def dispatch(self) -> None:
        """Hand ready messages to subscribers that have credit."""

    def check_consume(self, no_ack: bool, prefetch: int, global_prefetch: int, arguments: dict) -> None:
        """Refuse (raise a ChannelError or ConnectionError) a Basic.Consume this queue cannot
        serve, before Consume-Ok goes out; every consumer is welcome by default."""

    @abc.abstractmethod
    def get(self) -> Message | None:
        """Basic.Get: take one message, or None."""

    def peek(self, offset: int, count: int) -> list[Message] | None:
        """Up to ``count`` ready messages from position ``offset`` (0: the head), left in
        place: not delivered, not counted.  None if this queue type cannot show them."""
        return None

    # -- settling deliveries ----------------------------------------------------------
    @abc.abstractmethod
    def settle(self, msg: Message) -> None:
        """A delivered message was acked (or taken with no-ack): gone for good."""

    @abc.abstractmethod
    def requeue(self, msgs: Iterable[Message]) -> None:
        """Delivered messages come back, in their original order, redelivered."""

    @abc.abstractmethod
    def reject(self, msg: Message) -> None:
        """A delivered message was refused without requeue: drop or dead-letter it."""

    # -- the queue as a whole ----------------------------------------------------------
    @property
    @abc.abstractmethod
    def ready(self) -> int:
        """Messages waiting for a subscriber."""

    @abc.abstractmethod
    def purge(self) -> int:
        """Drop every ready message; return how many."""

    @abc.abstractmethod
    def delete(self) -> int:
        """The vhost removed this queue and cancelled its subscribers: stop its timers,
        drop its messages and its store; return how many were ready."""

    def apply_policies(self, policy: PolicyRef | None, operator_policy: PolicyRef | None) -> None:
        """The matching policies changed (or were first resolved): rebuild ``effective``
        and act on it now (see :meth:`configure` and :meth:`policies_applied`)."""
        self.policy, self.operator_policy = policy, operator_policy
        self.effective = effective_arguments(
            self.arguments,
            policy.definition if policy else None,
            operator_policy.definition if operator_policy else None,
            self.type_name,
        )
        self.configure()
        self.policies_applied()

    def configure(self) -> None:
        """Read the settings this type acts on from :attr:`effective`."""

    def policies_applied(self) -> None:
        """Settings changed on a live queue: enforce them on what it holds (trim, expire)."""

    def start(self) -> None:
        """The queue is declared in its vhost: start what runs on its own (timers)."""

    def open_store(self, store: LogStore) -> None:
        """A durable queue of a broker with a data directory opens its log (raises OSError)."""

    def use_scratch(self, store: LogStore) -> None:
        """Where a queue without a log of its own may page a backlog of transient messages
        (its files are removed at start); a type that keeps no such backlog ignores it."""

    @property
    def store_log(self) -> Any:
        """The log this queue keeps in the store (its ``dir`` is checked), if any."""
        return self.log

    def recover(self) -> Recovered | None:
        """Rebuild from the store at start-up; None if this queue keeps nothing there."""
        return None

    def describe(self) -> dict:
        """Identity and counts, for listings."""
        return {
            "name": self.name,
            "durable": self.durable,
            "exclusive": self.exclusive,
            "auto_delete": self.auto_delete,
            "arguments": self.arguments,
            "messages_ready": self.ready,
            "messages_unacknowledged": self.unacked,
            "messages": self.ready + self.unacked,
            "consumers": len(self.consumers),
        }

    def definition(self) -> dict:
        """This queue in RabbitMQ's definitions shape."""
        return {
            "name": self.name,
            "vhost": self.vhost.name,
            "durable": self.durable,
            "auto_delete": self.auto_delete,
            "arguments": self.arguments,
        }
