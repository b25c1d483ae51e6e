"""A queue's effective settings: its arguments merged with the policies that match it.

Every queue type reads what it acts on (``x-max-length``, ``x-message-ttl``,
``x-dead-letter-exchange``, ``x-delivery-limit``, ...) from
:attr:`Queue.effective <broker.queues.base.Queue.effective>`, which
:func:`effective_arguments` builds in RabbitMQ's two steps
(``rabbit_policy:get/2``, then ``rabbit_queue_type_util:args_policy_lookup/3``):

1. The policy and the operator policy that match the queue are merged into one
   policy value per key.  A key in only one of them is taken as it is; a key in
   both (only the :data:`OPERATOR_KEYS` can be) is merged by
   :func:`merge_policy_value`: the lower limit wins (the stricter one), the
   operator's ``overflow`` wins, and a negative (unlimited) ``delivery-limit``
   gives way to a limited one.
2. That policy value (key ``max-length``) meets the queue's own argument
   (``x-max-length``).  Alone, either applies.  When both are set the queue type
   decides, per key: for the limits in :data:`LOWER_WINS` the lower value wins;
   for a stream's retention keys and a quorum queue's ``overflow``
   (:data:`POLICY_WINS`) the policy wins; for every other key (dead-lettering,
   a classic queue's ``overflow``) the argument wins.

A policy change calls :meth:`Queue.apply_policies <broker.queues.base.Queue.apply_policies>`,
which rebuilds ``effective`` and lets the queue act on it at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# policy key -> the queue argument it stands for.  The last group is accepted (RabbitMQ's
# definitions use them) and shown in ``effective``, but no queue type here acts on them.
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
    "stream-filter-size-bytes": "x-stream-filter-size-bytes",
    "consumer-disconnected-timeout": "x-consumer-disconnected-timeout",
    "initial-cluster-size": "x-initial-cluster-size",
    "queue-leader-locator": "x-queue-leader-locator",
    "max-in-memory-length": "x-max-in-memory-length",
    "max-in-memory-bytes": "x-max-in-memory-bytes",
    "queue-mode": "x-queue-mode",
    "queue-version": "x-queue-version",
}

# arguments where, with a policy value too, the lower of the two wins (RabbitMQ: fun min/2)
LOWER_WINS = frozenset(
    ("x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes", "x-delivery-limit", "x-consumer-timeout",
     "x-consumer-disconnected-timeout")
)

# per queue type, arguments where the policy value wins over the argument (RabbitMQ: policy_precedence)
POLICY_WINS: dict[str, frozenset[str]] = {
    "quorum": frozenset(("x-overflow",)),
    "stream": frozenset(("x-max-length-bytes", "x-max-age", "x-stream-max-segment-size-bytes",
                         "x-stream-filter-size-bytes", "x-initial-cluster-size")),
}

# the keys an operator policy may set (RabbitMQ's operator_policy_validator list)
OPERATOR_KEYS = frozenset(
    ("expires", "message-ttl", "max-length", "max-length-bytes", "max-in-memory-length", "max-in-memory-bytes",
     "delivery-limit", "queue-version", "overflow")
)


def merge_policy_value(key: str, value: Any, op_value: Any) -> Any:
    """A key set by both the policy and the operator policy (RabbitMQ's merge_policy_value)."""
    if key == "delivery-limit" and _is_int(value) and _is_int(op_value) and (value < 0 or op_value < 0):
        return max(value, op_value)  # negative is unlimited: the limited one is the stricter
    if _is_int(value) and _is_int(op_value):
        return min(value, op_value)
    return op_value  # overflow, queue-version, booleans: the operator's


def merged_definition(
    policy: Mapping[str, Any] | None, operator_policy: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The policy and operator policy definitions as one (RabbitMQ's effective_policy_definition)."""
    out = dict(policy or {})
    for key, op_value in (operator_policy or {}).items():
        out[key] = merge_policy_value(key, out[key], op_value) if key in out else op_value
    return out


def effective_arguments(
    arguments: Mapping[str, Any],
    policy: Mapping[str, Any] | None = None,
    operator_policy: Mapping[str, Any] | None = None,
    queue_type: str = "classic",
) -> dict[str, Any]:
    """``arguments`` with the two policy definitions applied (see the module doc)."""
    out = dict(arguments)
    policy_wins = POLICY_WINS.get(queue_type, frozenset())
    for key, value in merged_definition(policy, operator_policy).items():
        arg = POLICY_ARGUMENTS.get(key)
        if arg is None:
            continue
        if arg not in out or arg in policy_wins:
            out[arg] = value
        elif arg in LOWER_WINS and _is_int(value) and _is_int(out[arg]):
            current = out[arg]
            if arg == "x-delivery-limit" and (value < 0 or current < 0):
                out[arg] = max(current, value)  # a quorum queue's resolve_delivery_limit
            else:
                out[arg] = min(current, value)
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
