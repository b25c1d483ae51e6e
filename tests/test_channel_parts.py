"""In-process unit tests of the pieces a channel is made of, fed values (no sockets).

Content assembly, publisher confirms, unacked deliveries, transactions, direct
reply-to, the consumer's credit check, the connection state table and the frame
type constants.  The same behaviour is tested end to end over real sockets in
test_errors.py, test_raw_frames.py and test_extensions.py.
"""

from __future__ import annotations

import json
import struct
from types import SimpleNamespace

import pytest
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import heartbeat as pheartbeat
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from broker.amqp.confirms import ACK, COMMIT_FAILED, COMMIT_OK, NACK, Confirms
from broker.amqp.connection_state import TRANSITIONS, ConnState, IllegalTransition, check_transition
from broker.amqp.consumer import Consumer, new_consumer_tag
from broker.amqp.content import MAX_MESSAGE_SIZE, ContentAssembler
from broker.amqp.direct_reply import REPLY_TO_PREFIX, ReplyConsumer, check_consume, reply_frames, reply_token
from broker.amqp.transactions import Transaction, settle_groups
from broker.amqp.unacked import UnackedDeliveries
from broker.message import Message
from protocol import errors, framing
from protocol.errors import ChannelError, ConnectionError

# -- content assembly -----------------------------------------------------------


def publish_payload(exchange: str = "ex", rk: str = "rk", mandatory: bool = False) -> bytes:
    """A Basic.Publish method payload as a client sends it."""
    return pframe.marshal(C.Basic.Publish(exchange=exchange, routing_key=rk, mandatory=mandatory), 1)[7:-1]


def header_payload(size: int, class_id: int = 60) -> bytes:
    return struct.pack(">HHQH", class_id, 0, size, 0)


class Completed(list):
    def __call__(self, pub: tuple, header: bytes, body: bytes) -> None:
        self.append((pub, header, body))


@pytest.fixture
def assembler() -> tuple[ContentAssembler, Completed]:
    done = Completed()
    return ContentAssembler(done), done


def test_content_single_and_split_body(assembler):
    a, done = assembler
    a.start(publish_payload("ex", "rk", mandatory=True))
    a.header(header_payload(5))
    a.body(b"hello")
    a.start(publish_payload())
    a.header(header_payload(6))
    a.body(b"ab")
    assert len(done) == 1
    a.body(b"cd")
    a.body(b"ef")
    (pub1, hdr1, body1), (pub2, _h, body2) = done
    assert pub1 == (b"\x02ex", b"\x02rk", 1) and hdr1 == header_payload(5) and body1 == b"hello"
    assert pub2[2] == 0 and body2 == b"abcdef"
    assert a.pub is None and a.hdr is None and a.parts == []


def test_content_empty_body_is_completed_by_the_header(assembler):
    a, done = assembler
    a.start(publish_payload())
    a.header(header_payload(0))
    assert done == [((b"\x02ex", b"\x02rk", 0), header_payload(0), b"")]
    assert a.pub is None


@pytest.mark.parametrize(
    "frames, code, text",
    [
        (["header"], errors.UNEXPECTED_FRAME, "expected method frame, got non method frame instead"),
        (["body"], errors.UNEXPECTED_FRAME, "expected method frame, got non method frame instead"),
        (
            ["publish", "body"],
            errors.UNEXPECTED_FRAME,
            "expected content header for class 60, got non content header frame instead",
        ),
        (
            ["publish", "header", "header"],
            errors.UNEXPECTED_FRAME,
            "expected content body, got non content body frame instead",
        ),
        (
            ["publish", "header", "long body"],
            errors.FRAME_ERROR,
            "content body is longer than the size its header declared",
        ),
    ],
)
def test_content_frame_order_errors(assembler, frames, code, text):
    a, _done = assembler
    feed = {
        "publish": lambda: a.start(publish_payload()),
        "header": lambda: a.header(header_payload(3)),
        "body": lambda: a.body(b"abc"),
        "long body": lambda: a.body(b"abcd"),
    }
    for f in frames[:-1]:
        feed[f]()
    with pytest.raises(ConnectionError) as ei:
        feed[frames[-1]]()
    assert (ei.value.code, ei.value.detail) == (code, text)


