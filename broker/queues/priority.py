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


HIGH_PRIORITY_ABOVE = 4  # a quorum queue's message with priority 5..255 is high (RabbitMQ 4)
HIGH_PER_NORMAL = 2  # while both levels hold messages, two high go out for each normal one


class TwoLevelMessages(PriorityMessages):
    """The ready messages of a quorum queue that has seen a high-priority message.

    RabbitMQ 4's two levels: priority above 4 is high, anything else normal.
    While both levels hold messages, every third message taken is the older of
    the two heads and the others are high, so high goes out about 2:1 and normal
    is never starved.  A normal entry may be a bare ref (a backlog kept on disk);
    high entries are always messages.
    """

    def __init__(self, normal: Any = None) -> None:
        super().__init__(1)
        if normal:
            self.levels[0] = deque(normal)
            self.n = len(normal)
        self.turn = 0

    def level(self, m: Any) -> int:
        return 0 if type(m) is int else int(m.priority > HIGH_PRIORITY_ABOVE)

    def append(self, m: Any) -> None:
        self.levels[self.level(m)].append(m)
        self.n += 1

    @staticmethod
    def _high_next(normal: Any, high: Any, turn: int) -> bool:
        """Whether the high head goes next, given both heads (None: that level is empty)."""
        if high is None:
            return False
        if normal is None or turn != HIGH_PER_NORMAL:
            return True
        return seq_of(high) < seq_of(normal)

    def _next_level(self) -> int:
        normal, high = self.levels
        return int(self._high_next(normal[0] if normal else None, high[0] if high else None, self.turn))

    def __iter__(self) -> Iterator[Any]:
        """The entries in the order :meth:`popleft` would give them."""
        normal, high = (iter(lv) for lv in self.levels)
        n_head, h_head, turn = next(normal, None), next(high, None), self.turn
        while n_head is not None or h_head is not None:
            take_high = self._high_next(n_head, h_head, turn)
            turn = 0 if turn == HIGH_PER_NORMAL else turn + 1
            if take_high:
                yield h_head
                h_head = next(high, None)
            else:
                yield n_head
                n_head = next(normal, None)

    def popleft(self) -> Any:
        if not self.n:
            raise IndexError("pop from an empty queue")
        lv = self._next_level()
        self.turn = 0 if self.turn == HIGH_PER_NORMAL else self.turn + 1
        self.n -= 1
        return self.levels[lv].popleft()

    def __getitem__(self, i: int) -> Any:
        if i != 0 or not self.n:
            raise IndexError(i)
        return self.levels[self._next_level()][0]

    def __setitem__(self, i: int, m: Any) -> None:
        """Replace the next entry (a ref loaded into its message)."""
        if i != 0 or not self.n:
            raise IndexError(i)
        self.levels[self._next_level()][0] = m
