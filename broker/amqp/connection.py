"""One AMQP connection: handshake, channel table, heartbeats, output batching.

Theory of operation
-------------------
States (:class:`~broker.amqp.connection_state.ConnState`; what may follow what is
the table in broker/amqp/connection_state.py, enforced by :meth:`Connection.transition`):
``header`` (waiting for the 8-byte protocol header) -> ``start``
(Connection.Start sent, waiting for StartOk) -> ``tune`` (Tune sent, waiting for
TuneOk) -> ``open`` (waiting for Connection.Open) -> ``opened`` (channels
work) -> ``closing`` (we sent Connection.Close, waiting for CloseOk; everything
else is discarded) -> ``closed``.  A failed login whose refusal the login
throttle delays goes from ``start`` to ``refusing`` (nothing is read, frames
already received are ignored, the handshake timeout still runs), then to
``closing``.

Frames: method frames on channel 0 drive the handshake and close; on another
channel Basic.Publish and Basic.Ack go straight to the channel's hand-parsed
hot path, other methods to its dispatcher; content header and body frames go
to the channel's content assembly.  A frame must arrive whole within the
heartbeat timeout (the handshake timeout when heartbeats are off): one cut
short or trickled in closes the connection (:meth:`Connection._frame_overdue`).

Errors: a :class:`ChannelError` with a soft reply code closes its channel
(Channel.Close, then frames on that channel are discarded until CloseOk); any
other protocol error, or a hard reply code, closes the connection with
Connection.Close and one log line naming the peer and the reason.

Output: everything written during one loop turn is collected in ``out`` and
sent with one ``transport.write``.  Consumers stop taking messages while the
socket's buffer is over its high-water mark (``writing_paused``) or ``out`` is
over ``OUT_HIGH``, and are kicked again when it drains.  While the peer does not
read what we send, we stop reading what it sends.

Flow control: a publish routed to a queue whose consumers are behind charges this
connection's :class:`~broker.flow.PublisherFlow`; while it is ``throttled`` the
connection neither reads its socket nor handles frames already read (RabbitMQ's
``flow`` state), until those queues catch up.

Durable metadata: input that changed it (a durable declare, bind, delete...) is
answered only once the metadata is saved.  Until then (``meta_wait``) the connection
holds its output, reads nothing and handles no further frame; the save runs off the
event loop (:mod:`broker.metadata`), so other connections go on meanwhile.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pamqp import commands as C

from protocol import errors, framing, methods
from protocol.errors import AMQPError, ChannelError, ConnectionError

from ..flow import PublisherFlow
from ..limits import reached
from ..logsafe import printable
from ..metadata import MetadataSaveError
from ..services import Services
from .channel import Channel
from .connection_state import DISCARDING, ConnState, check_transition
from .content import EXPECTED_METHOD
from .handshake import Handshake, start_frame

if TYPE_CHECKING:  # certinfo is imported for the first TLS connection, not at start
    from ..certinfo import TLSInfo

log = logging.getLogger("broker.amqp.connection")

HARD_CODES = frozenset(
    (
        errors.CONNECTION_FORCED,
        errors.INVALID_PATH,
        errors.FRAME_ERROR,
        errors.SYNTAX_ERROR,
        errors.COMMAND_INVALID,
        errors.CHANNEL_ERROR,
        errors.UNEXPECTED_FRAME,
        errors.RESOURCE_ERROR,
        errors.NOT_ALLOWED,
        errors.NOT_IMPLEMENTED,
        errors.INTERNAL_ERROR,
    )
)

IDX_CHANNEL_OPEN = (20 << 16) | 10
IDX_CHANNEL_CLOSE = (20 << 16) | 40
IDX_CHANNEL_CLOSE_OK = (20 << 16) | 41
IDX_CONNECTION_CLOSE = (10 << 16) | 50
IDX_CONNECTION_CLOSE_OK = (10 << 16) | 51

# module globals for the per-frame and per-flush checks (an enum attribute lookup is slow)
OPENED = ConnState.OPENED
CLOSED = ConnState.CLOSED
FRAME_METHOD = framing.FRAME_METHOD
FRAME_HEADER = framing.FRAME_HEADER
FRAME_BODY = framing.FRAME_BODY
FRAME_HEARTBEAT = framing.FRAME_HEARTBEAT


class Connection(Handshake):
    """Protocol state of one client connection."""

    OUT_HIGH = 1 << 20
    MAX_FRAMES_PER_TURN = 256

    def __init__(self, services: Services, transport: Any, accepted: float | None = None) -> None:
        self.services = services
        limits = services.limits
        self.transport = transport
        assert services.loop is not None, "the broker's loop runs before it accepts connections"
        self.loop = services.loop
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.peer_host = str(peer[0])
        self.peer = f"{peer[0]}:{peer[1]}" if len(peer) >= 2 else str(peer)
        sslobj = transport.get_extra_info("ssl_object")
        self.tls: TLSInfo | None = None
        if sslobj is not None:
            from ..certinfo import TLSInfo

            self.tls = TLSInfo.of(sslobj)
        self.auth_mechanism = ""
        # until Tune-Ok, frames are held to RabbitMQ's pre-authentication limit
        self.reader = framing.FrameReader(min(framing.FRAME_MIN_SIZE, limits.frame_max))
        self.state = ConnState.HEADER
        self.channels: dict[int, Channel] = {}
        self.out: list[Any] = []
        self.out_size = 0
        self.flush_scheduled = False
        self.writing_paused = False
        self.reading_paused = False
        self.backpressure = False  # the peer does not read: we stop reading it
        self.slicing = False  # frames of an earlier read still to handle
        self.draining = False  # the broker is stopping: read nothing more
        self._frames: list = []
        self._frame_i = 0
        self.starved = False
        self.exclusive_queues: list[Any] = []
        self.confirm_dirty: set[Channel] = set()
        self.username = ""
        self.user: Any = None
        self.vhost: Any = None
        self.client_properties: dict = {}
        self.capabilities: dict = {}
        self.channel_max = limits.channel_max
        self.frame_max = limits.frame_max
        self.max_body = self.frame_max - 8
        self.heartbeat = 0
        self.last_recv = self.loop.time()
        self.last_send = self.last_recv
        self._hb_handle: Any = None
        self._close_handle: Any = None
        self._meta_changes = 0  # the metadata journal's change count when this input began
        self._refusal_pending = False  # a delayed login refusal, counted by the login throttle
        self._header_buf = b""
        self.blocked = False
        self.publishing = False
        self.block_pending = False
        self.name = self.peer
        self.throttled = False  # publisher flow control (see broker.flow)
        self.meta_wait = False  # answers held until the durable metadata they report is saved
        self.flow = PublisherFlow(self.loop, self._flow_pause, self._flow_resume)
        # an AMQPS connection is made after its TLS handshake, which counts in the timeout too
        started = self.loop.time() if accepted is None else accepted
        self._timeout_handle = self.loop.call_at(started + limits.handshake_timeout, self._handshake_timeout)
        self._frame_timer: Any = None  # armed while a frame is incomplete (see _frame_overdue)
        self.frames_in = 0
        self.recv_bytes = 0
        self.sent_bytes = 0
        if self.tls is None:
            log.info("accepting AMQP connection %s", self.peer)
        else:
            cert = f", client certificate '{printable(self.tls.peer.subject)}'" if self.tls.peer else ""
            log.info("accepting AMQP connection %s over TLS (%s, %s%s)", self.peer, self.tls.protocol,
                     self.tls.cipher, cert)

    # -- output ----------------------------------------------------------------
    def write(self, data: bytes) -> None:
        self.out.append(data)
        self.out_size += len(data)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def write_parts(self, parts: list) -> None:
        self.out += parts
        self.out_size += sum(map(len, parts))
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def schedule_flush(self) -> None:
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        if self.meta_wait:
            return  # sent once the metadata is saved (_metadata_saved)
        if self.confirm_dirty:
            for ch in self.confirm_dirty:
                ch.emit_confirms()
            self.confirm_dirty.clear()
        if self.out:
            data = b"".join(self.out)
            self.out.clear()
            self.out_size = 0
            if self.state is not CLOSED:
                self.transport.write(data)
                self.sent_bytes += len(data)
                self.last_send = self.loop.time()
        if self.starved and not self.writing_paused:
            self.starved = False
            self.kick_consumers()

    def kick_consumers(self) -> None:
        for ch in list(self.channels.values()):
            for c in list(ch.consumers.values()):
                if c.queue.ready:
                    c.queue.dispatch()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.backpressure:
            self.backpressure = False
            self._set_reading()
        self.loop.call_soon(self._after_resume)

    def _after_resume(self) -> None:
        if not self.writing_paused and self.state is OPENED:
            self.starved = False
            self.kick_consumers()

    # -- input -----------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self.last_recv = self.loop.time()
        self.recv_bytes += len(data)
        mon = self.services.monitor
        mon.input_bytes += len(data)
        if mon.input_bytes >= mon.next_input_check:
            mon.input_checkpoint()
        try:
            if self.state is ConnState.HEADER:
                data = self._protocol_header(data)
                if not data:
                    return
            frames = self.reader.feed(data)
        except AMQPError as e:
            self.connection_error(e)
            self._after_input()
            return
        self.frames_in += len(frames)
        if self._frame_timer is None and self.reader.buffered:
            self._arm_frame_timer()
        if self._frames:
            self._frames.extend(frames)
        else:
            self._frames = frames
            self._frame_i = 0
        self._process()

    def _process(self) -> None:
        """Handle up to MAX_FRAMES_PER_TURN frames, then let other connections have
        the loop (reading this one waits until its backlog of frames is done)."""
        self._meta_changes = self.services.journal.changes
        frames = self._frames
        i = self._frame_i
        end = min(len(frames), i + self.MAX_FRAMES_PER_TURN)
        handle = self.handle_frame
        try:
            while i < end and not self.blocked and not self.throttled and not self.meta_wait:
                ftype, chn, payload = frames[i]
                i += 1
                if self.state in DISCARDING:
                    self._while_closing(ftype, payload)
                    continue
                try:
                    handle(ftype, chn, payload)
                except ChannelError as e:
                    if e.code in HARD_CODES:
                        raise
                    self.channel_error(chn, e)
        except AMQPError as e:
            self.connection_error(e)
        except Exception:  # a bug must not take down other connections
            log.exception("internal error on connection %s", self.peer)
            self.connection_error(ConnectionError(errors.INTERNAL_ERROR, "internal error"))
        if i < len(frames) and self.state is not CLOSED:
            self._frame_i = i
            if not self.slicing:
                self.slicing = True
                self._set_reading()
            if not self.blocked and not self.throttled and not self.meta_wait:  # alarms, flow, saves wait
                self.loop.call_soon(self._process)
        else:
            self._frames = []
            self._frame_i = 0
            if self.slicing:
                self.slicing = False
                self._set_reading()
        self._after_input()

    def _after_input(self) -> None:
        if self.block_pending:
            self.block_pending = False
            self.block(self.services.monitor.reasons())
        if self.services.journal.changes != self._meta_changes:
            self._commit_metadata()
        if self.out or self.confirm_dirty:
            self.schedule_flush()
        if self.writing_paused and not self.backpressure and self.state is OPENED:
            # the peer does not read what we send: stop reading what it sends
            self.backpressure = True
            self._set_reading()

    def _commit_metadata(self) -> None:
        """Hold the answers to this input until the durable metadata it changed is saved;
        if that fails, none goes out: the connection is closed with 541."""
        self._meta_changes = self.services.journal.changes
        self.meta_wait = True
        self._set_reading()
        self.services.journal.wait_saved().add_done_callback(self._metadata_saved)

    def _metadata_saved(self, fut: Any) -> None:
        self.meta_wait = False
        if self.state is CLOSED:
            return
        exc = fut.exception()
        if isinstance(exc, MetadataSaveError):
            self.out.clear()
            self.out_size = 0
            self.confirm_dirty.clear()
            self.connection_error(
                ConnectionError(
                    errors.INTERNAL_ERROR,
                    f"{exc}; the last operations on this connection may not survive a restart",
                )
            )
        elif exc is not None:
            raise exc
        self._set_reading()
        if self._frames and self.state is not CLOSED:
            self.loop.call_soon(self._process)
        self.schedule_flush()

    def _set_reading(self) -> None:
        """Read from the socket unless blocked by an alarm or flow control, the peer's own
        back-pressure, a backlog of frames still to handle, or a delayed login refusal."""
        want_paused = (
            self.blocked
            or self.throttled
            or self.meta_wait
            or self.backpressure
            or self.slicing
            or self.draining
            or self.state is ConnState.REFUSING
        )
        if want_paused == self.reading_paused or self.state is CLOSED:
            return
        self.reading_paused = want_paused
        if want_paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def _protocol_header(self, data: bytes) -> bytes:
        buf = self._header_buf + data
        if len(buf) < 8:
            if framing.PROTOCOL_HEADER.startswith(buf):
                self._header_buf = buf
                return b""
            # a short wrong header: answer at once
        if buf[:8] != framing.PROTOCOL_HEADER:
            log.warning("connection %s: bad protocol header %r, closing", self.peer, bytes(buf[:8]))
            self.transport.write(framing.PROTOCOL_HEADER)
            self.transition(CLOSED)
            self.transport.close()
            return b""
        self._header_buf = b""
        self.transition(ConnState.START)
        self.write(start_frame(" ".join(self.offered_mechanisms())))
        return buf[8:]

    def send0(self, method: Any) -> None:
        self.write(framing.method_frame(0, method))

    def transition(self, to: ConnState) -> None:
        """Move to state ``to``; IllegalTransition (a broker bug) if it may not follow the current one."""
        self.state = check_transition(self.state, to)

    def handle_frame(self, ftype: int, chn: int, payload: bytes) -> None:
        if ftype == FRAME_METHOD:
            if chn == 0:
                self.connection_method(framing.decode_method(payload))
                return
            ch = self.channels.get(chn)
            idx = framing.method_index(payload)
            if ch is None:
                if self.state is not OPENED:
                    raise ConnectionError(
                        errors.CHANNEL_ERROR, f"unexpected frame on channel {chn} before connection.open"
                    )
                if idx == IDX_CHANNEL_OPEN:
                    self.open_channel(chn)
                    return
                raise ConnectionError(errors.CHANNEL_ERROR, "expected 'channel.open'", idx >> 16, idx & 0xFFFF)
            if ch.closing:
                if idx == IDX_CHANNEL_CLOSE_OK:
                    self.channel_closed(ch)
                elif idx == IDX_CHANNEL_CLOSE:
                    self.write(framing.method_frame(chn, C.Channel.CloseOk()))
                return
            content = ch.content
            if content.pub is not None:
                raise content.method_error()
            if idx == framing.IDX_BASIC_PUBLISH:
                ch.on_publish(payload)
                if not self.publishing:
                    self.publishing = True
                    if self.services.monitor.alarmed:
                        self.block_pending = True
            elif idx == framing.IDX_BASIC_ACK:
                ch.on_ack(payload)
            elif idx == IDX_CHANNEL_OPEN:
                raise ConnectionError(errors.CHANNEL_ERROR, "second 'channel.open' seen", 20, 10)
            else:
                ch.handle_method(framing.decode_method(payload))
        elif ftype == FRAME_BODY:
            ch = self._content_channel(chn)
            if ch is not None:
                ch.on_body(payload)
        elif ftype == FRAME_HEADER:
            ch = self._content_channel(chn)
            if ch is not None:
                ch.on_header(payload)
        elif ftype == FRAME_HEARTBEAT:
            if chn != 0:
                raise ConnectionError(
                    errors.UNEXPECTED_FRAME, f"heartbeat frame on channel {chn}; heartbeats use channel 0"
                )
            if payload:
                raise ConnectionError(
                    errors.FRAME_ERROR, f"heartbeat frame with a payload of {len(payload)} bytes; heartbeats are empty"
                )
        else:
            raise ConnectionError(errors.FRAME_ERROR, f"unknown frame type {ftype} on channel {chn}")

    def _content_channel(self, chn: int) -> Channel | None:
        ch = self.channels.get(chn)
        if ch is None:
            raise ConnectionError(errors.UNEXPECTED_FRAME, EXPECTED_METHOD)
        if ch.closing:
            return None
        return ch

    def _while_closing(self, ftype: int, payload: bytes) -> None:
        if ftype == FRAME_METHOD:
            try:
                idx = framing.method_index(payload)
            except AMQPError:
                return
            if idx == IDX_CONNECTION_CLOSE_OK:
                self.close_transport()
            elif idx == IDX_CONNECTION_CLOSE:
                self.send0(C.Connection.CloseOk())
                self.flush()
                self.close_transport()

    # -- connection class --------------------------------------------------------
    def connection_method(self, m: Any) -> None:
        st = self.state
        if isinstance(m, C.Connection.StartOk) and st is ConnState.START:
            self.on_start_ok(m)
        elif isinstance(m, C.Connection.TuneOk) and st is ConnState.TUNE:
            self.on_tune_ok(m)
        elif isinstance(m, C.Connection.Open) and st is ConnState.OPEN:
            self.on_open(m)
        elif isinstance(m, C.Connection.Close):
            log.info(
                "connection %s closed by client (%s %s)", printable(self.name), m.reply_code, printable(m.reply_text)
            )
            self.send0(C.Connection.CloseOk())
            self.flush()
            self.teardown()
            self.close_transport()
        elif isinstance(m, C.Connection.CloseOk):
            self.close_transport()
        elif isinstance(m, C.Connection.UpdateSecret) and st is OPENED:
            self.send0(C.Connection.UpdateSecretOk())
        elif isinstance(m, (C.Connection.Blocked, C.Connection.Unblocked)):
            pass
        elif st is OPENED and m.name.split(".")[0] != "Connection":
            raise ConnectionError(errors.CHANNEL_ERROR, "unexpected method in connection state running")
        else:
            raise ConnectionError(errors.COMMAND_INVALID, f"unexpected method {m.name} on channel 0 in state {st}")

    def _heartbeat_tick(self) -> None:
        if self.state is CLOSED:
            return
        now = self.loop.time()
        hb = self.heartbeat
        if self.blocked or self.throttled:
            self.last_recv = now  # we are not reading while blocked: no verdict on silence
        if now - self.last_recv > 2 * hb:
            log.warning("connection %s: missed heartbeats from client, timeout: %ss", printable(self.name), hb)
            self.teardown()
            self.close_transport(abort=True)
            return
        if now - self.last_send >= hb / 2:
            self.write(framing.HEARTBEAT_FRAME)
        self._hb_handle = self.loop.call_later(hb / 2, self._heartbeat_tick)

    def _frame_timeout(self) -> float:
        """How long one frame may take to arrive whole: the heartbeat timeout, or the
        handshake timeout when heartbeats are off."""
        return 2 * self.heartbeat if self.heartbeat else self.services.limits.handshake_timeout

    def _arm_frame_timer(self) -> None:
        self._frame_timer = self.loop.call_later(self._frame_timeout(), self._frame_overdue, self.frames_in)

    def _frame_overdue(self, frames_then: int) -> None:
        """A frame was incomplete when the timer was armed.  If no frame has been
        completed since and one is still incomplete (a frame cut short, or trickled
        slower than the timeout allows), the connection is closed: nothing holds a
        connection forever, heartbeats or not.  Time spent not reading (alarm,
        back-pressure) does not count."""
        self._frame_timer = None
        if self.state is CLOSED or not self.reader.buffered:
            return
        if self.frames_in == frames_then and not self.reading_paused:
            log.warning("connection %s: a frame was not completed within %ss (%d bytes of it received); closing",
                        printable(self.name), self._frame_timeout(), self.reader.buffered)
            self.teardown()
            self.close_transport(abort=True)
            return
        self._arm_frame_timer()

    def drain(self) -> None:
        """The broker is stopping: take no more input from this client."""
        self.draining = True
        self._frames = []
        self._frame_i = 0
        self._set_reading()

    # -- resource alarms -----------------------------------------------------------
    def block(self, reasons: list[str]) -> None:
        """A resource alarm is up: stop reading this publishing connection."""
        if self.blocked or self.state is not OPENED:
            return
        self.blocked = True
        reason = "low on " + " and ".join(reasons) if reasons else "resource alarm"
        if self.capabilities.get("connection.blocked"):
            self.send0(C.Connection.Blocked(reason=reason))
            self.flush()
        self._set_reading()
        log.info("connection %s blocked: %s", printable(self.name), reason)

    def unblock(self) -> None:
        if not self.blocked:
            return
        self.blocked = False
        self.last_recv = self.loop.time()
        if self.state is not OPENED:
            return
        if self.capabilities.get("connection.blocked"):
            self.send0(C.Connection.Unblocked())
            self.flush()
        self._set_reading()
        if self._frames:
            self.loop.call_soon(self._process)
        log.info("connection %s unblocked", printable(self.name))

    # -- publisher flow control -------------------------------------------------------
    def _flow_pause(self) -> None:
        """A queue this connection publishes to is behind: stop reading (PublisherFlow calls this)."""
        self.throttled = True
        self._set_reading()

    def _flow_resume(self) -> None:
        """Every queue it waited on caught up: read again, starting with frames already read."""
        self.throttled = False
        if self.state is not OPENED:
            return
        self.last_recv = self.loop.time()
        self._set_reading()
        if self._frames and not self.blocked:
            self.loop.call_soon(self._process)

    # -- channels ----------------------------------------------------------------
    def open_channel(self, chn: int) -> None:
        # like RabbitMQ, channel_max limits how many channels are open, not their numbers
        if self.channel_max and len(self.channels) >= self.channel_max:
            raise ConnectionError(
                errors.NOT_ALLOWED,
                f"number of channels opened ({len(self.channels)}) has reached the negotiated channel_max "
                f"({self.channel_max})",
            )
        limits = getattr(self.user, "limits", None)
        if limits:
            mine = sum(len(c.channels) for c in self.services.connections.open if c.username == self.username)
            n = reached(limits, "max-channels", mine)
            if n is not None:
                raise ConnectionError(
                    errors.NOT_ALLOWED,
                    f"number of channels opened for user '{self.username}' has reached the maximum allowed user "
                    f"limit of {n}",
                )
        ch = Channel(self, chn)
        self.channels[chn] = ch
        self.write(framing.reply_frame(chn, C.Channel.OpenOk))

    def channel_error(self, chn: int, e: ChannelError) -> None:
        ch = self.channels.get(chn)
        log.warning("channel error on connection %s, channel %s: %s", printable(self.name), chn, printable(e.text))
        if ch is None:
            return
        ch.emit_confirms()
        ch.teardown()
        self.write(methods.channel_close(chn, e.code, e.text, e.class_id, e.method_id))

    def close_channel(self, ch: Channel, reply: bool) -> None:
        """The client closed the channel."""
        ch.emit_confirms()
        self.confirm_dirty.discard(ch)
        ch.teardown()
        self.channels.pop(ch.number, None)
        if reply:
            self.write(framing.method_frame(ch.number, C.Channel.CloseOk()))

    def channel_closed(self, ch: Channel) -> None:
        """Our Channel.Close was answered: the number is free again."""
        self.channels.pop(ch.number, None)

    # -- closing -----------------------------------------------------------------
    def connection_error(self, e: AMQPError) -> None:
        if self.state in DISCARDING or self.state is ConnState.REFUSING:  # refusing: frames after a failed login
            return
        log.warning("connection error on %s: %s", printable(self.name), printable(e.text))
        if self.state is ConnState.HEADER:
            self.close_transport()
            return
        self.close(e.code, e.text, e.class_id, e.method_id)

    def close(self, code: int, text: str, class_id: int = 0, method_id: int = 0) -> None:
        """Send Connection.Close, drop the engine state, wait briefly for CloseOk."""
        if self.state in DISCARDING:
            return
        if self.state is ConnState.HEADER:  # not an AMQP peer yet: nothing to say Close to
            self.close_transport()
            return
        for ch in self.channels.values():
            ch.emit_confirms()
        self.write(methods.connection_close(code, text, class_id, method_id))
        self.flush()
        self.teardown()
        self.transition(ConnState.CLOSING)
        self._close_handle = self.loop.call_later(1.0, self.close_transport)

    def teardown(self) -> None:
        """Forget channels (requeue their unacked) and drop exclusive queues."""
        chans = list(self.channels.values())
        self.channels.clear()
        for ch in chans:
            if not ch.closing:
                ch.teardown()
        for q in list(self.exclusive_queues):
            q.vhost.delete_queue(q)
        self.exclusive_queues.clear()
        self.flow.close()
        self.services.connections.gone(self)

    def close_transport(self, abort: bool = False) -> None:
        if self.state is CLOSED:
            return
        self.transition(CLOSED)
        for h in (self._hb_handle, self._close_handle, self._timeout_handle, self._frame_timer):
            if h is not None:
                h.cancel()
        if abort:
            self.transport.abort()
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state is not CLOSED:
            if self.state is OPENED:
                log.info("connection %s lost: %s", printable(self.name), exc or "client closed the socket")
            self.transition(CLOSED)
        for h in (self._hb_handle, self._close_handle, self._timeout_handle, self._frame_timer):
            if h is not None:
                h.cancel()
        self._release_refusal()
        self.teardown()
        log.info("connection %s closed", printable(self.name))
