"""What the web UI stands on, over HTTP with a real broker: its files at ``/``, the live-update
stream ``/api/events``, peeking at messages without taking them, server-side pages of queues,
and RabbitMQ's ``RABBITMQ_DEFAULT_*`` variables.  (The UI itself: tests/test_webui_browser.py.)"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import time
import urllib.parse

import pika
import pytest

from conftest import _make
from test_management_api import Http, connect, mgmt_url, wait_for


@pytest.fixture(scope="module")
def wb(tmp_path_factory):
    b = _make(tmp_path_factory.mktemp("webui-api"), env={"BROKER_MANAGEMENT_SAMPLE_INTERVAL": "0.3"}).start()
    b.url = mgmt_url(b)
    yield b
    b.stop()


@pytest.fixture
def api(wb) -> Http:
    return Http(wb.url)


# -- the UI's files --------------------------------------------------------------------------------

class Raw:
    def __init__(self, status: int, headers, raw: bytes) -> None:
        self.status, self.headers, self.raw = status, headers, raw


def fetch(wb, path: str, headers: dict | None = None) -> Raw:
    """A GET without credentials and without JSON decoding."""
    u = urllib.parse.urlsplit(wb.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=15)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return Raw(r.status, r.headers, r.read())
    finally:
        conn.close()

def test_root_serves_the_ui_with_its_modules_and_a_strict_policy(wb):
    r = fetch(wb, "/")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")
    page = r.raw.decode()
    assert '<script type="module" src="/ui/app.js">' in page and 'href="/ui/app.css"' in page
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    # every module the app imports is served, as JavaScript, and nothing is fetched from elsewhere
    js = fetch(wb, "/ui/app.js")
    assert js.status == 200 and js.headers["Content-Type"].startswith("text/javascript")
    for mod in ("admin", "api", "connections", "dom", "exchanges", "overview", "queues"):
        assert f'from "./{mod}.js"' in js.raw.decode()
        assert fetch(wb, f"/ui/{mod}.js").status == 200
    admin = fetch(wb, "/ui/admin.js").raw.decode()
    for mod in ("limits", "policies"):
        assert f'from "./{mod}.js"' in admin
        assert fetch(wb, f"/ui/{mod}.js").status == 200
    assert "http" not in page.replace("http-equiv", "")  # no absolute URL: works offline


def test_ui_files_are_gzipped_and_revalidated_with_etags(wb):
    plain = fetch(wb, "/ui/app.css")
    zipped = fetch(wb, "/ui/app.css", {"Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip" and len(zipped.raw) < len(plain.raw) / 2
    assert gzip.decompress(zipped.raw) == plain.raw
    again = fetch(wb, "/ui/app.css", {"If-None-Match": plain.headers["ETag"]})
    assert again.status == 304 and again.raw == b""


def test_unknown_ui_path_is_404_and_api_still_needs_a_login(wb):
    assert fetch(wb, "/ui/nope.js").status == 404
    assert fetch(wb, "/etc/passwd").status == 404
    assert fetch(wb, "/api/overview").status == 401


# -- /api/events -----------------------------------------------------------------------------------

class Stream:
    """An open ``GET /api/events`` read event by event."""

    def __init__(self, base: str, query: str, user: str = "guest", password: str = "guest") -> None:
        u = urllib.parse.urlsplit(base)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=15)
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.conn.request("GET", "/api/events?" + query, headers={"Authorization": "Basic " + auth})
        self.resp = self.conn.getresponse()

    def next(self) -> tuple[str, dict]:
        event, data = "message", ""
        while True:
            line = self.resp.readline().decode()
            if line == "":
                raise EOFError("stream ended")
            line = line.rstrip("\n")
            if not line:
                if data:
                    return event, json.loads(data)
                continue
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()

    def close(self) -> None:
        self.conn.close()


def watch_query(*paths: str, interval: float = 1) -> str:
    return urllib.parse.urlencode([("interval", interval)] + [("watch", p) for p in paths])


def test_event_stream_sends_what_changed(wb, api, uid):
    qname = f"ev-{uid}"
    api.ok("PUT", f"/api/queues/%2F/{qname}")
    path = f"/api/queues/%2F/{qname}"
    s = Stream(wb.url, watch_query(path, "/api/whoami"))
    try:
        assert s.resp.status == 200 and s.resp.headers["Content-Type"] == "text/event-stream"
        first = dict((d["watch"], d) for _ev, d in (s.next(), s.next()))
        assert first[path]["status"] == 200 and first[path]["body"]["messages_ready"] == 0
        assert first["/api/whoami"]["body"]["name"] == "guest"
        c = connect(wb)
        c.channel().basic_publish("", qname, b"hello")
        c.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ev, d = s.next()
            assert ev == "update" and d["watch"] == path  # whoami did not change: never sent again
            if d["body"]["messages_ready"] == 1:
                break
        else:
            raise AssertionError("no update with the published message")
        api.ok("DELETE", path)
        ev, d = s.next()
        assert d["watch"] == path and d["status"] == 404
    finally:
        s.close()


def test_event_stream_ends_when_its_user_is_deleted(wb, api, uid):
    user = f"watcher-{uid}"
    api.ok("PUT", f"/api/users/{user}", {"password": "pw", "tags": "management"})
    s = Stream(wb.url, watch_query("/api/whoami"), user, "pw")
    try:
        assert s.next()[1]["body"]["name"] == user
        api.ok("DELETE", f"/api/users/{user}")
        ev, d = s.next()
        assert ev == "end" and d["reason"] == "the user was deleted"
        with pytest.raises(EOFError):
            s.next()
    finally:
        s.close()


def test_event_stream_keeps_the_users_permissions(wb, api, uid):
    """A watched path answers as a request of the stream's user would: 403, not the data."""
    user = f"mgmt-{uid}"
    api.ok("PUT", f"/api/users/{user}", {"password": "pw", "tags": "management"})
    s = Stream(wb.url, watch_query("/api/users", "/api/not-yet-an-endpoint"), user, "pw")
    try:
        got = dict((d["watch"], d) for _ev, d in (s.next(), s.next()))
        assert got["/api/users"]["status"] == 403 and got["/api/users"]["body"]["reason"] == "Not administrator user"
        assert got["/api/not-yet-an-endpoint"]["status"] == 404
    finally:
        s.close()


