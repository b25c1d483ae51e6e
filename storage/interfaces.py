"""What the store and its logs promise each other and the engine: the waiter and log
protocols, and the storage errors."""

from __future__ import annotations

from typing import Protocol

from .fileio import FileIO


class SyncWaiter(Protocol):
    """Someone waiting for an fsync epoch (a confirming channel, an HTTP publish).

    Each method returns True while the waiter still waits for a later epoch;
    False takes it out of ``LogStore.sync_waiters``."""

    def synced(self, epoch: int) -> bool: ...

    def sync_failed(self, epoch: int, exc: Exception) -> bool: ...


class OwnedLog(Protocol):
    """A log the store flushes and fsyncs: a queue's :class:`QueueLog`, or a stream's log."""

    dir: str
    wbuf_size: int

    def flush(self) -> None: ...

    def close(self) -> None: ...

    def destroy(self) -> None: ...

    def roll_if_idle(self, now: float, idle: float) -> None: ...

    def records_lost(self, lost_from: int) -> None: ...

    def sync_failed(self, fds: set[int]) -> None:
        """An fsync of ``fds`` failed: never write to those files again (roll)."""
        ...


class DataDirError(Exception):
    """The data directory cannot be used: the broker does not start."""


class DataDirLocked(DataDirError):
    """Another broker holds the data directory."""


class StorageError(Exception):
    """A write or fsync failed."""


class WriteFailed(StorageError):
    """Buffered records of one queue could not be written; refs from ``lost_from``
    up to the end of that segment are gone."""

    def __init__(self, qlog: OwnedLog, lost_from: int, cause: OSError) -> None:
        super().__init__(f"write to {qlog.dir} failed: {cause}")
        self.qlog = qlog
        self.lost_from = lost_from
        self.cause = cause


class LogHost(Protocol):
    """The store as one of its logs sees it (:class:`storage.store.LogStore`)."""

    io: FileIO
    now: float  # the loop time of the current flush
    sync_fds: set[int]  # files the next group commit fsyncs
    new_files: set[str]  # directories the next group commit fsyncs (entries made or removed)
    appended_bytes: int  # message record bytes ever appended (the disk alarm's estimate)

    @property
    def account(self) -> "LogHost":
        """The store whose ``appended_bytes`` counts this one's records."""
        ...

    def dirty(self, qlog: OwnedLog) -> None:
        """``qlog`` buffered something: flush it at the end of this loop turn."""
        ...

    def write_failed(self, exc: WriteFailed) -> None:
        """Buffered records of a log could not be written (see :class:`WriteFailed`)."""
        ...

    def append_failed(self, qlog: OwnedLog, exc: OSError) -> None:
        """A record could not even be buffered (its segment file could not be made)."""
        ...
