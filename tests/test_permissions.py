"""Users, vhosts and permissions with real AMQP clients (pika), managed through the HTTP API.

The permission matrix: each AMQP operation is tried by user 'bob' with full
permissions (allowed), then with each of the configure / write / read regexes
emptied (an empty regex matches nothing, as in RabbitMQ).  It must be refused
exactly when the operation needs that regex, with RabbitMQ's 403 text naming
the resource that was checked.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pika
import pika.exceptions
import pytest

from broker.auth import hash_password
from conftest import ROOT, _make
from test_management_api import Http, connect, mgmt_url, wait_for

FULL = {"configure": ".*", "write": ".*", "read": ".*"}


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    b = _make(tmp_path_factory.mktemp("perm-broker"), extra=["--management-port", "0"]).start()
    b.url = mgmt_url(b)
    api = Http(b.url)
    assert api.put("/api/users/bob", {"password": "bobpw", "tags": ""}).status in (201, 204)
    yield b
    b.stop()


@pytest.fixture(scope="module")
def guest_ch(pb):
    conn = connect(pb)
    yield conn
    conn.close()


def reset_topology(conn) -> None:
    """What every case starts from: queue q bound to direct exchange x, exchange xd bound to x."""
    ch = conn.channel()
    ch.queue_declare("q")
    ch.exchange_declare("x", "direct")
    ch.exchange_declare("xd", "fanout")
    ch.queue_bind("q", "x", "k")
    ch.exchange_bind("xd", "x", "k")
    ch.close()


# each operation: (name, what it does on a channel, [(regex, kind, resource name checked)])
def _publish(ch, exchange):
    ch.basic_publish(exchange, "q", b"m")
    ch.basic_qos(prefetch_count=0)  # a round trip: a refused publish closes the channel before this returns


OPERATIONS = [
    ("queue.declare", lambda ch: ch.queue_declare("q"), [("configure", "queue", "q")]),
    ("queue.delete", lambda ch: ch.queue_delete("q"), [("configure", "queue", "q")]),
    ("exchange.declare", lambda ch: ch.exchange_declare("x", "direct"), [("configure", "exchange", "x")]),
    ("exchange.delete", lambda ch: ch.exchange_delete("x"), [("configure", "exchange", "x")]),
    ("queue.bind", lambda ch: ch.queue_bind("q", "x", "k2"), [("write", "queue", "q"), ("read", "exchange", "x")]),
    ("queue.unbind", lambda ch: ch.queue_unbind("q", "x", "k"), [("write", "queue", "q"), ("read", "exchange", "x")]),
    ("exchange.bind", lambda ch: ch.exchange_bind("xd", "x", "k2"),
     [("write", "exchange", "xd"), ("read", "exchange", "x")]),
    ("exchange.unbind", lambda ch: ch.exchange_unbind("xd", "x", "k"),
     [("write", "exchange", "xd"), ("read", "exchange", "x")]),
    ("basic.publish", lambda ch: _publish(ch, "x"), [("write", "exchange", "x")]),
    ("basic.publish default", lambda ch: _publish(ch, ""), [("write", "exchange", "amq.default")]),
    ("basic.consume", lambda ch: ch.basic_consume("q", lambda *a: None), [("read", "queue", "q")]),
    ("basic.get", lambda ch: ch.basic_get("q"), [("read", "queue", "q")]),
    ("queue.purge", lambda ch: ch.queue_purge("q"), [("read", "queue", "q")]),
]


@pytest.mark.parametrize("op", OPERATIONS, ids=[o[0] for o in OPERATIONS])
def test_permission_matrix(pb, guest_ch, op):
    name, action, needs = op
    api = Http(pb.url)
    api.put("/api/permissions/%2F/bob", FULL)
    bob = connect(pb, "bob", "bobpw")
    try:
        for emptied in (None, "configure", "write", "read"):
            reset_topology(guest_ch)
            perm = dict(FULL)
            if emptied is not None:
                perm[emptied] = ""
            assert api.put("/api/permissions/%2F/bob", perm).status in (201, 204)
            refused_by = [n for n in needs if n[0] == emptied]
            ch = bob.channel()
            if not refused_by:
                action(ch)
                assert ch.is_open, (name, emptied)
                ch.close()
                continue
            _what, kind, res = refused_by[0]
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
                action(ch)
            assert ei.value.reply_code == 403, (name, emptied)
            assert ei.value.reply_text == (
                f"ACCESS_REFUSED - access to {kind} '{res}' in vhost '/' refused for user 'bob'"
            ), (name, emptied)
            assert bob.is_open  # a channel error, not a connection error
    finally:
        if bob.is_open:
            bob.close()


def test_regexes_are_searched_not_anchored(pb, guest_ch):
    api = Http(pb.url)
    api.put("/api/permissions/%2F/bob", {"configure": "^bob-", "write": "out", "read": ".*"})
    bob = connect(pb, "bob", "bobpw")  # the permissions may be narrow: having some opens the vhost
    try:
        ch = bob.channel()
        ch.queue_declare("bob-1", auto_delete=True)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
            ch.queue_declare("alice-1")
        assert ei.value.reply_text == "ACCESS_REFUSED - access to queue 'alice-1' in vhost '/' refused for user 'bob'"
        ch = bob.channel()
        guest_ch.channel().exchange_declare("fan-out-x", "fanout")
        ch.basic_publish("fan-out-x", "", b"ok")  # 'out' is found inside the name
        ch.basic_qos(prefetch_count=0)
        assert ch.is_open
    finally:
        bob.close()


def test_vhost_without_permissions_is_refused(pb):
    api = Http(pb.url)
    api.put("/api/vhosts/v")
    api.delete("/api/permissions/v/bob")
    with pytest.raises(pika.exceptions.AMQPConnectionError) as ei:
        connect(pb, "bob", "bobpw", vhost="v")
    # pika reports a Connection.Close answering Connection.Open as a probable access denial,
    # carrying the broker's code and text
    assert isinstance(ei.value, pika.exceptions.ProbableAccessDeniedError), repr(ei.value)
    assert """(530) "NOT_ALLOWED - access to vhost 'v' refused for user 'bob'\"""" in str(ei.value)
    api.put("/api/permissions/v/bob", FULL)
    connect(pb, "bob", "bobpw", vhost="v").close()


