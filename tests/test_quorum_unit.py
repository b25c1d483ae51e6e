"""The quorum queue's pieces in-process: the two priority levels, the delivery limit as
arguments and policies decide it, delivery counts kept in the log across a restart,
high-priority messages recovered, and the pending-commit bookkeeping."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import storage.log as slog
from broker.message import Message
from broker.queues import PUSH_SYNC
from broker.queues.base import PolicyRef
from broker.queues.priority import TwoLevelMessages, seq_of
from broker.queues.quorum import PendingCommits, QuorumQueue
from broker.vhost import VHost
from protocol import fields
from storage.store import LogStore
from test_engine_unit import message

QQ = {"x-queue-type": "quorum"}


def msg(seq: int, priority: int = 0) -> Message:
    m = message("q", b"%d" % seq)
    m.seq = seq
    m.priority = priority
    return m


def test_two_levels_two_high_for_each_normal_and_fifo_within_a_level() -> None:
    q = TwoLevelMessages()
    for i in range(1, 7):
        q.append(msg(i, priority=0))
    for i in range(7, 13):
        q.append(msg(i, priority=9))
    assert len(q) == 12
    out = [q.popleft() for _ in range(12)]
    assert "".join("h" if m.priority > 4 else "n" for m in out) == "hhnhhnhhnnnn"
    assert [m.seq for m in out if m.priority == 0] == [1, 2, 3, 4, 5, 6]
    assert not q


def test_two_levels_every_third_takes_the_older_head_and_refs_are_normal() -> None:
    q = TwoLevelMessages([1, 2])  # a backlog of refs moved in: normal
    q.append(msg(3, priority=5))
    assert q.popleft().seq == 3 and q.popleft() == 1
    q.append(msg(4, priority=5))
    # third take: the older head (ref 2) goes before the newer high message
    assert q[0] == 2 and q.popleft() == 2
    assert q.popleft().seq == 4


def test_two_levels_iterate_in_the_order_they_are_taken() -> None:
    q = TwoLevelMessages([1, 2, 3])
    for seq in (4, 5, 6, 7):
        q.append(msg(seq, priority=7))
    q.popleft()  # the turn moves on: iteration starts from the current turn
    listed = [seq_of(e) for e in q]
    taken = [seq_of(q.popleft()) for _ in range(len(q))]
    assert listed == taken and len(listed) == 6


def test_priority_four_is_normal_five_is_high() -> None:
    q = TwoLevelMessages()
    q.append(msg(1, priority=4))
    q.append(msg(2, priority=5))
    assert q.popleft().seq == 2


def declare(vh: VHost, name: str, **args: Any) -> QuorumQueue:
    q, _ = vh.declare_queue(name, True, False, False, dict(QQ, **args), None)
    assert isinstance(q, QuorumQueue)
    return q


def test_delivery_limit_from_the_effective_settings() -> None:
    vh = VHost("/")
    assert declare(vh, "a").delivery_limit == 20
    assert declare(vh, "none", **{"x-delivery-limit": -1}).delivery_limit == -1
    q = declare(vh, "b", **{"x-delivery-limit": 5})
    q.apply_policies(PolicyRef("p", {"delivery-limit": 3}), None)
    assert q.delivery_limit == 3  # the lower wins
    q.apply_policies(None, PolicyRef("op", {"delivery-limit": 2}))
    assert q.delivery_limit == 2  # an operator policy lowers it
    q.apply_policies(None, None)
    assert q.delivery_limit == 5
    q = declare(vh, "d")
    q.apply_policies(PolicyRef("p", {"delivery-limit": 4}), None)
    assert q.delivery_limit == 4


def test_reject_publish_dlx_is_drop_head_and_at_least_once_needs_reject_publish() -> None:
    vh = VHost("/")
    q = declare(vh, "o", **{"x-overflow": "reject-publish-dlx", "x-dead-letter-exchange": "dlx",
                            "x-dead-letter-strategy": "at-least-once"})
    assert q.overflow == "drop-head" and not q.at_least_once
    q = declare(vh, "p", **{"x-dead-letter-exchange": "dlx", "x-dead-letter-strategy": "at-least-once"})
    assert not q.at_least_once
    q.apply_policies(PolicyRef("p", {"overflow": "reject-publish"}), None)
    assert q.overflow == "reject-publish" and q.at_least_once


def test_delivery_counts_and_high_priority_survive_a_restart(tmp_path: Any) -> None:
    store = LogStore(str(tmp_path))
    store.open()
    q = declare(VHost("/"), "d")
    q.open_store(store)
    assert q.push(message("d", b"a"), False) == PUSH_SYNC  # transient, logged all the same
    q.push(message("d", b"b"), False)
    q.push(message("d", b"hi", priority=8), False)
    first = q.get()
    assert first is not None and first.body == b"hi"
    q.requeue([first])
    again = q.get()
    assert again is not None and fields.table_entries(fields.split_properties(again.header)[1]["headers"]) == [
        ("x-delivery-count", fields.encode_value(fields.Long(1)))]
    q.requeue([again])
    store.flush()
    store.close()

    store = LogStore(str(tmp_path))
    store.open()
    try:
        q = declare(VHost("/"), "d")
        q.open_store(store)
        got = q.recover()
        assert got is not None and got.messages == 3
        assert isinstance(q.messages, TwoLevelMessages)
        m = q.get()
        assert m is not None and m.body == b"hi" and m.redelivered
        headers = dict(fields.table_entries(fields.split_properties(m.header)[1]["headers"]))
        assert headers["x-delivery-count"] == fields.encode_value(fields.Long(2))
        assert [x.body for x in (q.get(), q.get()) if x] == [b"a", b"b"]
    finally:
        store.close()


def test_pending_commits_release_in_epoch_order() -> None:
    p = PendingCommits()
    a, b, c = msg(1), msg(2), msg(3)
    p.add(3, a, "expired")
    p.add(4, b, "rejected")
    p.add(4, c, "expired")
    assert p.committed(2) == [] and len(p) == 3
    assert p.committed(3) == [(a, "expired")] and len(p) == 2
    assert p.committed(9) == [(b, "rejected"), (c, "expired")] and len(p) == 0


def test_marked_records_are_listed_by_recovery(tmp_path: Any, monkeypatch: Any) -> None:
    """A record appended marked (a quorum queue's high-priority message) is listed by the next
    recovery while it is live, across segments, without reading the records again."""
    monkeypatch.setattr(slog, "SEGMENT_SIZE", 4096)
    store = LogStore(str(tmp_path))
    store.open()
    qlog = store.queue_log("/", "q")
    refs = [qlog.append(True, b"\x00", b"\x01q", b"h", bytes(900), marked=i % 3 == 0) for i in range(12)]
    assert len({r >> 32 for r in refs}) > 2  # several segments
    qlog.settle(refs[3])
    store.flush()
    store.close()
    store = LogStore(str(tmp_path))
    store.open()
    try:
        qlog = store.queue_log("/", "q")
        live, _upto, _problems = qlog.recover()
        assert list(live) == refs[:3] + refs[4:]
        assert qlog.recovered_marked == [refs[0], refs[6], refs[9]]
    finally:
        store.close()


def test_at_least_once_dead_letter_leaves_the_source_after_the_targets_fsync(tmp_path: Any) -> None:
    """The source keeps the message (messages_dlx) until the store says the epoch holding the
    dead letter in its durable target is on disk."""

    async def main() -> tuple[int, int, int]:
        store = LogStore(str(tmp_path))
        store.open()
        store.attach(asyncio.get_running_loop())

        class Host(VHost):
            @property
            def loop(self) -> Any:
                return asyncio.get_running_loop()

        vh = Host("/")
        target = declare(vh, "dlq")
        target.open_store(store)
        src = declare(vh, "src", **{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq",
                                    "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"})
        src.open_store(store)
        src.push(message("src", b"m"), False)
        store.flush()
        m = src.get()
        assert m is not None
        src.reject(m)
        before = src.dead_lettering
        in_target = target.ready
        for _ in range(400):
            await asyncio.sleep(0.005)
            if not src.dead_lettering:
                break
        after = src.dead_lettering
        store.close()
        return before, in_target, after

    before, in_target, after = asyncio.run(main())
    assert (before, in_target, after) == (1, 1, 0)


def test_recovery_skips_high_priority_messages_that_expired_meanwhile(tmp_path: Any) -> None:
    store = LogStore(str(tmp_path))
    store.open()
    q = declare(VHost("/"), "t", **{"x-message-ttl": 50})
    q.open_store(store)
    q.push(message("t", b"old", priority=9), False)
    q.push(message("t", b"normal"), False)
    store.flush()
    store.close()
    time.sleep(0.1)
    store = LogStore(str(tmp_path))
    store.open()
    try:
        q = declare(VHost("/"), "t", **{"x-message-ttl": 50})
        q.open_store(store)
        assert q.recover() is not None
        assert q.ready == 0 and q.get() is None  # both expired at recovery; nothing read from a dropped segment
    finally:
        store.close()
