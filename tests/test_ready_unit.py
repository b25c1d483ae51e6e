"""The packed ready list (broker.queues.ready) against a plain deque, in-process: any sequence of
appends, takes, head replacements and requeues leaves both in the same order."""

from __future__ import annotations

from array import array
from collections import deque
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.queues.priority import merge_sorted, seq_of
from broker.queues.ready import RUN_MAX, ReadyMessages


@dataclass
class Msg:
    """A stand-in for a Message: the ready list reads only its seq."""

    seq: int


ops = st.lists(st.tuples(st.sampled_from(["msg", "ref", "refs", "take", "head", "requeue"]),
                         st.integers(0, 20)), max_size=120)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_same_order_as_a_deque(script):
    ref_q: deque = deque()
    packed = ReadyMessages()
    seq = 0
    taken: list = []
    for op, k in script:
        if op in ("msg", "ref", "refs"):
            for _ in range(1 if op != "refs" else k * 50):
                seq += 1
                e = Msg(seq) if op == "msg" else seq
                ref_q.append(e)
                packed.append(e)
        elif op == "take":
            for _ in range(min(k, len(ref_q))):
                a, b = ref_q.popleft(), packed.popleft()
                assert seq_of(a) == seq_of(b)
                taken.append(a if isinstance(a, Msg) else Msg(a))
        elif op == "head" and ref_q:
            assert seq_of(ref_q[0]) == seq_of(packed[0])
            m = Msg(seq_of(ref_q[0]))  # the head read back from the log
            ref_q[0] = m
            packed[0] = m
        elif op == "requeue" and taken:
            back = sorted(taken[: k + 1], key=seq_of)
            del taken[: k + 1]
            merge_sorted(ref_q, list(back))
            packed.requeue(list(back))
        assert len(packed) == len(ref_q) and bool(packed) == bool(ref_q)
        assert [seq_of(e) for e in packed] == [seq_of(e) for e in ref_q]


def test_recovered_refs_are_packed_in_runs():
    refs = array("Q", range(1 << 32, (1 << 32) + 3 * RUN_MAX + 5))
    packed = ReadyMessages.of_refs(refs)
    assert len(packed) == len(refs) and len(packed.blocks) == 4
    assert list(packed) == list(refs)
    # a requeued message in the middle of a run splits it
    packed.requeue([Msg(refs[10])])
    assert [seq_of(e) for e in packed][9:12] == [refs[9], refs[10], refs[10]]
    assert len(packed) == len(refs) + 1
