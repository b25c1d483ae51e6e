"""The AMQP handshake of a connection: Start-Ok (login), Tune-Ok, Open.

Theory of operation
-------------------
:class:`Handshake` is the part of :class:`broker.amqp.connection.Connection` that runs
before channels may open: it checks the login (PLAIN and AMQPLAIN; EXTERNAL, offered
only on a TLS connection whose client sent a verified certificate, logs in as the
user the certificate names, without a password, as RabbitMQ's
rabbitmq_auth_mechanism_ssl; loopback-only users; the per-address login throttle,
which may delay a refusal: the connection then sits in ``refusing`` and reads
nothing), negotiates frame and channel limits
and the heartbeat, and opens the vhost.  The connection's state machine
(broker/amqp/connection_state.py) decides which of these methods may run; the
handshake timeout closes a connection that has not reached ``opened`` in time.
"""

from __future__ import annotations

import functools
import logging
import platform
from typing import TYPE_CHECKING, Any

from pamqp import commands as C

from protocol import errors, framing
from protocol.errors import ConnectionError

from .. import __version__
from ..auth import AuthError, parse_response
from ..limits import reached
from ..logsafe import printable
from ..net import is_loopback
from .connection_state import HANDSHAKE_OVER, ConnState

if TYPE_CHECKING:
    import asyncio

    from protocol.framing import FrameReader

    from ..certinfo import TLSInfo
    from ..services import Services

log = logging.getLogger("broker.amqp.connection")

CAPABILITIES = {
    "publisher_confirms": True,
    "exchange_exchange_bindings": True,
    "basic.nack": True,
    "consumer_cancel_notify": True,
    "connection.blocked": True,
    "authentication_failure_close": True,
    "per_consumer_qos": True,
    "accept_consumer_cancel_ok": True,
}


@functools.cache
def start_frame(mechanisms: str) -> bytes:
    """Connection.Start for the mechanisms offered: encoded once per set, not once per connection."""
    return framing.method_frame(
        0,
        C.Connection.Start(
            version_major=0,
            version_minor=9,
            server_properties=server_properties(),
            mechanisms=mechanisms,
            locales="en_US",
        ),
    )


@functools.lru_cache(maxsize=8)
def tune_frame(channel_max: int, frame_max: int, heartbeat: int) -> bytes:
    """Connection.Tune with the broker's limits: encoded once, not once per connection."""
    return framing.method_frame(0, C.Connection.Tune(channel_max=channel_max, frame_max=frame_max, heartbeat=heartbeat))


def server_properties() -> dict:
    return {
        "product": "BurrowMQ",
        "version": __version__,
        "platform": f"Python {platform.python_version()}",
        "copyright": "Copyright (c) BurrowMQ contributors",
        "information": "Licensed under the MIT License",
        "cluster_name": platform.node() or "burrowmq",
        "capabilities": dict(CAPABILITIES),
    }