def _expect_closed_320(conn, why: str) -> None:
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as ei:
        conn.process_data_events(time_limit=2)
        conn.channel().queue_declare("", exclusive=True)
    assert ei.value.reply_code == 320
    assert ei.value.reply_text == f"CONNECTION_FORCED - {why}"


def test_deleting_a_user_or_changing_its_password_closes_its_connections(pb):
    api = Http(pb.url)
    for u in ("carl", "dora"):
        api.put(f"/api/users/{u}", {"password": "pw"})
        api.put(f"/api/permissions/%2F/{u}", FULL)
    carl = connect(pb, "carl", "pw")
    dora = connect(pb, "dora", "pw")
    other = connect(pb)
    try:
        carl.channel()
        dora.channel()
        assert api.delete("/api/users/carl").status == 204
        _expect_closed_320(carl, "user 'carl' was deleted")
        assert api.put("/api/users/dora", {"password": "new"}).status == 204
        _expect_closed_320(dora, "user 'dora' password changed")
        # other users' connections carry on
        other.channel().queue_declare("", exclusive=True)
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            connect(pb, "dora", "pw")
        connect(pb, "dora", "new").close()
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            connect(pb, "carl", "pw")
    finally:
        for c in (carl, dora, other):
            if c.is_open:
                c.close()


def test_deleting_a_vhost_deletes_what_is_in_it(pb):
    api = Http(pb.url)
    api.put("/api/vhosts/doomed")
    api.put("/api/permissions/doomed/guest", FULL)
    api.put("/api/permissions/doomed/bob", FULL)
    conn = connect(pb, vhost="doomed")
    ch = conn.channel()
    ch.exchange_declare("dx", "topic", durable=True)
    ch.queue_declare("dq", durable=True)
    ch.queue_bind("dq", "dx", "#")
    ch.basic_publish("dx", "a", b"lost", pika.BasicProperties(delivery_mode=2))
    wait_for(lambda: api.get("/api/queues/doomed/dq").json["messages"] == 1, what="the message")
    assert api.delete("/api/vhosts/doomed").status == 204
    _expect_closed_320(conn, "vhost 'doomed' is deleted")
    assert api.get("/api/vhosts/doomed").status == 404
    assert "doomed" not in {p["vhost"] for p in api.get("/api/permissions").json}
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        connect(pb, vhost="doomed")
    # created again, it is empty
    api.put("/api/vhosts/doomed")
    api.put("/api/permissions/doomed/guest", FULL)
    assert api.get("/api/queues/doomed").json == []
    assert [x["name"] for x in api.get("/api/exchanges/doomed").json if not x["name"].startswith("amq.")] == [""]
    conn = connect(pb, vhost="doomed")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        conn.channel().queue_declare("dq", passive=True)
    assert ei.value.reply_code == 404
    conn.close()
    api.delete("/api/vhosts/doomed")


