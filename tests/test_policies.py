"""Policies and operator policies against a real broker: the HTTP API (RabbitMQ's shapes and
texts), pika clients seeing a policy act on live queues, the CLI verbs, and a restart."""

from __future__ import annotations

import time

import pika
import pika.exceptions
import pytest

from conftest import _make
from storage import meta
from test_admin_cli import run
from test_management_api import Http, connect, mgmt_url, q, wait_for


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    b = _make(tmp_path_factory.mktemp("policies-broker"), extra=["--management-port", "0"]).start()
    b.url = mgmt_url(b)
    yield b
    b.stop()


@pytest.fixture
def api(pb) -> Http:
    return Http(pb.url)


def put_policy(api: Http, name: str, pattern: str, definition: dict, vhost: str = "/", kind: str = "policies",
               **extra):
    return api.put(f"/api/{kind}/{q(vhost)}/{q(name)}", {"pattern": pattern, "definition": definition, **extra})


def queue_json(api: Http, name: str, vhost: str = "/") -> dict:
    r = api.get(f"/api/queues/{q(vhost)}/{q(name)}")
    assert r.status == 200, r
    return r.json


def publish(ch, queue: str, n: int, prefix: str = "m") -> None:
    for i in range(n):
        ch.basic_publish("", queue, f"{prefix}{i}".encode())


# -- the API: shapes, texts, bad input ------------------------------------------------------

def test_policy_put_get_list_delete(api, uid):
    name = f"p{uid}"
    r = put_policy(api, name, f"^pq{uid}", {"max-length": 10}, priority=3, **{"apply-to": "queues"})
    assert r.status == 201, r
    assert put_policy(api, name, f"^pq{uid}", {"max-length": 11}, priority=3, **{"apply-to": "queues"}).status == 204
    want = {"vhost": "/", "name": name, "pattern": f"^pq{uid}", "apply-to": "queues",
            "definition": {"max-length": 11}, "priority": 3}
    assert api.get(f"/api/policies/%2F/{name}").json == want
    assert want in api.get("/api/policies").json
    assert want in api.get("/api/policies/%2F").json
    # defaults: priority 0, apply-to all
    assert put_policy(api, name + "d", "^x", {"expires": 1000}).status == 201
    got = api.get(f"/api/policies/%2F/{name}d").json
    assert (got["priority"], got["apply-to"]) == (0, "all")
    assert api.delete(f"/api/policies/%2F/{name}").status == 204
    assert api.delete(f"/api/policies/%2F/{name}").status == 404
    assert api.get(f"/api/policies/%2F/{name}").status == 404
    assert api.delete(f"/api/policies/%2F/{name}d").status == 204
    assert put_policy(api, name, "^x", {"max-length": 1}, vhost=f"novhost{uid}").status == 404
    assert api.get(f"/api/policies/novhost{uid}").status == 404


