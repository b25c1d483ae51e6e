"""The ready list of a queue that holds a backlog on disk: messages, and runs of bare refs.

Theory of operation
-------------------
A classic queue keeps its ready entries in a ``deque``: a :class:`Message`, or, for a message
that is only in the log, its int ref (see :mod:`broker.queues.classic`).  A deque slot and an
int object take about 40 bytes per message, so a backlog of ten million refs would take 400 MB.
Once a queue starts keeping bare refs it switches to a :class:`ReadyMessages`: the same
operations the queue uses on a deque (``append``, ``popleft``, ``[0]``, ``insert``,
iteration...), but consecutive refs are packed into :class:`RefRun` blocks, 8 bytes each in an
``array('Q')``.  Refs grow with the log's append order, so a run stays sorted; a requeued
message goes back to its place by sequence number, splitting a run where it falls inside one
(:meth:`ReadyMessages.requeue`).  When the queue is empty again it goes back to a plain deque.
"""

from __future__ import annotations

import bisect
from array import array
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

RUN_MAX = 8192  # refs per run: bounds what a split copies


class RefRun:
    """Consecutive ready refs, oldest first; ``head`` is the first not yet taken."""

    __slots__ = ("refs", "head")

    def __init__(self, refs: array) -> None:
        self.refs = refs
        self.head = 0

    def __len__(self) -> int:
        return len(self.refs) - self.head


def _seq(e: Any) -> int:
    return e if type(e) is int else e.seq


class ReadyMessages:
    """A deque of ready entries (Messages and int refs) that packs runs of refs (see module doc)."""

    __slots__ = ("blocks", "n")

    def __init__(self, entries: Iterable[Any] = ()) -> None:
        self.blocks: deque[Any] = deque()  # Message or RefRun
        self.n = 0
        for e in entries:
            self.append(e)

    @classmethod
    def of_refs(cls, refs: array) -> "ReadyMessages":
        """The ready list of refs recovered in order (an ``array('Q')``), without an int per ref."""
        r = cls()
        for i in range(0, len(refs), RUN_MAX):
            r.blocks.append(RefRun(refs[i : i + RUN_MAX]))
        r.n = len(refs)
        return r

    def __len__(self) -> int:
        return self.n

    def __bool__(self) -> bool:
        return self.n > 0

    def __iter__(self) -> Iterator[Any]:
        for b in self.blocks:
            if type(b) is RefRun:
                refs = b.refs
                for i in range(b.head, len(refs)):
                    yield refs[i]
            else:
                yield b

    def append(self, e: Any) -> None:
        blocks = self.blocks
        if type(e) is int:
            last = blocks[-1] if blocks else None
            if type(last) is RefRun and len(last.refs) < RUN_MAX:
                last.refs.append(e)
            else:
                blocks.append(RefRun(array("Q", (e,))))
        else:
            blocks.append(e)
        self.n += 1

    def appendleft(self, e: Any) -> None:
        self.blocks.appendleft(RefRun(array("Q", (e,))) if type(e) is int else e)
        self.n += 1

    def extendleft(self, entries: Iterable[Any]) -> None:
        for e in entries:
            self.appendleft(e)

    def popleft(self) -> Any:
        blocks = self.blocks
        b = blocks[0]  # IndexError when empty, as a deque's
        self.n -= 1
        if type(b) is not RefRun:
            return blocks.popleft()
        ref = b.refs[b.head]
        b.head += 1
        if b.head == len(b.refs):
            blocks.popleft()
        return ref

    def __getitem__(self, i: int) -> Any:
        if i != 0:
            raise IndexError("only the head of a ready list is read by index")
        b = self.blocks[0]
        return b.refs[b.head] if type(b) is RefRun else b

    def __setitem__(self, i: int, e: Any) -> None:
        """Replace the head (the queue puts a message read back from the log in its ref's place)."""
        if i != 0:
            raise IndexError("only the head of a ready list is replaced")
        self.popleft()
        self.appendleft(e)

    def clear(self) -> None:
        self.blocks.clear()
        self.n = 0

    def requeue(self, back: list[Any]) -> None:
        """Put ``back`` (sorted by sequence number) at their places.  The walk is over blocks,
        not messages, and a run is searched by bisection."""
        blocks = self.blocks
        i = 0
        for m in back:
            seq = _seq(m)
            while i < len(blocks):
                b = blocks[i]
                if type(b) is RefRun:
                    if b.refs[-1] < seq:
                        i += 1
                        continue
                    k = bisect.bisect_left(b.refs, seq, b.head)
                    if k > b.head:  # inside the run: split it
                        rest = RefRun(b.refs[k:])
                        del b.refs[k:]
                        blocks.insert(i + 1, rest)
                        i += 1
                    break
                if b.seq < seq:
                    i += 1
                    continue
                break
            blocks.insert(i, m)
            i += 1
            self.n += 1
