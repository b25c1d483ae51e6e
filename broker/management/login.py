"""Who is asking: HTTP Basic authentication of a management request.

Who may then do what (RabbitMQ's user tags; the checks themselves are
:class:`.http.Ctx`'s ``require_*``, ``vhost*`` and ``check``):

- no valid credentials: 401 ``Login failed``; a user without a management tag
  (``management``, ``policymaker``, ``monitoring``, ``administrator``): 401
  ``Not management user``;
- ``administrator``: everything;
- ``monitoring``: reads everything (all vhosts, all connections);
- ``management`` / ``policymaker``: reads the vhosts it has permissions on and
  its own connections; changes objects there as its configure/write/read
  regexes allow (as over AMQP);
- anything reserved to another tag: 403 ``Not administrator user`` /
  ``Not monitor user``; a vhost the user has no permissions on: 403
  ``Access refused.``.

A refused login is answered only after the login throttle's delay for its
source address (see :mod:`broker.login_throttle`); other requests go on meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import Any

from ..auth import check_password
from ..logsafe import printable
from ..net import is_loopback
from .http import Ctx, HTTPError

log = logging.getLogger("broker.management")

MGMT_TAGS = frozenset(("management", "policymaker", "monitoring", "administrator"))
REALM = 'Basic realm="RabbitMQ Management"'


async def authenticate(ctx: Ctx) -> None:
    """Set ``ctx.user`` and ``ctx.tags`` from the Basic credentials, or raise the 401."""
    challenge = _challenge(ctx)
    fail = HTTPError(401, "not_authorized", "Login failed", challenge)
    header = ctx.request.headers.get("Authorization", "")
    if not header[:6].lower() == "basic ":
        raise fail  # no credentials at all: nothing was guessed
    broker = ctx.broker
    remote = ctx.request.remote or ""
    throttle = broker.login_throttle
    if throttle.busy(remote):
        throttle.refused_unchecked("http")
        log.warning("management API: login refused unchecked: too many refused logins from %s still pending",
                    remote)
        raise fail
    name, user = _basic_login(header, broker.users.users)
    refusal: HTTPError | None = None
    if user is None:
        refusal = fail
    elif name in broker.loopback_users and not is_loopback(remote):
        refusal = HTTPError(401, "not_authorized", "User can only log in via localhost", challenge)
    if refusal is not None:
        delay = throttle.failed(remote, "http")
        log.warning("management API: login refused for %s from %s%s",
                    "malformed credentials" if name is None else f"user '{printable(name)}'", remote,
                    f" (refusal delayed {delay:.1f} s: repeated failures from this address)" if delay else "")
        if delay:
            throttle.hold(remote)
            try:
                await asyncio.sleep(delay)
            finally:
                throttle.release(remote)
        raise refusal
    tags = frozenset(user.tags)
    if not tags & MGMT_TAGS:
        raise HTTPError(401, "not_authorized", "Not management user", challenge)
    ctx.user = user
    ctx.tags = tags


def _challenge(ctx: Ctx) -> dict:
    """The 401's ``WWW-Authenticate`` header, left out for the web UI's own requests
    (``X-Requested-With: XMLHttpRequest``): with it, a browser would open its own
    login dialog over the UI's login form."""
    if ctx.request.headers.get("X-Requested-With") == "XMLHttpRequest":
        return {}
    return {"WWW-Authenticate": REALM}


def _basic_login(header: str, users: dict[str, Any]) -> tuple[str | None, Any]:
    """(user name, user) of a Basic ``Authorization`` header; the user is None if
    unknown or the password is wrong, the name is None if the header is malformed."""
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None, None
    name, sep, password = raw.partition(":")
    if not sep:
        return None, None
    user = users.get(name)
    if user is None or not user.password_hash or not check_password(password, user.password_hash):
        return name, None
    return name, user
