"""The management HTTP API against a real broker process, with real HTTP and real AMQP clients.

One broker with the API on a free port (``--management-port 0``) serves the
module; its log tells the bound port.  Names are unique per test.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pika
import pika.exceptions
import pytest

from conftest import _make

MGMT_LINE = re.compile(r"management API listening on http://([^:\s]+):(\d+)")


def mgmt_url(b) -> str:
    """The management API's base URL, from the broker's (latest) log line."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = MGMT_LINE.findall(b.log_text())
        if found:
            host, port = found[-1]
            return f"http://{host}:{port}"
        time.sleep(0.05)
    raise AssertionError("no 'management API listening' line in the broker log:\n" + b.log_text()[-2000:])


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


class Resp:
    def __init__(self, status: int, raw: bytes, headers) -> None:
        self.status = status
        self.raw = raw
        self.headers = headers
        self.json = json.loads(raw) if raw else None

    def __repr__(self) -> str:
        return f"<{self.status} {self.raw[:300]!r}>"


class Http:
    """A tiny urllib client of the management API with basic auth."""

    def __init__(self, base: str, user: str | None = "guest", password: str = "guest") -> None:
        self.base = base
        self.user = user
        self.password = password

    def as_user(self, user: str | None, password: str = "") -> "Http":
        return Http(self.base, user, password)

    def req(self, method: str, path: str, body=None, headers: dict | None = None, raw: bytes | None = None) -> Resp:
        h = dict(headers or {})
        if self.user is not None:
            h["Authorization"] = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        r = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(r, timeout=15) as resp:
                return Resp(resp.status, resp.read(), resp.headers)
        except urllib.error.HTTPError as e:
            return Resp(e.code, e.read(), e.headers)

    def get(self, path: str, **kw) -> Resp:
        return self.req("GET", path, **kw)

    def put(self, path: str, body=None, **kw) -> Resp:
        return self.req("PUT", path, body if body is not None else {}, **kw)

    def post(self, path: str, body=None, **kw) -> Resp:
        return self.req("POST", path, body if body is not None else {}, **kw)

    def delete(self, path: str, **kw) -> Resp:
        return self.req("DELETE", path, **kw)

    def ok(self, method: str, path: str, body=None, expect=(200, 201, 204)) -> Resp:
        r = self.req(method, path, body)
        assert r.status in expect, (method, path, r)
        return r


def connect(b, user="guest", password="guest", vhost="/", **kw) -> pika.BlockingConnection:
    return pika.BlockingConnection(
        pika.ConnectionParameters(
            "127.0.0.1", b.port, vhost, pika.PlainCredentials(user, password), connection_attempts=1, **kw
        )
    )


@pytest.fixture(scope="module")
def mb(tmp_path_factory):
    b = _make(
        tmp_path_factory.mktemp("mgmt-broker"),
        extra=["--management-port", "0"],
        env={"BROKER_MANAGEMENT_SAMPLE_INTERVAL": "0.3"},
    ).start()
    b.url = mgmt_url(b)
    yield b
    b.stop()


@pytest.fixture
def api(mb) -> Http:
    return Http(mb.url)


