"""The firehose tracer (RabbitMQ's): ``trace-on`` / ``trace-off`` and the HTTP API's
``tracing`` flag, the copies on ``amq.rabbitmq.trace`` with RabbitMQ's headers, nothing
when tracing is off, and ``broker trace`` tailing it in a terminal.

Each test has its own vhost on the in-process broker (``amqp_url``, the project's plugin).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from base64 import b64encode
from pathlib import Path

import pika
import pytest

ROOT = Path(__file__).resolve().parent.parent
AUTH = "Basic " + b64encode(b"guest:guest").decode()


def vhost_of(url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path[1:])


def http(broker, method: str, path: str, body=None) -> tuple[int, dict | None]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{broker.management_url}/api/{path}", data=data, method=method,
                                 headers={"Authorization": AUTH, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def cli(broker, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    env = dict(os.environ, BROKER_URL=broker.management_url, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=timeout)


def trace_queue(ch) -> str:
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.rabbitmq.trace", "#")
    return q


def drain(ch, q: str, n: int, timeout: float = 5.0) -> list:
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        m = ch.basic_get(q, auto_ack=True)
        if m[0] is None:
            time.sleep(0.02)
            continue
        got.append(m)
    return got


def test_trace_on_and_off_as_rabbitmqctl(amqp_broker, amqp_url):
    vhost = vhost_of(amqp_url)
    path = urllib.parse.quote(vhost, safe="")
    assert http(amqp_broker, "GET", f"vhosts/{path}")[1]["tracing"] is False
    r = cli(amqp_broker, "trace-on", "-p", vhost)
    assert r.returncode == 0 and r.stdout == f'Starting tracing for vhost "{vhost}" ...\n', r.stderr
    assert http(amqp_broker, "GET", f"vhosts/{path}")[1]["tracing"] is True
    r = cli(amqp_broker, "trace-off", "-p", vhost)
    assert r.returncode == 0 and r.stdout == f'Stopping tracing for vhost "{vhost}" ...\n', r.stderr
    assert http(amqp_broker, "GET", f"vhosts/{path}")[1]["tracing"] is False


def test_trace_on_an_unknown_vhost(amqp_broker):
    r = cli(amqp_broker, "trace-on", "-p", "no-such-vhost")
    assert r.returncode == 1
    assert r.stderr.strip() == "Error: vhost 'no-such-vhost' does not exist"
    assert http(amqp_broker, "GET", "vhosts/no-such-vhost")[0] == 404  # not created by the attempt


def test_http_tracing_flag_must_be_a_boolean(amqp_broker, amqp_url):
    path = urllib.parse.quote(vhost_of(amqp_url), safe="")
    status, body = http(amqp_broker, "PUT", f"vhosts/{path}", {"tracing": "yes"})
    assert status == 400 and body["reason"] == "'tracing' must be true or false"
    assert http(amqp_broker, "PUT", f"vhosts/{path}", {"tracing": True})[0] == 204
    assert http(amqp_broker, "GET", f"vhosts/{path}")[1]["tracing"] is True


def test_firehose_headers_are_rabbitmqs(amqp_broker, amqp_url):
    http(amqp_broker, "PUT", f"vhosts/{urllib.parse.quote(vhost_of(amqp_url), safe='')}", {"tracing": True})
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    tq = trace_queue(ch)
    ch.queue_declare("orders")
    ch.queue_declare("audit")
    ch.queue_bind("orders", "amq.direct", "order.new")
    ch.queue_bind("audit", "amq.direct", "audit")
    props = pika.BasicProperties(message_id="m-1", content_type="text/plain", delivery_mode=2, priority=3,
                                 timestamp=1_700_000_000, headers={"CC": ["audit"], "k": "v"})
    ch.basic_publish("amq.direct", "order.new", b"payload", props)
    method, _p, _b = ch.basic_get("orders")
    ch.basic_nack(method.delivery_tag, requeue=True)
    ch.basic_get("orders", auto_ack=True)
    events = drain(ch, tq, 3)
    assert [m.routing_key for m, _p, _b in events] == ["publish.amq.direct", "deliver.orders", "deliver.orders"]
    (pm, pp, pbody), (_dm, dp, dbody), (_rm, rp, _rbody) = events
    assert pbody == dbody == b"payload"
    h = pp.headers
    assert h["exchange_name"] == "amq.direct"
    assert h["routing_keys"] == ["order.new", "audit"]
    assert h["routed_queues"] in (["orders", "audit"], ["audit", "orders"])
    assert h["properties"] == {"content_type": "text/plain", "headers": {"CC": ["audit"], "k": "v"},
                               "delivery_mode": 2, "priority": 3, "message_id": "m-1", "timestamp": 1_700_000_000}
    assert h["vhost"] == vhost_of(amqp_url) and h["user"] == "guest" and h["channel"] == 1
    assert h["node"].startswith("burrowmq@")
    conns = http(amqp_broker, "GET", "connections")[1]
    assert h["connection"] in [c["name"] for c in conns]
    assert dp.headers["redelivered"] == 0 and rp.headers["redelivered"] == 1
    assert "routed_queues" not in dp.headers
    assert pp.delivery_mode is None  # the copy itself is transient
    conn.close()


def test_unroutable_publish_is_traced_with_no_queues(amqp_broker, amqp_url):
    http(amqp_broker, "PUT", f"vhosts/{urllib.parse.quote(vhost_of(amqp_url), safe='')}", {"tracing": True})
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    tq = trace_queue(ch)
    ch.basic_publish("", "nowhere", b"x")
    [(m, p, _b)] = drain(ch, tq, 1)
    assert m.routing_key == "publish." and p.headers["routed_queues"] == [] and p.headers["exchange_name"] == ""
    conn.close()


def test_http_publish_and_get_are_traced(amqp_broker, amqp_url):
    vq = urllib.parse.quote(vhost_of(amqp_url), safe="")
    http(amqp_broker, "PUT", f"vhosts/{vq}", {"tracing": True})
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    tq = trace_queue(ch)
    ch.queue_declare("web")
    status, out = http(amqp_broker, "POST", f"exchanges/{vq}/amq.default/publish",
                       {"routing_key": "web", "payload": "from http", "properties": {"message_id": "h-1"}})
    assert (status, out) == (200, {"routed": True})
    status, got = http(amqp_broker, "POST", f"queues/{vq}/web/get",
                       {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"})
    assert status == 200 and got[0]["payload"] == "from http"
    events = drain(ch, tq, 2)
    assert [m.routing_key for m, _p, _b in events] == ["publish.", "deliver.web"]
    (_pm, pp, pbody), (_dm, dp, dbody) = events
    assert pbody == dbody == b"from http"
    assert pp.headers["routed_queues"] == ["web"] and pp.headers["properties"] == {"message_id": "h-1"}
    for h in (pp.headers, dp.headers):
        assert (h["connection"], h["channel"], h["user"]) == ("HTTP API", 1, "guest")
    assert dp.headers["redelivered"] == 0
    conn.close()


def test_no_copies_when_tracing_is_off(amqp_url):
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    tq = trace_queue(ch)
    ch.queue_declare("q")
    for _ in range(20):
        ch.basic_publish("", "q", b"x")
    assert ch.basic_get("q", auto_ack=True)[2] == b"x"
    assert ch.queue_declare("q", passive=True).method.message_count == 19
    assert ch.queue_declare(tq, passive=True).method.message_count == 0
    # clients cannot publish into the firehose themselves (it is internal, as in RabbitMQ)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_publish("amq.rabbitmq.trace", "publish.x", b"forged")
        ch.queue_declare("q", passive=True)
    assert e.value.reply_code == 403
    assert "cannot publish to internal exchange 'amq.rabbitmq.trace'" in e.value.reply_text
    conn.close()


def _start_trace(broker, *args: str) -> subprocess.Popen:
    env = dict(os.environ, BROKER_URL=broker.management_url, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-m", "cli", "trace", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    line = p.stderr.readline()  # "Tracing vhost ..." once it consumes
    assert line.startswith("Tracing vhost"), line + p.stderr.read()
    return p


def test_broker_trace_prints_one_line_per_event(amqp_broker, amqp_url):
    vhost = vhost_of(amqp_url)
    path = urllib.parse.quote(vhost, safe="")
    p = _start_trace(amqp_broker, "-p", vhost, "--count", "3")
    try:
        assert http(amqp_broker, "GET", f"vhosts/{path}")[1]["tracing"] is True
        conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
        ch = conn.channel()
        ch.queue_declare("jobs")
        ch.basic_publish("", "jobs", b"12345", pika.BasicProperties(message_id="job-1"))
        ch.basic_publish("", "elsewhere", b"1")
        ch.basic_get("jobs", auto_ack=True)
        out, err = p.communicate(timeout=20)
        conn.close()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 3, out
    t, kind, *rest = lines[0].split(" ")
    assert len(t) == 12 and t[2] == ":" and kind == "publish"
    assert rest[0].startswith("conn=127.0.0.1:")
    assert lines[0].endswith("user=guest exchange=amq.default routing_key=jobs queues=jobs id=job-1 size=5")
    assert lines[1].endswith("exchange=amq.default routing_key=elsewhere queues=(unroutable) id=- size=1")
    assert " deliver " in lines[2]
    assert lines[2].endswith("exchange=amq.default routing_key=jobs queue=jobs id=job-1 size=5")
    # it turned tracing on for as long as it ran
    assert http(amqp_broker, "GET", f"vhosts/{path}")[1]["tracing"] is False


def test_broker_trace_filters_by_queue_and_routing_key(amqp_broker, amqp_url):
    vhost = vhost_of(amqp_url)
    p = _start_trace(amqp_broker, "-p", vhost, "--queue", "a", "--routing-key", "order.*.eu", "--count", "2")
    try:
        conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
        ch = conn.channel()
        for q in ("a", "b"):
            ch.queue_declare(q)
            ch.queue_bind(q, "amq.topic", "order.#")
        ch.basic_publish("amq.topic", "order.new.us", b"skipped: routing key")
        ch.basic_publish("amq.topic", "order.new.eu", b"kept")
        ch.basic_get("b", auto_ack=True)  # skipped: queue b
        ch.basic_get("b", auto_ack=True)
        ch.basic_get("a", auto_ack=True)  # order.new.us: skipped by the pattern
        ch.basic_get("a", auto_ack=True)  # order.new.eu: kept
        out, err = p.communicate(timeout=20)
        conn.close()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 2, out
    assert " publish " in lines[0] and "routing_key=order.new.eu queues=a,b" in lines[0].replace("b,a", "a,b")
    assert " deliver " in lines[1] and "routing_key=order.new.eu queue=a " in lines[1]


def test_broker_trace_refuses_an_unknown_vhost(amqp_broker):
    r = cli(amqp_broker, "trace", "-p", "no-such-vhost")
    assert r.returncode == 1 and "vhost 'no-such-vhost' does not exist" in r.stderr


def test_topic_pattern_matching_is_polynomial():
    from broker.admin.tracing import topic_matches

    assert topic_matches(["a", "*", "c"], ["a", "b", "c"])
    assert topic_matches(["#"], [])
    assert topic_matches(["a", "#"], ["a"])
    assert not topic_matches(["a", "*"], ["a"])
    assert topic_matches(["#", "b", "#"], ["a", "b", "c"])
    t0 = time.perf_counter()
    assert not topic_matches(["#"] * 32 + ["z"], ["a"] * 200)
    assert time.perf_counter() - t0 < 1.0
