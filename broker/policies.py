"""Policies and operator policies: validation, the store of one vhost, matching, re-application.

Theory of operation
-------------------
A policy (RabbitMQ's ``rabbitmqctl set_policy``) names queues and exchanges by a
regular expression (``pattern``, searched in the name, run on RE2), narrows them by
``apply-to`` (``all``, ``queues``, ``exchanges``, ``classic_queues``,
``quorum_queues``, ``streams``) and gives them settings (``definition``: the queue
arguments without ``x-``, such as ``max-length``).  :func:`parse_policy` checks every
field and every key and value with RabbitMQ's texts (``Validation failed`` ...) and
raises :class:`PolicyError`; nothing is stored until the whole policy is valid.

Each vhost keeps two :class:`PolicySet`\\ s in its :class:`VHostPolicies`: policies and
operator policies (which only take the :data:`~broker.queues.settings.OPERATOR_KEYS`
limits).  At most one of each applies to a queue or exchange: the matching one of
highest priority.  RabbitMQ leaves a tie to the order its store lists policies in;
here the name decides (the first in name order wins), so a tie is at least stable.
A policy also skips a queue whose type does not take one of its keys (RabbitMQ's
``unsupported_policies``: a ``delivery-limit`` policy does not apply to a classic
queue, a ``message-ttl`` one not to a stream).

When a policy is put or deleted, :meth:`VHostPolicies.reapply` finds, for every
queue and exchange of the vhost, the policy of that set that matches now, and calls
``apply_policies`` only where that changed.  A queue then rebuilds its effective
settings (:mod:`broker.queues.settings`) and enforces them at once.  A queue being
declared is resolved before it starts (:meth:`VHostPolicies.resolve_queue`).  The
patterns of a set are searched together (one RE2 set search per name), and
``reapply`` is a generator that pauses every few hundred objects, so that the HTTP
API can let the event loop serve others while a change reaches 10,000 queues.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from protocol.names import name_problem

from .patterns import PatternError, PatternSet, Regex, compile_pattern
from .queues.base import PolicyRef, Queue
from .queues.settings import OPERATOR_KEYS

APPLY_TO = ("all", "queues", "exchanges", "classic_queues", "quorum_queues", "streams")
# a queue type's name in apply-to (RabbitMQ: policy_apply_to_name/0)
QUEUE_TYPE_APPLY_TO = {"classic": "classic_queues", "quorum": "quorum_queues", "stream": "streams"}

# the keys a queue type does not take: a policy with one of them skips queues of that type
UNSUPPORTED_KEYS: dict[str, frozenset[str]] = {
    "classic": frozenset((
        "max-age", "stream-max-segment-size-bytes", "stream-filter-size-bytes", "initial-cluster-size",
        "delivery-limit", "dead-letter-strategy", "max-in-memory-length", "max-in-memory-bytes",
    )),
    "quorum": frozenset(("queue-mode", "max-age", "stream-max-segment-size-bytes", "initial-cluster-size")),
    "stream": frozenset((
        "expires", "message-ttl", "dead-letter-exchange", "dead-letter-routing-key", "max-length",
        "max-in-memory-length", "max-in-memory-bytes", "overflow", "queue-mode", "delivery-limit",
        "dead-letter-strategy",
    )),
}

MAX_POLICIES_PER_VHOST = 1024
MAX_INT = (1 << 63) - 1  # what an AMQP long-long argument can carry
MAX_STREAM_SEGMENT_SIZE = 3_000_000_000
_MAX_AGE = re.compile(r"[0-9]{1,12}(Y|M|D|h|m|s)")


class PolicyError(ValueError):
    """A policy was refused; ``str()`` is RabbitMQ's text for the HTTP 400."""


def erl_term(v: Any) -> str:
    """A JSON value as RabbitMQ's texts print it (Erlang's ``~tp``): ``<<"abc">>``, ``[{<<"k">>,1}]``."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, str):
        text = v if len(v) <= 80 else v[:77] + "..."
        return '<<"' + text.replace("\\", "\\\\").replace('"', '\\"') + '">>'
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else "null"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, dict):
        return "#{" + ",".join(f"{erl_term(k)} => {erl_term(x)}" for k, x in list(v.items())[:16]) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(erl_term(x) for x in list(v)[:16]) + "]"
    return repr(v)


def validation_failed(errors: Iterable[str]) -> PolicyError:
    """RabbitMQ's runtime-parameter refusal: ``Validation failed``, a blank line, one line per error."""
    return PolicyError("Validation failed\n\n" + "".join(e + "\n" for e in errors))


