"""Quorum queues as operators see them: the CLI's list-queues, Prometheus' per-object
series, and the definitions export/import."""

from __future__ import annotations

import json

import pika
import pika.exceptions
import pytest

from test_admin_cli import run
from test_management_api import Http, mgmt_url
from test_metrics import metrics_url, scrape

QQ = {"x-queue-type": "quorum"}


def test_cli_and_metrics_show_quorum_queues(broker, uid):
    q = f"qq-ops-{uid}"
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
    ch = conn.channel()
    ch.queue_declare(q, durable=True, arguments=dict(QQ, **{"x-delivery-limit": 7}))
    ch.basic_publish("", q, b"x")
    ch.queue_declare(q, durable=True, arguments=dict(QQ, **{"x-delivery-limit": 7}), passive=True)
    try:
        url = mgmt_url(broker)
        js = json.loads(run(["list-queues", "--json", "name", "type", "messages", "delivery_limit", "leader",
                             "members", "online"], url=url, check=True).stdout)
        mine = [r for r in js if r["name"] == q][0]
        assert (mine["type"], mine["messages"], mine["delivery_limit"]) == ("quorum", 1, 7)
        assert mine["leader"].startswith("burrowmq@") and mine["members"] == [mine["leader"]] == mine["online"]
        per_object = scrape(metrics_url(broker) + "/per-object", "guest", "guest")
        key = f'rabbitmq_queue_info{{membership="leader",queue="{q}",queue_type="rabbit_quorum_queue",vhost="/"}}'
        assert per_object[key] == 1
        assert per_object[f'rabbitmq_queue_messages_ready{{queue="{q}",vhost="/"}}'] == 1
        # definitions carry the type, and importing them declares a quorum queue
        http = Http(url)
        defs = http.get("/api/definitions").json
        mine_def = [d for d in defs["queues"] if d["name"] == q][0]
        assert mine_def["arguments"]["x-queue-type"] == "quorum"
        ch.queue_delete(q)
        r = http.post("/api/definitions", {"queues": [mine_def]})
        assert r.status in (200, 201, 204), r
        assert http.get(f"/api/queues/%2F/{q}").json["type"] == "quorum"
    finally:
        ch.queue_delete(q)
        conn.close()


def test_http_declare_of_a_quorum_queue(broker, uid):
    http = Http(mgmt_url(broker))
    name = f"qq-http-{uid}"
    r = http.put(f"/api/queues/%2F/{name}", {"durable": False, "arguments": QQ})
    assert r.status == 400 and "invalid property 'non-durable'" in r.json["reason"], r
    r = http.put(f"/api/queues/%2F/{name}", {"durable": True, "arguments": dict(QQ, **{"x-max-priority": 3})})
    assert r.status == 400 and "of queue type rabbit_quorum_queue" in r.json["reason"], r
    r = http.put(f"/api/queues/%2F/{name}", {"durable": True, "arguments": QQ})
    assert r.status == 201, r
    got = http.get(f"/api/queues/%2F/{name}").json
    assert got["type"] == "quorum" and got["durable"] is True and got["delivery_limit"] == 20
    assert http.delete(f"/api/queues/%2F/{name}").status == 204


def test_delivery_limit_and_overflow_policies_on_a_live_quorum_queue(broker, uid):
    """A quorum_queues policy changes a live queue's delivery limit and overflow at once."""
    http = Http(mgmt_url(broker))
    name, pol = f"qq-pol-{uid}", f"qqpol-{uid}"
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
    ch = conn.channel()
    ch.queue_declare(name, durable=True, arguments=dict(QQ, **{"x-max-length": 1}))
    try:
        r = http.put(f"/api/policies/%2F/{pol}", {"pattern": f"^{name}$", "apply-to": "quorum_queues",
                                                 "definition": {"delivery-limit": 1, "overflow": "reject-publish"}})
        assert r.status == 201, r
        got = http.get(f"/api/queues/%2F/{name}").json
        assert (got["delivery_limit"], got["policy"]) == (1, pol)
        ch.confirm_delivery()
        ch.basic_publish("", name, b"x")
        with pytest.raises(pika.exceptions.NackError):
            ch.basic_publish("", name, b"over the length")  # the policy's reject-publish
        for _ in range(2):
            m, _p, _b = ch.basic_get(name)
            ch.basic_nack(m.delivery_tag, requeue=True)
        assert ch.basic_get(name)[0] is None  # second return: over the policy's limit of 1
        assert http.delete(f"/api/policies/%2F/{pol}").status == 204
        assert http.get(f"/api/queues/%2F/{name}").json["delivery_limit"] == 20
    finally:
        http.delete(f"/api/policies/%2F/{pol}")
        ch.queue_delete(name)
        conn.close()
