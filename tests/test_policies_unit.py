"""Policies in-process: RabbitMQ's merge rules for arguments, policies and operator policies
per queue type, validation texts, matching order, and the cost of re-applying a policy to a
vhost of 10,000 queues (a real :class:`VHost` with no services: no loop, no store)."""

from __future__ import annotations

import time

import pytest

from broker.limits import LimitError, parse_limits, reached
from broker.policies import MAX_POLICIES_PER_VHOST, PolicyError, PolicySet, definition_errors, erl_term, parse_policy
from broker.queues.settings import effective_arguments, merge_policy_value, merged_definition
from broker.vhost import VHost


def policy(name: str, pattern: str, definition: dict, priority: int = 0, apply_to: str = "all",
           operator: bool = False, vhost: str = "/"):
    return parse_policy(vhost, name, {"pattern": pattern, "definition": definition, "priority": priority,
                                      "apply-to": apply_to}, operator)


# -- merge rules -------------------------------------------------------------------------------

def test_policy_fills_in_and_the_lower_limit_wins_for_classic_queues():
    args = {"x-max-length": 10, "x-overflow": "reject-publish", "x-dead-letter-exchange": "a"}
    pol = {"max-length": 5, "overflow": "drop-head", "dead-letter-exchange": "b", "message-ttl": 100}
    assert effective_arguments(args, pol) == {
        "x-max-length": 5, "x-overflow": "reject-publish", "x-dead-letter-exchange": "a", "x-message-ttl": 100}
    assert effective_arguments({"x-max-length": 2}, {"max-length": 5}) == {"x-max-length": 2}
    assert effective_arguments({}, None, None) == {}


def test_operator_policy_merges_with_the_policy_first():
    assert merge_policy_value("max-length", 10, 3) == 3
    assert merge_policy_value("max-length", 3, 10) == 3
    assert merge_policy_value("overflow", "drop-head", "reject-publish") == "reject-publish"
    assert merge_policy_value("delivery-limit", -1, 5) == 5  # unlimited gives way to a limit
    assert merge_policy_value("delivery-limit", 7, 5) == 5
    assert merged_definition({"max-length": 10, "dead-letter-exchange": "d"}, {"max-length": 4, "expires": 9}) == {
        "max-length": 4, "dead-letter-exchange": "d", "expires": 9}
    # the merged value then meets the argument: for a classic queue the argument's overflow wins
    eff = effective_arguments({"x-overflow": "drop-head", "x-max-length": 8}, {"max-length": 10},
                              {"max-length": 4, "overflow": "reject-publish"})
    assert eff == {"x-overflow": "drop-head", "x-max-length": 4}


def test_quorum_and_stream_rules():
    # quorum: the policy's overflow wins; delivery-limit: a negative (unlimited) gives way
    assert effective_arguments({"x-overflow": "drop-head"}, {"overflow": "reject-publish"}, None, "quorum") == {
        "x-overflow": "reject-publish"}
    assert effective_arguments({"x-delivery-limit": -1}, {"delivery-limit": 5}, None, "quorum") == {
        "x-delivery-limit": 5}
    assert effective_arguments({"x-delivery-limit": 3}, {"delivery-limit": 5}, None, "quorum") == {
        "x-delivery-limit": 3}
    # stream: the policy's retention wins over the argument, even when larger
    assert effective_arguments({"x-max-length-bytes": 100, "x-max-age": "1h"},
                               {"max-length-bytes": 5000, "max-age": "7D"}, None, "stream") == {
        "x-max-length-bytes": 5000, "x-max-age": "7D"}
    # consumer-timeout: the lower wins for every type
    for t in ("classic", "quorum", "stream"):
        assert effective_arguments({"x-consumer-timeout": 9000}, {"consumer-timeout": 1000}, None, t) == {
            "x-consumer-timeout": 1000}


# -- validation --------------------------------------------------------------------------------

def test_definition_errors_use_rabbitmqs_texts():
    assert definition_errors({"max-length": 1}) == []
    assert definition_errors({}) == ["no policy provided"]
    assert definition_errors({"nope": True}) == ["[{<<\"nope\">>,true}] are not recognised policy settings"]
    assert definition_errors({"message-ttl": None}) == ["null is not a valid message TTL"]
    assert definition_errors({"stream-max-segment-size-bytes": 4_000_000_000}) == [
        "4000000000 is not a valid segment size"]
    assert definition_errors({"dead-letter-exchange": "x"}, operator=True) == [
        '[{<<"dead-letter-exchange">>,<<"x">>}] are not recognised policy settings']
    assert definition_errors({"max-length": 2 ** 64}) == [f"{2 ** 64} is not a valid maximum length"]
    assert erl_term({"a": [1, "b"]}) == '#{<<"a">> => [1,<<"b">>]}'
    with pytest.raises(PolicyError) as e:
        policy("p", "(", {"max-length": 1}, priority="x")  # type: ignore[arg-type]
    text = str(e.value)
    assert text.startswith("Validation failed\n\npriority should be a number")
    assert "pattern should be regular expression but is invalid" in text


def test_limits_validation():
    assert parse_limits({"max-connections": 3, "max-queues": -1}, ("max-connections", "max-queues"), "limits") == {
        "max-connections": 3, "max-queues": -1}
    with pytest.raises(LimitError) as e:
        parse_limits({"max-channels": 1}, ("max-connections", "max-queues"), "limits")
    assert "Unrecognised terms [{<<\"max-channels\">>,1}] in limits" in str(e.value)
    assert reached({"max-queues": 0}, "max-queues", 0) == 0
    assert reached({"max-queues": 2}, "max-queues", 1) is None
    assert reached({"max-queues": 2}, "max-queues", 2) == 2
    assert reached({"max-queues": -1}, "max-queues", 10 ** 6) is None


