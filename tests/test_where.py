"""``broker where MESSAGE-ID`` and ``GET /api/where/ID``: which queues hold a persistent message
in their log and what became of each copy, with no tracing beforehand.

Each test has its own vhost on the in-process broker (``amqp_url``).  A message whose
segment is wholly settled is deleted with it (a quiet queue's after about 2 s), so every
test keeps one ready message behind the ones it asks about.
"""

from __future__ import annotations

import time
import urllib.parse

import pika

from tests.test_tracing import cli, http, vhost_of

PERSISTENT = 2


def publish(ch, queue: str, message_id: str, body: bytes = b"x", **props) -> None:
    ch.basic_publish("", queue, body, pika.BasicProperties(message_id=message_id, delivery_mode=PERSISTENT,
                                                           **props))


def where(broker, message_id: str, vhost: str) -> tuple[int, dict]:
    q = urllib.parse.urlencode({"vhost": vhost})
    return http(broker, "GET", f"where/{urllib.parse.quote(message_id, safe='')}?{q}")


def wait_state(broker, message_id: str, vhost: str, queue: str, state: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, body = where(broker, message_id, vhost)
        copies = [c for c in body.get("copies", [])] if status == 200 else []
        for c in copies:
            if c["queue"] == queue and c["state"] == state:
                return c
        if time.monotonic() > deadline:
            raise AssertionError(f"{message_id} in {queue} never {state}: {status} {body}")
        time.sleep(0.05)


def test_ready_unacked_and_acked(amqp_broker, amqp_url):
    vhost = vhost_of(amqp_url)
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("work", durable=True)
    for mid in ("m-acked", "m-unacked", "m-ready"):
        publish(ch, "work", mid, b"12345")
    got = []
    ch.basic_qos(prefetch_count=2)
    tag = ch.basic_consume("work", lambda c, m, p, b: got.append(m), consumer_tag="worker-1")
    while len(got) < 2:
        conn.process_data_events(0.1)
    ch.basic_cancel(tag)  # before the ack, so that the third is never delivered
    ch.basic_ack(got[0].delivery_tag)  # the second stays unacked on this channel
    ready = wait_state(amqp_broker, "m-ready", vhost, "work", "ready")
    assert ready == {"vhost": vhost, "queue": "work", "exchange": "", "routing_key": "work", "persistent": True,
                     "payload_bytes": 5, "delivered_before": False, "state": "ready"}
    unacked = wait_state(amqp_broker, "m-unacked", vhost, "work", "unacked")
    held = unacked["delivered_to"]
    assert held["consumer_tag"] == "worker-1" and held["channel"] == 1 and held["user"] == "guest"
    assert held["delivery_tag"] == got[1].delivery_tag
    assert held["connection"] in [c["name"] for c in http(amqp_broker, "GET", "connections")[1]]
    acked = wait_state(amqp_broker, "m-acked", vhost, "work", "settled")
    assert acked["settled"] == "acked" and "dead_lettered_to" not in acked

    r = cli(amqp_broker, "where", "m-unacked", "-p", vhost)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "message 'm-unacked':",
        f"  vhost '{vhost}' queue 'work': delivered, not acked: consumer 'worker-1' on connection "
        f"{held['connection']} channel 1 (delivery tag {held['delivery_tag']}, user guest); published to "
        "exchange 'amq.default' with routing key 'work', 5 bytes, persistent",
    ]
    conn.close()