@pytest.mark.parametrize("query, field", [
    ("interval=1", "'watch' is missing"),
    ("interval=0.1&watch=/api/overview", "'interval'"),
    ("interval=abc&watch=/api/overview", "'interval'"),
    ("watch=/etc/passwd", "is not a path of this API"),
    ("watch=/api/events", "cannot name the event stream"),
    ("&".join(["watch=/api/overview"] * 9), "at most 8 paths"),
    ("watch=/api/" + "x" * 3000, "longer than 2048 bytes"),
])
def test_event_stream_refuses_bad_queries_naming_the_field(api, query, field):
    r = api.get("/api/events?" + query)
    assert r.status == 400 and field in r.json["reason"], r


def test_event_stream_needs_a_login(wb):
    assert fetch(wb, "/api/events?watch=/api/overview").status == 401


# -- peek ------------------------------------------------------------------------------------------

def test_peek_leaves_messages_in_place_unmarked(wb, api, uid):
    qname = f"peek-{uid}"
    api.ok("PUT", f"/api/queues/%2F/{qname}")
    c = connect(wb)
    ch = c.channel()
    for i in range(5):
        ch.basic_publish("", qname, f"m{i}".encode(), pika.BasicProperties(headers={"i": i}))
    r = api.post(f"/api/queues/%2F/{qname}/peek", {"offset": 1, "count": 3})
    assert r.status == 200, r
    assert [m["payload"] for m in r.json] == ["m1", "m2", "m3"]
    assert [m["position"] for m in r.json] == [1, 2, 3]
    assert r.json[0]["properties"]["headers"] == {"i": 1} and not any(m["redelivered"] for m in r.json)
    assert api.get(f"/api/queues/%2F/{qname}").json["messages_ready"] == 5
    # a consumer still gets every message, first time delivered
    got = [ch.basic_get(qname, auto_ack=True) for _ in range(5)]
    assert [b for _m, _p, b in got] == [f"m{i}".encode() for i in range(5)]
    assert not any(m.redelivered for m, _p, _b in got)
    c.close()


