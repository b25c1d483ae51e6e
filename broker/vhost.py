"""A virtual host: its exchanges, queues and bindings, routing, and the one publish entry point.

The declare/delete/bind operations here carry RabbitMQ's checks and texts, so
that the AMQP channel and the management API share one implementation.  Every
message that enters a queue comes through :meth:`VHost.publish` (AMQP and HTTP
publishes, dead letters): route, enqueue, count, and say what happened.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any, cast

from protocol import errors, fields, framing
from protocol.errors import ChannelError, ConnectionError
from protocol.names import name_problem
from storage.records import RECORD_OVERHEAD_MAX, record_size

from .delayed import DelayedExchange, DelayedMessages
from .exchange import (
    EXCHANGE_TYPES,
    Binding,
    DefaultExchange,
    Exchange,
    HeadersExchange,
    validate_headers_binding,
)
from .exchange import field_type_name as _type_name
from .flow import FLOW_THRESHOLD
from .limits import reached
from .message import Message
from .policies import Policy, VHostPolicies
from .publishing import PublishOutcome
from .queues import PUSH_OK, PUSH_REJECTED, Queue, queue_class
from .queues.arguments import validate_queue_arguments
from .reply_to import REPLY_TO_PREFIX
from .services import Services
from .stats import Stats
from .tracing import TRACE_EXCHANGE, Tracer

# queue arguments RabbitMQ compares on a redeclare (classic queues)
log = logging.getLogger("broker.vhost")

QUEUE_EQUIV_ARGS = (
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-type",
    "x-single-active-consumer",
    "x-queue-version",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
)
EXCHANGE_EQUIV_ARGS = ("alternate-exchange",)

PREDECLARED = (
    ("amq.direct", "direct"),
    ("amq.fanout", "fanout"),
    ("amq.topic", "topic"),
    ("amq.headers", "headers"),
    ("amq.match", "headers"),
)


def check_name(field: str, name: Any) -> None:
    """406 for a name no AMQP client can send (not UTF-8, over 255 bytes).  The
    wire's short strings rule these out; the HTTP API and definitions files reach here."""
    problem = name_problem(name)
    if problem is not None:
        raise ChannelError(errors.PRECONDITION_FAILED, f"{field} {problem}")


def _with_defaults(args: dict) -> dict:
    """A queue without x-queue-type is a classic queue: declaring it 'classic' is equivalent."""
    if "x-queue-type" in args:
        return args
    return dict(args, **{"x-queue-type": "classic"})


def rs(kind: str, name: str, vhost: str) -> str:
    """RabbitMQ's resource description: ``queue 'q' in vhost '/'``."""
    return f"{kind} '{name}' in vhost '{vhost}'"


