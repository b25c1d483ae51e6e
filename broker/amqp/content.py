"""Content assembly: Basic.Publish + content header + body frames -> one publish.

Theory of operation
-------------------
A publish arrives as a Basic.Publish method frame (:meth:`start`), then one
content header frame (:meth:`header`) that says how many body bytes follow,
then body frames (:meth:`body`) until exactly that many have arrived.  A header
with body size 0 completes the publish by itself (no body frame follows, as
pika sends an empty body).  When a publish is complete the assembler calls
``complete(publish, header, body)``, where ``publish`` is the parsed method
(exchange and routing key as received shortstrs, and the flag bits) and
``header`` is the content header payload as received.

Between a Basic.Publish and its last body frame nothing else may come on the
channel: any other frame is a connection error with RabbitMQ's texts
(UNEXPECTED_FRAME), a body longer than declared is a FRAME_ERROR, and a
declared size over :data:`MAX_MESSAGE_SIZE` closes the channel
(PRECONDITION_FAILED) before a byte of the body is kept.

The assembler holds only bytes; it knows nothing of exchanges or queues.
"""

from __future__ import annotations

from collections.abc import Callable

from protocol import errors, framing
from protocol.errors import ChannelError, ConnectionError
from protocol.fields import check_properties

MAX_MESSAGE_SIZE = 128 * 1024 * 1024

Publish = tuple[bytes, bytes, int]  # (exchange shortstr, routing key shortstr, mandatory/immediate bits)

EXPECTED_METHOD = "expected method frame, got non method frame instead"
EXPECTED_HEADER = "expected content header for class 60, got non content header frame instead"
EXPECTED_BODY = "expected content body, got non content body frame instead"


class ContentAssembler:
    """Collects the frames of one publish at a time on one channel."""

    __slots__ = ("complete", "pub", "hdr", "parts", "remaining")

    def __init__(self, complete: Callable[[Publish, bytes, bytes], None]) -> None:
        self.complete = complete
        self.pub: Publish | None = None  # the Basic.Publish being assembled
        self.hdr: bytes | None = None  # its content header payload, once received
        self.parts: list[bytes] = []  # body frames so far, when there are several
        self.remaining = 0  # body bytes still to come

    def start(self, payload: bytes) -> None:
        """A Basic.Publish method frame (payload as received)."""
        self.pub = framing.parse_publish(payload)

    def method_error(self) -> ConnectionError:
        """The error for a method frame that arrives while content is expected."""
        if self.hdr is None:
            return ConnectionError(errors.UNEXPECTED_FRAME, EXPECTED_HEADER, 60, 40)
        return ConnectionError(errors.UNEXPECTED_FRAME, EXPECTED_BODY, 60, 40)

    def header(self, payload: bytes) -> None:
        """A content header frame."""
        if self.pub is None:
            raise ConnectionError(errors.UNEXPECTED_FRAME, EXPECTED_METHOD)
        if self.hdr is not None:
            raise ConnectionError(errors.UNEXPECTED_FRAME, EXPECTED_BODY, 60, 40)
        class_id, size = framing.header_body_size(payload)
        if class_id != 60:
            raise ConnectionError(
                errors.UNEXPECTED_FRAME,
                f"expected content header for class 60, got one for class {class_id} instead",
                60,
                40,
            )
        check_properties(payload)
        if size > MAX_MESSAGE_SIZE:
            self.pub = None
            raise ChannelError(
                errors.PRECONDITION_FAILED,
                f"message size {size} is larger than configured max size {MAX_MESSAGE_SIZE}",
                60,
                40,
            )
        if size == 0:
            pub = self.pub
            self.pub = None
            self.complete(pub, payload, b"")
            return
        self.hdr = payload
        self.remaining = size

    def body(self, payload: bytes) -> None:
        """A content body frame."""
        hdr = self.hdr
        if hdr is None:
            if self.pub is None:
                raise ConnectionError(errors.UNEXPECTED_FRAME, EXPECTED_METHOD)
            raise ConnectionError(errors.UNEXPECTED_FRAME, EXPECTED_HEADER, 60, 40)
        rem = self.remaining - len(payload)
        if rem > 0:
            self.remaining = rem
            self.parts.append(payload)
            return
        if rem < 0:
            raise ConnectionError(errors.FRAME_ERROR, "content body is longer than the size its header declared")
        if self.parts:
            self.parts.append(payload)
            body = b"".join(self.parts)
            self.parts = []
        else:
            body = payload
        pub = self.pub
        self.hdr = None
        self.pub = None
        self.complete(pub, hdr, body)  # type: ignore[arg-type]  # pub is set whenever hdr is