def test_users_vhosts_permissions_survive_a_restart(broker_factory):
    b = broker_factory(extra=["--management-port", "0"])
    api = Http(mgmt_url(b))
    api.put("/api/vhosts/keep")
    api.put("/api/users/erin", {"password": "erinpw", "tags": "monitoring"})
    api.put("/api/permissions/keep/erin", {"configure": "^erin-", "write": ".*", "read": ".*"})
    api.put("/api/users/guest", {"tags": "administrator,management"})
    api.put("/api/queues/keep/erin-q", {"durable": True})
    r = api.post("/api/exchanges/keep/amq.default/publish",
                 {"properties": {"delivery_mode": 2}, "routing_key": "erin-q", "payload": "kept"})
    assert r.json == {"routed": True}
    api.put("/api/users/gone", {"password": "x"})
    api.delete("/api/users/gone")
    port = b.port
    b.stop()
    b.start(port=port)
    api = Http(mgmt_url(b))
    assert api.get("/api/users/erin").json["tags"] == ["monitoring"]
    assert api.get("/api/users/guest").json["tags"] == ["administrator", "management"]
    assert api.get("/api/users/gone").status == 404
    assert api.get("/api/permissions/keep/erin").json == {
        "user": "erin", "vhost": "keep", "configure": "^erin-", "write": ".*", "read": ".*"}
    conn = connect(b, "erin", "erinpw", vhost="keep")
    try:
        ch = conn.channel()
        _m, _p, body = ch.basic_get("erin-q", auto_ack=True)
        assert body == b"kept"
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
            ch.queue_declare("other")
        assert ei.value.reply_code == 403
    finally:
        conn.close()


def _topology(api: Http) -> dict:
    d = api.get("/api/definitions").json
    return {
        "vhosts": sorted(v["name"] for v in d["vhosts"]),
        "users": sorted((u["name"], u["password_hash"], tuple(u["tags"])) for u in d["users"]),
        "permissions": sorted(json.dumps(p, sort_keys=True) for p in d["permissions"]),
        "exchanges": sorted(json.dumps(x, sort_keys=True) for x in d["exchanges"]),
        "queues": sorted(json.dumps(x, sort_keys=True) for x in d["queues"]),
        "bindings": sorted(json.dumps(x, sort_keys=True) for x in d["bindings"]),
    }


def test_definitions_round_trip(broker_factory, tmp_path):
    a = broker_factory(extra=["--management-port", "0"], name="a")
    api_a = Http(mgmt_url(a))
    api_a.put("/api/vhosts/shop")
    api_a.put("/api/users/frank", {"password": "frankpw", "tags": ["management"]})
    api_a.put("/api/permissions/shop/frank", {"configure": "^f", "write": ".*", "read": "^(f|amq)"})
    api_a.put("/api/permissions/shop/guest", FULL)
    api_a.put("/api/exchanges/shop/orders", {"type": "topic", "durable": True})
    api_a.put("/api/exchanges/shop/audit", {"type": "headers", "durable": True, "arguments": {"alternate-exchange": "ae"}})
    api_a.put("/api/queues/shop/fq", {"durable": True, "arguments": {"x-message-ttl": 1000, "x-max-length": 7}})
    api_a.post("/api/bindings/shop/e/orders/q/fq", {"routing_key": "order.*"})
    api_a.post("/api/bindings/shop/e/orders/e/audit", {"routing_key": "#"})
    api_a.post("/api/bindings/shop/e/audit/q/fq", {"routing_key": "", "arguments": {"x-match": "all", "k": "v"}})
    exported = tmp_path / "defs.json"
    env = {"BROKER_URL": api_a.base, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "cli", "export-definitions", str(exported)], cwd=ROOT, check=True,
                   env=env, capture_output=True)
    b = broker_factory(extra=["--management-port", "0"], name="b")
    api_b = Http(mgmt_url(b))
    assert api_b.post("/api/definitions", json.loads(exported.read_text())).status == 204
    assert _topology(api_b) == _topology(api_a)
    # the imported user logs in with its password, and its permissions hold
    conn = connect(b, "frank", "frankpw", vhost="shop")
    try:
        ch = conn.channel()
        ch.basic_publish("orders", "order.1", b"o1")
        _m, _p, body = ch.basic_get("fq", auto_ack=True)
        assert body == b"o1"
        with pytest.raises(pika.exceptions.ChannelClosedByBroker):
            ch.queue_declare("gq")
    finally:
        conn.close()


