"""Users, password hashes, and login (PLAIN, AMQPLAIN).

Password hashes use RabbitMQ's ``rabbit_password_hashing_sha256`` scheme: a
4-byte random salt, then SHA-256(salt + password), base64 of both, so that
definitions exported from RabbitMQ can be imported as they are.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
from dataclasses import dataclass, field

from pamqp import decode

from .patterns import PatternError, Regex, compile_pattern
from .topic_permissions import TopicPermissions


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = os.urandom(4) if salt is None else salt
    digest = hashlib.sha256(salt + password.encode("utf-8")).digest()
    return base64.b64encode(salt + digest).decode("ascii")


def check_password(password: str, password_hash: str) -> bool:
    try:
        raw = base64.b64decode(password_hash)
    except ValueError:
        return False
    salt, digest = raw[:4], raw[4:]
    return hmac.compare_digest(hashlib.sha256(salt + password.encode("utf-8")).digest(), digest)


@dataclass
class User:
    name: str
    password_hash: str
    tags: list[str] = field(default_factory=list)
    limits: dict[str, int] = field(default_factory=dict)  # max-connections, max-channels (broker.limits)


class Permission:
    """configure / write / read regular expressions of one user on one vhost.

    As in RabbitMQ a pattern is searched for (not anchored: use ``^...$``), and
    the empty pattern matches nothing.  Patterns run on RE2 (linear time); a
    pattern RE2 refuses raises PatternError naming its field here, where it is set."""

    __slots__ = ("configure", "write", "read", "_re")

    def __init__(self, configure: str = ".*", write: str = ".*", read: str = ".*") -> None:
        self.configure = configure
        self.write = write
        self.read = read
        self._re: dict[str, Regex | None] = {
            "configure": _compile(configure, "configure"),
            "write": _compile(write, "write"),
            "read": _compile(read, "read"),
        }

    def allows(self, what: str, name: str) -> bool:
        rx = self._re[what]
        return rx is not None and rx.search(name) is not None

    def as_dict(self) -> dict:
        return {"configure": self.configure, "write": self.write, "read": self.read}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Permission) and self.as_dict() == other.as_dict()

    def __repr__(self) -> str:
        return f"Permission({self.configure!r}, {self.write!r}, {self.read!r})"


def _compile(pattern: object, what: str) -> Regex | None:
    """One permission pattern compiled (None: the empty pattern, which denies)."""
    if not isinstance(pattern, str):
        raise PatternError(what, repr(pattern), "not a string")
    return compile_pattern(pattern, what) if pattern else None


VALID_TAGS = ("administrator", "monitoring", "policymaker", "management", "impersonator")


class AuthError(Exception):
    """Login refused; ``reason`` goes to the log, never to the client."""


def parse_response(mechanism: str, response: bytes) -> tuple[str, str]:
    """(username, password) from a PLAIN or AMQPLAIN response."""
    if mechanism == "PLAIN":
        parts = response.split(b"\x00")
        if len(parts) != 3:
            raise AuthError("malformed PLAIN response")
        return parts[1].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace")
    if mechanism == "AMQPLAIN":
        try:
            _, table = decode.field_table(struct.pack(">I", len(response)) + response)
        except Exception as exc:  # pamqp raises several types on garbage
            raise AuthError(f"malformed AMQPLAIN response: {exc}") from None
        login, password = table.get("LOGIN"), table.get("PASSWORD")
        if isinstance(login, bytes):
            login = login.decode("utf-8", "replace")
        if isinstance(password, bytes):
            password = password.decode("utf-8", "replace")
        if not isinstance(login, str) or not isinstance(password, str):
            raise AuthError("AMQPLAIN response lacks LOGIN or PASSWORD")
        return login, password
    raise AuthError(f"unsupported mechanism {mechanism}")


class UserStore:
    """Users and their per-vhost permissions, with a cache of permission decisions.

    The check runs on every declare, bind, consume, get and publish, so
    ``allowed`` remembers each (user, vhost, configure/write/read, resource
    name) answer.  Every change to users or permissions (a deleted vhost drops
    its permissions) goes through ``_changed``, which empties the cache; so
    does reaching DECISION_CACHE_MAX entries, so that clients naming ever new
    resources cannot grow it without bound.  The decision depends on the
    resource's name only, never on whether it is a queue or an exchange."""

    DECISION_CACHE_MAX = 8192

    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.permissions: dict[tuple[str, str], Permission] = {}
        self._decisions: dict[tuple[str, str, str, str], bool] = {}
        self.topics = TopicPermissions()  # write/read regexes on topic exchanges' routing keys

    def _changed(self) -> None:
        self._decisions.clear()

    def add_user(self, name: str, password: str | None, tags: list[str] | None = None) -> User:
        """Create or replace a user (no password: the user cannot log in with one); a replaced
        user keeps its limits."""
        u = User(name, hash_password(password) if password is not None else "", list(tags or []))
        self._keep_limits(u)
        self.users[name] = u
        self._changed()
        return u

    def add_user_with_hash(self, name: str, password_hash: str, tags: list[str] | None = None) -> User:
        u = User(name, password_hash, list(tags or []))
        self._keep_limits(u)
        self.users[name] = u
        self._changed()
        return u

    def _keep_limits(self, u: User) -> None:
        old = self.users.get(u.name)
        if old is not None:
            u.limits = old.limits

    def set_limits(self, name: str, limits: dict[str, int]) -> None:
        """Replace a user's limits (checked by broker.limits.parse_limits)."""
        self.users[name].limits = dict(limits)

    def delete_user(self, name: str) -> bool:
        if self.users.pop(name, None) is None:
            return False
        for key in [k for k in self.permissions if k[0] == name]:
            del self.permissions[key]
        self.topics.drop_user(name)
        self._changed()
        return True

    def change_password(self, name: str, password: str | None) -> None:
        u = self.users[name]
        u.password_hash = hash_password(password) if password is not None else ""
        self._changed()

    def set_tags(self, name: str, tags: list[str]) -> None:
        self.users[name].tags = list(tags)
        self._changed()

    def set_permissions(self, user: str, vhost: str, perm: Permission) -> None:
        self.permissions[(user, vhost)] = perm
        self._changed()

    def clear_permissions(self, user: str, vhost: str) -> bool:
        found = self.permissions.pop((user, vhost), None) is not None
        self._changed()
        return found

    def drop_vhost(self, vhost: str) -> None:
        for key in [k for k in self.permissions if k[1] == vhost]:
            del self.permissions[key]
        self.topics.drop_vhost(vhost)
        self._changed()

    def authenticate(self, username: str, password: str) -> User:
        u = self.users.get(username)
        if u is None:
            raise AuthError(f"user '{username}' - invalid credentials")
        if not u.password_hash or not check_password(password, u.password_hash):
            raise AuthError(f"user '{username}' - invalid credentials")
        return u

    def authenticate_external(self, username: str) -> User:
        """The user a verified client certificate names (EXTERNAL: no password is checked)."""
        u = self.users.get(username)
        if u is None:
            raise AuthError(f"user '{username}' - invalid credentials")
        return u

    def permission(self, user: str, vhost: str) -> Permission | None:
        return self.permissions.get((user, vhost))

    def allowed(self, user: str, vhost: str, what: str, name: str) -> bool:
        """Whether ``user``'s ``what`` (configure/write/read) regex in ``vhost`` allows resource ``name``."""
        key = (user, vhost, what, name)
        ok = self._decisions.get(key)
        if ok is None:
            perm = self.permissions.get((user, vhost))
            ok = perm is not None and perm.allows(what, name)
            if len(self._decisions) >= self.DECISION_CACHE_MAX:
                self._decisions.clear()
            self._decisions[key] = ok
        return ok
