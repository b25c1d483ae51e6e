"""Failed logins slowed per source address, for AMQP and HTTP basic auth alike.

Theory of operation
-------------------
A table maps a source (an IPv4 address, or the /64 network of an IPv6 one, since
one host often owns a whole /64) to its recent failed logins: a count and the
time of the last one.  The first ``free_failures`` failures are refused at once;
each further one is refused only after a delay that doubles from
``base_delay`` up to ``max_delay``.  The caller waits without blocking the loop
(``loop.call_later`` for AMQP, ``await asyncio.sleep`` for HTTP) and meanwhile
the client gets no answer, so the guess rate of one address falls to about one
per ``max_delay``.  A successful login does not reset the count (an attacker
with one valid account must not be able to wipe it); ``forget_after`` seconds
without a failure do.  The table holds at most ``max_sources`` entries; the
least recently failing one is dropped first.

Delaying only the refusal leaves one gap: a client could open many connections
at once and take "no answer yet" for "wrong".  So the number of refusals still
waiting per source is capped at ``max_pending``; while a source is at the cap,
its further logins are refused without checking the password (nothing is
learnt from them).  Correct logins from an address are never delayed, and are
refused only while that address has ``max_pending`` delayed refusals open.

``failed_total`` counts failed logins per protocol for /metrics
(``rabbitmq_auth_attempts_failed_total{protocol=...}``, as RabbitMQ).
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable


class LoginThrottle:
    """Per-source failed-login counts and the delay each refusal gets."""

    def __init__(
        self,
        free_failures: int = 5,
        base_delay: float = 0.1,
        max_delay: float = 5.0,
        forget_after: float = 60.0,
        max_sources: int = 10_000,
        max_pending: int = 8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free_failures = free_failures
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.max_sources = max_sources
        self.max_pending = max_pending
        self.clock = clock
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()  # source -> (count, last failure)
        self._pending: dict[str, int] = {}  # source -> delayed refusals not yet sent
        self.failed_total: dict[str, int] = {}  # protocol -> failed logins

    def busy(self, host: str) -> bool:
        """True while ``host``'s source has ``max_pending`` delayed refusals open:
        its logins are then refused unchecked."""
        if not self._pending:  # the usual case: no refusal is waiting anywhere
            return self.max_pending <= 0
        return self._pending.get(source_of(host), 0) >= self.max_pending

    def failed(self, host: str, protocol: str) -> float:
        """Record a failed login from ``host``; return how long to wait (s) before refusing it."""
        self.failed_total[protocol] = self.failed_total.get(protocol, 0) + 1
        src = source_of(host)
        now = self.clock()
        count, last = self._failures.pop(src, (0, now))
        if now - last >= self.forget_after:
            count = 0
        count += 1
        self._failures[src] = (count, now)
        while len(self._failures) > self.max_sources:
            self._failures.popitem(last=False)
        if count <= self.free_failures:
            return 0.0
        return min(self.max_delay, self.base_delay * 2 ** min(count - self.free_failures - 1, 32))

    def refused_unchecked(self, protocol: str) -> None:
        """Count a login refused because its source was :meth:`busy`."""
        self.failed_total[protocol] = self.failed_total.get(protocol, 0) + 1

    def hold(self, host: str) -> None:
        """A delayed refusal for ``host`` starts waiting."""
        src = source_of(host)
        self._pending[src] = self._pending.get(src, 0) + 1

    def release(self, host: str) -> None:
        """That refusal was sent, or its connection is gone."""
        src = source_of(host)
        n = self._pending.get(src, 0) - 1
        if n > 0:
            self._pending[src] = n
        else:
            self._pending.pop(src, None)


def source_of(host: str) -> str:
    """The table key of a peer address: IPv4 as it is, IPv6 by its /64 network."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