def test_hand_written_rabbitmq_definitions_import(broker_factory, tmp_path):
    """A definitions file as RabbitMQ 3.x documents and exports it, written by hand."""
    defs = {
        "rabbit_version": "3.8.9",
        "rabbitmq_version": "3.8.9",
        "product_name": "RabbitMQ",
        "product_version": "3.8.9",
        "users": [
            {"name": "carol", "password_hash": hash_password("s3cret"),
             "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": "monitoring,management"},
            {"name": "admin2", "password_hash": hash_password("adminpw"),
             "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": "administrator"},
        ],
        "vhosts": [{"name": "prod"}, {"name": "/"}],
        "permissions": [
            {"user": "carol", "vhost": "prod", "configure": "^carol-.*", "write": ".*", "read": ".*"},
            {"user": "admin2", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
        ],
        "topic_permissions": [],
        "parameters": [],
        "global_parameters": [{"name": "cluster_name", "value": "rabbit@oldhost"}],
        "policies": [],
        "queues": [
            {"name": "orders", "vhost": "prod", "durable": True, "auto_delete": False,
             "arguments": {"x-message-ttl": 60000, "x-max-length": 1000, "x-queue-type": "classic",
                           "x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "dead"}},
            {"name": "dead-letters", "vhost": "prod", "durable": True, "auto_delete": False, "arguments": {}},
        ],
        "exchanges": [
            {"name": "events", "vhost": "prod", "type": "topic", "durable": True, "auto_delete": False,
             "internal": False, "arguments": {}},
            {"name": "dlx", "vhost": "prod", "type": "direct", "durable": True, "auto_delete": False,
             "internal": False, "arguments": {}},
            {"name": "mirror", "vhost": "prod", "type": "fanout", "durable": True, "auto_delete": False,
             "internal": True, "arguments": {}},
        ],
        "bindings": [
            {"source": "events", "vhost": "prod", "destination": "orders", "destination_type": "queue",
             "routing_key": "order.*", "arguments": {}},
            {"source": "dlx", "vhost": "prod", "destination": "dead-letters", "destination_type": "queue",
             "routing_key": "dead", "arguments": {}},
            {"source": "events", "vhost": "prod", "destination": "mirror", "destination_type": "exchange",
             "routing_key": "#", "arguments": {}},
        ],
    }
    path = tmp_path / "rabbit.json"
    path.write_text(json.dumps(defs, indent=2))
    b = broker_factory(extra=["--management-port", "0"])
    url = mgmt_url(b)
    r = subprocess.run([sys.executable, "-m", "cli", "import-definitions", str(path)], cwd=ROOT,
                       env={"BROKER_URL": url, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    api = Http(url)
    assert api.get("/api/users/carol").json["tags"] == ["monitoring", "management"]
    assert api.get("/api/queues/prod/orders").json["arguments"]["x-max-length"] == 1000
    assert api.get("/api/exchanges/prod/mirror").json["internal"] is True
    assert {(x["source"], x["destination"]) for x in api.get("/api/bindings/prod").json} >= {
        ("events", "orders"), ("dlx", "dead-letters"), ("events", "mirror")}
    # carol logs in with her password; her permissions are those of the file
    conn = connect(b, "carol", "s3cret", vhost="prod")
    try:
        ch = conn.channel()
        ch.basic_publish("events", "order.42", b"an order")
        _m, _p, body = ch.basic_get("orders")
        assert body == b"an order"
        ch.basic_reject(_m.delivery_tag, requeue=False)  # dead-lettered through dlx
        _m, _p, body = wait_for(lambda: (lambda r: r if r[0] else None)(ch.basic_get("dead-letters", auto_ack=True)),
                                what="the dead letter")
        assert body == b"an order"
        ch.queue_declare("carol-tmp", auto_delete=True)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
            ch.queue_declare("someone-else")
        assert ei.value.reply_text == (
            "ACCESS_REFUSED - access to queue 'someone-else' in vhost 'prod' refused for user 'carol'")
    finally:
        conn.close()
    assert Http(url, "admin2", "adminpw").get("/api/users").status == 200
    assert Http(url, "carol", "s3cret").get("/api/whoami").json["name"] == "carol"