def test_peek_reads_a_backlog_kept_on_disk(wb, api, uid):
    """Past the first few thousand, a durable queue keeps only positions in memory: peek reads the log."""
    qname = f"peek-disk-{uid}"
    api.ok("PUT", f"/api/queues/%2F/{qname}", {"durable": True})
    c = connect(wb)
    ch = c.channel()
    for i in range(4200):
        ch.basic_publish("", qname, f"n{i}".encode(), pika.BasicProperties(delivery_mode=2))
    wait_for(lambda: api.get(f"/api/queues/%2F/{qname}").json["messages_ready"] == 4200, what="4200 ready")
    r = api.post(f"/api/queues/%2F/{qname}/peek", {"offset": 4195, "count": 10})
    assert [m["payload"] for m in r.json] == [f"n{i}" for i in range(4195, 4200)]
    api.ok("DELETE", f"/api/queues/%2F/{qname}")
    c.close()


def test_peek_is_bounded_and_permissioned(wb, api, uid):
    qname = f"peek-b-{uid}"
    api.ok("PUT", f"/api/queues/%2F/{qname}")
    big = "x" * (600 * 1024)
    for _ in range(3):
        api.ok("POST", "/api/exchanges/%2F/amq.default/publish", {"routing_key": qname, "payload": big,
                                                                  "properties": {}})
    r = api.post(f"/api/queues/%2F/{qname}/peek", {"count": 3})
    assert sum(len(m["payload"]) for m in r.json) == 1 << 20  # the answer's byte cap
    assert [m["payload_truncated"] for m in r.json] == [False, True, True]
    assert [m["payload_bytes"] for m in r.json] == [len(big)] * 3
    assert "'count' must be at most 100" in api.post(f"/api/queues/%2F/{qname}/peek", {"count": 101}).json["reason"]
    assert "'offset'" in api.post(f"/api/queues/%2F/{qname}/peek", {"offset": -1}).json["reason"]
    user = f"noread-{uid}"
    api.ok("PUT", f"/api/users/{user}", {"password": "pw", "tags": "management"})
    api.ok("PUT", f"/api/permissions/%2F/{user}", {"configure": ".*", "write": ".*", "read": "^$"})
    r = api.as_user(user, "pw").post(f"/api/queues/%2F/{qname}/peek", {})
    assert r.status == 403 and "access to queue" in r.json["reason"]
    assert api.post(f"/api/queues/%2F/no-such-{uid}/peek", {}).status == 404


# -- pages of queues ---------------------------------------------------------------------------------