def test_content_method_while_content_expected(assembler):
    a, _done = assembler
    a.start(publish_payload())
    e = a.method_error()
    assert (e.code, e.detail) == (
        errors.UNEXPECTED_FRAME,
        "expected content header for class 60, got non content header frame instead",
    )
    a.header(header_payload(3))
    e = a.method_error()
    assert e.detail == "expected content body, got non content body frame instead"


def test_content_wrong_class_and_oversize(assembler):
    a, done = assembler
    a.start(publish_payload())
    with pytest.raises(ConnectionError, match="got one for class 50 instead"):
        a.header(header_payload(3, class_id=50))
    a.start(publish_payload())
    with pytest.raises(ChannelError) as ei:
        a.header(header_payload(MAX_MESSAGE_SIZE + 1))
    assert ei.value.code == errors.PRECONDITION_FAILED
    size = MAX_MESSAGE_SIZE + 1
    assert ei.value.detail == f"message size {size} is larger than configured max size {MAX_MESSAGE_SIZE}"
    assert a.pub is None and done == []


# -- publisher confirms -----------------------------------------------------------


def test_confirms_coalesce_into_one_multiple_ack():
    c = Confirms()
    for _ in range(3):
        assert c.routed(c.next_seq()) is True
    assert c.take_ack() == (ACK, 3, 3)
    assert c.take_ack() is None
    assert c.routed(c.next_seq()) is True
    assert c.take_ack() == (ACK, 4, 1)  # a single ack is not "multiple"


def test_confirms_wait_for_the_disk_in_order():
    c = Confirms()
    c.wait_for_disk(c.next_seq(), 7)  # 1 waits for epoch 7
    assert c.routed(c.next_seq()) is False  # 2 needs no disk but queues behind 1
    c.wait_for_disk(c.next_seq(), 8)  # 3
    assert c.synced(6) == [] and c.take_ack() is None
    assert c.synced(7) == []  # 1 and 2 coalesced for the next flush
    assert c.take_ack() == (ACK, 2, 2)
    assert list(c.waiting) == [(3, 8)]
    assert c.synced(8) == [] and c.take_ack() == (ACK, 3, 1)
    assert not c.waiting


def test_confirms_nacks_keep_their_place():
    c = Confirms()
    assert c.routed(c.next_seq())  # 1: ack due
    assert c.refused(c.next_seq()) == [(ACK, 1, 1), (NACK, 2, 1)]  # the ack goes out before the nack
    c.wait_for_disk(c.next_seq(), 5)  # 3
    assert c.refused(c.next_seq()) == []  # 4 waits behind 3
    assert c.routed(c.next_seq()) is False  # 5
    assert c.synced(5) == [(ACK, 3, 1), (NACK, 4, 1)]
    assert c.take_ack() == (ACK, 5, 1)


def test_confirms_failed_write_nacks_what_needed_the_disk():
    c = Confirms()
    assert c.routed(c.next_seq())  # 1
    c.wait_for_disk(c.next_seq(), 3)  # 2
    c.routed(c.next_seq())  # 3 (behind 2, no disk)
    c.wait_for_disk(c.next_seq(), 4)  # 4, a later epoch
    assert c.failed(3) == [(ACK, 1, 1), (NACK, 2, 1), (ACK, 3, 1)]
    assert list(c.waiting) == [(4, 4)]


def test_confirms_commit_waits_for_the_disk():
    c = Confirms()
    c.commit_waits(2)
    assert c.synced(1) == []
    assert c.synced(2) == [(COMMIT_OK, 0, 0)]
    c.commit_waits(3)
    assert c.failed(3) == [(COMMIT_FAILED, 0, 0)]


# -- unacked deliveries ---------------------------------------------------------------


def credit() -> SimpleNamespace:
    return SimpleNamespace(unacked=0)


