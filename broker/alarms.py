"""Resource alarms: memory high watermark and disk free limit, as in RabbitMQ.

Theory of operation
-------------------
A timer samples the process's resident memory (``/proc/self/statm``) and the
free space of the data directory's file system.  When either crosses its
limit the alarm is raised: every connection that publishes is sent
``connection.blocked`` (if its client announced the capability) and is no
longer read (frames already read from it wait too, as in RabbitMQ), so
publishers stop while consumers go on draining.  A connection
that publishes for the first time during an alarm is blocked at that publish.
When every alarm has cleared (memory: 5% under the mark, so that it does not
flap), blocked connections get ``connection.unblocked`` and are read again.
While the memory alarm is up, freed memory is handed back to the system
(``malloc_trim``) so that the resident size can fall again.

The disk is guarded *before* writes, not only by the timer: between two
readings of the file system the monitor estimates free space as the last
reading minus the bytes appended to queue logs since (the store counts them,
and the scratch store, where transient backlogs are paged, counts into it).
:attr:`ResourceMonitor.disk_mark` is the appended-bytes count at which that
estimate reaches the limit, so a publish only compares two integers
(``VHost.enqueue``).  A publish whose bytes (record size times the durable
queues it goes to) could cross the mark makes the monitor read the disk at
once (:meth:`ResourceMonitor.admit_disk_write`): if the write would still
take free space under the limit, the alarm is raised before it is written,
so the overshoot is at most that one publish's fanout.  That publish is accepted
when it leaves at least half the limit free (it was sent before its
publisher could know), and refused otherwise (nack on a confirm channel):
the disk never fills with messages.
"""

from __future__ import annotations

import gc
import logging
import os
import re
from typing import Any

log = logging.getLogger("broker.alarms")

_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3,
          "k": 1024, "m": 1024**2, "g": 1024**3}


def total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 8 * 1024**3


def parse_size(text: str | int | float) -> int:
    """'50MB', '1GiB', '1000000' -> bytes."""
    if isinstance(text, (int, float)):
        return int(text)
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (use e.g. 50MB, 2GiB or a number of bytes)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_watermark(text: str | float) -> int:
    """A fraction of RAM (0.4) or an absolute size ('512MB') -> bytes."""
    try:
        f = float(text)
    except (TypeError, ValueError):
        return parse_size(text)
    if 0 < f <= 1:
        return int(total_memory() * f)
    if f > 1:
        return int(f)
    raise ValueError(f"memory high watermark must be a fraction in (0, 1] or a size, not {text!r}")


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


_libc: Any = None


def _trim() -> None:
    global _libc
    gc.collect()
    try:
        if _libc is None:  # ctypes is imported the first time memory is trimmed, not at start
            import ctypes
            import ctypes.util

            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


NO_MARK = 1 << 62  # a disk mark no count of appended bytes reaches: the disk is not watched


