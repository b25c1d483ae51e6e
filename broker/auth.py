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


@dataclass
class Permission:
    configure: str = ".*"
    write: str = ".*"
    read: str = ".*"


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
    """Users and their per-vhost permissions."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.permissions: dict[tuple[str, str], Permission] = {}

    def add_user(self, name: str, password: str, tags: list[str] | None = None) -> User:
        u = User(name, hash_password(password), list(tags or []))
        self.users[name] = u
        return u

    def set_permissions(self, user: str, vhost: str, perm: Permission) -> None:
        self.permissions[(user, vhost)] = perm

    def authenticate(self, username: str, password: str) -> User:
        u = self.users.get(username)
        if u is None:
            raise AuthError(f"user '{username}' - invalid credentials")
        if not check_password(password, u.password_hash):
            raise AuthError(f"user '{username}' - invalid credentials")
        return u

    def permission(self, user: str, vhost: str) -> Permission | None:
        return self.permissions.get((user, vhost))
