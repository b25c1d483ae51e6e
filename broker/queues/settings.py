"""A queue's effective settings: its arguments merged with the policies that match it.

Every queue type reads what it acts on (``x-max-length``, ``x-message-ttl``,
``x-dead-letter-exchange``, ``x-delivery-limit``, ...) from
:attr:`Queue.effective <broker.queues.base.Queue.effective>`, which
:func:`effective_arguments` builds from three sources, as RabbitMQ combines them:

- the queue's own ``x-`` arguments, fixed at declare;
- the policy that matches it (highest priority), whose keys are the argument
  names without ``x-`` (``max-length``), applying where the argument is absent;
  for the limits in :data:`LOWER_WINS` both apply and the lower value wins;
- the operator policy that matches it, which may only tighten the limits in
  :data:`OPERATOR_KEYS`: the lower of it and the value from the first two wins.

A policy change calls :meth:`Queue.apply_policies <broker.queues.base.Queue.apply_policies>`,
which rebuilds ``effective`` and lets the queue act on it at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# policy key -> the queue argument it stands for
POLICY_ARGUMENTS: dict[str, str] = {
    "message-ttl": "x-message-ttl",
    "expires": "x-expires",
    "max-length": "x-max-length",
    "max-length-bytes": "x-max-length-bytes",
    "overflow": "x-overflow",
    "dead-letter-exchange": "x-dead-letter-exchange",
    "dead-letter-routing-key": "x-dead-letter-routing-key",
    "dead-letter-strategy": "x-dead-letter-strategy",
    "delivery-limit": "x-delivery-limit",
    "consumer-timeout": "x-consumer-timeout",
    "max-age": "x-max-age",
    "stream-max-segment-size-bytes": "x-stream-max-segment-size-bytes",
}

# numeric limits where an argument and a policy both apply and the lower wins (RabbitMQ: fun min/2)
LOWER_WINS = frozenset(
    ("x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes", "x-delivery-limit", "x-consumer-timeout")
)

# the keys an operator policy may set (RabbitMQ's operator policy whitelist, as we apply it)
OPERATOR_KEYS = frozenset(
    ("message-ttl", "expires", "max-length", "max-length-bytes", "delivery-limit", "consumer-timeout")
)


def effective_arguments(
    arguments: Mapping[str, Any],
    policy: Mapping[str, Any] | None = None,
    operator_policy: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``arguments`` with the two policy definitions applied (see the module doc)."""
    out = dict(arguments)
    for key, value in (policy or {}).items():
        arg = POLICY_ARGUMENTS.get(key)
        if arg is None:
            continue
        if arg not in out:
            out[arg] = value
        elif arg in LOWER_WINS and _is_int(value) and _is_int(out[arg]):
            out[arg] = min(out[arg], value)
    for key, value in (operator_policy or {}).items():
        arg = POLICY_ARGUMENTS.get(key)
        if key not in OPERATOR_KEYS or arg is None or not _is_int(value):
            continue
        current = out.get(arg)
        out[arg] = value if not _is_int(current) else min(current, value)
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