# -- one key of a definition ----------------------------------------------------------------

def _int_at_least(lo: int, what: str, hi: int = MAX_INT) -> Any:
    def check(v: Any) -> str | None:
        if isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi:
            return None
        return f"{erl_term(v)} is not a valid {what}"
    return check


def _any_int(what: str) -> Any:
    def check(v: Any) -> str | None:
        if isinstance(v, int) and not isinstance(v, bool) and -MAX_INT <= v <= MAX_INT:
            return None
        return f"{erl_term(v)} is not a valid {what}"
    return check


def _name(what: str) -> Any:
    def check(v: Any) -> str | None:
        if isinstance(v, str) and name_problem(v) is None:
            return None
        return f"{erl_term(v)} is not a valid {what}"
    return check


def _one_of(values: tuple[Any, ...], what: str) -> Any:
    def check(v: Any) -> str | None:
        if not isinstance(v, bool) and v in values:
            return None
        return f"{erl_term(v)} is not a valid {what}"
    return check


def _max_age(v: Any) -> str | None:
    if isinstance(v, str) and _MAX_AGE.fullmatch(v):
        return None
    return f"{erl_term(v)} is not a valid max age"


def _filter_size(v: Any) -> str | None:
    if isinstance(v, int) and not isinstance(v, bool) and 16 <= v <= 255:
        return None
    return f"{erl_term(v)} is not a valid filter size. Valid range is 16-255"


# every key RabbitMQ's policies take that means something for the queue types and exchanges
# here (federation, shovel and JMS keys are not ours), with RabbitMQ's check and text
KEY_CHECKS: dict[str, Any] = {
    "alternate-exchange": _name("alternate exchange name"),
    "consumer-disconnected-timeout": _int_at_least(0, "consumer disconnected timeout"),
    "consumer-timeout": _int_at_least(0, "consumer timeout"),
    "dead-letter-exchange": _name("dead letter exchange name"),
    "dead-letter-routing-key": _name("dead letter routing key"),
    "dead-letter-strategy": _one_of(("at-most-once", "at-least-once"), "dead letter strategy"),
    "message-ttl": _int_at_least(0, "message TTL"),
    "expires": _int_at_least(1, "queue expiry"),
    "max-length": _int_at_least(0, "maximum length"),
    "max-length-bytes": _int_at_least(0, "maximum length in bytes"),
    "max-in-memory-length": _int_at_least(0, "maximum memory in bytes"),
    "max-in-memory-bytes": _int_at_least(0, "maximum memory in bytes"),
    "queue-mode": _one_of(("default", "lazy"), "queue-mode value"),
    "queue-version": _one_of((1, 2), "queue-version value"),
    "overflow": _one_of(("drop-head", "reject-publish", "reject-publish-dlx"), "overflow value"),
    "delivery-limit": _any_int("delivery limit"),
    "max-age": _max_age,
    "stream-max-segment-size-bytes": _int_at_least(0, "segment size", MAX_STREAM_SEGMENT_SIZE),
    "stream-filter-size-bytes": _filter_size,
    "queue-leader-locator": _one_of(("client-local", "balanced", "random", "least-leaders"),
                                    "queue leader locator value"),
    "initial-cluster-size": _int_at_least(0, "cluster size"),
}


def definition_errors(definition: Any, operator: bool = False) -> list[str]:
    """What is wrong with a policy's ``definition`` (empty: nothing), in RabbitMQ's words."""
    if isinstance(definition, dict) and not definition or definition == []:
        return ["no policy provided"]
    if not isinstance(definition, dict):
        return [f"definition must be a dictionary: {erl_term(definition)}"]
    known = OPERATOR_KEYS if operator else KEY_CHECKS.keys()
    for key, value in definition.items():
        if key in known:
            problem = KEY_CHECKS[key](value)
            if problem is not None:
                return [problem]
    unknown = [(k, v) for k, v in definition.items() if k not in known]
    if unknown:
        listed = ",".join("{" + erl_term(k) + "," + erl_term(v) + "}" for k, v in unknown[:16])
        return [f"[{listed}] are not recognised policy settings"]
    return []