def _val(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _arg_val(present: bool, v: Any) -> str:
    if not present:
        return "none"
    return f"the value '{_val(v)}' of type '{_type_name(v)}'"


def field_equivalence(current: Any, received: Any, field: str, what: str) -> None:
    if current != received:
        raise ChannelError(
            errors.PRECONDITION_FAILED,
            f"inequivalent arg '{field}' for {what}: received '{_val(received)}' but current is '{_val(current)}'",
        )


def args_equivalence(current: dict, received: dict, keys: Iterable[str], what: str) -> None:
    for k in keys:
        c_has, r_has = k in current, k in received
        if not c_has and not r_has:
            continue
        cv, rv = current.get(k), received.get(k)
        if c_has == r_has and cv == rv and type(cv) is type(rv):
            continue
        if c_has and r_has and cv == rv and _type_name(cv) == _type_name(rv):
            continue
        if c_has and r_has:
            raise ChannelError(
                errors.PRECONDITION_FAILED,
                f"inequivalent arg '{k}' for {what}: received '{_val(rv)}' but current is '{_val(cv)}'",
            )
        raise ChannelError(
            errors.PRECONDITION_FAILED,
            f"inequivalent arg '{k}' for {what}: received {_arg_val(r_has, rv)} but current is {_arg_val(c_has, cv)}",
        )


def check_arguments_bounds(arguments: Any, what: str) -> None:
    """Refuse (406) arguments too deep or too large to keep in durable metadata."""
    problem = fields.table_bounds_problem(arguments or {})
    if problem is not None:
        raise ChannelError(errors.PRECONDITION_FAILED, f"invalid arguments for {what}: {problem}")


class VHost:
    """Registry of one virtual host's exchanges and queues."""

    def __init__(self, name: str, services: Services | None = None) -> None:
        self.name = name
        self.services = services
        self.stats = services.stats if services is not None else Stats()
        self.exchanges: dict[str, Exchange] = {}
        self.queues: dict[str, Queue] = {}
        self.policies = VHostPolicies()  # policies and operator policies (broker.policies)
        self.limits: dict[str, int] = {}  # max-connections, max-queues (broker.limits)
        self.default_exchange = DefaultExchange(self, "", durable=True)
        self.exchanges[""] = self.default_exchange
        for xname, xtype in PREDECLARED:
            self.exchanges[xname] = EXCHANGE_TYPES[xtype](self, xname, durable=True)
        self.delayed = DelayedMessages(self)  # messages held by x-delayed-message exchanges
        self.exchanges[TRACE_EXCHANGE] = EXCHANGE_TYPES["topic"](self, TRACE_EXCHANGE, durable=True, internal=True)
        self.tracer: Tracer | None = None  # the firehose, while tracing is on (broker.tracing)

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The broker's event loop (None before it starts): queue timers run on it."""
        return self.services.loop if self.services is not None else None

    @property
    def flow_threshold(self) -> int:
        """Ready messages above which a queue with consumers holds its publishers back (0: never)."""
        return self.services.flow_threshold if self.services is not None else FLOW_THRESHOLD

    # -- lookups -------------------------------------------------------------
    def what(self, kind: str, name: str) -> str:
        return rs(kind, name, self.name)

    def get_queue(self, name: str) -> Queue:
        q = self.queues.get(name)
        if q is None:
            raise ChannelError(errors.NOT_FOUND, f"no {self.what('queue', name)}")
        return q

    def get_exchange(self, name: str) -> Exchange:
        x = self.exchanges.get(name)
        if x is None:
            raise ChannelError(errors.NOT_FOUND, f"no {self.what('exchange', name)}")
        return x

    # -- exchanges -----------------------------------------------------------
    def declare_exchange(
        self,
        name: str,
        type_name: str,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: dict,
    ) -> tuple[Exchange, bool]:
        """Declare (or check) an exchange; returns it and whether it was created."""
        check_arguments_bounds(arguments, self.what("exchange", name))
        cls = EXCHANGE_TYPES.get(type_name)
        if cls is None:
            raise ChannelError(errors.PRECONDITION_FAILED, f"unknown exchange type '{type_name}'")
        if name == "":
            raise ChannelError(errors.ACCESS_REFUSED, "operation not permitted on the default exchange")
        check_name("exchange name", name)
        x = self.exchanges.get(name)
        created = False
        if x is None:
            if name.startswith("amq."):
                raise ChannelError(
                    errors.ACCESS_REFUSED, f"exchange name '{name}' contains reserved prefix 'amq.*'"
                )
            ae = (arguments or {}).get("alternate-exchange")
            if ae is not None and not isinstance(ae, (str, bytes)):
                raise ChannelError(
                    errors.PRECONDITION_FAILED,
                    f"invalid type '{_type_name(ae)}' for arg 'alternate-exchange' in {self.what('exchange', name)}",
                )
            if ae is not None and (
                problem := name_problem(ae.decode("utf-8", "surrogateescape") if isinstance(ae, bytes) else ae)
            ):
                raise ChannelError(
                    errors.PRECONDITION_FAILED,
                    f"invalid arg 'alternate-exchange' for {self.what('exchange', name)}: the name {problem}",
                )
            x = cls(self, name, durable, auto_delete, internal, arguments)
            self.policies.apply_to_exchange(x)
            self.exchanges[name] = x
            created = True
            if isinstance(x, DelayedExchange):
                for problem in self.delayed.attach(x):
                    log.error("recovery of delayed messages: %s", problem)
            if durable:
                self.changed()
        else:
            what = self.what("exchange", name)
            field_equivalence(x.type_name, type_name, "type", what)
            field_equivalence(x.durable, durable, "durable", what)
            field_equivalence(x.auto_delete, auto_delete, "auto_delete", what)
            field_equivalence(x.internal, internal, "internal", what)
            args_equivalence(x.arguments, arguments or {}, EXCHANGE_EQUIV_ARGS, what)
        return x, created

    def set_tracing(self, on: bool) -> None:
        """Turn the firehose (copies to amq.rabbitmq.trace) on or off."""
        if on and self.tracer is None:
            self.tracer = Tracer(self)
        elif not on:
            self.tracer = None

    def check_exchange_passive(self, name: str) -> Exchange:
        if name == "":
            raise ChannelError(errors.ACCESS_REFUSED, "operation not permitted on the default exchange")
        return self.get_exchange(name)

    def delete_exchange(self, name: str, if_unused: bool) -> None:
        if name == "":
            raise ChannelError(errors.ACCESS_REFUSED, "operation not permitted on the default exchange")
        if name.startswith("amq."):
            raise ChannelError(
                errors.ACCESS_REFUSED, f"deletion of system {self.what('exchange', name)} not allowed"
            )
        x = self.exchanges.get(name)
        if x is None:
            return
        if if_unused and x.bindings:
            raise ChannelError(errors.PRECONDITION_FAILED, f"{self.what('exchange', name)} in use")
        self._remove_exchange(x)

    def _remove_exchange(self, x: Exchange) -> None:
        self.exchanges.pop(x.name, None)
        if isinstance(x, DelayedExchange):
            self.delayed.detach(x)
        if x.durable:
            self.changed()
        for b in list(x.bindings.values()):
            self._drop_binding(b)
        for b in list(x.incoming.values()):
            self._drop_binding(b)

    # -- queues --------------------------------------------------------------
    @staticmethod
    def generate_queue_name() -> str:
        return "amq.gen-" + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")

    def check_exclusive(self, q: Queue, conn: Any) -> None:
        if q.owner is not None and q.owner is not conn:
            raise self.locked(q)

    def locked(self, q: Queue) -> ChannelError:
        return ChannelError(
            errors.RESOURCE_LOCKED,
            f"cannot obtain exclusive access to locked {self.what('queue', q.name)}. It could be originally "
            "declared on another connection or the exclusive property value does not match that of the "
            "original declaration.",
        )

    def declare_queue(
        self,
        name: str,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: dict,
        conn: Any,
        server_named: bool = False,
    ) -> tuple[Queue, bool]:
        if not name:
            name = self.generate_queue_name()
        check_name("queue name", name)
        if name.startswith("amq.") and not server_named:
            raise ChannelError(errors.ACCESS_REFUSED, f"queue name '{name}' contains reserved prefix 'amq.*'")
        check_arguments_bounds(arguments, self.what("queue", name))
        validate_queue_arguments(arguments or {}, self.what("queue", name))
        q = self.queues.get(name)
        owner = conn if exclusive else None
        if q is not None:
            if q.owner is not owner:
                raise self.locked(q)
            what = self.what("queue", name)
            field_equivalence(q.durable, durable, "durable", what)
            field_equivalence(q.auto_delete, auto_delete, "auto_delete", what)
            keys = q.equivalence_args or QUEUE_EQUIV_ARGS
            args_equivalence(_with_defaults(q.arguments), _with_defaults(arguments or {}), keys, what)
            q.last_used = time.monotonic()
            return q, False
        cls = queue_class(arguments or {}, self.what("queue", name))
        if server_named and not cls.server_named:
            raise ChannelError(
                errors.PRECONDITION_FAILED, f"Cannot declare a server-named queue for type rabbit_{cls.type_name}_queue"
            )
        limit = reached(self.limits, "max-queues", len(self.queues))
        if limit is not None:
            raise ChannelError(
                errors.PRECONDITION_FAILED,
                f"cannot declare queue '{name}': queue limit in vhost '{self.name}' ({limit}) is reached",
            )
        q = cls(self, name, durable, exclusive, auto_delete, arguments, owner)
        self.policies.apply_to_queue(q)  # resolved before it starts
        if owner is None and durable:
            self._open_store(q)  # first: a queue whose log cannot be made is not declared
        elif self.services is not None and self.services.scratch is not None:
            q.use_scratch(self.services.scratch)  # where it pages a backlog
        self.queues[name] = q
        q.start()
        if owner is not None:
            owner.exclusive_queues.append(q)
        elif durable:
            self.changed()
        return q, True

    def _open_store(self, q: Queue) -> None:
        store = self.services.store if self.services is not None else None
        if store is not None:
            try:
                q.open_store(store)
            except OSError as exc:
                raise ConnectionError(
                    errors.INTERNAL_ERROR, f"cannot create the message log of {self.what('queue', q.name)}: "
                    f"{exc.strerror or exc}"
                ) from None

    def changed(self) -> None:
        """Durable metadata changed: the broker saves it before replying."""
        if self.services is not None:
            self.services.journal.changed()

    def delete_queue(self, q: Queue, reason: str = "deleted") -> int:
        """Remove a queue with its bindings; cancel its consumers; return ready count."""
        if q.deleted:
            return 0
        q.deleted = True
        self.queues.pop(q.name, None)
        for b in list(q.bindings.values()):
            self._drop_binding(b)
        for c in list(q.consumers):
            c.channel.queue_deleted(c)
        n = q.delete()
        if q.durable and q.owner is None:
            self.changed()
        if q.owner is not None:
            try:
                q.owner.exclusive_queues.remove(q)
            except ValueError:
                pass
        return n

    # -- policies and limits -----------------------------------------------------
    def put_policy(self, policy: Policy, operator: bool = False) -> bool:
        """Add or replace a (operator) policy and apply it now; True if it is new."""
        created = self.store_policy(policy, operator)
        for _ in self.reapply_policies(operator):
            pass
        return created

    def delete_policy(self, name: str, operator: bool = False) -> bool:
        """Remove a (operator) policy and apply the change now; False if there was none."""
        if not self.forget_policy(name, operator):
            return False
        for _ in self.reapply_policies(operator):
            pass
        return True

    def store_policy(self, policy: Policy, operator: bool = False) -> bool:
        """Add or replace a (operator) policy, to be applied by :meth:`reapply_policies`."""
        old = self.policies.set_of(operator).put(policy)
        self.changed()
        return old is None

    def forget_policy(self, name: str, operator: bool = False) -> bool:
        if self.policies.set_of(operator).delete(name) is None:
            return False
        self.changed()
        return True

    def reapply_policies(self, operator: bool) -> Iterator[int]:
        """Apply a changed set of (operator) policies to every queue and exchange, in steps
        (see :meth:`broker.policies.VHostPolicies.reapply`)."""
        return self.policies.reapply(operator, list(self.queues.values()), list(self.exchanges.values()))

    def set_limits(self, limits: dict[str, int]) -> None:
        """Replace the vhost's limits (checked by broker.limits.parse_limits)."""
        self.limits = dict(limits)
        self.changed()

    # -- bindings ------------------------------------------------------------
    def bind(self, source: Exchange, dest: Any, routing_key: str, arguments: dict) -> None:
        check_arguments_bounds(arguments, "binding arguments")
        check_name("routing key", routing_key)
        if isinstance(source, HeadersExchange) or (isinstance(source, DelayedExchange) and source.routes_headers):
            problem = validate_headers_binding(arguments or {})
            if problem:
                raise ChannelError(errors.PRECONDITION_FAILED, problem)
        b = Binding(source, dest, routing_key, arguments)
        if source.add_binding(b):
            if source.durable and dest.durable:
                self.changed()
            if isinstance(dest, Queue):
                dest.bindings[(source, b.key)] = b
            else:
                dest.incoming[(source, b.key)] = b

    def unbind(self, source: Exchange, dest: Any, routing_key: str, arguments: dict) -> None:
        b = Binding(source, dest, routing_key, arguments)
        if b.key in source.bindings:
            self._drop_binding(source.bindings[b.key])

    def _drop_binding(self, b: Binding) -> None:
        src = b.source
        src.remove_binding(b)
        d = b.destination
        if src.durable and d.durable:
            self.changed()
        if isinstance(d, Queue):
            d.bindings.pop((src, b.key), None)
        else:
            d.incoming.pop((src, b.key), None)
        if src.auto_delete and not src.bindings and self.exchanges.get(src.name) is src:
            self._remove_exchange(src)

    # -- publishing ----------------------------------------------------------
    def exchange_for_publish(self, name: str) -> Exchange:
        """The exchange a publisher names: 404 if missing, 403 if internal."""
        x = self.exchanges.get(name)
        if x is None:
            raise ChannelError(errors.NOT_FOUND, f"no {self.what('exchange', name)}", 60, 40)
        if x.internal:
            raise ChannelError(
                errors.ACCESS_REFUSED, f"cannot publish to internal {self.what('exchange', name)}", 60, 40
            )
        return x

    def publish(
        self,
        exchange: Exchange,
        msg: Message,
        mandatory: bool = False,
        skip: Callable[[Queue], bool] | None = None,
        from_client: bool = True,
        release: bool = False,
    ) -> PublishOutcome:
        """Route ``msg`` (checked by :func:`broker.publishing.check_properties`) from
        ``exchange`` into its queues (those ``skip`` refuses excepted), or to a direct
        reply-to consumer.  ``from_client`` publishes are counted (published, routed,
        unroutable); the broker's own (dead letters, released delayed messages) are not.
        A delayed exchange holds a message with an ``x-delay`` (see :mod:`broker.delayed`)
        and routes it when it is ``release``d."""
        st = self.stats
        if from_client:
            st.published += 1
        if exchange.delays and not release:
            held = self.delayed.hold(cast(DelayedExchange, exchange), msg)
            if held is not None:
                if from_client:
                    st.routed += 1
                return held
        if exchange is self.default_exchange and msg.routing_key.startswith(REPLY_TO_PREFIX):
            taken = self.services is not None and self.services.replies.deliver(msg)
            return PublishOutcome(taken, (), mandatory and not taken, PUSH_OK)
        queues = self.route_all(exchange, msg)
        if skip is not None:
            queues = [q for q in queues if not skip(q)]
        routed, status = self.enqueue(queues, msg)
        if from_client:
            if routed:
                st.routed += 1
            else:
                st.unroutable += 1
        return PublishOutcome(routed, queues, mandatory and not routed, status)

    def publish_dead_letter(self, exchange: str, msg: Message, skip: Callable[[Queue], bool]) -> int | None:
        """A queue dead-letters ``msg`` to ``exchange`` (dropped if that exchange is gone).
        Returns the queues' worst push status, or None if no queue took it."""
        x = self.exchanges.get(exchange)
        if x is None:
            return None
        out = self.publish(x, msg, skip=skip, from_client=False)
        return out.status if out.routed else None

    # -- routing -------------------------------------------------------------
    def route_all(self, x: Exchange, msg: Message) -> Collection[Queue]:
        """The queues for a message's routing key and its CC/BCC keys (each once)."""
        if not msg.cc:
            return self.route(x, msg.routing_key, msg)
        out: dict[Queue, None] = {}
        for rk in (msg.routing_key,) + msg.cc:
            for q in self.route(x, rk, msg):
                out[q] = None
        return out

    def route(self, x: Exchange, routing_key: str, msg: Message) -> Collection[Queue]:
        """The queues a message published to ``x`` goes to (through exchange-to-exchange
        bindings, and to the alternate exchange when nothing else takes it)."""
        dests = self._route(x, routing_key, msg)
        if not dests and x.alternate is not None:
            return self._alternate(x, routing_key, msg)
        return dests

    def _route(self, x: Exchange, routing_key: str, msg: Message) -> Collection[Queue]:
        dests = x.match(routing_key, msg)
        if not x.exchange_dests:
            return dests
        out: dict[Queue, None] = {}
        seen: set[Exchange] = {x}
        stack: list[Any] = list(dests)
        while stack:
            d = stack.pop()
            if isinstance(d, Queue):
                out[d] = None
            elif d not in seen:
                seen.add(d)
                stack.extend(d.match(routing_key, msg))
        return out

    def _alternate(self, x: Exchange, routing_key: str, msg: Message) -> Collection[Queue]:
        seen = {x}
        while x.alternate is not None:
            ae = self.exchanges.get(x.alternate)
            if ae is None or ae in seen:
                return ()
            seen.add(ae)
            dests = self._route(ae, routing_key, msg)
            if dests:
                return dests
            x = ae
        return ()

    def enqueue(self, queues: Collection[Queue], msg: Message) -> tuple[bool, int]:
        """Push ``msg`` into each queue (a copy for every queue after the first).
        Returns (routed anywhere, the worst push status: PUSH_OK < PUSH_SYNC < PUSH_REJECTED).
        A publish the disk cannot take (see :mod:`broker.alarms`) goes nowhere: PUSH_REJECTED."""
        services = self.services
        if queues and services is not None and services.store is not None:
            # the disk guard's O(1) test (see broker.alarms): may this publish's records cross the disk mark?
            upper = (len(msg.body) + len(msg.header) + RECORD_OVERHEAD_MAX) * len(queues)
            if services.store.appended_bytes + upper > services.monitor.disk_mark and not self._disk_admits(
                queues, msg
            ):
                return True, PUSH_REJECTED
        first = True
        status = PUSH_OK
        persistent = None
        for q in queues:
            m = msg if first else msg.copy()
            first = False
            if q.log is None:
                r = q.push(m)
            else:
                if persistent is None:
                    persistent = framing.delivery_mode(msg.header) == 2
                r = q.push(m, persistent)
            if r > status:
                status = r
        return not first, status

    def _disk_admits(self, queues: Collection[Queue], msg: Message) -> bool:
        """The exact bytes this publish appends to queue logs, checked against the disk now."""
        logged = sum(1 for q in queues if q.log is not None)
        if not logged:
            return True
        assert self.services is not None
        size = record_size(msg.ex_raw, msg.rk_raw, msg.header, msg.body)
        return self.services.monitor.admit_disk_write(logged * size)

    # -- durable metadata ------------------------------------------------------------
    def definitions(self) -> dict:
        """This vhost's durable topology in RabbitMQ's definitions shape."""
        exchanges = [
            dict(x.describe(), vhost=self.name)
            for x in self.exchanges.values()
            if x.durable and x.name and not x.name.startswith("amq.")
        ]
        queues = [q.definition() for q in self.queues.values() if q.durable and q.owner is None]
        bindings = []
        for x in self.exchanges.values():
            if not x.durable or not x.name:
                continue
            for b in x.bindings.values():
                d = b.destination
                if not d.durable or (isinstance(d, Queue) and d.owner is not None):
                    continue
                bindings.append(
                    {
                        "source": x.name,
                        "vhost": self.name,
                        "destination": d.name,
                        "destination_type": "queue" if isinstance(d, Queue) else "exchange",
                        "routing_key": b.routing_key,
                        "arguments": b.arguments,
                    }
                )
        policies = [p.as_json() for p in self.policies.policies]
        parameters = [
            {"vhost": self.name, "component": "operator_policy", "name": p.name,
             "value": {k: v for k, v in p.as_json().items() if k not in ("vhost", "name")}}
            for p in self.policies.operator_policies
        ]
        if self.limits:
            parameters.append({"vhost": self.name, "component": "vhost-limits", "name": "limits",
                               "value": dict(self.limits)})
        return {"exchanges": exchanges, "queues": queues, "bindings": bindings, "policies": policies,
                "parameters": parameters}
