"""The first thing a user does: hello world (on the in-process broker of the project's pytest
plugin, in a vhost of its own)."""

import pika


def test_hello_world(amqp_url):
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    q = "hello"
    ch.queue_declare(q)
    ch.basic_publish("", q, b"Hello World!")
    method, props, body = ch.basic_get(q, auto_ack=True)
    assert body == b"Hello World!"
    assert method.routing_key == q
    assert method.message_count == 0
    conn.close()


def test_server_properties(amqp_url):
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    props = conn._impl.server_properties
    assert props["product"] == b"BurrowMQ" or props["product"] == "BurrowMQ"
    caps = props["capabilities"]
    for cap in ("publisher_confirms", "exchange_exchange_bindings", "basic.nack", "consumer_cancel_notify",
                "connection.blocked", "authentication_failure_close", "per_consumer_qos"):
        assert caps[cap] is True, cap
    conn.close()