def delivered(n: int, consumer: SimpleNamespace | None) -> tuple[UnackedDeliveries, list[str]]:
    led = UnackedDeliveries()
    for i in range(n):
        led.track(led.new_tag(), f"m{i + 1}", "q", consumer)  # type: ignore[arg-type]
    return led, [f"m{i + 1}" for i in range(n)]


def test_unacked_tags_and_credit():
    c = credit()
    led, _ = delivered(5, c)
    assert list(led.by_tag) == [1, 2, 3, 4, 5] and c.unacked == 5 and led.global_unacked == 5
    assert [m for m, _q, _c in led.take(2, False, 60, 80)] == ["m2"]
    assert [m for m, _q, _c in led.take(4, True, 60, 80)] == ["m1", "m3", "m4"]
    assert c.unacked == 1 and led.global_unacked == 1
    assert [m for m, _q, _c in led.take(0, True, 60, 80)] == ["m5"]
    assert c.unacked == 0 and led.global_unacked == 0 and len(led) == 0


def test_unacked_get_has_no_consumer_credit():
    led, _ = delivered(2, None)
    led.take(0, True, 60, 80)
    assert led.global_unacked == 0


@pytest.mark.parametrize("multiple", [False, True])
def test_unacked_unknown_tag(multiple):
    led, _ = delivered(2, credit())
    led.take(1, False, 60, 80)
    with pytest.raises(ChannelError) as ei:
        led.take(1, multiple, 60, 120)
    assert (ei.value.code, ei.value.detail, ei.value.class_id, ei.value.method_id) == (
        errors.PRECONDITION_FAILED, "unknown delivery tag 1", 60, 120,
    )
    assert list(led.by_tag) == [2]  # nothing taken by a refused ack


def test_unacked_held_then_restored_in_tag_order():
    c = credit()
    led, _ = delivered(4, c)
    held = led.take_held(3, True, 60, 80)
    assert [t for t, _e in held] == [1, 2, 3] and c.unacked == 4  # credit kept while held
    led.restore(held)
    assert list(led.by_tag) == [1, 2, 3, 4]
    held = led.take_held(2, False, 60, 80)
    led.release([e for _t, e in held])
    assert c.unacked == 3 and led.global_unacked == 3


# -- transactions --------------------------------------------------------------------


def test_transaction_commit_and_rollback():
    tx = Transaction()
    led, _ = delivered(3, credit())
    tx.publish("x", "msg", 1)  # type: ignore[arg-type]
    tx.settle(led.take_held(1, False, 60, 80), None)
    tx.settle(led.take_held(2, False, 60, 120), True)
    tx.settle(led.take_held(3, False, 60, 90), False)
    pubs, acks = tx.commit()
    assert pubs == [("x", "msg", 1)] and [t for t, _e, _r in acks] == [1, 2, 3]
    assert tx.publishes == [] and tx.acks == []
    assert [(r, [e[0] for e in g]) for r, g in settle_groups(acks)] == [(None, ["m1"]), (True, ["m2"]), (False, ["m3"])]
    led, _ = delivered(2, credit())
    tx.publish("x", "msg", 0)  # type: ignore[arg-type]
    tx.settle(led.take_held(2, True, 60, 80), None)
    pairs = tx.rollback()
    assert tx.publishes == [] and [t for t, _e in pairs] == [1, 2]


# -- direct reply-to -----------------------------------------------------------------


def test_direct_reply_names_and_refusals():
    r = ReplyConsumer("ctag", "tok")
    assert r.reply_to == REPLY_TO_PREFIX + "tok" == "amq.rabbitmq.reply-to.tok"
    assert reply_token(r.reply_to) == "tok"
    assert reply_token("amq.rabbitmq.reply-to") is None and reply_token("other.tok") is None
    with pytest.raises(ChannelError, match="reply consumer cannot acknowledge"):
        check_consume(False, None)
    with pytest.raises(ChannelError, match="reply consumer already set"):
        check_consume(True, r)
    check_consume(True, None)