@pytest.mark.parametrize("body, reason", [
    ({"pattern": "^a", "definition": {"max-lenght": 5}},
     'Validation failed\n\n[{<<"max-lenght">>,5}] are not recognised policy settings\n'),
    ({"pattern": "^a", "definition": {"max-length": "ten"}},
     'Validation failed\n\n<<"ten">> is not a valid maximum length\n'),
    ({"pattern": "^a", "definition": {"max-length": -1}}, "-1 is not a valid maximum length"),
    ({"pattern": "^a", "definition": {"expires": 0}}, "0 is not a valid queue expiry"),
    ({"pattern": "^a", "definition": {"message-ttl": 1.5}}, "1.5 is not a valid message TTL"),
    ({"pattern": "^a", "definition": {"overflow": "drop-tail"}}, '<<"drop-tail">> is not a valid overflow value'),
    ({"pattern": "^a", "definition": {"dead-letter-exchange": 7}}, "7 is not a valid dead letter exchange name"),
    ({"pattern": "^a", "definition": {"dead-letter-exchange": "x" * 256}}, "is not a valid dead letter exchange"),
    ({"pattern": "^a", "definition": {"max-age": "7 days"}}, '<<"7 days">> is not a valid max age'),
    ({"pattern": "^a", "definition": {"delivery-limit": "x"}}, '<<"x">> is not a valid delivery limit'),
    ({"pattern": "^a", "definition": {"dead-letter-strategy": "sometimes"}}, "is not a valid dead letter strategy"),
    ({"pattern": "^a", "definition": {}}, "Validation failed\n\nno policy provided\n"),
    ({"pattern": "^a", "definition": ["max-length", 1]}, "definition must be a dictionary"),
    ({"pattern": "(a", "definition": {"max-length": 1}}, "pattern should be regular expression but is invalid"),
    ({"pattern": "(a)\\1", "definition": {"max-length": 1}}, "pattern should be regular expression but is invalid"),
    ({"pattern": "a" * 5000, "definition": {"max-length": 1}}, "pattern should be regular expression but is invalid"),
    ({"pattern": 5, "definition": {"max-length": 1}}, "pattern should be a binary but was 5"),
    ({"pattern": "^a", "definition": {"max-length": 1}, "apply-to": "topics"},
     "apply-to 'topics' unrecognised; should be one of: 'queues', 'classic_queues',  'quorum_queues', 'streams', "
     "'exchanges', or 'all'"),
    ({"pattern": "^a", "definition": {"max-length": 1}, "priority": "high"},
     'priority should be a number, actually was <<"high">>'),
    ({"definition": {"max-length": 1}}, "[{key_missing,pattern}]"),
    ({"pattern": "^a"}, "[{key_missing,definition}]"),
])
def test_bad_policy_is_refused_and_changes_nothing(api, uid, body, reason):
    name = f"bad{uid}"
    assert put_policy(api, name, "^keep", {"max-length": 7}).status == 201
    r = api.put(f"/api/policies/%2F/{name}", body)
    assert r.status == 400, r
    assert r.json["error"] == "bad_request"
    assert reason in r.json["reason"], r.json["reason"]
    assert api.get(f"/api/policies/%2F/{name}").json["definition"] == {"max-length": 7}
    api.delete(f"/api/policies/%2F/{name}")


def test_bad_json_and_long_name(api, uid):
    r = api.req("PUT", f"/api/policies/%2F/j{uid}", raw=b'{"pattern": "^a", "definition": {', headers={
        "Content-Type": "application/json"})
    assert r.status == 400 and "invalid JSON" in r.json["reason"]
    r = put_policy(api, "n" * 256, "^a", {"max-length": 1})
    assert r.status == 400 and "policy name" in r.json["reason"]


def test_operator_policy_keys_and_permissions(api, uid):
    r = put_policy(api, f"op{uid}", "^a", {"dead-letter-exchange": "dlx"}, kind="operator-policies")
    assert r.status == 400
    assert '[{<<"dead-letter-exchange">>,<<"dlx">>}] are not recognised policy settings' in r.json["reason"]
    assert put_policy(api, f"op{uid}", "^a", {"max-length": 5, "overflow": "reject-publish"},
                      kind="operator-policies").status == 201
    assert api.get(f"/api/operator-policies/%2F/op{uid}").json["definition"] == {"max-length": 5,
                                                                              "overflow": "reject-publish"}
    assert api.delete(f"/api/operator-policies/%2F/op{uid}").status == 204
    # a policymaker with permissions writes policies, not operator policies; a management user neither
    pm, mg = f"pm{uid}", f"mg{uid}"
    api.ok("PUT", f"/api/users/{pm}", {"password": "pw", "tags": "policymaker"})
    api.ok("PUT", f"/api/users/{mg}", {"password": "pw", "tags": "management"})
    for u in (pm, mg):
        api.ok("PUT", f"/api/permissions/%2F/{u}", {"configure": ".*", "write": ".*", "read": ".*"})
    assert put_policy(api.as_user(pm, "pw"), f"pm{uid}", "^a", {"max-length": 1}).status == 201
    assert put_policy(api.as_user(pm, "pw"), f"pm{uid}", "^a", {"max-length": 1},
                      kind="operator-policies").status == 403
    r = put_policy(api.as_user(mg, "pw"), f"mg{uid}", "^a", {"max-length": 1})
    assert r.status == 403 and r.json["reason"] == "User not authorised to access object"
    assert api.as_user(mg, "pw").get("/api/policies").status == 403
    api.delete(f"/api/policies/%2F/pm{uid}")


