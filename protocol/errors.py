"""AMQP 0-9-1 reply codes and the two kinds of protocol error.

Engine code raises :class:`ChannelError` for faults that close one channel
(queue/exchange/ack problems) and :class:`ConnectionError` for faults that close
the whole connection (framing, handshake, protocol misuse).  The connection
turns them into Channel.Close / Connection.Close with RabbitMQ's reply texts,
which are ``NAME - detail`` (for example ``NOT_FOUND - no queue 'q' in vhost '/'``).
"""

from __future__ import annotations

from .names import clip

REPLY_SUCCESS = 200
CONTENT_TOO_LARGE = 311
NO_ROUTE = 312
NO_CONSUMERS = 313
CONNECTION_FORCED = 320
INVALID_PATH = 402
ACCESS_REFUSED = 403
NOT_FOUND = 404
RESOURCE_LOCKED = 405
PRECONDITION_FAILED = 406
FRAME_ERROR = 501
SYNTAX_ERROR = 502
COMMAND_INVALID = 503
CHANNEL_ERROR = 504
UNEXPECTED_FRAME = 505
RESOURCE_ERROR = 506
NOT_ALLOWED = 530
NOT_IMPLEMENTED = 540
INTERNAL_ERROR = 541

NAMES: dict[int, str] = {
    REPLY_SUCCESS: "REPLY_SUCCESS",
    CONTENT_TOO_LARGE: "CONTENT_TOO_LARGE",
    NO_ROUTE: "NO_ROUTE",
    NO_CONSUMERS: "NO_CONSUMERS",
    CONNECTION_FORCED: "CONNECTION_FORCED",
    INVALID_PATH: "INVALID_PATH",
    ACCESS_REFUSED: "ACCESS_REFUSED",
    NOT_FOUND: "NOT_FOUND",
    RESOURCE_LOCKED: "RESOURCE_LOCKED",
    PRECONDITION_FAILED: "PRECONDITION_FAILED",
    FRAME_ERROR: "FRAME_ERROR",
    SYNTAX_ERROR: "SYNTAX_ERROR",
    COMMAND_INVALID: "COMMAND_INVALID",
    CHANNEL_ERROR: "CHANNEL_ERROR",
    UNEXPECTED_FRAME: "UNEXPECTED_FRAME",
    RESOURCE_ERROR: "RESOURCE_ERROR",
    NOT_ALLOWED: "NOT_ALLOWED",
    NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
    INTERNAL_ERROR: "INTERNAL_ERROR",
}


class AMQPError(Exception):
    """A protocol error with a reply code; ``text`` is the full reply text."""

    def __init__(self, code: int, detail: str, class_id: int = 0, method_id: int = 0) -> None:
        self.code = code
        self.detail = detail
        self.class_id = class_id
        self.method_id = method_id
        self.text = clip(f"{NAMES.get(code, str(code))} - {detail}")
        super().__init__(self.text)


class ChannelError(AMQPError):
    """Closes only the channel it happened on."""


class ConnectionError(AMQPError):  # noqa: A001 - AMQP's name for it
    """Closes the whole connection."""


class FrameError(ConnectionError):
    """A frame that cannot be parsed (501 unless said otherwise)."""

    def __init__(self, detail: str, code: int = FRAME_ERROR) -> None:
        super().__init__(code, detail)