# -- matching ----------------------------------------------------------------------------------

def test_matching_order_and_applicability():
    ps = PolicySet()
    ps.put(policy("b", "^q", {"max-length": 1}, priority=1))
    ps.put(policy("a", "^q", {"max-length": 2}, priority=1))
    assert ps.match_queue("q1", "classic").name == "a"  # a tie: name order
    ps.put(policy("z", "q", {"max-length": 3}, priority=2))
    assert ps.match_queue("xq", "classic").name == "z"  # searched, not anchored
    ps.put(policy("dl", "^q", {"delivery-limit": 3}, priority=9))
    assert ps.match_queue("q1", "classic").name == "z"  # delivery-limit is not a classic queue's
    assert ps.match_queue("q1", "quorum").name == "dl"
    ps.put(policy("ex", "^q", {"alternate-exchange": "ae"}, priority=99, apply_to="exchanges"))
    assert ps.match_exchange("q1").name == "ex" and ps.match_queue("q1", "classic").name == "z"
    assert ps.match_exchange("other") is None
    ps.delete("z")
    assert ps.match_queue("q1", "classic").name == "a"
    assert [p.name for p in ps] == ["ex", "dl", "a", "b"]


def test_a_vhost_holds_a_bounded_number_of_policies():
    ps = PolicySet()
    t0 = time.perf_counter()
    for i in range(MAX_POLICIES_PER_VHOST):
        ps.put(policy(f"p{i:04}", f"^q{i}$", {"max-length": i}))
    assert ps.match_queue("q77", "classic").name == "p0077"
    with pytest.raises(PolicyError) as e:
        ps.put(policy("one-more", "^x", {"max-length": 1}))
    assert f"already has {MAX_POLICIES_PER_VHOST} policies" in str(e.value)
    ps.put(policy("p0001", "^y$", {"max-length": 1}))  # replacing one is fine
    assert ps.match_queue("y", "classic").name == "p0001" and ps.match_queue("q1", "classic") is None
    assert time.perf_counter() - t0 < 10


def test_put_policy_applies_to_live_queues_and_exchanges():
    vh = VHost("/")
    qa, _ = vh.declare_queue("orders.a", False, False, False, {}, None)
    qb, _ = vh.declare_queue("billing", False, False, False, {"x-max-length": 1}, None)
    x, _ = vh.declare_exchange("orders.x", "direct", False, False, False, {})
    assert vh.put_policy(policy("p", "^orders", {"max-length": 7, "alternate-exchange": "ae"}))
    assert qa.policy.name == "p" and qa.effective == {"x-max-length": 7}
    assert qb.policy is None and x.alternate == "ae" and x.policy.name == "p"
    assert not vh.put_policy(policy("p", "^billing", {"max-length": 5}))
    assert qa.policy is None and qa.effective == {} and x.alternate is None
    assert qb.policy.name == "p" and qb.effective == {"x-max-length": 1}  # the argument's lower limit
    assert vh.put_policy(policy("op", ".", {"max-length": 0}, operator=True), operator=True)
    assert qa.effective == {"x-max-length": 0} and qb.effective == {"x-max-length": 0}
    qc, _ = vh.declare_queue("orders.c", False, False, False, {}, None)
    assert qc.operator_policy.name == "op" and qc.max_length == 0  # resolved at declare
    assert vh.delete_policy("op", operator=True) and not vh.delete_policy("op", operator=True)
    assert qc.operator_policy is None and qc.max_length is None
    # predeclared exchanges take policies as in RabbitMQ; the default exchange does not
    vh.put_policy(policy("every", "", {"alternate-exchange": "ae"}, priority=-1, apply_to="exchanges"))
    assert vh.exchanges["amq.direct"].alternate == "ae" and vh.exchanges[""].alternate is None


def _apply_in_steps(vh: VHost, p, operator: bool = False) -> tuple[float, float]:
    """Store ``p`` and apply it step by step as the HTTP API does: (total s, longest step s)."""
    t0 = time.perf_counter()
    vh.store_policy(p, operator)
    longest = 0.0
    last = time.perf_counter()
    for _ in vh.reapply_policies(operator):
        now = time.perf_counter()
        longest = max(longest, now - last)
        last = now
    return time.perf_counter() - t0, longest


def test_a_policy_change_with_10k_queues_is_quick_and_keeps_the_loop_free():
    n = 10_000
    vh = VHost("/")
    for i in range(n):
        vh.declare_queue(f"svc{i % 10}.q{i}", False, False, False, {}, None)
    timings = {
        "matching all": _apply_in_steps(vh, policy("all", ".*", {"max-length": 1000})),
        "matching a tenth": _apply_in_steps(vh, policy("some", "^svc3\\.", {"message-ttl": 60000}, priority=1)),
        "matching none": _apply_in_steps(vh, policy("none", "^nothing$", {"message-ttl": 1}, priority=2)),
        "operator, matching all": _apply_in_steps(vh, policy("op", "", {"max-length": 10}, operator=True), True),
    }
    assert all(q.policy is not None and q.operator_policy is not None for q in vh.queues.values())
    t0 = time.perf_counter()
    vh.declare_queue("svc3.new", False, False, False, {}, None)
    declare = time.perf_counter() - t0
    print(f"\n{n} queues: " + "; ".join(f"a policy {k} applied in {t * 1000:.0f} ms (longest step "
                                        f"{step * 1000:.1f} ms)" for k, (t, step) in timings.items())
          + f"; a declare resolves in {declare * 1e6:.0f} us")
    assert vh.queues["svc3.new"].policy.name == "some"
    # generous bounds (a shared 2-core machine): the whole change is quick, and no step holds
    # the event loop for long
    assert all(t < 3.0 and step < 0.25 for t, step in timings.values()), timings
