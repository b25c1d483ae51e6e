"""Topic permissions: write/read regexes on the routing keys of topic exchanges.

Theory of operation
-------------------
RabbitMQ's topic authorisation: a user may be given, per vhost and per topic
exchange, a ``write`` regex that the routing key of every publish to that
exchange must match, and a ``read`` regex that the binding key of every
queue.bind / exchange.bind / unbind from it must match.  An exchange the user
has no topic permission for is not restricted (the ordinary permissions
apply); the empty regex matches only the empty routing key (``^$``); a regex
is searched for, not anchored, as in RabbitMQ.

Before matching, ``{username}`` and ``{vhost}`` in a regex are replaced by the
user's name and the vhost's (the variables RabbitMQ offers AMQP 0-9-1
clients), escaped so that they match literally.  The expanded regex is
compiled once per (regex, user, vhost) and kept in a bounded cache, and each
decision is remembered per (write/read, user, vhost, exchange, routing key) in
another (a regex search through RE2's Python binding costs microseconds; the
same keys come back all the time).  Both caches are emptied by every change and
when full, so that ever new routing keys cannot grow them without bound.

The store is ``rules[(user, vhost)][exchange] -> TopicPermission``.  The
publish path first asks ``bool(rules)`` (no topic permissions at all: no more
work), then does one dict lookup for the user and vhost.
"""

from __future__ import annotations

from dataclasses import dataclass

import re2

from protocol import errors
from protocol.errors import ChannelError

from .patterns import PatternError, Regex, compile_pattern

WRITE = "write"
READ = "read"
MAX_EXCHANGE_BYTES = 255
EXPANDED_CACHE_MAX = 1024
DECISION_CACHE_MAX = 8192


@dataclass(frozen=True)
class TopicPermission:
    """One user's write and read regexes on one topic exchange of one vhost."""

    exchange: str
    write: str
    read: str

    def as_json(self, user: str, vhost: str) -> dict:
        return {"user": user, "vhost": vhost, "exchange": self.exchange, "write": self.write, "read": self.read}


def make_permission(exchange: object, write: object, read: object) -> TopicPermission:
    """A checked TopicPermission, or PatternError naming the bad field."""
    if not isinstance(exchange, str) or not exchange:
        raise PatternError("exchange", repr(exchange), "the exchange name must be a non-empty string")
    if len(exchange.encode("utf-8", "surrogatepass")) > MAX_EXCHANGE_BYTES:
        raise PatternError("exchange", exchange, f"longer than {MAX_EXCHANGE_BYTES} bytes")
    for field, value in (("write", write), ("read", read)):
        if not isinstance(value, str):
            raise PatternError(field, repr(value), "not a string")
        # checked with the variables replaced by a plain word, as they will be
        compile_pattern(_expand(value or "^$", "u", "v"), field)
    return TopicPermission(exchange, str(write), str(read))


def _expand(pattern: str, user: str, vhost: str) -> str:
    return pattern.replace("{username}", re2.escape(user)).replace("{vhost}", re2.escape(vhost))


def refused(what: str, routing_key: str, exchange: str, vhost: str, user: str) -> ChannelError:
    """RabbitMQ's 403 for a routing key a topic permission does not allow."""
    return ChannelError(
        errors.ACCESS_REFUSED,
        f"{what} access to topic '{routing_key}' in exchange '{exchange}' in vhost '{vhost}' "
        f"refused for user '{user}'",
    )


class TopicPermissions:
    """Every user's topic permissions, and the check."""

    def __init__(self) -> None:
        self.rules: dict[tuple[str, str], dict[str, TopicPermission]] = {}
        self._compiled: dict[tuple[str, str, str], Regex] = {}
        self._decisions: dict[tuple[str, str, str, str, str], bool] = {}

    # -- changes -------------------------------------------------------------------
    def set(self, user: str, vhost: str, perm: TopicPermission) -> bool:
        """Set (or replace) ``user``'s permission on ``perm.exchange``; True if it is new."""
        per = self.rules.setdefault((user, vhost), {})
        new = perm.exchange not in per
        per[perm.exchange] = perm
        self._decisions.clear()
        return new

    def clear(self, user: str, vhost: str, exchange: str | None = None) -> bool:
        """Remove one exchange's permission, or all of ``user``'s in ``vhost``; False if none."""
        per = self.rules.get((user, vhost))
        if per is None:
            return False
        self._decisions.clear()
        if exchange is None:
            del self.rules[(user, vhost)]
            return True
        if per.pop(exchange, None) is None:
            return False
        if not per:
            del self.rules[(user, vhost)]
        return True

    def drop_user(self, user: str) -> None:
        self._decisions.clear()
        for key in [k for k in self.rules if k[0] == user]:
            del self.rules[key]

    def drop_vhost(self, vhost: str) -> None:
        self._decisions.clear()
        for key in [k for k in self.rules if k[1] == vhost]:
            del self.rules[key]

    # -- listings ------------------------------------------------------------------
    def listing(self, user: str | None = None, vhost: str | None = None) -> list[dict]:
        """RabbitMQ's JSON of the permissions, optionally of one user and/or vhost."""
        return [
            p.as_json(u, v)
            for (u, v), per in self.rules.items()
            if (user is None or u == user) and (vhost is None or v == vhost)
            for p in per.values()
        ]

    # -- the check -----------------------------------------------------------------
    def check(self, what: str, user: str, vhost: str, exchange: str, routing_key: str) -> None:
        """Raise RabbitMQ's 403 unless ``user`` may ``what`` (write/read) ``routing_key`` on
        topic exchange ``exchange`` (call only when ``rules`` is not empty)."""
        per = self.rules.get((user, vhost))
        if per is None:
            return
        perm = per.get(exchange)
        if perm is None:
            return
        decision = (what, user, vhost, exchange, routing_key)
        ok = self._decisions.get(decision)
        if ok is None:
            ok = self._allows(perm, what, user, vhost, routing_key)
            if len(self._decisions) >= DECISION_CACHE_MAX:
                self._decisions.clear()
            self._decisions[decision] = ok
        if not ok:
            raise refused(what, routing_key, exchange, vhost, user)

    def _allows(self, perm: TopicPermission, what: str, user: str, vhost: str, routing_key: str) -> bool:
        pattern = (perm.write if what == WRITE else perm.read) or "^$"
        key = (pattern, user, vhost)
        rx = self._compiled.get(key)
        if rx is None:
            try:
                rx = compile_pattern(_expand(pattern, user, vhost), what)
            except PatternError:  # the names made it too long: nothing can match
                return False
            if len(self._compiled) >= EXPANDED_CACHE_MAX:
                self._compiled.clear()
            self._compiled[key] = rx
        return rx.search(routing_key) is not None