# -- a policy ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Policy:
    """One policy (or operator policy) of one vhost, as validated."""

    vhost: str
    name: str
    pattern: str
    apply_to: str
    definition: dict[str, Any]
    priority: int | float
    regex: Regex = field(compare=False, repr=False)
    ref: PolicyRef = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ref", PolicyRef(self.name, self.definition))

    def as_json(self) -> dict[str, Any]:
        """RabbitMQ's JSON of a policy (the API's and the definitions file's)."""
        return {"vhost": self.vhost, "name": self.name, "pattern": self.pattern, "apply-to": self.apply_to,
                "definition": self.definition, "priority": self.priority}

    def matches_name(self, name: str) -> bool:
        return self.regex.search(name) is not None

    def takes_queue(self, type_name: str) -> bool:
        """Whether apply-to and the definition's keys let this policy apply to a queue of this type."""
        if self.apply_to not in ("all", "queues") and self.apply_to != QUEUE_TYPE_APPLY_TO.get(type_name):
            return False
        unsupported = UNSUPPORTED_KEYS.get(type_name)
        return not unsupported or unsupported.isdisjoint(self.definition)

    def takes_exchanges(self) -> bool:
        return self.apply_to in ("all", "exchanges")


def parse_policy(vhost: str, name: str, body: dict[str, Any], operator: bool = False) -> Policy:
    """A :class:`Policy` from its JSON fields (``pattern``, ``definition``, ``priority``,
    ``apply-to``), or :class:`PolicyError` listing every field that is wrong."""
    problem = name_problem(name)
    if problem is not None or not name:
        raise PolicyError(f"the policy name {problem or 'must not be empty'}")
    errors: list[str] = []
    priority = body.get("priority", 0)
    if priority is None:
        priority = 0
    if isinstance(priority, bool) or not isinstance(priority, (int, float)) or abs(priority) > MAX_INT \
            or not math.isfinite(priority):  # (range first: isfinite() of a huge int raises)
        errors.append(f"priority should be a number, actually was {erl_term(priority)}")
    pattern = body.get("pattern")
    regex: Regex | None = None
    if not isinstance(pattern, str):
        errors.append(f"pattern should be a binary but was {erl_term(pattern)}")
    else:
        try:
            regex = compile_pattern(pattern, "pattern")
        except PatternError as exc:
            errors.append(f"pattern should be regular expression but is invalid: {exc.why}")
    apply_to = body.get("apply-to", "all")
    if apply_to is None:
        apply_to = "all"
    if apply_to not in APPLY_TO:
        shown = apply_to if isinstance(apply_to, str) and len(apply_to) <= 80 else erl_term(apply_to)
        errors.append(f"apply-to '{shown}' unrecognised; should be one of: 'queues', 'classic_queues',  "
                      "'quorum_queues', 'streams', 'exchanges', or 'all'")
    definition = body.get("definition")
    errors += definition_errors(definition, operator)
    if errors:
        raise validation_failed(errors)
    assert regex is not None and isinstance(pattern, str) and isinstance(definition, dict)
    return Policy(vhost, name, pattern, apply_to, dict(definition), priority, regex)


# -- the policies of one vhost ------------------------------------------------------------------

