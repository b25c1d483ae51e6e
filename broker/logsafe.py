"""Client-supplied text made safe to put in a log line.

A user name, vhost, queue name or close text may hold a newline followed by
something that looks like a log line of its own.  :func:`printable` escapes
control characters, line and paragraph separators and other non-printables the
way ``repr`` does (``\\n``, ``\\x1b``, ``\\u2028``), and backslashes too, so an
escaped text cannot be mistaken for one that was not; ordinary Unicode such as
``订单`` stays readable.  Apply it to every client-supplied value a log call
interpolates.
"""

from __future__ import annotations


def printable(value: object) -> str:
    """``value`` as text for a log line: one line, non-printables escaped."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c != "\\" else repr(c)[1:-1] for c in text)