# -- policies acting on queues, seen by clients ------------------------------------------------

def test_max_length_policy_trims_a_live_queue_at_once(api, pb, uid):
    qn = f"ml{uid}"
    conn = connect(pb)
    ch = conn.channel()
    ch.queue_declare(qn)
    publish(ch, qn, 10)
    wait_for(lambda: queue_json(api, qn)["messages"] == 10)
    assert queue_json(api, qn)["policy"] is None and queue_json(api, qn)["operator_policy"] is None
    assert put_policy(api, f"ml{uid}", f"^{qn}$", {"max-length": 3}, **{"apply-to": "queues"}).status == 201
    got = queue_json(api, qn)
    assert got["messages"] == 3 and got["policy"] == f"ml{uid}"
    assert got["effective_policy_definition"] == {"max-length": 3}
    # drop-head: the newest three are kept
    bodies = [ch.basic_get(qn, auto_ack=True)[2] for _ in range(3)]
    assert bodies == [b"m7", b"m8", b"m9"]
    # removed: the queue takes any number again
    assert api.delete(f"/api/policies/%2F/ml{uid}").status == 204
    publish(ch, qn, 5)
    wait_for(lambda: queue_json(api, qn)["messages"] == 5)
    assert queue_json(api, qn)["policy"] is None
    conn.close()


def test_dead_letter_policy_makes_rejects_dead_letter(api, pb, uid):
    qn, dlq, dlx = f"dq{uid}", f"dlq{uid}", f"dlx{uid}"
    conn = connect(pb)
    ch = conn.channel()
    ch.exchange_declare(dlx, "fanout")
    ch.queue_declare(dlq)
    ch.queue_bind(dlq, dlx)
    ch.queue_declare(qn)
    assert put_policy(api, f"dl{uid}", f"^{qn}$", {"dead-letter-exchange": dlx}).status == 201
    ch.basic_publish("", qn, b"bad")
    method, _props, _body = ch.basic_get(qn)
    ch.basic_reject(method.delivery_tag, requeue=False)
    wait_for(lambda: queue_json(api, dlq)["messages"] == 1)
    method, props, body = ch.basic_get(dlq, auto_ack=True)
    assert body == b"bad" and props.headers["x-death"][0]["reason"] == "rejected"
    assert props.headers["x-death"][0]["queue"] == qn
    api.delete(f"/api/policies/%2F/dl{uid}")
    conn.close()


def test_message_ttl_policy_expires_messages_published_after_it(api, pb, uid):
    # as RabbitMQ's classic queues: a message's deadline is set when it is enqueued, so a new
    # message-ttl policy expires the messages that come after it, not those already queued
    # (and, as there, expiry happens at the head of the queue)
    qn = f"ttl{uid}"
    conn = connect(pb)
    ch = conn.channel()
    ch.queue_declare(qn)
    ch.basic_publish("", qn, b"before")
    assert put_policy(api, f"ttl{uid}", f"^{qn}$", {"message-ttl": 100}).status == 201
    ch.basic_publish("", qn, b"after")
    time.sleep(0.4)
    assert ch.basic_get(qn, auto_ack=True)[2] == b"before"
    assert ch.basic_get(qn, auto_ack=True) == (None, None, None)
    ch.basic_publish("", qn, b"later")
    wait_for(lambda: queue_json(api, qn)["messages"] == 0, timeout=5, what="the new message expired")
    api.delete(f"/api/policies/%2F/ttl{uid}")
    conn.close()


def test_expires_policy_deletes_an_unused_queue(api, pb, uid):
    qn = f"exp{uid}"
    conn = connect(pb)
    ch = conn.channel()
    ch.queue_declare(qn)
    conn.close()
    assert put_policy(api, f"exp{uid}", f"^{qn}$", {"expires": 200}).status == 201
    wait_for(lambda: api.get(f"/api/queues/%2F/{qn}").status == 404, timeout=5, what="queue expired")
    api.delete(f"/api/policies/%2F/exp{uid}")