def wait_for(pred, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -- authentication and tags -------------------------------------------------------------

def test_login_is_required_and_checked(api, uid):
    r = api.as_user(None).get("/api/overview")
    assert r.status == 401
    assert r.json == {"error": "not_authorized", "reason": "Login failed"}
    assert "Basic" in r.headers.get("WWW-Authenticate", "")
    assert api.as_user("guest", "wrong").get("/api/overview").status == 401
    assert api.as_user("nobody", "x").get("/api/whoami").status == 401
    # a user without a management tag cannot use the API at all
    api.ok("PUT", f"/api/users/plain{uid}", {"password": "pw", "tags": ""})
    r = api.as_user(f"plain{uid}", "pw").get("/api/whoami")
    assert r.status == 401 and r.json["reason"] == "Not management user"
    # a garbled Authorization header
    assert api.as_user(None).get("/api/overview", headers={"Authorization": "Basic !!!"}).status == 401
    r = api.get("/api/whoami")
    assert r.status == 200 and r.json["name"] == "guest" and r.json["tags"] == ["administrator"]


def test_tags_decide_what_a_user_may_do(api, mb, uid):
    mgr, mon, vh, other = f"mgr{uid}", f"mon{uid}", f"vh{uid}", f"other{uid}"
    api.ok("PUT", f"/api/users/{mgr}", {"password": "pw", "tags": "management"})
    api.ok("PUT", f"/api/users/{mon}", {"password": "pw", "tags": ["monitoring"]})
    api.ok("PUT", f"/api/vhosts/{vh}")
    api.ok("PUT", f"/api/vhosts/{other}")
    api.ok("PUT", f"/api/permissions/{vh}/{mgr}", {"configure": "^mine-", "write": ".*", "read": ".*"})
    api.ok("PUT", f"/api/queues/{vh}/seen")
    api.ok("PUT", f"/api/queues/{other}/hidden")
    m, mo = api.as_user(mgr, "pw"), api.as_user(mon, "pw")
    # management: only its vhosts, no admin endpoints
    names = {(x["vhost"], x["name"]) for x in m.get("/api/queues").json}
    assert (vh, "seen") in names and (other, "hidden") not in names
    assert [v["name"] for v in m.get("/api/vhosts").json] == [vh]
    assert m.get(f"/api/queues/{q(other)}").status == 403
    assert m.get(f"/api/queues/{q(other)}/hidden").json == {"error": "not_authorized", "reason": "Access refused."}
    for path in ("/api/users", "/api/permissions", "/api/definitions", f"/api/users/{mgr}"):
        r = m.get(path)
        assert r.status == 403 and r.json["reason"] == "Not administrator user", path
    assert m.get("/api/nodes").json["reason"] == "Not monitor user"
    assert m.put(f"/api/vhosts/x{uid}").status == 403
    # management: changes what its regexes allow, as over AMQP
    assert m.put(f"/api/queues/{vh}/mine-q").status == 201
    r = m.put(f"/api/queues/{vh}/theirs")
    assert r.status == 403
    assert r.json["reason"] == (
        f"ACCESS_REFUSED - access to queue 'theirs' in vhost '{vh}' refused for user '{mgr}'"
    )
    assert m.put(f"/api/queues/{other}/mine-x").status == 403
    # monitoring: reads everything, changes nothing it has no permissions for
    names = {(x["vhost"], x["name"]) for x in mo.get("/api/queues").json}
    assert {(vh, "seen"), (other, "hidden")} <= names
    assert mo.get("/api/nodes").status == 200
    assert mo.get("/api/users").status == 403
    assert mo.put(f"/api/queues/{other}/mon-q").status == 403
    assert mo.delete(f"/api/queues/{other}/hidden").status == 403
    # each sees only its own connections (monitoring sees all)
    c1 = connect(mb, mgr, "pw", vh)
    c2 = connect(mb)
    try:
        wait_for(lambda: len(api.get("/api/connections").json) >= 2, what="two connections")
        assert {c["user"] for c in m.get("/api/connections").json} == {mgr}
        assert {"guest", mgr} <= {c["user"] for c in mo.get("/api/connections").json}
        guest_conn = next(c for c in mo.get("/api/connections").json if c["user"] == "guest")
        # a management user may not close someone else's connection
        assert m.delete(f"/api/connections/{q(guest_conn['name'])}").status == 404
    finally:
        c1.close()
        c2.close()


# -- overview, nodes, health -------------------------------------------------------------------

def test_overview_nodes_and_health(api, mb):
    ov = api.get("/api/overview").json
    for key in ("management_version", "rabbitmq_version", "product_name", "node", "message_stats",
                "queue_totals", "object_totals", "listeners", "exchange_types"):
        assert key in ov, key
    assert {"messages", "messages_ready", "messages_unacknowledged"} <= set(ov["queue_totals"])
    assert {"connections", "channels", "exchanges", "queues", "consumers"} <= set(ov["object_totals"])
    assert {"publish", "publish_details", "deliver_get", "ack"} <= set(ov["message_stats"])
    amqp = [x for x in ov["listeners"] if x["protocol"] == "amqp"]
    assert amqp and amqp[0]["port"] == mb.port
    nodes = api.get("/api/nodes").json
    assert len(nodes) == 1 and nodes[0]["running"] is True and nodes[0]["name"] == ov["node"]
    assert nodes[0]["mem_used"] > 0
    one = api.get(f"/api/nodes/{q(ov['node'])}")
    assert one.status == 200 and one.json["name"] == ov["node"]
    assert api.get("/api/nodes/rabbit@elsewhere").status == 404
    assert api.get("/api/cluster-name").json["name"]
    assert api.get("/api/extensions").json == []
    assert api.get("/api/health/checks/alarms").json == {"status": "ok"}
    assert api.get("/api/health/checks/local-alarms").json == {"status": "ok"}
    assert api.get("/api/health/checks/virtual-hosts").json == {"status": "ok"}
    assert api.get(f"/api/health/checks/port-listener/{mb.port}").json["status"] == "ok"
    assert api.get("/api/health/checks/port-listener/1").status == 503
    assert api.get("/api/aliveness-test/%2F").json == {"status": "ok"}
    assert api.get("/api/aliveness-test/nonexistent").status == 404


def test_unknown_paths_and_methods(api):
    r = api.get("/api/no-such-thing")
    assert r.status == 404 and r.json == {"error": "Object Not Found", "reason": "Not Found"}
    r = api.post("/api/overview")
    assert r.status == 405 and "GET" in r.headers.get("Allow", "")
    r = api.req("PUT", "/api/queues/%2F/badjson", raw=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status == 400 and r.json["error"] == "bad_request"


# -- exchanges ------------------------------------------------------------------------------

def test_exchanges(api, uid):
    x = f"x.{uid}"
    path = f"/api/exchanges/%2F/{x}"
    assert api.put(path, {"type": "topic", "durable": True, "arguments": {"alternate-exchange": "ae"}}).status == 201
    assert api.put(path, {"type": "topic", "durable": True, "arguments": {"alternate-exchange": "ae"}}).status == 204
    got = api.get(path).json
    assert got["name"] == x and got["type"] == "topic" and got["durable"] is True and got["vhost"] == "/"
    assert got["arguments"] == {"alternate-exchange": "ae"}
    r = api.put(path, {"type": "direct"})
    assert r.status == 400
    assert r.json["reason"].startswith(f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{x}'")
    assert api.put(f"/api/exchanges/%2F/nt{uid}", {}).status == 400
    assert api.put(f"/api/exchanges/%2F/amq.{uid}", {"type": "direct"}).status == 403
    assert api.put(f"/api/exchanges/%2F/bad{uid}", {"type": "nonsense"}).status == 400
    names = {e["name"] for e in api.get("/api/exchanges").json}
    assert {"", "amq.direct", "amq.topic", x} <= names
    assert x in {e["name"] for e in api.get("/api/exchanges/%2F").json}
    assert api.get("/api/exchanges/%2F/amq.default").json["name"] == ""
    assert api.get("/api/exchanges/no-vhost").status == 404
    # if-unused
    api.ok("PUT", f"/api/queues/%2F/xq{uid}")
    api.ok("POST", f"/api/bindings/%2F/e/{x}/q/xq{uid}", {"routing_key": "a.#"})
    r = api.delete(path + "?if-unused=true")
    assert r.status == 400 and "in use" in r.json["reason"]
    assert api.delete("/api/exchanges/%2F/amq.direct").status == 403
    assert api.delete(path).status == 204
    assert api.get(path).status == 404
    assert api.delete(path).status == 404


def test_publish_through_the_api(api, mb, uid):
    qn = f"pub{uid}"
    api.ok("PUT", f"/api/queues/%2F/{qn}", {"durable": False})
    r = api.post("/api/exchanges/%2F/amq.default/publish", {
        "properties": {"delivery_mode": 2, "headers": {"h": "v", "n": 5}, "content_type": "text/plain",
                       "correlation_id": "c1", "type": "greeting", "timestamp": 1700000000, "priority": 3},
        "routing_key": qn, "payload": "héllo", "payload_encoding": "string",
    })
    assert r.status == 200 and r.json == {"routed": True}
    r = api.post("/api/exchanges/%2F/amq.default/publish",
                 {"properties": {}, "routing_key": qn, "payload": base64.b64encode(b"\x00\xff").decode(),
                  "payload_encoding": "base64"})
    assert r.json == {"routed": True}
    r = api.post("/api/exchanges/%2F/amq.direct/publish",
                 {"properties": {}, "routing_key": "nowhere", "payload": "x", "payload_encoding": "string"})
    assert r.json == {"routed": False}
    assert api.post("/api/exchanges/%2F/nope/publish",
                    {"properties": {}, "routing_key": "", "payload": ""}).status == 404
    assert api.post("/api/exchanges/%2F/amq.default/publish",
                    {"properties": {"bogus": 1}, "routing_key": qn, "payload": ""}).status == 400
    assert api.post("/api/exchanges/%2F/amq.default/publish",
                    {"properties": {}, "routing_key": qn, "payload": "!", "payload_encoding": "base64"}).status == 400
    r = api.post("/api/exchanges/%2F/amq.default/publish",
                 {"properties": {"user_id": "mallory"}, "routing_key": qn, "payload": ""})
    assert r.status == 400 and "user_id property set to 'mallory'" in r.json["reason"]
    api.ok("PUT", f"/api/exchanges/%2F/int{uid}", {"type": "fanout", "internal": True})
    r = api.post(f"/api/exchanges/%2F/int{uid}/publish", {"properties": {}, "routing_key": "", "payload": ""})
    assert r.status == 403
    # an AMQP consumer sees what the API published, properties included
    conn = connect(mb)
    try:
        ch = conn.channel()
        method, props, body = ch.basic_get(qn, auto_ack=True)
        assert body == "héllo".encode()
        assert props.delivery_mode == 2
        assert props.headers == {"h": "v", "n": 5}, props.headers
        assert props.content_type == "text/plain" and props.correlation_id == "c1" and props.type == "greeting"
        assert props.priority == 3 and props.timestamp == 1700000000
        assert method.routing_key == qn and method.exchange == ""
        _m, _p, body2 = ch.basic_get(qn, auto_ack=True)
        assert body2 == b"\x00\xff"
    finally:
        conn.close()


def test_publish_with_expiration_expires(api, uid):
    qn = f"ttl{uid}"
    api.ok("PUT", f"/api/queues/%2F/{qn}", {"durable": False})
    api.ok("POST", "/api/exchanges/%2F/amq.default/publish",
           {"properties": {"expiration": "50"}, "routing_key": qn, "payload": "short", "payload_encoding": "string"})
    time.sleep(0.2)
    r = api.post(f"/api/queues/%2F/{qn}/get", {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"})
    assert r.json == []


# -- queues -----------------------------------------------------------------------------------

def test_queue_declare_get_list_delete(api, uid):
    qn = f"q.{uid}"
    path = f"/api/queues/%2F/{qn}"
    args = {"x-message-ttl": 60000, "x-max-length": 10, "x-dead-letter-exchange": "dlx"}
    assert api.put(path, {"durable": True, "auto_delete": False, "arguments": args}).status == 201
    assert api.put(path, {"durable": True, "arguments": args}).status == 204
    r = api.put(path, {"durable": False, "arguments": args})
    assert r.status == 400 and "inequivalent arg 'durable'" in r.json["reason"]
    r = api.put(f"/api/queues/%2F/bad{uid}", {"arguments": {"x-max-length": "ten"}})
    assert r.status == 400 and "PRECONDITION_FAILED - invalid arg 'x-max-length'" in r.json["reason"]
    assert api.put(f"/api/queues/%2F/amq.{uid}").status == 403
    got = api.get(path).json
    for k, v in {"name": qn, "vhost": "/", "durable": True, "auto_delete": False, "exclusive": False,
                 "arguments": args, "messages": 0, "messages_ready": 0, "messages_unacknowledged": 0,
                 "consumers": 0, "state": "running"}.items():
        assert got[k] == v, k
    assert got["message_stats"]["publish"] == 0 and "rate" in got["message_stats"]["publish_details"]
    assert qn in {x["name"] for x in api.get("/api/queues").json}
    assert qn in {x["name"] for x in api.get("/api/queues/%2F").json}
    assert api.get("/api/queues/nope").status == 404
    assert api.get(f"/api/queues/%2F/missing{uid}").status == 404
    # if-empty / if-unused
    api.ok("POST", "/api/exchanges/%2F/amq.default/publish", {"properties": {}, "routing_key": qn, "payload": "1"})
    r = api.delete(path + "?if-empty=true")
    assert r.status == 400 and "not empty" in r.json["reason"]
    assert api.delete(path).status == 204
    assert api.get(path).status == 404
    assert api.delete(path).status == 404


def test_queue_counts_follow_amqp_traffic(api, mb, uid):
    qn = f"cnt{uid}"
    conn = connect(mb)
    try:
        ch = conn.channel()
        ch.queue_declare(qn)
        for i in range(5):
            ch.basic_publish("", qn, b"m%d" % i)
        wait_for(lambda: api.get(f"/api/queues/%2F/{qn}").json["messages"] == 5, what="5 messages")
        ch.basic_qos(prefetch_count=2)
        got = []
        ch.basic_consume(qn, lambda c, m, p, b: got.append(m.delivery_tag), consumer_tag=f"ctag{uid}")
        conn.process_data_events(time_limit=0.3)
        d = api.get(f"/api/queues/%2F/{qn}").json
        assert (d["messages"], d["messages_ready"], d["messages_unacknowledged"], d["consumers"]) == (5, 3, 2, 1)
        assert d["message_stats"]["publish"] == 5 and d["message_stats"]["deliver_get"] == 2
        ov = api.get("/api/overview").json
        assert ov["queue_totals"]["messages_unacknowledged"] >= 2
        ch.basic_ack(got[-1], multiple=True)
        conn.process_data_events(time_limit=0.3)
        d = api.get(f"/api/queues/%2F/{qn}").json
        assert d["message_stats"]["ack"] >= 2
    finally:
        conn.close()


def test_message_rates_are_sampled(api, mb, uid):
    """Rates come from samples of the counters (every 0.3 s in this module's broker)."""
    qn = f"rate{uid}"
    stop = threading.Event()

    def publisher():
        c = connect(mb)
        ch = c.channel()
        ch.queue_declare(qn)
        while not stop.is_set():
            ch.basic_publish("", qn, b"x")
            time.sleep(0.002)
        c.close()

    t = threading.Thread(target=publisher)
    t.start()
    try:
        d = wait_for(
            lambda: (lambda j: j if j and j["message_stats"]["publish_details"]["rate"] > 10 else None)(
                api.get(f"/api/queues/%2F/{qn}").json if api.get(f"/api/queues/%2F/{qn}").status == 200 else None),
            timeout=5, what="a publish rate",
        )
        assert d["messages_details"]["rate"] > 0
        ov = api.get("/api/overview").json
        assert ov["message_stats"]["publish_details"]["rate"] > 10
        assert ov["message_stats"]["publish"] >= d["message_stats"]["publish"]
        vh = api.get("/api/vhosts/%2F").json
        assert vh["message_stats"]["publish_details"]["rate"] > 10
    finally:
        stop.set()
        t.join()
    # the overview's counters do not go down when a queue goes
    before = api.get("/api/overview").json["message_stats"]["publish"]
    api.ok("DELETE", f"/api/queues/%2F/{qn}")
    time.sleep(0.7)
    assert api.get("/api/overview").json["message_stats"]["publish"] >= before


def test_purge_and_get(api, uid):
    qn = f"get{uid}"
    api.ok("PUT", f"/api/queues/%2F/{qn}", {"durable": False})
    for body in ("one", "two", "three"):
        api.ok("POST", "/api/exchanges/%2F/amq.default/publish",
               {"properties": {"message_id": body}, "routing_key": qn, "payload": body, "payload_encoding": "string"})
    api.ok("POST", "/api/exchanges/%2F/amq.default/publish",
           {"properties": {}, "routing_key": qn, "payload": base64.b64encode(b"\xff\xfe\x00").decode(),
            "payload_encoding": "base64"})
    get = f"/api/queues/%2F/{qn}/get"
    r = api.post(get, {"count": 2, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 50000})
    assert r.status == 200
    assert [m["payload"] for m in r.json] == ["one", "two"]
    m0 = r.json[0]
    assert m0["payload_encoding"] == "string" and m0["payload_bytes"] == 3 and m0["redelivered"] is False
    assert m0["exchange"] == "" and m0["routing_key"] == qn and m0["properties"] == {"message_id": "one"}
    assert m0["message_count"] == 3
    # requeued: same order, now redelivered
    r = api.post(get, {"count": 1, "ackmode": "ack_requeue_true", "encoding": "base64"})
    assert r.json[0]["payload"] == base64.b64encode(b"one").decode() and r.json[0]["payload_encoding"] == "base64"
    assert r.json[0]["redelivered"] is True
    r = api.post(get, {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto", "truncate": 2})
    assert r.json[0]["payload"] == "on" and r.json[0]["payload_bytes"] == 3
    r = api.post(get, {"count": 1, "ackmode": "reject_requeue_false", "encoding": "auto"})
    assert r.json[0]["payload"] == "two"
    assert api.get(f"/api/queues/%2F/{qn}").json["messages"] == 2
    r = api.post(get, {"count": 10, "ackmode": "reject_requeue_true", "encoding": "auto"})
    assert [m["payload"] for m in r.json] == ["three", base64.b64encode(b"\xff\xfe\x00").decode()]
    assert r.json[1]["payload_encoding"] == "base64"
    assert api.post(get, {"count": 1, "ackmode": "bogus", "encoding": "auto"}).status == 400
    assert api.post(get, {"count": 1, "ackmode": "ack_requeue_true", "encoding": "utf-16"}).status == 400
    assert api.post(get, {"count": 0, "ackmode": "ack_requeue_true", "encoding": "auto"}).status == 400
    assert api.delete(f"/api/queues/%2F/{qn}/contents").status == 204
    assert api.get(f"/api/queues/%2F/{qn}").json["messages"] == 0
    assert api.post(get, {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}).json == []
    assert api.delete(f"/api/queues/%2F/missing{uid}/contents").status == 404


# -- bindings -------------------------------------------------------------------------------------

def test_bindings(api, mb, uid):
    x, x2, qn = f"bx{uid}", f"bx2{uid}", f"bq{uid}"
    api.ok("PUT", f"/api/exchanges/%2F/{x}", {"type": "direct"})
    api.ok("PUT", f"/api/exchanges/%2F/{x2}", {"type": "headers"})
    api.ok("PUT", f"/api/queues/%2F/{qn}")
    base = f"/api/bindings/%2F/e/{x}/q/{qn}"
    r = api.post(base, {"routing_key": "k1", "arguments": {}})
    assert r.status == 201 and r.headers["Location"].endswith(f"/e/{x}/q/{qn}/k1")
    r = api.post(base, {"routing_key": "k~2", "arguments": {"a": 1}})
    assert r.status == 201
    loc = r.headers["Location"]
    pk = urllib.parse.unquote(loc.rsplit("/", 1)[1])
    assert pk.startswith("k%7E2~")
    assert api.post(base, {"routing_key": "", "arguments": {}}).status == 201
    listed = api.get(base).json
    assert sorted(b["properties_key"] for b in listed) == sorted(["k1", pk, "~"])
    for b in listed:
        assert b["source"] == x and b["destination"] == qn and b["destination_type"] == "queue"
        assert b["vhost"] == "/"
    one = api.get(base + "/k1").json
    assert one["routing_key"] == "k1" and one["arguments"] == {}
    assert api.get(base + "/" + q(pk)).json["arguments"] == {"a": 1}
    assert api.get(base + "/nope").status == 404
    # the binding routes: publish through the API
    assert api.post(f"/api/exchanges/%2F/{x}/publish",
                    {"properties": {}, "routing_key": "k1", "payload": "p"}).json == {"routed": True}
    # exchange-to-exchange
    ebase = f"/api/bindings/%2F/e/{x}/e/{x2}"
    assert api.post(ebase, {"routing_key": "e", "arguments": {}}).status == 201
    assert [b["destination_type"] for b in api.get(ebase).json] == ["exchange"]
    hbase = f"/api/bindings/%2F/e/{x2}/q/{qn}"
    assert api.post(hbase, {"routing_key": "", "arguments": {"x-match": "any", "h": "1"}}).status == 201
    r = api.post(hbase, {"routing_key": "", "arguments": {"x-match": "bogus"}})
    assert r.status == 400
    # listings
    all_b = api.get("/api/bindings").json
    vh_b = api.get("/api/bindings/%2F").json
    for lst in (all_b, vh_b):
        assert any(b["source"] == "" and b["destination"] == qn and b["routing_key"] == qn for b in lst)
        assert any(b["source"] == x and b["destination"] == x2 for b in lst)
    assert len(api.get(f"/api/exchanges/%2F/{x}/bindings/source").json) == 4
    assert [b["source"] for b in api.get(f"/api/exchanges/%2F/{x2}/bindings/destination").json] == [x]
    qb = api.get(f"/api/queues/%2F/{qn}/bindings").json
    assert {b["source"] for b in qb} == {"", x, x2}
    # delete by properties_key
    assert api.delete(base + "/" + q(pk)).status == 204
    assert api.delete(base + "/k1").status == 204
    assert api.delete(base + "/k1").status == 404
    assert sorted(b["properties_key"] for b in api.get(base).json) == ["~"]
    assert api.delete(ebase + "/e").status == 204
    assert api.get(ebase).json == []
    # default exchange: listed, but not changeable
    assert api.post(f"/api/bindings/%2F/e/amq.default/q/{qn}", {"routing_key": "z"}).status == 403
    assert api.delete(f"/api/bindings/%2F/e/amq.default/q/{qn}/{qn}").status == 403
    assert api.post(f"/api/bindings/%2F/e/nope{uid}/q/{qn}", {"routing_key": "z"}).status == 404
    # an AMQP unbind is seen by the API
    conn = connect(mb)
    try:
        conn.channel().queue_unbind(qn, x, "")
    finally:
        conn.close()
    assert api.get(base).json == []


# -- vhosts, users, permissions ---------------------------------------------------------------

def test_vhosts(api, mb, uid):
    vh = f"v/{uid}"  # a slash in the name: one URL segment, percent-encoded
    path = f"/api/vhosts/{q(vh)}"
    assert api.put(path, {"description": "test vhost", "tags": "a,b"}).status == 201
    assert api.put(path).status == 204
    got = api.get(path).json
    assert got["name"] == vh and got["description"] == "test vhost" and got["tags"] == ["a", "b"]
    assert got["messages"] == 0 and "message_stats" in got
    assert vh in {v["name"] for v in api.get("/api/vhosts").json}
    api.ok("PUT", f"/api/permissions/{q(vh)}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    assert [p["user"] for p in api.get(f"{path}/permissions").json] == ["guest"]
    api.ok("PUT", f"/api/queues/{q(vh)}/inside", {"durable": True})
    conn = connect(mb, vhost=vh)
    try:
        ch = conn.channel()
        ch.exchange_declare("ex-inside", "fanout")
        wait_for(lambda: api.get(f"{path}/connections").json, what="the vhost's connection")
        assert [c["vhost"] for c in api.get(f"{path}/connections").json] == [vh]
        assert [c["number"] for c in api.get(f"{path}/channels").json] == [1]
        assert api.delete(path).status == 204
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as ei:
            ch.queue_declare("after")
        assert ei.value.reply_code == 320
    finally:
        if conn.is_open:
            conn.close()
    assert api.get(path).status == 404
    assert api.delete(path).status == 404
    # everything in it is gone with it
    assert api.put(path).status == 201
    assert api.get(f"/api/queues/{q(vh)}/inside").status == 404
    assert api.get(f"/api/exchanges/{q(vh)}/ex-inside").status == 404
    assert api.get(f"{path}/permissions").json == []
    api.ok("DELETE", path)


def test_users(api, mb, uid):
    u = f"user{uid}"
    path = f"/api/users/{u}"
    assert api.put(path, {"tags": "administrator"}).status == 400  # a new user needs a password
    assert api.put(path, {"password": "pw1", "tags": "monitoring, management"}).status == 201
    got = api.get(path).json
    assert got["name"] == u and got["tags"] == ["monitoring", "management"]
    assert got["hashing_algorithm"] == "rabbit_password_hashing_sha256" and got["password_hash"]
    assert u in {x["name"] for x in api.get("/api/users").json}
    assert u in {x["name"] for x in api.get("/api/users/without-permissions").json}
    assert api.as_user(u, "pw1").get("/api/whoami").json == {"name": u, "tags": ["monitoring", "management"],
                                                             "is_openid": False}
    # tags only: the password stays
    assert api.put(path, {"tags": ["administrator"]}).status == 204
    assert api.as_user(u, "pw1").get("/api/users").status == 200
    # a password hash (RabbitMQ's sha256 scheme) instead of a password
    from broker.auth import hash_password

    assert api.put(path, {"password_hash": hash_password("pw2"), "tags": "administrator"}).status == 204
    assert api.as_user(u, "pw1").get("/api/whoami").status == 401
    assert api.as_user(u, "pw2").get("/api/whoami").status == 200
    assert api.put(path, {"password_hash": "x", "hashing_algorithm": "rabbit_password_hashing_md5"}).status == 400
    assert api.put(path, {"password_hash": "not base64!"}).status == 400
    # permissions of a user
    api.ok("PUT", f"/api/permissions/%2F/{u}", {"configure": "", "write": ".*", "read": ".*"})
    assert api.get(f"{path}/permissions").json == [
        {"user": u, "vhost": "/", "configure": "", "write": ".*", "read": ".*"}
    ]
    assert u not in {x["name"] for x in api.get("/api/users/without-permissions").json}
    c = connect(mb, u, "pw2")
    try:
        assert api.delete(path).status == 204
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as ei:
            c.channel()
            c.process_data_events(time_limit=1)
            c.channel()
        assert ei.value.reply_code == 320
    finally:
        if c.is_open:
            c.close()
    assert api.get(path).status == 404
    assert api.delete(path).status == 404
    assert api.get(f"/api/permissions/%2F/{u}").status == 404
    # bulk delete
    for n in ("a", "b"):
        api.ok("PUT", f"/api/users/bulk{n}{uid}", {"password": "x"})
    assert api.post("/api/users/bulk-delete", {"users": [f"bulka{uid}", f"bulkb{uid}"]}).status == 204
    assert api.get(f"/api/users/bulka{uid}").status == 404


def test_permissions_endpoints(api, uid):
    u, vh = f"perm{uid}", f"pv{uid}"
    api.ok("PUT", f"/api/users/{u}", {"password": "x"})
    api.ok("PUT", f"/api/vhosts/{vh}")
    path = f"/api/permissions/{vh}/{u}"
    assert api.get(path).status == 404
    assert api.put(path, {"configure": "^a", "write": "^b", "read": "^c"}).status == 201
    assert api.put(path, {"configure": "^a", "write": "^b", "read": "^cc"}).status == 204
    assert api.get(path).json == {"user": u, "vhost": vh, "configure": "^a", "write": "^b", "read": "^cc"}
    assert {"user": u, "vhost": vh, "configure": "^a", "write": "^b", "read": "^cc"} in api.get("/api/permissions").json
    r = api.put(path, {"configure": "(", "write": "", "read": ""})
    assert r.status == 400 and "regular expression" in r.json["reason"]
    assert api.put(path, {"configure": ".*"}).status == 400
    assert api.put(f"/api/permissions/{vh}/nouser{uid}", {"configure": "", "write": "", "read": ""}).status == 400
    assert api.put(f"/api/permissions/novh{uid}/{u}", {"configure": "", "write": "", "read": ""}).status == 400
    assert api.delete(path).status == 204
    assert api.delete(path).status == 404


# -- connections, channels, consumers -------------------------------------------------------------

def test_connections_channels_consumers(api, mb, uid):
    conn = connect(mb, client_properties={"connection_name": f"app-{uid}"})
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=7)
        ch.confirm_delivery()
        qn = f"cq{uid}"
        ch.queue_declare(qn, exclusive=True)
        ch.basic_consume(qn, lambda *a: None, consumer_tag=f"tag-{uid}")
        mine = wait_for(
            lambda: [c for c in api.get("/api/connections").json
                     if c["client_properties"].get("connection_name") == f"app-{uid}"],
            what="the connection in /api/connections",
        )[0]
        assert mine["user"] == "guest" and mine["vhost"] == "/" and mine["state"] == "running"
        assert mine["peer_host"] == "127.0.0.1" and mine["peer_port"] > 0 and mine["channels"] == 1
        assert mine["protocol"] == "AMQP 0-9-1" and mine["client_properties"]["product"]
        assert mine["recv_oct"] > 0 and mine["send_oct"] > 0
        name = mine["name"]
        assert api.get(f"/api/connections/{q(name)}").json["name"] == name
        assert api.get("/api/connections/nope").status == 404
        chans = api.get(f"/api/connections/{q(name)}/channels").json
        assert len(chans) == 1
        c0 = chans[0]
        assert c0["number"] == 1 and c0["prefetch_count"] == 7 and c0["confirm"] is True
        assert c0["consumer_count"] == 1 and c0["connection_details"]["name"] == name
        assert c0["name"] in {c["name"] for c in api.get("/api/channels").json}
        assert api.get(f"/api/channels/{q(c0['name'])}").json["number"] == 1
        assert api.get("/api/channels/nope").status == 404
        cons = [c for c in api.get("/api/consumers").json if c["consumer_tag"] == f"tag-{uid}"]
        assert len(cons) == 1
        c = cons[0]
        assert c["queue"] == {"name": qn, "vhost": "/"} and c["ack_required"] is True
        assert c["channel_details"]["connection_name"] == name and c["prefetch_count"] == 7
        assert f"tag-{uid}" in {c["consumer_tag"] for c in api.get("/api/consumers/%2F").json}
        qd = api.get(f"/api/queues/%2F/{qn}").json
        assert qd["exclusive"] is True and qd["owner_pid_details"]["name"] == name
        # closing through the API: the client sees 320 with the reason given
        r = api.delete(f"/api/connections/{q(name)}", headers={"X-Reason": "maintenance"})
        assert r.status == 204
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as ei:
            conn.process_data_events(time_limit=2)
            ch.queue_declare(f"more{uid}")
        assert ei.value.reply_code == 320
        assert ei.value.reply_text == "CONNECTION_FORCED - maintenance"
    finally:
        if conn.is_open:
            conn.close()
    wait_for(lambda: api.get(f"/api/queues/%2F/{qn}").status == 404, what="the exclusive queue to go")


def test_close_connection_default_reason(api, mb):
    conn = connect(mb)
    try:
        port = conn._impl._transport._sock.getsockname()[1]
        mine = wait_for(lambda: [c for c in api.get("/api/connections").json if c["peer_port"] == port],
                        what="the connection")[0]
        assert api.delete(f"/api/connections/{q(mine['name'])}").status == 204
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as ei:
            conn.process_data_events(time_limit=2)
            conn.channel()
        assert (ei.value.reply_code, ei.value.reply_text) == (
            320, "CONNECTION_FORCED - Closed via management plugin")
    finally:
        if conn.is_open:
            conn.close()


# -- definitions ------------------------------------------------------------------------------------

def test_definitions_export_and_import(api, uid):
    vh = f"dv{uid}"
    defs = {
        "vhosts": [{"name": vh}],
        "users": [{"name": f"du{uid}", "password": "pw", "tags": "management"}],
        "permissions": [{"user": f"du{uid}", "vhost": vh, "configure": ".*", "write": ".*", "read": ".*"}],
        "exchanges": [{"name": "dx", "vhost": vh, "type": "fanout", "durable": True, "auto_delete": False,
                       "internal": False, "arguments": {}}],
        "queues": [{"name": "dq", "vhost": vh, "durable": True, "auto_delete": False,
                    "arguments": {"x-max-priority": 5}}],
        "bindings": [{"source": "dx", "vhost": vh, "destination": "dq", "destination_type": "queue",
                      "routing_key": "", "arguments": {}}],
    }
    assert api.post("/api/definitions", defs).status == 204
    out = api.get("/api/definitions").json
    assert {"rabbit_version", "users", "vhosts", "permissions", "exchanges", "queues", "bindings",
            "policies", "parameters"} <= set(out)
    assert vh in {v["name"] for v in out["vhosts"]}
    assert any(u["name"] == f"du{uid}" and u["tags"] == ["management"] and u["password_hash"] for u in out["users"])
    assert any(q_["name"] == "dq" and q_["vhost"] == vh and q_["arguments"] == {"x-max-priority": 5}
               for q_ in out["queues"])
    assert any(b["source"] == "dx" and b["destination"] == "dq" for b in out["bindings"])
    assert api.as_user(f"du{uid}", "pw").get("/api/whoami").status == 200
    one = api.get(f"/api/definitions/{vh}").json
    assert [x["name"] for x in one["queues"]] == ["dq"] and [x["name"] for x in one["exchanges"]] == ["dx"]
    # a vhost's definitions into another vhost
    vh2 = f"dv2{uid}"
    api.ok("PUT", f"/api/vhosts/{vh2}")
    assert api.post(f"/api/definitions/{vh2}", one).status == 204
    assert api.get(f"/api/queues/{vh2}/dq").json["arguments"] == {"x-max-priority": 5}
    assert api.get(f"/api/bindings/{vh2}/e/dx/q/dq").json[0]["properties_key"] == "~"
    # bad documents
    assert api.req("POST", "/api/definitions", raw=b"[1,2]", headers={"Content-Type": "application/json"}).status == 400
    assert api.post("/api/definitions", {"queues": "nope"}).status == 400
    r = api.post("/api/definitions", {"queues": [{"name": "bad", "vhost": vh, "arguments": {"x-max-length": "x"}}]})
    assert r.status == 400 and "bad" in r.json["reason"]


def test_list_query_parameters(api, uid):
    for n in ("c", "a", "b"):
        api.ok("PUT", f"/api/queues/%2F/lq{uid}{n}", {"durable": False})
    api.ok("POST", "/api/exchanges/%2F/amq.default/publish", {"properties": {}, "routing_key": f"lq{uid}b",
                                                              "payload": "x"})
    names = [x["name"] for x in api.get(f"/api/queues/%2F?name=lq{uid}").json]
    assert names == [f"lq{uid}a", f"lq{uid}b", f"lq{uid}c"]
    names = [x["name"] for x in api.get(f"/api/queues/%2F?name=lq{uid}&sort=name&sort_reverse=true").json]
    assert names == [f"lq{uid}c", f"lq{uid}b", f"lq{uid}a"]
    cols = api.get(f"/api/queues/%2F?name=lq{uid}&columns=name,messages,message_stats.publish").json
    assert cols[1] == {"name": f"lq{uid}b", "messages": 1, "message_stats": {"publish": 1}}
    page = api.get(f"/api/queues/%2F?name=lq{uid}[ab]&use_regex=true&page=1&page_size=1").json
    assert page["filtered_count"] == 2 and page["item_count"] == 1 and page["page_count"] == 2
    assert page["items"][0]["name"] == f"lq{uid}a"
    assert api.get("/api/queues?page=0").status == 400
