"""Prometheus metrics at /metrics on their own port."""

from __future__ import annotations

import base64
import re
import time
import urllib.request

import pika


def metrics_url(b) -> str:
    m = re.search(r"Prometheus metrics listening on (http://\S+/metrics)", b.log_text())
    assert m, "no metrics line in the log"
    return m.group(1)


def scrape(url: str, user: str | None = None, password: str = "") -> dict[str, float]:
    req = urllib.request.Request(url)
    if user is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    text = urllib.request.urlopen(req, timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def test_metrics_for_a_small_workload(broker_factory):
    b = broker_factory()
    url = metrics_url(b)
    before = scrape(url)
    assert before["rabbitmq_connections"] == 0
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
    ch = conn.channel()
    ch.queue_declare("mq", durable=True)
    ch.confirm_delivery()
    for _i in range(10):
        ch.basic_publish("", "mq", b"x" * 100, pika.BasicProperties(delivery_mode=2))
    for _ in range(4):
        m = ch.basic_get("mq")
        ch.basic_ack(m[0].delivery_tag)
    m = ch.basic_get("mq")  # one left unacked
    ch.basic_publish("", "nowhere", b"unroutable")
    ch.queue_declare("mq", durable=True, passive=True)
    after = scrape(url)
    assert after["rabbitmq_connections"] == 1
    assert after["rabbitmq_channels"] == 1
    assert after["rabbitmq_queue_messages_ready"] == 5  # totals only: no queue names on /metrics
    assert after["rabbitmq_queue_messages_unacked"] == 1
    per_object = scrape(url + "/per-object", "guest", "guest")
    assert per_object['rabbitmq_queue_messages_ready{queue="mq",vhost="/"}'] == 5
    assert per_object['rabbitmq_queue_messages_unacked{queue="mq",vhost="/"}'] == 1
    assert after["rabbitmq_global_messages_received_total"] == 11
    assert after["rabbitmq_global_messages_delivered_total"] == 5
    assert after["rabbitmq_global_messages_acknowledged_total"] == 4
    assert after["rabbitmq_global_messages_confirmed_total"] == 11
    assert after["rabbitmq_global_messages_unroutable_dropped_total"] == 1
    assert after["rabbitmq_connection_incoming_bytes_total"] > 1000
    assert after["rabbitmq_process_resident_memory_bytes"] > 10_000_000
    assert after["rabbitmq_disk_space_available_bytes"] > 0
    assert after["rabbitmq_alarms_memory_used_watermark"] == 0
    assert after["rabbitmq_storage_fsyncs_total"] >= 1
    ch.basic_nack(m[0].delivery_tag, requeue=True)
    m = ch.basic_get("mq", auto_ack=True)
    assert m[0].redelivered
    assert scrape(url)["rabbitmq_global_messages_redelivered_total"] == 1
    conn.close()
    time.sleep(0.2)
    final = scrape(url)
    assert final["rabbitmq_connections"] == 0
    assert final["rabbitmq_connections_closed_total"] == 1
    assert final["rabbitmq_connection_outgoing_bytes_total"] > 0
