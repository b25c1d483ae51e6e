"""Queue data that recovery could not match to a declared queue, kept aside.

Recovery never deletes message data it cannot match to the durable metadata: a
queue log directory that no declared queue owns is moved, whole, to
``<data dir>/lost+found/<id>`` (:meth:`storage.store.LogStore.quarantine`), with a
log line naming it.  This module lists those entries (which queue each was made
for, from its ``queue.json``, and how many unsettled persistent messages it
holds) and discards them; the broker re-imports one into a queue through its
management API (``broker list-lost-found`` / ``import-lost-found`` /
``delete-lost-found``).  Reading an entry never changes it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from .records import LOST_FOUND, read_identity, read_live_records


@dataclass
class LostEntry:
    """One queue directory in lost+found."""

    id: str
    path: str
    vhost: str | None
    queue: str | None
    messages: int
    bytes: int
    moved_at: float

    def as_json(self) -> dict:
        return {
            "id": self.id,
            "vhost": self.vhost,
            "queue": self.queue,
            "messages": self.messages,
            "message_bytes": self.bytes,
            "moved_at": int(self.moved_at * 1000),
        }


def _root(data_dir: str) -> str:
    return os.path.join(data_dir, LOST_FOUND)


def _entry(path: str) -> LostEntry:
    vhost, queue = read_identity(path)
    n = size = 0
    for _p, _d, _ex, _rk, _header, body in read_live_records(path):
        n += 1
        size += len(body)
    return LostEntry(os.path.basename(path), path, vhost, queue, n, size, os.stat(path).st_mtime)


def entries(data_dir: str) -> list[LostEntry]:
    """Every lost+found entry, oldest first."""
    root = _root(data_dir)
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    found = [_entry(os.path.join(root, n)) for n in names if os.path.isdir(os.path.join(root, n))]
    return sorted(found, key=lambda e: (e.moved_at, e.id))


def find(data_dir: str, entry_id: str) -> LostEntry | None:
    """The entry called ``entry_id`` (a plain directory name), or None."""
    if not entry_id or "/" in entry_id or entry_id in (".", ".."):
        return None
    path = os.path.join(_root(data_dir), entry_id)
    if not os.path.isdir(path) or os.path.islink(path):
        return None
    return _entry(path)


def discard(entry: LostEntry) -> None:
    """Delete an entry and its data for good."""
    shutil.rmtree(entry.path)