class PolicySet:
    """The policies (or the operator policies) of one vhost, kept in match order, with their
    patterns in one RE2 set so that a name is searched against all of them at once."""

    def __init__(self, operator: bool = False) -> None:
        self.operator = operator
        self._by_name: dict[str, Policy] = {}
        self._ordered: list[Policy] = []
        self._set: PatternSet | None = PatternSet([])  # None: to be rebuilt at the next match

    def __len__(self) -> int:
        return len(self._by_name)

    def __iter__(self) -> Iterator[Policy]:
        return iter(self._ordered)

    def get(self, name: str) -> Policy | None:
        return self._by_name.get(name)

    def put(self, policy: Policy) -> Policy | None:
        """Add or replace ``policy``; returns the one it replaced.  PolicyError if the
        vhost already has :data:`MAX_POLICIES_PER_VHOST`."""
        old = self._by_name.get(policy.name)
        if old is None and len(self._by_name) >= MAX_POLICIES_PER_VHOST:
            kind = "operator policies" if self.operator else "policies"
            raise PolicyError(f"vhost '{policy.vhost}' already has {MAX_POLICIES_PER_VHOST} {kind}, the most "
                              "one vhost may have")
        self._by_name[policy.name] = policy
        self._sort()
        return old

    def delete(self, name: str) -> Policy | None:
        old = self._by_name.pop(name, None)
        if old is not None:
            self._sort()
        return old

    def _sort(self) -> None:
        # highest priority first; ties by name (see the module doc)
        self._ordered = sorted(self._by_name.values(), key=lambda p: (-p.priority, p.name))
        self._set = None  # built when first needed: an import of many policies compiles it once

    def _patterns(self) -> PatternSet:
        if self._set is None:
            self._set = PatternSet([p.pattern for p in self._ordered])
        return self._set

    def match_queue(self, name: str, type_name: str) -> Policy | None:
        if not self._ordered:
            return None
        ordered = self._ordered
        for i in self._patterns().search(name):
            if ordered[i].takes_queue(type_name):
                return ordered[i]
        return None

    def match_exchange(self, name: str) -> Policy | None:
        if not self._ordered:
            return None
        ordered = self._ordered
        for i in self._patterns().search(name):
            if ordered[i].takes_exchanges():
                return ordered[i]
        return None


def _ref(p: Policy | None) -> PolicyRef | None:
    return p.ref if p is not None else None


REAPPLY_CHUNK = 128  # queues and exchanges re-resolved between two yields of the loop


class VHostPolicies:
    """A vhost's policies and operator policies, and their application to its queues and exchanges."""

    def __init__(self) -> None:
        self.policies = PolicySet()
        self.operator_policies = PolicySet(operator=True)

    def set_of(self, operator: bool) -> PolicySet:
        return self.operator_policies if operator else self.policies

    def resolve_queue(self, name: str, type_name: str) -> tuple[PolicyRef | None, PolicyRef | None]:
        """The (policy, operator policy) that match a queue of this name and type."""
        return (_ref(self.policies.match_queue(name, type_name)),
                _ref(self.operator_policies.match_queue(name, type_name)))

    def resolve_exchange(self, name: str) -> tuple[PolicyRef | None, PolicyRef | None]:
        return _ref(self.policies.match_exchange(name)), _ref(self.operator_policies.match_exchange(name))

    def apply_to_queue(self, q: Queue) -> bool:
        """Resolve ``q``'s policies and apply them if they changed; True if they did."""
        policy, op = self.resolve_queue(q.name, q.type_name)
        if policy == q.policy and op == q.operator_policy:
            return False
        q.apply_policies(policy, op)
        return True

    def apply_to_exchange(self, x: Any) -> bool:
        if not x.name:
            return False  # the default exchange takes no policy (it routes by queue name alone)
        policy, op = self.resolve_exchange(x.name)
        if policy == x.policy and op == x.operator_policy:
            return False
        x.apply_policies(policy, op)
        return True

    def reapply(self, operator: bool, queues: Iterable[Queue], exchanges: Iterable[Any]) -> Iterator[int]:
        """One set (``operator`` or not) changed: re-resolve that set for every queue and exchange,
        apply where the outcome changed, and yield the count of changes so far every
        :data:`REAPPLY_CHUNK` objects (a caller on the event loop lets other work run there)."""
        ps = self.set_of(operator)
        n = done = 0
        for q in queues:
            if q.deleted:
                continue
            new = _ref(ps.match_queue(q.name, q.type_name))
            held = q.operator_policy if operator else q.policy
            if new is not held and new != held:
                policy, op = (q.policy, new) if operator else (new, q.operator_policy)
                q.apply_policies(policy, op)
                n += 1
            done += 1
            if done % REAPPLY_CHUNK == 0:
                yield n
        for x in exchanges:
            if not x.name:
                continue  # the default exchange (see apply_to_exchange)
            new = _ref(ps.match_exchange(x.name))
            held = x.operator_policy if operator else x.policy
            if new is not held and new != held:
                policy, op = (x.policy, new) if operator else (new, x.operator_policy)
                x.apply_policies(policy, op)
                n += 1
            done += 1
            if done % REAPPLY_CHUNK == 0:
                yield n
        yield n