class Handshake:
    """Connection.Start-Ok / Tune-Ok / Open handling, mixed into the connection."""

    if TYPE_CHECKING:  # provided by broker.amqp.connection.Connection
        services: Services
        loop: asyncio.AbstractEventLoop
        state: ConnState
        peer: str
        peer_host: str
        name: str
        username: str
        user: Any
        vhost: Any
        client_properties: dict
        capabilities: dict
        channel_max: int
        frame_max: int
        max_body: int
        heartbeat: int
        reader: FrameReader
        tls: TLSInfo | None
        auth_mechanism: str
        _refusal_pending: bool
        _close_handle: Any
        _hb_handle: Any
        _timeout_handle: Any

        def transition(self, to: ConnState) -> None: ...

        def send0(self, method: Any) -> None: ...

        def write(self, data: bytes) -> None: ...

        def close(self, code: int, text: str, class_id: int = 0, method_id: int = 0) -> None: ...

        def close_transport(self, abort: bool = False) -> None: ...

        def _set_reading(self) -> None: ...

        def _heartbeat_tick(self) -> None: ...

    def offered_mechanisms(self) -> list[str]:
        """The SASL mechanisms Connection.Start offers: EXTERNAL only with a verified client certificate."""
        if self.tls is not None and self.tls.peer is not None:
            return ["PLAIN", "AMQPLAIN", "EXTERNAL"]
        return ["PLAIN", "AMQPLAIN"]

    def on_start_ok(self, m: C.Connection.StartOk) -> None:
        self.client_properties = m.client_properties or {}
        caps = self.client_properties.get("capabilities") or {}
        self.capabilities = caps if isinstance(caps, dict) else {}
        mech = m.mechanism
        if mech == "EXTERNAL" and mech not in self.offered_mechanisms():
            # as RabbitMQ, for a mechanism it knows but did not offer on this connection
            raise ConnectionError(errors.COMMAND_INVALID, f"invalid authentication mechanism '{mech}'")
        self.auth_mechanism = mech
        throttle = self.services.login_throttle
        if throttle.busy(self.peer_host):
            throttle.refused_unchecked("amqp091")
            log.warning("connection %s: login refused unchecked: too many refused logins from %s still pending",
                        self.peer, self.peer_host)
            self._refuse_login(mech)
            return
        try:
            if mech == "EXTERNAL":
                username = self._certificate_user()
                self.username = username
                user = self.services.users.authenticate_external(username)
            else:
                if mech not in ("PLAIN", "AMQPLAIN"):
                    raise AuthError(f"unsupported mechanism {mech!r}")
                # pamqp hands over a response that is valid UTF-8 as text
                resp = m.response if isinstance(m.response, bytes) else str(m.response).encode("utf-8")
                username, password = parse_response(mech, resp)
                self.username = username
                user = self.services.users.authenticate(username, password)
            if username in self.services.loopback_users and not is_loopback(self.peer_host):
                raise AuthError(f"user '{username}' can only connect via localhost")
        except AuthError as exc:
            delay = throttle.failed(self.peer_host, "amqp091")
            log.warning("connection %s: login refused: %s%s", self.peer, printable(exc),
                        f" (refusal delayed {delay:.1f} s: repeated failures from this address)" if delay else "")
            if not delay:
                self._refuse_login(mech)
                return
            # read nothing more; the handshake timeout still applies
            self.transition(ConnState.REFUSING)
            self._set_reading()
            throttle.hold(self.peer_host)
            self._refusal_pending = True
            self._close_handle = self.loop.call_later(delay, self._refuse_login, mech)
            return
        self.user = user
        self.transition(ConnState.TUNE)
        self.write(tune_frame(self.channel_max, self.frame_max, self.services.limits.heartbeat))

    def _certificate_user(self) -> str:
        """The user name in the verified client certificate (EXTERNAL)."""
        peer = self.tls.peer if self.tls is not None else None
        if peer is None:  # pragma: no cover - EXTERNAL is not offered without one
            raise AuthError("connection has no peer certificate")
        name = peer.login_name(self.services.tls_login_from)
        if name is None:
            raise AuthError(f"no name found in the client certificate '{peer.subject}'")
        return name

    def _refuse_login(self, mech: str) -> None:
        """Answer a refused login: Connection.Close 403, or (like RabbitMQ) just close
        the socket for a client that cannot take a Close at this stage."""
        self._release_refusal()
        if self.state is ConnState.CLOSED:
            return
        if not self.capabilities.get("authentication_failure_close"):
            self.close_transport()
            return
        e = ConnectionError(
            errors.ACCESS_REFUSED,
            f"Login was refused using authentication mechanism {mech}. For details see the broker logfile.",
        )
        self.close(e.code, e.text)

    def _release_refusal(self) -> None:
        """The delayed refusal is sent (or its connection gone): the throttle stops counting it."""
        if self._refusal_pending:
            self._refusal_pending = False
            self.services.login_throttle.release(self.peer_host)

    def on_tune_ok(self, m: C.Connection.TuneOk) -> None:
        if m.frame_max:
            if m.frame_max < framing.FRAME_MIN_SIZE:
                raise ConnectionError(
                    errors.NOT_ALLOWED, f"frame_max={m.frame_max} < {framing.FRAME_MIN_SIZE} min size"
                )
            if m.frame_max > self.services.limits.frame_max:
                raise ConnectionError(
                    errors.NOT_ALLOWED, f"frame_max={m.frame_max} > {self.services.limits.frame_max} max size"
                )
            self.frame_max = m.frame_max
        if m.channel_max and m.channel_max < self.channel_max:
            self.channel_max = m.channel_max
        self.max_body = self.frame_max - 8
        self.reader.set_frame_max(self.frame_max)
        self.heartbeat = m.heartbeat
        self.transition(ConnState.OPEN)
        if self.heartbeat:
            self._hb_handle = self.loop.call_later(self.heartbeat / 2, self._heartbeat_tick)

    def on_open(self, m: C.Connection.Open) -> None:
        vhname = m.virtual_host or "/"
        vh = self.services.vhosts.get(vhname)
        if vh is None:
            raise ConnectionError(errors.NOT_ALLOWED, f"vhost {vhname} not found")
        if self.services.users.permission(self.username, vhname) is None:
            raise ConnectionError(errors.NOT_ALLOWED, f"access to vhost '{vhname}' refused for user '{self.username}'")
        limit = self.services.limits.max_connections
        if limit and len(self.services.connections.open) >= limit:
            log.warning("connection %s refused: the node connection limit (%d) is reached", self.peer, limit)
            raise ConnectionError(
                errors.NOT_ALLOWED, f"connection refused: node connection limit ({limit}) is reached", 10, 40
            )
        self._check_connection_limits(vh)
        self.vhost = vh
        self.transition(ConnState.OPENED)
        self._timeout_handle.cancel()
        self.name = f"{self.peer} ({self.username}@{vhname})"
        self.write(framing.reply_frame(0, C.Connection.OpenOk))
        self.services.connections.opened(self)
        log.info("connection %s opened: user '%s', vhost '%s'", self.peer, printable(self.username), printable(vhname))

    def _check_connection_limits(self, vh: Any) -> None:
        """The vhost's and the user's max-connections (530, RabbitMQ's texts)."""
        open_conns = self.services.connections.open
        if vh.limits:
            n = reached(vh.limits, "max-connections", sum(1 for c in open_conns if c.vhost is vh))
            if n is not None:
                raise ConnectionError(
                    errors.NOT_ALLOWED,
                    f"access to vhost '{vh.name}' refused for user '{self.username}': connection limit ({n}) is "
                    "reached", 10, 40,
                )
        limits = getattr(self.user, "limits", None)
        if limits:
            n = reached(limits, "max-connections", sum(1 for c in open_conns if c.username == self.username))
            if n is not None:
                raise ConnectionError(
                    errors.NOT_ALLOWED,
                    f"connection refused for user '{self.username}': user connection limit ({n}) is reached", 10, 40,
                )

    def _handshake_timeout(self) -> None:
        if self.state not in HANDSHAKE_OVER:
            log.warning("connection %s: handshake timeout in state %s, closing", self.peer, self.state)
            self.close_transport(abort=True)
