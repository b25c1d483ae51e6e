"""The engine's seams driven in-process: queue types, the publish entry point, the
publish checks, recovery and sync waiters of the store.  No broker process, no
socket: a real :class:`VHost` (with no services: no loop, no store) or a real
:class:`LogStore` on a temporary directory, and a small subscriber that records
what it is handed (the :class:`broker.queues.Subscriber` protocol)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pamqp import commands as C

from broker.message import Message
from broker.publishing import check_properties
from broker.queues import PUSH_OK, PUSH_REJECTED, PUSH_SYNC, ClassicQueue, Queue, queue_class
from broker.reply_to import REPLY_TO_PREFIX
from broker.vhost import VHost
from protocol import fields, framing, names
from protocol.errors import ChannelError
from storage.store import LogStore


class Recorder:
    """A subscriber with ``credit`` deliveries left; records (queue name, body)."""

    def __init__(self, tag: str, credit: int = 1000, no_ack: bool = False) -> None:
        self.channel = self
        self.tag = tag
        self.no_ack = no_ack
        self.exclusive = False
        self.priority = 0
        self.arguments: dict = {}
        self.credit = credit
        self.got: list[tuple[str, bytes]] = []
        self.msgs: list[Message] = []
        self.cancelled: list[str] = []

    def can_take(self) -> bool:
        return self.credit > 0

    def deliver(self, queue: Any, msg: Message) -> None:
        self.credit -= 1
        self.got.append((queue.name, msg.body))
        self.msgs.append(msg)

    def queue_deleted(self, subscriber: Any) -> None:
        self.cancelled.append(subscriber.tag)


def message(rk: str, body: bytes, exchange: str = "", **props: Any) -> Message:
    header = framing.content_header_payload(len(body), C.Basic.Properties(**props))
    return Message(exchange, rk, names.shortstr(exchange), names.shortstr(rk), header, body)


def header_props(msg: Message) -> dict:
    return fields.split_properties(msg.header)[1]


# -- the queue-type registry --------------------------------------------------------

def test_registry_picks_classic_by_default_and_by_name() -> None:
    assert queue_class({}, "queue 'q' in vhost '/'") is ClassicQueue
    assert queue_class({"x-queue-type": "classic"}, "q") is ClassicQueue
    assert queue_class({"x-queue-type": b"classic"}, "q") is ClassicQueue
    assert issubclass(ClassicQueue, Queue)


@pytest.mark.parametrize(
    "value, text",
    [
        ("lazy", "invalid arg 'x-queue-type' for Q: \"unsupported queue type 'lazy'\""),
        (5, "invalid arg 'x-queue-type' for Q: \"unsupported queue type '5'\""),
        ({"a": 1}, "invalid arg 'x-queue-type' for Q: \"unsupported queue type '{'a': 1}'\""),
    ],
)
def test_registry_refuses_other_types(value: Any, text: str) -> None:
    with pytest.raises(ChannelError) as ei:
        queue_class({"x-queue-type": value}, "Q")
    assert ei.value.code == 406 and ei.value.text == "PRECONDITION_FAILED - " + text


def test_registry_knows_streams() -> None:
    assert queue_class({"x-queue-type": "stream"}, "Q").type_name == "stream"


# -- the publish entry point --------------------------------------------------------

def test_publish_routes_counts_and_returns() -> None:
    vh = VHost("/")
    q, _ = vh.declare_queue("q", False, False, False, {}, None)
    out = vh.publish(vh.default_exchange, message("q", b"one"), mandatory=True)
    assert (out.routed, list(out.queues), out.returned, out.status) == (True, [q], False, PUSH_OK)
    assert not out.needs_sync and not out.rejected
    out = vh.publish(vh.default_exchange, message("nowhere", b"two"), mandatory=True)
    assert (out.routed, out.returned) == (False, True)
    out = vh.publish(vh.default_exchange, message("nowhere", b"three"))
    assert (out.routed, out.returned) == (False, False)
    assert (vh.stats.published, vh.stats.routed, vh.stats.unroutable) == (3, 1, 2)
    assert q.ready == 1


def test_publish_fans_out_copies_and_reports_the_worst_answer() -> None:
    vh = VHost("/")
    x, _ = vh.declare_exchange("fan", "fanout", False, False, False, {})
    a, _ = vh.declare_queue("a", False, False, False, {}, None)
    b, _ = vh.declare_queue("b", False, False, False, {"x-max-length": 0, "x-overflow": "reject-publish"}, None)
    for q in (a, b):
        vh.bind(x, q, "", {})
    out = vh.publish(x, message("", b"m", "fan"))
    assert out.routed and set(out.queues) == {a, b} and out.status == PUSH_REJECTED and out.rejected
    assert (a.ready, b.ready) == (1, 0)


def test_direct_reply_to_without_a_registry_is_unroutable() -> None:
    vh = VHost("/")
    out = vh.publish(vh.default_exchange, message(REPLY_TO_PREFIX + "token", b"r"), mandatory=True)
    assert (out.routed, out.returned, list(out.queues)) == (False, True, [])


def test_reject_dead_letters_through_publish_without_counting_it() -> None:
    vh = VHost("/")
    dlx, _ = vh.declare_exchange("dlx", "fanout", False, False, False, {})
    dlq, _ = vh.declare_queue("dlq", False, False, False, {}, None)
    vh.bind(dlx, dlq, "", {})
    q, _ = vh.declare_queue("work", False, False, False, {"x-dead-letter-exchange": "dlx"}, None)
    vh.publish(vh.default_exchange, message("work", b"poison"))
    got = q.get()
    assert got is not None
    q.reject(got)
    assert (q.ready, q.unacked, dlq.ready) == (0, 0, 1)
    dead = dlq.get()
    assert dead is not None and dead.body == b"poison"
    death = dead.properties.headers["x-death"][0]
    assert death["queue"] == "work" and death["reason"] == "rejected"
    assert vh.stats.published == 1  # the dead letter is not a client publish


def test_expired_dead_letter_cycle_is_dropped() -> None:
    """A queue dead-lettering into itself for a reason other than rejection drops the message."""
    vh = VHost("/")
    q, _ = vh.declare_queue("loop", False, False, False,
                            {"x-dead-letter-exchange": "", "x-message-ttl": 0}, None)
    vh.publish(vh.default_exchange, message("loop", b"old"))
    q.expire()
    assert q.ready == 0


# -- the queue and its subscribers ----------------------------------------------------

def test_round_robin_credit_ack_and_requeue_in_order() -> None:
    vh = VHost("/")
    q, _ = vh.declare_queue("q", False, False, False, {}, None)
    a, b = Recorder("a", credit=2), Recorder("b", credit=1)
    q.add_consumer(a)
    q.add_consumer(b)
    for i in range(5):
        vh.publish(vh.default_exchange, message("q", b"%d" % i))
    assert [m for _q, m in a.got] == [b"0", b"2"] and [m for _q, m in b.got] == [b"1"]
    assert (q.ready, q.unacked) == (2, 3)
    q.settle(a.msgs[0])
    q.requeue([b.msgs[0], a.msgs[1]])
    assert (q.ready, q.unacked, q.acked) == (4, 0, 1)
    q.remove_consumer(a)
    q.remove_consumer(b)
    c = Recorder("c")
    q.add_consumer(c)
    q.dispatch()
    assert [m for _q, m in c.got] == [b"1", b"2", b"3", b"4"]
    assert [m.redelivered for m in c.msgs] == [True, True, False, False]


def test_delete_cancels_subscribers_and_reports_ready() -> None:
    vh = VHost("/")
    q, _ = vh.declare_queue("gone", False, False, False, {}, None)
    r = Recorder("r", credit=0)
    q.add_consumer(r)
    vh.publish(vh.default_exchange, message("gone", b"x"))
    assert vh.delete_queue(q) == 1
    assert r.cancelled == ["r"] and "gone" not in vh.queues and q.deleted
    assert vh.publish(vh.default_exchange, message("gone", b"y")).routed is False


def test_definition_is_rabbitmq_shaped() -> None:
    vh = VHost("v")
    q, _ = vh.declare_queue("d", True, False, False, {"x-max-length": 5}, None)
    assert q.definition() == {"name": "d", "vhost": "v", "durable": True, "auto_delete": False,
                              "arguments": {"x-max-length": 5}}
    assert vh.definitions()["queues"] == [q.definition()]


# -- the publish checks -------------------------------------------------------------

@pytest.mark.parametrize(
    "value, text",
    [("-1", "invalid expiration '-1': {value_negative,-1}"), ("abc", "invalid expiration 'abc': no_integer")],
)
def test_expiration_texts(value: str, text: str) -> None:
    with pytest.raises(ChannelError) as ei:
        check_properties(message("q", b"", expiration=value), "guest", None)
    assert (ei.value.code, ei.value.text) == (406, "PRECONDITION_FAILED - " + text)


def test_expiration_sets_the_deadline() -> None:
    m = message("q", b"", expiration="60000")
    check_properties(m, "guest", None)
    assert m.deadline == m.exp_deadline and m.deadline > 0


def test_user_id_must_be_the_publisher() -> None:
    check_properties(message("q", b"", user_id="guest"), "guest", None)
    with pytest.raises(ChannelError) as ei:
        check_properties(message("q", b"", user_id="root"), "guest", None)
    assert ei.value.text == "PRECONDITION_FAILED - user_id property set to 'root' but authenticated user was 'guest'"


def test_reply_to_pseudo_queue_is_rewritten_or_refused() -> None:
    with pytest.raises(ChannelError) as ei:
        check_properties(message("q", b"", reply_to="amq.rabbitmq.reply-to"), "guest", None)
    assert ei.value.text == "PRECONDITION_FAILED - fast reply consumer does not exist"
    m = message("q", b"", reply_to="amq.rabbitmq.reply-to")
    check_properties(m, "guest", "tok")
    assert m.properties.reply_to == "amq.rabbitmq.reply-to.tok"
    other = message("q", b"", reply_to="my-replies")
    check_properties(other, "guest", None)
    assert other.properties.reply_to == "my-replies"


def test_cc_and_bcc_add_routing_keys_and_bcc_is_removed() -> None:
    m = message("q", b"", headers={"CC": ["c1"], "BCC": ["b1"], "k": "v"})
    check_properties(m, "guest", None)
    assert sorted(m.cc) == ["b1", "c1"]
    assert set(m.properties.headers) == {"CC", "k"}
    vh = VHost("/")
    for name in ("q", "c1", "b1"):
        vh.declare_queue(name, False, False, False, {}, None)
    out = vh.publish(vh.default_exchange, m)
    assert sorted(q.name for q in out.queues) == ["b1", "c1", "q"]


# -- the store: sync waiters, lost records, recovery ------------------------------------

class Waiter:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.seen: list[int] = []

    def synced(self, epoch: int) -> bool:
        self.seen.append(epoch)
        return epoch < self.epoch

    def sync_failed(self, epoch: int, exc: Exception) -> bool:
        raise AssertionError(f"unexpected sync failure: {exc}")


def test_sync_waiter_is_told_and_dropped(tmp_path: Any) -> None:
    async def main() -> Waiter:
        store = LogStore(str(tmp_path))
        store.open()
        store.attach(asyncio.get_running_loop())
        qlog = store.queue_log("/", "q")
        qlog.append(True, b"\x00", b"\x01q", b"h", b"body")
        w = Waiter(store.want_sync())
        store.sync_waiters.add(w)
        for _ in range(200):
            await asyncio.sleep(0.005)
            if not store.sync_waiters:
                break
        store.close()
        return w

    w = asyncio.run(main())
    assert w.seen and w.seen[-1] >= w.epoch


def test_lost_records_reach_the_queue_as_a_ref_range(tmp_path: Any) -> None:
    store = LogStore(str(tmp_path))
    store.open()
    try:
        vh = VHost("/")
        q, _ = vh.declare_queue("d", True, False, False, {}, None)
        assert isinstance(q, ClassicQueue)
        q.open_store(store)
        assert q.push(message("d", b"a", delivery_mode=2), True) == PUSH_SYNC
        assert q.push(message("d", b"b", delivery_mode=2), True) == PUSH_SYNC
        second = q.messages[1].ref
        assert q.log is not None
        q.log.records_lost(second)
        assert [m.body for m in q.messages] == [b"a"]
    finally:
        store.close()


def test_classic_queue_recovers_in_order_and_marks_redelivered(tmp_path: Any) -> None:
    store = LogStore(str(tmp_path))
    store.open()
    vh = VHost("/")
    q, _ = vh.declare_queue("d", True, False, False, {}, None)
    q.open_store(store)
    for i in range(3):
        q.push(message("d", b"%d" % i, delivery_mode=2), True)
    q.push(message("d", b"transient"), False)
    first = q.get()  # delivered, never acked
    assert first is not None and first.body == b"0"
    store.flush()
    store.close()

    store = LogStore(str(tmp_path))
    store.open()
    try:
        vh = VHost("/")
        q, _ = vh.declare_queue("d", True, False, False, {}, None)
        q.open_store(store)
        got = q.recover()
        assert got is not None and (got.messages, got.redelivered, got.problems) == (3, 1, [])
        out = [q.get() for _ in range(3)]
        assert [(m.body, m.redelivered) for m in out if m] == [(b"0", True), (b"1", False), (b"2", False)]
        assert q.get() is None
    finally:
        store.close()
