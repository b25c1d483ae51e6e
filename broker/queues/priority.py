"""The ready messages of a queue, kept in publish order: sequence helpers and the
per-priority FIFOs of an ``x-max-priority`` queue.

An entry is a :class:`~broker.message.Message` or, for a message that is only in
the queue's log, its int ref; both are ordered by sequence number (the ref for a
logged message), so requeued messages go back to their original places.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Iterator
from itertools import chain
from typing import Any

from ..message import Message


def seq_of(e: Any) -> int:
    """The sequence number of a ready entry (a Message or a bare ref)."""
    return e if type(e) is int else e.seq


class PriorityMessages:
    """The ready messages of an x-max-priority queue: one FIFO per priority."""

    def __init__(self, max_priority: int) -> None:
        self.max = max_priority
        self.levels: list[deque[Message]] = [deque() for _ in range(max_priority + 1)]
        self.n = 0

    def level(self, m: Message) -> int:
        return min(m.priority, self.max)

    def append(self, m: Message) -> None:
        self.levels[self.level(m)].append(m)
        self.n += 1

    def popleft(self) -> Message:
        for lv in reversed(self.levels):
            if lv:
                self.n -= 1
                return lv.popleft()
        raise IndexError("pop from an empty queue")

    def __getitem__(self, i: int) -> Message:
        if i != 0:
            raise IndexError(i)
        for lv in reversed(self.levels):
            if lv:
                return lv[0]
        raise IndexError(i)

    def __len__(self) -> int:
        return self.n

    def __bool__(self) -> bool:
        return self.n > 0

    def __iter__(self) -> Iterator[Message]:
        return chain.from_iterable(reversed(self.levels))

    def clear(self) -> None:
        for lv in self.levels:
            lv.clear()
        self.n = 0

    def requeue(self, back: list[Message]) -> None:
        by: dict[int, list[Message]] = {}
        for m in back:
            by.setdefault(self.level(m), []).append(m)
        for p, msgs in by.items():
            merge_sorted(self.levels[p], msgs)
            self.n += len(msgs)

    def remove_if(self, pred: Callable[[Message], bool]) -> int:
        n = 0
        for i, lv in enumerate(self.levels):
            keep = deque(m for m in lv if not pred(m))
            n += len(lv) - len(keep)
            self.levels[i] = keep
        self.n -= n
        return n


def merge_sorted(q: Any, back: list[Message]) -> None:
    """Insert ``back`` (sorted by seq) into ``q`` at their sequence places."""
    if not q or back[-1].seq < seq_of(q[0]):
        q.extendleft(reversed(back))
        return
    seqs = [seq_of(m) for m in q]
    for m in reversed(back):
        i = bisect.bisect_left(seqs, m.seq)
        q.insert(i, m)
        seqs.insert(i, m.seq)
