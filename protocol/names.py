"""Names and AMQP short strings.

RabbitMQ takes any UTF-8 text of up to 255 bytes as the name of a queue, an
exchange, a vhost or a user, as a routing key or as a consumer tag: the AMQP
short string that carries them has a one-byte length.  This module is the one
place that knows it:

- :func:`shortstr` encodes a short string (length byte + UTF-8).  It never cuts
  a name short: over 255 bytes, or text that is not valid Unicode, raises
  :class:`ValueError`.
- :func:`clip` shortens free text (reply texts) to at most 255 bytes of UTF-8
  without splitting a character, for the places where RabbitMQ truncates.
- :func:`name_problem` says why a string cannot be a name, for the boundaries
  (HTTP paths and bodies, definitions) that must refuse it with a clear reason.
"""

from __future__ import annotations

from typing import Any

MAX_BYTES = 255
NOT_UTF8 = "is not valid UTF-8"


def shortstr(value: str | bytes) -> bytes:
    """An AMQP short string: one length byte, then ``value`` in UTF-8 (bytes as they are)."""
    raw = value if isinstance(value, bytes) else value.encode("utf-8")  # lone surrogates raise
    if len(raw) > MAX_BYTES:
        raise ValueError(f"short string of {len(raw)} bytes, over the limit of {MAX_BYTES} bytes")
    return bytes((len(raw),)) + raw


def clip(text: str, limit: int = MAX_BYTES) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8 at a character boundary."""
    raw = text.encode("utf-8", "replace")  # a lone surrogate becomes "?"
    if len(raw) <= limit:
        return raw.decode("utf-8")
    return raw[:limit].decode("utf-8", "ignore")  # "ignore" drops only a split last character


def name_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a name (``"is not valid UTF-8"``, ...), or None if it can."""
    if not isinstance(value, str):
        return "must be a string"
    try:
        n = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return NOT_UTF8
    if n > MAX_BYTES:
        return f"is {n} bytes long in UTF-8, over the limit of {MAX_BYTES} bytes"
    return None