def test_expired_and_dead_lettered_with_x_death(amqp_broker, amqp_url):
    vhost = vhost_of(amqp_url)
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.exchange_declare("dlx", "fanout", durable=True)
    ch.queue_declare("dead", durable=True)
    ch.queue_bind("dead", "dlx")
    ch.queue_declare("orders", durable=True, arguments={"x-dead-letter-exchange": "dlx"})
    publish(ch, "orders", "m-late", expiration="50")
    publish(ch, "orders", "keeper")  # keeps the segment (and so the expired record) on disk
    original = wait_state(amqp_broker, "m-late", vhost, "orders", "settled")
    assert original["settled"] == "expired" and original["dead_lettered_to"] == "dlx"
    copy = wait_state(amqp_broker, "m-late", vhost, "dead", "ready")
    [death] = copy["x_death"]
    assert death["reason"] == "expired" and death["queue"] == "orders" and death["count"] == 1
    assert death["routing-keys"] == ["orders"] and death["original-expiration"] == "50"

    r = cli(amqp_broker, "where", "m-late", "-p", vhost)
    assert r.returncode == 0, r.stderr
    assert f"  vhost '{vhost}' queue 'dead': ready; published to exchange 'dlx'" in r.stdout
    assert "    x-death: expired in queue 'orders' (count 1, exchange 'amq.default', routing keys ['orders'])" \
        in r.stdout
    assert f"  vhost '{vhost}' queue 'orders': expired, dead-lettered to exchange 'dlx'" in r.stdout
    conn.close()


def test_rejected_without_requeue(amqp_broker, amqp_url):
    vhost = vhost_of(amqp_url)
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("inbox", durable=True)
    publish(ch, "inbox", "m-bad")
    publish(ch, "inbox", "keeper")
    method, _p, _b = ch.basic_get("inbox")
    ch.basic_reject(method.delivery_tag, requeue=False)
    c = wait_state(amqp_broker, "m-bad", vhost, "inbox", "settled")
    assert c["settled"] == "rejected" and "dead_lettered_to" not in c
    conn.close()


def test_redelivered_after_restart(amqp_broker, amqp_url):
    vhost = vhost_of(amqp_url)
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("jobs", durable=True)
    publish(ch, "jobs", "m-inflight")
    ch.basic_get("jobs")  # delivered, never acked
    amqp_broker.restart()
    c = wait_state(amqp_broker, "m-inflight", vhost, "jobs", "ready")
    assert c["delivered_before"] is True
    r = cli(amqp_broker, "where", "m-inflight", "-p", vhost)
    assert "queue 'jobs': ready (delivered before, will be redelivered)" in r.stdout, r.stdout + r.stderr


def test_unknown_id_and_bad_input(amqp_broker, amqp_url):
    vhost = vhost_of(amqp_url)
    r = cli(amqp_broker, "where", "no-such-id", "-p", vhost)
    assert r.returncode == 1
    assert r.stderr.strip() == (f"Error: no message with id 'no-such-id' in the log of a durable queue in vhost "
                                f"'{vhost}'")
    r = cli(amqp_broker, "where", "x", "-p", "no-such-vhost")
    assert r.returncode == 1 and r.stderr.strip() == "Error: vhost 'no-such-vhost' does not exist"
    status, body = http(amqp_broker, "GET", "where/" + "x" * 256)
    assert status == 400
    assert body["reason"] == "the 'message_id' in the path is 256 bytes long in UTF-8, over the limit of 255 bytes"
    status, body = http(amqp_broker, "GET", "where/nothing-anywhere")
    assert status == 404
    assert body["reason"] == "no message with id 'nothing-anywhere' in the log of a durable queue in any vhost"


def test_json_output(amqp_broker, amqp_url):
    import json

    vhost = vhost_of(amqp_url)
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("a", durable=True)
    ch.queue_declare("b", durable=True)
    ch.exchange_declare("fan", "fanout")
    ch.queue_bind("a", "fan")
    ch.queue_bind("b", "fan")
    ch.basic_publish("fan", "", b"xy", pika.BasicProperties(message_id="m-fan", delivery_mode=PERSISTENT))
    r = cli(amqp_broker, "where", "m-fan", "-p", vhost, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["message_id"] == "m-fan" and out["truncated"] is False
    assert [(c["queue"], c["state"], c["exchange"]) for c in out["copies"]] == [("a", "ready", "fan"),
                                                                                ("b", "ready", "fan")]
    conn.close()
