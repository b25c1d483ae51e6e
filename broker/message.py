"""A message as the engine carries it.

The content header payload is kept exactly as the publisher sent it
(``header``) and is re-sent to consumers unchanged; properties are decoded only
when a feature asks for one (:attr:`Message.properties`).  Exchange and routing
key are kept both as text (for routing) and as the length-prefixed short
strings received (for Basic.Deliver, which copies them as they are).
"""

from __future__ import annotations

from typing import Any

from protocol import framing


class Message:
    """One message in one queue (fan-out copies share header and body bytes)."""

    __slots__ = (
        "exchange",
        "routing_key",
        "ex_raw",
        "rk_raw",
        "header",
        "body",
        "seq",
        "redelivered",
        "_props",
        "ref",
        "deadline",
        "exp_deadline",
        "priority",
        "cc",
    )

    def __init__(
        self,
        exchange: str,
        routing_key: str,
        ex_raw: bytes,
        rk_raw: bytes,
        header: bytes,
        body: bytes,
    ) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.ex_raw = ex_raw
        self.rk_raw = rk_raw
        self.header = header
        self.body = body
        self.seq = 0
        self.redelivered = False
        self._props: Any = None
        self.ref: Any = None
        self.exp_deadline = 0  # from the per-message expiration property (ms since the epoch)
        self.deadline = 0  # effective in its queue (with the queue's x-message-ttl)
        self.priority = 0
        self.cc: tuple[str, ...] = ()  # sender-selected extra routing keys (CC, BCC headers)

    def copy(self) -> "Message":
        m = Message(self.exchange, self.routing_key, self.ex_raw, self.rk_raw, self.header, self.body)
        m._props = self._props
        m.exp_deadline = m.deadline = self.exp_deadline
        m.cc = self.cc
        return m

    def replace_header(self, header: bytes) -> None:
        """New content-header bytes (a queue added a header): the decoded properties go too."""
        self.header = header
        self._props = None

    @property
    def properties(self) -> Any:
        """The decoded Basic properties (decoded once, on first use)."""
        if self._props is None:
            self._props = framing.decode_properties(self.header)
        return self._props
