"""Resource alarms: memory high watermark and disk free limit, as in RabbitMQ.

Theory of operation
-------------------
A timer samples the process's resident memory (``/proc/self/statm``) and the
free space of the data directory's file system.  When either crosses its
limit the alarm is raised: every connection that publishes is sent
``connection.blocked`` (if its client announced the capability) and is no
longer read, so publishers stop while consumers go on draining.  A connection
that publishes for the first time during an alarm is blocked at that publish.
When every alarm has cleared (memory: 5% under the mark, so that it does not
flap), blocked connections get ``connection.unblocked`` and are read again.  While the memory alarm is up, freed memory is handed back
to the system (``malloc_trim``) so that the resident size can fall again.
"""

from __future__ import annotations

import ctypes
import ctypes.util
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
        return parse_size(text)  # type: ignore[arg-type]
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
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


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
        self.disk_free = -1
        self._since = 0
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

    def written(self, nbytes: int) -> None:
        """The store is about to write ``nbytes``: check the disk at once if that
        could take it under the limit before the next periodic check."""
        self._since += nbytes
        if self.disk_free_limit and self.disk_free >= 0 and not self.disk_alarm:
            if self.disk_free - self._since < self.disk_free_limit + (8 << 20):
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
        data_dir = self.broker.data_dir
        if self.disk_free_limit and data_dir:
            try:
                st = os.statvfs(data_dir)
                self.disk_free = st.f_bavail * st.f_frsize
                self._since = 0
            except OSError:
                self.disk_free = -1
            if self.disk_free >= 0:
                if not self.disk_alarm and self.disk_free < self.disk_free_limit:
                    self.disk_alarm = True
                    log.warning(
                        "disk alarm set: %d MB free in %s, under the limit of %d MB; publishers are blocked",
                        self.disk_free // 2**20, data_dir, self.disk_free_limit // 2**20,
                    )
                elif self.disk_alarm and self.disk_free >= self.disk_free_limit:
                    self.disk_alarm = False
                    log.warning("disk alarm cleared: %d MB free", self.disk_free // 2**20)
        if self.alarmed and not was:
            self.broker.block_publishers(self.reasons())
        elif was and not self.alarmed:
            self.broker.unblock_publishers()