class ResourceMonitor:
    """Raises and clears the memory and disk alarms of one broker."""

    def __init__(self, broker: Any, memory_limit: int, disk_free_limit: int, interval: float = 0.5) -> None:
        self.broker = broker
        self.memory_limit = memory_limit
        self.disk_free_limit = disk_free_limit
        self.interval = interval
        self.memory_alarm = False
        self.disk_alarm = False
        self.rss = 0
        # free bytes at the last reading, less what was buffered then and not yet written (-1: unknown)
        self.disk_free = -1
        self.disk_mark = NO_MARK  # appended_bytes at which the estimate reaches the limit
        self.input_bytes = 0
        self.next_input_check = self.INPUT_CHECK_EVERY
        self._timer: Any = None

    @property
    def alarmed(self) -> bool:
        return self.memory_alarm or self.disk_alarm

    def reasons(self) -> list[str]:
        out = []
        if self.memory_alarm:
            out.append("memory")
        if self.disk_alarm:
            out.append("disk")
        return out

    def start(self) -> None:
        self.check()

    INPUT_CHECK_EVERY = 16 << 20

    def input_checkpoint(self) -> None:
        """Every 16 MiB read from clients, check memory at once: a fast publisher
        must not outrun the periodic check by hundreds of megabytes."""
        self.next_input_check = self.input_bytes + self.INPUT_CHECK_EVERY
        if self.memory_limit and not self.memory_alarm:
            if self._timer is not None:
                self._timer.cancel()
            self.check()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def check(self) -> None:
        self._timer = self.broker.loop.call_later(self.interval, self.check)
        was = self.alarmed
        self.rss = rss_bytes()
        if self.memory_limit:
            if not self.memory_alarm and self.rss > self.memory_limit:
                self.memory_alarm = True
                log.warning(
                    "memory alarm set: resident memory %d MB is over the high watermark %d MB; "
                    "publishers are blocked until it falls",
                    self.rss // 2**20, self.memory_limit // 2**20,
                )
            elif self.memory_alarm:
                _trim()
                self.rss = rss_bytes()
                # clear a little below the mark, so that the alarm does not flap on every check
                if self.rss < self.memory_limit * 0.95:
                    self.memory_alarm = False
                    log.warning("memory alarm cleared: resident memory %d MB", self.rss // 2**20)
        self._read_disk()
        if self.disk_free >= 0:
            if not self.disk_alarm and self.disk_free < self.disk_free_limit:
                self._set_disk_alarm(self._under_limit(self.disk_free))
            elif self.disk_alarm and self.disk_free >= self.disk_free_limit:
                self.disk_alarm = False
                log.warning("disk alarm cleared: %d MB free", self.disk_free // 2**20)
        self._apply(was)

    # -- disk: estimate between readings, and the check before a write ----------------------
    def admit_disk_write(self, nbytes: int) -> bool:
        """A publish is about to append ``nbytes`` to queue logs and the estimate
        says that may cross the limit: read the disk now, raise the alarm before
        the write if it would cross, and say whether the publish may be written
        (False: it would leave less than half the limit free; refuse it)."""
        was = self.alarmed
        self._read_disk()
        free = self.disk_free
        if free < 0:
            return True  # the disk cannot be read: the write itself will tell
        after = free - nbytes
        limit = self.disk_free_limit
        fits = after >= limit // 2
        if not self.disk_alarm and free < limit:
            self._set_disk_alarm(self._under_limit(free))
        elif not self.disk_alarm and fits and after < limit:
            self._set_disk_alarm(f"a publish of {nbytes} bytes (all its durable queues) would leave "
                                 + self._under_limit(after))
        if not fits:
            log.warning(
                "publish of %d bytes (all its durable queues) refused: %d MB free in %s, and at least half "
                "the disk free limit of %d MB stays free",
                nbytes, free // 2**20, self.broker.data_dir, limit // 2**20,
            )
        self._apply(was)
        return fits

    def _read_disk(self) -> None:
        """Read the data directory's free space and move the disk mark."""
        store = self.broker.store
        data_dir = self.broker.data_dir
        if not (self.disk_free_limit and data_dir and store is not None):
            return
        try:
            st = os.statvfs(data_dir)
        except OSError:
            self.disk_free = -1
            self.disk_mark = NO_MARK
            return
        scratch = self.broker.scratch
        buffered = store.buffered_bytes() + (scratch.buffered_bytes() if scratch is not None else 0)
        self.disk_free = st.f_bavail * st.f_frsize - buffered
        self.disk_mark = store.appended_bytes + self.disk_free - self.disk_free_limit

    def _under_limit(self, free: int) -> str:
        return (f"{free // 2**20} MB free in {self.broker.data_dir}, under the limit of "
                f"{self.disk_free_limit // 2**20} MB")

    def _set_disk_alarm(self, why: str) -> None:
        self.disk_alarm = True
        log.warning("disk alarm set: %s; publishers are blocked", why)

    def _apply(self, was_alarmed: bool) -> None:
        """Block or unblock publishers when the alarm state changed."""
        if self.alarmed and not was_alarmed:
            self.broker.block_publishers(self.reasons())
        elif was_alarmed and not self.alarmed:
            self.broker.unblock_publishers()