def test_direct_reply_frames_match_pamqp():
    msg = Message("", "amq.rabbitmq.reply-to.tok", b"\x00", framing.shortstr("amq.rabbitmq.reply-to.tok"),
                  header_payload(2), b"hi")
    got = b"".join(bytes(p) for p in reply_frames(3, ReplyConsumer("ctag", "tok"), 9, msg, 131064))
    ref = pframe.marshal(
        C.Basic.Deliver(consumer_tag="ctag", delivery_tag=9, redelivered=False, exchange="",
                        routing_key="amq.rabbitmq.reply-to.tok"), 3,
    )
    ref += pframe.marshal(ContentHeader(0, 2, C.Basic.Properties()), 3) + pframe.marshal(ContentBody(b"hi"), 3)
    assert got == ref


# -- consumer credit --------------------------------------------------------------------


def consumer_on(no_ack: bool = False, prefetch: int = 0) -> tuple[Consumer, SimpleNamespace]:
    conn = SimpleNamespace(writing_paused=False, out_size=0, OUT_HIGH=100, starved=False)
    ch = SimpleNamespace(active=True, conn=conn, unacked_deliveries=UnackedDeliveries(), deliver=None)
    c = Consumer(ch, "q", new_consumer_tag(), no_ack, False, prefetch, {"x-priority": 5})  # type: ignore[arg-type]
    return c, ch


def test_consumer_credit():
    c, ch = consumer_on(prefetch=2)
    assert c.tag.startswith("amq.ctag-") and c.priority == 5 and c.can_take()
    c.unacked = 2
    assert not c.can_take()
    c.unacked = 1
    ch.unacked_deliveries.global_prefetch = 3
    ch.unacked_deliveries.global_unacked = 3
    assert not c.can_take()
    ch.unacked_deliveries.global_unacked = 2
    assert c.can_take()
    ch.conn.out_size = 101
    assert not c.can_take() and ch.conn.starved
    ch.conn.out_size = 0
    ch.active = False
    assert not c.can_take()


def test_no_ack_consumer_ignores_prefetch():
    c, ch = consumer_on(no_ack=True, prefetch=1)
    c.unacked = 5
    ch.unacked_deliveries.global_prefetch = 1
    ch.unacked_deliveries.global_unacked = 9
    assert c.can_take()


# -- connection states ---------------------------------------------------------------------


def test_connection_state_table():
    S = ConnState
    happy = [S.HEADER, S.START, S.TUNE, S.OPEN, S.OPENED, S.CLOSING, S.CLOSED]
    for a, b in zip(happy, happy[1:]):
        assert check_transition(a, b) is b
    assert check_transition(S.START, S.REFUSING) is S.REFUSING
    for s in S:
        if s is not S.CLOSED:
            assert check_transition(s, S.CLOSED) is S.CLOSED
    assert TRANSITIONS[S.CLOSED] == frozenset()
    for bad in [(S.HEADER, S.OPENED), (S.OPENED, S.START), (S.CLOSED, S.OPENED), (S.HEADER, S.CLOSING),
                (S.REFUSING, S.TUNE)]:
        with pytest.raises(IllegalTransition, match=f"cannot go to {bad[1].value}"):
            check_transition(*bad)


def test_connection_state_reads_as_its_string():
    assert ConnState.OPENED == "opened" and f"{ConnState.CLOSING}" == "closing"
    assert json.dumps({"state": ConnState.CLOSED}) == '{"state": "closed"}'


# -- frame constants -------------------------------------------------------------------------


def test_frame_type_constants_match_pamqp():
    assert framing.HEARTBEAT_FRAME == pframe.marshal(pheartbeat.Heartbeat(), 0)
    assert pframe.marshal(C.Basic.Qos(), 1)[0] == framing.FRAME_METHOD
    assert pframe.marshal(ContentHeader(0, 1, C.Basic.Properties()), 1)[0] == framing.FRAME_HEADER
    assert pframe.marshal(ContentBody(b"x"), 1)[0] == framing.FRAME_BODY
    assert framing.FRAME_END_BYTE == b"\xce"