def test_priority_apply_to_and_queue_type(api, pb, uid):
    qn = f"pri{uid}"
    conn = connect(pb)
    ch = conn.channel()
    ch.queue_declare(qn)
    pat = f"^pri{uid}"
    assert put_policy(api, f"a{uid}", pat, {"max-length": 100}, priority=1).status == 201
    assert put_policy(api, f"b{uid}", pat, {"max-length": 50}, priority=1).status == 201
    assert queue_json(api, qn)["policy"] == f"a{uid}"  # a tie: the first name wins
    assert put_policy(api, f"c{uid}", pat, {"max-length": 10}, priority=5).status == 201
    assert queue_json(api, qn)["policy"] == f"c{uid}"
    # apply-to exchanges and a quorum-only key never apply to a classic queue
    assert put_policy(api, f"d{uid}", pat, {"max-length": 1}, priority=9, **{"apply-to": "exchanges"}).status == 201
    assert put_policy(api, f"e{uid}", pat, {"delivery-limit": 3}, priority=9).status == 201
    assert put_policy(api, f"f{uid}", pat, {"max-length": 2}, priority=8,
                      **{"apply-to": "quorum_queues"}).status == 201
    assert queue_json(api, qn)["policy"] == f"c{uid}"
    assert put_policy(api, f"g{uid}", pat, {"max-length": 4}, priority=8,
                      **{"apply-to": "classic_queues"}).status == 201
    assert queue_json(api, qn)["policy"] == f"g{uid}"
    # a queue declared later is resolved at once
    ch.queue_declare(qn + "x")
    assert queue_json(api, qn + "x")["policy"] == f"g{uid}"
    for p in "abcdefg":
        assert api.delete(f"/api/policies/%2F/{p}{uid}").status == 204
    assert queue_json(api, qn)["policy"] is None
    conn.close()


def test_arguments_policies_and_operator_policies_combine(api, pb, uid):
    qn = f"mix{uid}"
    conn = connect(pb)
    ch = conn.channel()
    ch.queue_declare(qn, arguments={"x-max-length": 5, "x-overflow": "reject-publish"})
    pat = f"^{qn}$"
    # a limit: the lower of argument and policy; overflow: the argument wins
    assert put_policy(api, f"pol{uid}", pat, {"max-length": 3, "overflow": "drop-head"}).status == 201
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("", qn, f"k{i}".encode())
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", qn, b"refused")
    assert queue_json(api, qn)["messages"] == 3
    # an operator policy tightens the limit below both (with reject-publish nothing queued is
    # dropped, as in RabbitMQ: the queue refuses until it is below the limit)
    assert put_policy(api, f"op{uid}", pat, {"max-length": 2}, kind="operator-policies").status == 201
    got = queue_json(api, qn)
    assert got["messages"] == 3 and got["operator_policy"] == f"op{uid}" and got["policy"] == f"pol{uid}"
    ch.basic_get(qn, auto_ack=True)
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", qn, b"refused")
    ch.basic_get(qn, auto_ack=True)
    ch.basic_publish("", qn, b"taken")
    assert got["effective_policy_definition"] == {"max-length": 2, "overflow": "drop-head"}
    # an operator policy cannot loosen it: the policy's 3 still holds
    assert put_policy(api, f"op{uid}", pat, {"max-length": 1000}, kind="operator-policies").status == 204
    ch.basic_publish("", qn, b"third")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", qn, b"refused")
    assert api.delete(f"/api/operator-policies/%2F/op{uid}").status == 204
    assert api.delete(f"/api/policies/%2F/pol{uid}").status == 204
    assert queue_json(api, qn)["effective_policy_definition"] == {}
    conn.close()


def test_alternate_exchange_policy(api, pb, uid):
    x, ae, aq = f"ax{uid}", f"ae{uid}", f"aq{uid}"
    conn = connect(pb)
    ch = conn.channel()
    ch.exchange_declare(x, "direct")
    ch.exchange_declare(ae, "fanout")
    ch.queue_declare(aq)
    ch.queue_bind(aq, ae)
    assert "policy" not in api.get(f"/api/exchanges/%2F/{x}").json
    assert put_policy(api, f"ae{uid}", f"^{x}$", {"alternate-exchange": ae},
                      **{"apply-to": "exchanges"}).status == 201
    assert api.get(f"/api/exchanges/%2F/{x}").json["policy"] == f"ae{uid}"
    ch.basic_publish(x, "nowhere", b"lost?")
    wait_for(lambda: queue_json(api, aq)["messages"] == 1)
    api.delete(f"/api/policies/%2F/ae{uid}")
    ch.basic_publish(x, "nowhere", b"dropped")
    time.sleep(0.2)
    assert queue_json(api, aq)["messages"] == 1
    conn.close()


