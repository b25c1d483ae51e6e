"""The first thing a user does: hello world against `broker serve`."""

import pika


def test_hello_world(broker, uid):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
    ch = conn.channel()
    q = f"hello-{uid}"
    ch.queue_declare(q)
    ch.basic_publish("", q, b"Hello World!")
    method, props, body = ch.basic_get(q, auto_ack=True)
    assert body == b"Hello World!"
    assert method.routing_key == q
    assert method.message_count == 0
    conn.close()


def test_server_properties(broker):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
    props = conn._impl.server_properties
    assert props["product"] == b"BurrowMQ" or props["product"] == "BurrowMQ"
    caps = props["capabilities"]
    for cap in ("publisher_confirms", "exchange_exchange_bindings", "basic.nack", "consumer_cancel_notify",
                "connection.blocked", "authentication_failure_close", "per_consumer_qos"):
        assert caps[cap] is True, cap
    conn.close()
