"""Vhost limits (max-connections, max-queues) and user limits (max-connections, max-channels).

A limit is an integer: a negative one means no limit, ``0`` allows none, ``N``
allows N (RabbitMQ's rabbit_vhost_limit and rabbit_auth_backend_internal).  Limits
are kept as the dict given (``{"max-connections": 10}``) on the vhost
(``VHost.limits``) and on the user (``User.limits``); :func:`reached` is the one
test that the connection open, the channel open and the queue declare make, each
refusing with RabbitMQ's code and text.
"""

from __future__ import annotations

from typing import Any

from .policies import MAX_INT, erl_term, validation_failed

VHOST_LIMITS = ("max-connections", "max-queues")
USER_LIMITS = ("max-connections", "max-channels")


class LimitError(ValueError):
    """Limits refused; ``str()`` is RabbitMQ's text for the HTTP 400."""


def parse_limits(value: Any, keys: tuple[str, ...], what: str) -> dict[str, int]:
    """A limits definition checked (``what`` names it in the text: ``limits``, ``user-limits``)."""
    if not isinstance(value, dict):
        raise LimitError(str(validation_failed([f"{what} not a list {erl_term(value)}"])))
    errors = [f"{k} should be a number, actually was {erl_term(v)}" for k, v in value.items()
              if k in keys and (isinstance(v, bool) or not isinstance(v, int) or abs(v) > MAX_INT)]
    unknown = [(k, v) for k, v in value.items() if k not in keys]
    if unknown:
        listed = ",".join("{" + erl_term(k) + "," + erl_term(v) + "}" for k, v in unknown[:16])
        errors.insert(0, f"Unrecognised terms [{listed}] in {what}")
    if errors:
        raise LimitError(str(validation_failed(errors)))
    return dict(value)


def limit(limits: dict[str, int] | None, key: str) -> int | None:
    """The limit ``key`` in force (None: no limit; a negative value is none)."""
    v = (limits or {}).get(key)
    return v if v is not None and v >= 0 else None


def reached(limits: dict[str, int] | None, key: str, count: int) -> int | None:
    """The limit if one more (beyond ``count``) would go over it, else None."""
    n = limit(limits, key)
    if n is not None and count >= n:
        return n
    return None