# -- the CLI ---------------------------------------------------------------------------------

def test_policy_cli_verbs(api, pb, uid):
    def cli(*args, check=True):
        return run(list(args), url=pb.url, check=check)

    r = cli("set-policy", "--priority", "2", "--apply-to", "queues", f"cli{uid}", f"^cli{uid}", '{"max-length":5}')
    assert r.stdout.strip() == (f'Setting policy "cli{uid}" for pattern "^cli{uid}" to "{{"max-length":5}}" with '
                                f'priority "2" for vhost "/" ...')
    assert api.get(f"/api/policies/%2F/cli{uid}").json["apply-to"] == "queues"
    out = cli("list-policies").stdout.splitlines()
    assert out[0].split() == ["vhost", "name", "pattern", "apply-to", "definition", "priority"]
    assert ["/", f"cli{uid}", f"^cli{uid}", "queues", '{"max-length":5}', "2"] in [ln.split() for ln in out]
    r = cli("set-policy", f"cli{uid}", "^x", '{"max-length":"five"}', check=False)
    assert r.returncode == 1 and '<<"five">> is not a valid maximum length' in r.stderr
    r = cli("set-policy", f"cli{uid}", "^x", "{not json", check=False)
    assert r.returncode == 1 and "Could not parse JSON document" in r.stderr
    assert api.get(f"/api/policies/%2F/cli{uid}").json["pattern"] == f"^cli{uid}"
    assert cli("clear-policy", f"cli{uid}").stdout.strip() == f'Clearing policy "cli{uid}" on vhost "/" ...'
    r = cli("clear-policy", f"cli{uid}", check=False)
    assert r.returncode == 1 and f"policy 'cli{uid}' does not exist" in r.stderr
    r = cli("set-operator-policy", f"oc{uid}", f"^oc{uid}", '{"message-ttl":1000}')
    assert r.stdout.startswith(f'Setting operator policy override "oc{uid}" for pattern')
    assert [p["name"] for p in (__import__("json").loads(cli("list-operator-policies", "--json").stdout))
            if p["name"] == f"oc{uid}"] == [f"oc{uid}"]
    assert cli("clear-operator-policy", f"oc{uid}").stdout.strip() == \
        f'Clearing operator policy "oc{uid}" on vhost "/" ...'


# -- durable -----------------------------------------------------------------------------------

def test_a_recovered_queue_is_trimmed_to_its_policy(fresh_broker):
    """The metadata holds a max-length policy but the queue's log holds more (the trim's acks were
    lost with the power, say): the queue is trimmed from the head as it comes back (RabbitMQ's queue
    applies its limits when it starts), and the trimmed messages are dead-lettered to a queue that
    came back too."""
    b = fresh_broker
    conn = connect(b)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("trimmed", durable=True)
    ch.queue_declare("keep", durable=True)
    for i in range(6):
        ch.basic_publish("", "keep", f"k{i}".encode(), pika.BasicProperties(delivery_mode=2))
    conn.close()
    b.stop()
    defs = meta.load(str(b.data_dir))
    defs.setdefault("policies", []).append({
        "vhost": "/", "name": "cap", "pattern": "^keep$", "apply-to": "queues", "priority": 0,
        "definition": {"max-length": 2, "dead-letter-exchange": "", "dead-letter-routing-key": "trimmed"}})
    meta.save(str(b.data_dir), defs)
    b.start()
    conn = connect(b)
    ch = conn.channel()
    assert ch.queue_declare("keep", durable=True).method.message_count == 2
    assert [ch.basic_get("keep", auto_ack=True)[2] for _ in range(2)] == [b"k4", b"k5"]
    assert [ch.basic_get("trimmed", auto_ack=True)[2] for _ in range(4)] == [b"k0", b"k1", b"k2", b"k3"]
    conn.close()