def test_a_page_of_queues_is_the_same_as_the_whole_list_cut(wb, api, uid):
    vh = f"pages-{uid}"
    api.ok("PUT", f"/api/vhosts/{vh}")
    api.ok("PUT", f"/api/permissions/{vh}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    c = connect(wb, vhost=vh)
    ch = c.channel()
    for i in range(30):
        ch.queue_declare(f"q{(i * 7) % 30:02d}-{uid}")
        for _ in range(i % 4):
            ch.basic_publish("", f"q{(i * 7) % 30:02d}-{uid}", b"x")
    wait_for(lambda: sum(x["messages"] for x in api.get(f"/api/queues/{vh}").json) == sum(i % 4 for i in range(30)),
             what="messages counted")
    for query in ("sort=name", "sort=messages&sort_reverse=true", "name=q1", "name=%5Eq0%5B1-3%5D&use_regex=true",
                  "sort=consumers", "sort=", "sort=messages_ready&columns=name,messages_ready"):
        whole = api.get(f"/api/queues/{vh}?{query}").json
        for page, size in ((1, 7), (2, 7), (5, 7), (1, 500)):
            p = api.get(f"/api/queues/{vh}?{query}&page={page}&page_size={size}&pagination=true").json
            # names and order (rates move between two requests, so not the whole objects)
            assert [i["name"] for i in p["items"]] == [i["name"] for i in whole[(page - 1) * size: page * size]]
            assert all(set(i) == set(whole[0]) for i in p["items"]), (query, page)
            assert p["filtered_count"] == len(whole) and p["total_count"] == 30
            assert p["page_count"] == max(1, -(-len(whole) // size))
    assert api.get(f"/api/queues/{vh}?page=0").status == 400
    assert "'name'" in api.get(f"/api/queues/{vh}?page=1&name=(a&use_regex=true").json["reason"]
    c.close()
    api.ok("DELETE", f"/api/vhosts/{vh}")


# -- RabbitMQ's image variables ------------------------------------------------------------------------

def test_rabbitmq_default_variables_create_the_default_user(broker_factory):
    b = broker_factory(env={"RABBITMQ_DEFAULT_USER": "admin", "RABBITMQ_DEFAULT_PASS": "s3cret",
                            "RABBITMQ_DEFAULT_VHOST": "apps"})
    api = Http(mgmt_url(b), "admin", "s3cret")
    me = api.get("/api/whoami")
    assert me.status == 200 and me.json["tags"] == ["administrator"]
    assert [v["name"] for v in api.get("/api/vhosts").json] == ["apps"]
    assert Http(mgmt_url(b)).get("/api/whoami").status == 401  # no guest
    c = connect(b, "admin", "s3cret", "apps")
    c.close()


def test_broker_variables_win_over_rabbitmq_ones(broker_factory):
    b = broker_factory(env={"RABBITMQ_DEFAULT_USER": "rabbit", "BROKER_DEFAULT_USER": "burrow",
                            "RABBITMQ_DEFAULT_PASS": "pw"})
    assert Http(mgmt_url(b), "burrow", "pw").get("/api/whoami").status == 200
    assert Http(mgmt_url(b), "rabbit", "pw").get("/api/whoami").status == 401


# -- history for the charts ------------------------------------------------------------------------------

def test_overview_samples_in_rabbitmqs_shape(wb, api, uid):
    qname = f"hist-{uid}"
    api.ok("PUT", f"/api/queues/%2F/{qname}")
    c = connect(wb)
    ch = c.channel()
    for _ in range(3):
        ch.basic_publish("", qname, b"x")
    c.close()

    def newest() -> dict:
        o = api.get("/api/overview?lengths_age=600&lengths_incr=1&msg_rates_age=600&msg_rates_incr=1").json
        return o

    o = wait_for(lambda: (lambda o: o if o["queue_totals"]["messages_details"]["samples"]
                          and o["queue_totals"]["messages_details"]["samples"][0]["sample"]
                          == o["queue_totals"]["messages"] else None)(newest()), what="a sample with the messages")
    lengths = o["queue_totals"]["messages_ready_details"]["samples"]
    stamps = [s["timestamp"] for s in lengths]
    assert stamps == sorted(stamps, reverse=True)  # newest first, as RabbitMQ
    assert all(a - b >= 500 for a, b in zip(stamps, stamps[1:]))  # thinned to about lengths_incr
    published = [s["sample"] for s in o["message_stats"]["publish_details"]["samples"]]
    assert published == sorted(published, reverse=True) and published[0] >= 3  # a counter: never goes down
    assert "samples" not in api.get("/api/overview").json["queue_totals"]["messages_details"]
    r = api.get("/api/overview?lengths_age=soon")
    assert r.status == 400 and "'lengths_age'" in r.json["reason"]
    assert api.get("/api/overview?msg_rates_age=60&msg_rates_incr=61").status == 400


# -- a refused login of the UI's own requests --------------------------------------------------------------

def test_ui_requests_get_no_basic_challenge(api):
    """A browser answers ``WWW-Authenticate`` with its own login dialog, over the UI's form."""
    plain = api.as_user("guest", "wrong").get("/api/whoami")
    assert plain.status == 401 and plain.headers["WWW-Authenticate"].startswith("Basic")
    ui = api.as_user("guest", "wrong").get("/api/whoami", headers={"X-Requested-With": "XMLHttpRequest"})
    assert ui.status == 401 and ui.json["reason"] == "Login failed" and "WWW-Authenticate" not in ui.headers


# -- event streams and stopping ------------------------------------------------------------------------------

def test_open_event_streams_do_not_hold_up_a_stop(broker_factory):
    b = broker_factory()
    s = Stream(mgmt_url(b), watch_query("/api/overview", interval=60))
    try:
        assert s.next()[1]["status"] == 200
        t0 = time.monotonic()
        assert b.stop() == 0
        assert time.monotonic() - t0 < 10
        assert s.next() == ("end", {"reason": "the broker is stopping"})
    finally:
        s.close()


# -- a queue's consumers and policies, as its page reads them --------------------------------------

def test_single_queue_has_consumer_details_in_rabbitmqs_shape(wb, api, uid):
    """``GET /api/queues/V/N`` lists the queue's consumers (the queue page reads them there);
    on a single-active-consumer queue only the first is active, the others wait."""
    plain, sac = f"cd-{uid}", f"cd-sac-{uid}"
    c = connect(wb)
    ch = c.channel()
    ch.queue_declare(plain)
    ch.queue_declare(sac, arguments={"x-single-active-consumer": True})
    ch.basic_qos(prefetch_count=7)
    ch.basic_consume(plain, lambda *a: None, consumer_tag="tag-a", arguments={"x-priority": 3})
    ch.basic_consume(plain, lambda *a: None, consumer_tag="tag-b", auto_ack=True, exclusive=False)
    ch.basic_consume(sac, lambda *a: None, consumer_tag="first")
    ch.basic_consume(sac, lambda *a: None, consumer_tag="second")
    try:
        q = api.get(f"/api/queues/%2F/{plain}").json
        details = sorted(q["consumer_details"], key=lambda d: d["consumer_tag"])
        assert [d["consumer_tag"] for d in details] == ["tag-a", "tag-b"]
        a, b = details
        assert a["ack_required"] is True and b["ack_required"] is False
        assert a["prefetch_count"] == 7 and a["exclusive"] is False
        assert a["arguments"] == {"x-priority": 3} and b["arguments"] == {}
        assert a["active"] is True and a["activity_status"] == "up"
        assert a["queue"] == {"name": plain, "vhost": "/"}
        chd = a["channel_details"]
        assert chd["number"] == ch.channel_number and chd["user"] == "guest"
        assert chd["name"] == f"{chd['connection_name']} ({ch.channel_number})"
        assert {"peer_host", "peer_port", "node"} <= chd.keys()
        # the same consumers as /api/consumers lists for the queue
        listed = [x for x in api.get("/api/consumers/%2F").json if x["queue"]["name"] == plain]
        assert sorted(listed, key=lambda d: d["consumer_tag"]) == details
        s = {d["consumer_tag"]: d for d in api.get(f"/api/queues/%2F/{sac}").json["consumer_details"]}
        assert (s["first"]["active"], s["first"]["activity_status"]) == (True, "single_active")
        assert (s["second"]["active"], s["second"]["activity_status"]) == (False, "waiting")
        # the list of queues stays light: no consumer details there
        assert all("consumer_details" not in x for x in api.get("/api/queues/%2F").json)
    finally:
        c.close()
    wait_for(lambda: api.get(f"/api/queues/%2F/{plain}").json["consumer_details"] == [], what="consumers gone")