def test_policies_and_limits_survive_a_restart_and_travel_with_definitions(fresh_broker, uid):
    b = fresh_broker
    b.stop()
    b.extra = ["--management-port", "0"]
    b.start()
    api = Http(mgmt_url(b))
    conn = connect(b)
    ch = conn.channel()
    ch.queue_declare("keep", durable=True)
    for i in range(6):
        ch.basic_publish("", "keep", f"k{i}".encode(), pika.BasicProperties(delivery_mode=2))
    conn.close()
    assert put_policy(api, "cap", "^keep$", {"max-length": 4}, priority=1, **{"apply-to": "queues"}).status == 201
    assert put_policy(api, "opcap", "^keep$", {"max-length": 3}, kind="operator-policies").status == 201
    api.ok("PUT", "/api/vhost-limits/%2F/max-queues", {"value": 50})
    api.ok("PUT", "/api/users/lim", {"password": "pw", "tags": ""})
    api.ok("PUT", "/api/user-limits/lim/max-channels", {"value": 2})
    assert queue_json(api, "keep")["messages"] == 3
    b.stop()
    b.start()
    api = Http(mgmt_url(b))
    assert api.get("/api/policies/%2F/cap").json == {"vhost": "/", "name": "cap", "pattern": "^keep$",
                                                      "apply-to": "queues", "definition": {"max-length": 4},
                                                      "priority": 1}
    assert api.get("/api/operator-policies/%2F/opcap").json["definition"] == {"max-length": 3}
    got = queue_json(api, "keep")
    assert (got["policy"], got["operator_policy"], got["messages"]) == ("cap", "opcap", 3)
    assert api.get("/api/vhost-limits/%2F").json == [{"vhost": "/", "value": {"max-queues": 50}}]
    assert api.get("/api/user-limits/lim").json == [{"user": "lim", "value": {"max-channels": 2}}]
    api.ok("PUT", "/api/permissions/%2F/lim", {"configure": ".*", "write": ".*", "read": ".*"})
    conn = connect(b, "lim", "pw")
    conn.channel()
    conn.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        conn.channel()
    assert e.value.reply_code == 530 and "maximum allowed user limit of 2" in e.value.reply_text
    # the definitions export carries them in RabbitMQ's shape, and an import brings them back
    defs = api.get("/api/definitions").json
    assert {"vhost": "/", "name": "cap", "pattern": "^keep$", "apply-to": "queues",
            "definition": {"max-length": 4}, "priority": 1} in defs["policies"]
    assert {"vhost": "/", "component": "operator_policy", "name": "opcap",
            "value": {"pattern": "^keep$", "apply-to": "all", "definition": {"max-length": 3}, "priority": 0}} \
        in defs["parameters"]
    assert {"vhost": "/", "component": "vhost-limits", "name": "limits", "value": {"max-queues": 50}} \
        in defs["parameters"]
    assert [u["limits"] for u in defs["users"] if u["name"] == "lim"] == [{"max-channels": 2}]
    for path in ("/api/policies/%2F/cap", "/api/operator-policies/%2F/opcap", "/api/vhost-limits/%2F/max-queues",
                 "/api/user-limits/lim/max-channels"):
        assert api.delete(path).status == 204
    assert api.get("/api/policies").json == []
    r = api.post("/api/definitions", defs)
    assert r.status == 204, r
    assert api.get("/api/policies/%2F/cap").status == 200
    assert api.get("/api/operator-policies/%2F/opcap").status == 200
    assert api.get("/api/vhost-limits/%2F").json == [{"vhost": "/", "value": {"max-queues": 50}}]
    assert api.get("/api/user-limits/lim").json == [{"user": "lim", "value": {"max-channels": 2}}]
    # a bad policy in a document is reported, and the rest applied
    r = api.post("/api/definitions", {"policies": [{"vhost": "/", "name": "broken", "pattern": "^a",
                                                    "definition": {"max-length": "many"}}]})
    assert r.status == 400 and '<<"many">> is not a valid maximum length' in r.json["reason"]
    assert api.get("/api/policies/%2F/broken").status == 404
