"""Every reply code the broker sends, through pika, checked against RabbitMQ.

Each case asserts the exact reply code and reply text RabbitMQ 3.x/4.x sends,
and whether the error closes the channel (the connection stays usable) or the
whole connection.
"""

from __future__ import annotations

import time

import pika
import pytest
from pika.exceptions import (
    ChannelClosedByBroker,
    ConnectionClosedByBroker,
    ProbableAccessDeniedError,
    ProbableAuthenticationError,
)

V = "in vhost '/'"
LOCKED = (
    "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost '/'. "
    "It could be originally declared on another connection or the exclusive property value "
    "does not match that of the original declaration."
)


def connect(port: int, **kw) -> pika.BlockingConnection:
    kw.setdefault("heartbeat", 0)
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, **kw))


@pytest.fixture
def conn(broker):
    c = connect(broker.port)
    yield c
    if c.is_open:
        c.close()


@pytest.fixture
def other(broker):
    """A second connection to the shared broker."""
    c = connect(broker.port)
    yield c
    if c.is_open:
        c.close()


def assert_usable(conn: pika.BlockingConnection) -> None:
    """The connection still works: a new channel can declare, publish and get."""
    assert conn.is_open
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"still-alive")
    m, _p, body = ch.basic_get(q, auto_ack=True)
    assert body == b"still-alive"
    ch.close()


def channel_error(conn: pika.BlockingConnection, action, code: int, text: str) -> None:
    """``action(channel)`` closes that channel with code/text; the connection survives."""
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as ei:
        action(ch)
        # asynchronous errors (publish, ack) surface on the next synchronous call
        ch.queue_declare("", exclusive=True)
    assert (ei.value.reply_code, ei.value.reply_text) == (code, text)
    assert ch.is_closed
    assert_usable(conn)


def connection_error(conn: pika.BlockingConnection, action, code: int, text: str) -> None:
    """``action(channel)`` closes the whole connection with code/text."""
    ch = conn.channel()
    with pytest.raises(ConnectionClosedByBroker) as ei:
        action(ch)
        ch.queue_declare("", exclusive=True)
        conn.process_data_events(time_limit=2)
    assert (ei.value.reply_code, ei.value.reply_text) == (code, text)
    assert conn.is_closed


# -- 404 NOT_FOUND -------------------------------------------------------------


def test_passive_declare_missing_queue(conn, uid):
    q = f"missing-{uid}"
    channel_error(conn, lambda ch: ch.queue_declare(q, passive=True), 404, f"NOT_FOUND - no queue '{q}' {V}")


def test_passive_declare_missing_exchange(conn, uid):
    x = f"missing-x-{uid}"
    channel_error(
        conn, lambda ch: ch.exchange_declare(x, passive=True), 404, f"NOT_FOUND - no exchange '{x}' {V}"
    )


def test_basic_get_and_consume_missing_queue(conn, uid):
    q = f"missing-{uid}"
    channel_error(conn, lambda ch: ch.basic_get(q), 404, f"NOT_FOUND - no queue '{q}' {V}")
    channel_error(
        conn, lambda ch: ch.basic_consume(q, lambda *a: None), 404, f"NOT_FOUND - no queue '{q}' {V}"
    )


def test_bind_to_missing_exchange(conn, uid):
    ch = conn.channel()
    q = f"bindq-{uid}"
    ch.queue_declare(q, auto_delete=True)
    x = f"nox-{uid}"
    channel_error(conn, lambda c: c.queue_bind(q, x, "rk"), 404, f"NOT_FOUND - no exchange '{x}' {V}")
    ch.queue_delete(q)


def test_bind_missing_queue(conn, uid):
    q = f"noq-{uid}"
    channel_error(conn, lambda c: c.queue_bind(q, "amq.direct", "rk"), 404, f"NOT_FOUND - no queue '{q}' {V}")


def test_exchange_bind_missing_source_or_destination(conn, uid):
    ch = conn.channel()
    x = f"e2e-{uid}"
    ch.exchange_declare(x, "fanout", auto_delete=False)
    missing = f"nox-{uid}"
    channel_error(
        conn, lambda c: c.exchange_bind(x, missing), 404, f"NOT_FOUND - no exchange '{missing}' {V}"
    )
    channel_error(
        conn, lambda c: c.exchange_bind(missing, x), 404, f"NOT_FOUND - no exchange '{missing}' {V}"
    )
    ch.exchange_delete(x)


def test_publish_to_missing_exchange_closes_channel(conn, uid):
    x = f"nox-{uid}"
    channel_error(conn, lambda ch: ch.basic_publish(x, "rk", b"m"), 404, f"NOT_FOUND - no exchange '{x}' {V}")


def test_publish_to_missing_exchange_with_confirms(conn, uid):
    x = f"nox-{uid}"

    def act(ch):
        ch.confirm_delivery()
        ch.basic_publish(x, "rk", b"m")

    channel_error(conn, act, 404, f"NOT_FOUND - no exchange '{x}' {V}")


# -- 406 PRECONDITION_FAILED: equivalence ---------------------------------------


def test_queue_durable_mismatch(conn, uid):
    q = f"eq-{uid}"
    conn.channel().queue_declare(q, durable=False, auto_delete=True)
    channel_error(
        conn,
        lambda ch: ch.queue_declare(q, durable=True, auto_delete=True),
        406,
        f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{q}' {V}: received 'true' but current is 'false'",
    )
    conn.channel().queue_delete(q)


def test_queue_auto_delete_mismatch(conn, uid):
    q = f"eq-{uid}"
    conn.channel().queue_declare(q, auto_delete=False)
    channel_error(
        conn,
        lambda ch: ch.queue_declare(q, auto_delete=True),
        406,
        f"PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue '{q}' {V}: "
        "received 'true' but current is 'false'",
    )
    conn.channel().queue_delete(q)


def test_queue_argument_value_mismatch(conn, uid):
    # both present, values differ: rabbit_misc:assert_field_equivalence(OrigVal, NewVal, ...)
    # formats the bare values
    q = f"eq-{uid}"
    conn.channel().queue_declare(q, arguments={"x-message-ttl": 1000})
    channel_error(
        conn,
        lambda ch: ch.queue_declare(q, arguments={"x-message-ttl": 2000}),
        406,
        f"PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '{q}' {V}: "
        "received '2000' but current is '1000'",
    )
    conn.channel().queue_delete(q)


def test_queue_argument_missing_on_redeclare(conn, uid):
    q = f"eq-{uid}"
    conn.channel().queue_declare(q, arguments={"x-message-ttl": 1000})
    channel_error(
        conn,
        lambda ch: ch.queue_declare(q),
        406,
        f"PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '{q}' {V}: "
        "received none but current is the value '1000' of type 'signedint'",
    )
    conn.channel().queue_delete(q)


def test_queue_argument_added_on_redeclare(conn, uid):
    q = f"eq-{uid}"
    conn.channel().queue_declare(q)
    channel_error(
        conn,
        lambda ch: ch.queue_declare(q, arguments={"x-max-length": 10}),
        406,
        f"PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{q}' {V}: "
        "received the value '10' of type 'signedint' but current is none",
    )
    conn.channel().queue_delete(q)


def test_queue_redeclare_with_x_queue_type_classic_is_equivalent(conn, uid):
    # RabbitMQ special-cases x-queue-type=classic vs absent (rabbitmq-common#341)
    q = f"eq-{uid}"
    ch = conn.channel()
    ch.queue_declare(q)
    ch.queue_declare(q, arguments={"x-queue-type": "classic"})
    ch.queue_delete(q)


def test_queue_redeclare_same_properties_is_ok(conn, uid):
    q = f"eq-{uid}"
    ch = conn.channel()
    ch.queue_declare(q, durable=True, arguments={"x-max-length": 5})
    ok = ch.queue_declare(q, durable=True, arguments={"x-max-length": 5})
    assert ok.method.queue == q
    ch.queue_delete(q)


def test_exchange_type_mismatch(conn, uid):
    x = f"ex-{uid}"
    conn.channel().exchange_declare(x, "direct")
    channel_error(
        conn,
        lambda ch: ch.exchange_declare(x, "fanout"),
        406,
        f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{x}' {V}: "
        "received 'fanout' but current is 'direct'",
    )
    conn.channel().exchange_delete(x)


def test_exchange_durable_mismatch(conn, uid):
    x = f"ex-{uid}"
    conn.channel().exchange_declare(x, "topic", durable=True)
    channel_error(
        conn,
        lambda ch: ch.exchange_declare(x, "topic", durable=False),
        406,
        f"PRECONDITION_FAILED - inequivalent arg 'durable' for exchange '{x}' {V}: "
        "received 'false' but current is 'true'",
    )
    conn.channel().exchange_delete(x)


def test_exchange_alternate_exchange_mismatch(conn, uid):
    x = f"ex-{uid}"
    conn.channel().exchange_declare(x, "direct", arguments={"alternate-exchange": "ae1"})
    channel_error(
        conn,
        lambda ch: ch.exchange_declare(x, "direct", arguments={"alternate-exchange": "ae2"}),
        406,
        f"PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange '{x}' {V}: "
        "received 'ae2' but current is 'ae1'",
    )
    conn.channel().exchange_delete(x)


def test_unknown_exchange_type(conn, uid):
    # RabbitMQ (rabbit_exchange:check_type): precondition_failed, a channel error
    x = f"ex-{uid}"
    channel_error(
        conn,
        lambda ch: ch.exchange_declare(x, "x-no-such-type"),
        406,
        "PRECONDITION_FAILED - unknown exchange type 'x-no-such-type'",
    )


# -- 405 RESOURCE_LOCKED -------------------------------------------------------


@pytest.mark.parametrize(
    "op",
    ["passive", "redeclare", "redeclare_exclusive", "consume", "get", "purge", "delete", "bind"],
)
def test_exclusive_queue_from_another_connection(conn, other, uid, op):
    q = f"excl-{uid}"
    conn.channel().queue_declare(q, exclusive=True)
    actions = {
        "passive": lambda ch: ch.queue_declare(q, passive=True),
        "redeclare": lambda ch: ch.queue_declare(q),
        "redeclare_exclusive": lambda ch: ch.queue_declare(q, exclusive=True),
        "consume": lambda ch: ch.basic_consume(q, lambda *a: None),
        "get": lambda ch: ch.basic_get(q),
        "purge": lambda ch: ch.queue_purge(q),
        "delete": lambda ch: ch.queue_delete(q),
        "bind": lambda ch: ch.queue_bind(q, "amq.fanout"),
    }
    channel_error(other, actions[op], 405, LOCKED.format(q=q))
    # the owner still has it
    assert conn.channel().queue_declare(q, passive=True).method.queue == q


def test_exclusive_queue_redeclared_non_exclusive_by_owner(conn, uid):
    q = f"excl-{uid}"
    conn.channel().queue_declare(q, exclusive=True)
    channel_error(conn, lambda ch: ch.queue_declare(q, exclusive=False), 405, LOCKED.format(q=q))


# -- 403 ACCESS_REFUSED --------------------------------------------------------


def test_reserved_amq_prefix_queue(conn, uid):
    q = f"amq.q-{uid}"
    channel_error(
        conn, lambda ch: ch.queue_declare(q), 403, f"ACCESS_REFUSED - queue name '{q}' contains reserved prefix 'amq.*'"
    )


def test_reserved_amq_prefix_exchange(conn, uid):
    x = f"amq.x-{uid}"
    channel_error(
        conn,
        lambda ch: ch.exchange_declare(x, "direct"),
        403,
        f"ACCESS_REFUSED - exchange name '{x}' contains reserved prefix 'amq.*'",
    )


def test_redeclare_existing_amq_exchange_is_allowed(conn):
    ch = conn.channel()
    ch.exchange_declare("amq.direct", "direct", durable=True)
    ch.exchange_declare("amq.topic", passive=True)


def test_delete_system_exchange(conn):
    channel_error(
        conn,
        lambda ch: ch.exchange_delete("amq.direct"),
        403,
        f"ACCESS_REFUSED - deletion of system exchange 'amq.direct' {V} not allowed",
    )
    conn.channel().exchange_declare("amq.direct", passive=True)


def test_delete_default_exchange(conn):
    channel_error(
        conn,
        lambda ch: ch.exchange_delete(""),
        403,
        "ACCESS_REFUSED - operation not permitted on the default exchange",
    )


def test_bind_to_default_exchange(conn, uid):
    q = f"dq-{uid}"
    conn.channel().queue_declare(q, auto_delete=True)
    channel_error(
        conn,
        lambda ch: ch.queue_bind(q, "", "rk"),
        403,
        "ACCESS_REFUSED - operation not permitted on the default exchange",
    )
    conn.channel().queue_delete(q)


def test_publish_to_internal_exchange(conn, uid):
    x = f"internal-{uid}"
    conn.channel().exchange_declare(x, "fanout", internal=True)
    channel_error(
        conn,
        lambda ch: ch.basic_publish(x, "", b"m"),
        403,
        f"ACCESS_REFUSED - cannot publish to internal exchange '{x}' {V}",
    )
    conn.channel().exchange_delete(x)


def test_exclusive_consumer_blocks_other_consumers(conn, other, uid):
    q = f"xc-{uid}"
    ch = conn.channel()
    ch.queue_declare(q, auto_delete=False)
    ch.basic_consume(q, lambda *a: None, exclusive=True)
    text = f"ACCESS_REFUSED - queue '{q}' {V} in exclusive use"
    # same connection, other channel
    channel_error(conn, lambda c: c.basic_consume(q, lambda *a: None), 403, text)
    # other connection
    channel_error(other, lambda c: c.basic_consume(q, lambda *a: None), 403, text)
    channel_error(other, lambda c: c.basic_consume(q, lambda *a: None, exclusive=True), 403, text)
    conn.channel().queue_delete(q)


def test_exclusive_consume_refused_when_queue_has_consumers(conn, other, uid):
    q = f"xc-{uid}"
    ch = conn.channel()
    ch.queue_declare(q, auto_delete=False)
    ch.basic_consume(q, lambda *a: None)
    channel_error(
        other,
        lambda c: c.basic_consume(q, lambda *a: None, exclusive=True),
        403,
        f"ACCESS_REFUSED - queue '{q}' {V} in exclusive use",
    )
    conn.channel().queue_delete(q)


def test_user_id_mismatch(conn, uid):
    q = f"uid-{uid}"
    ch = conn.channel()
    ch.queue_declare(q, auto_delete=False)
    # the right user_id is accepted
    ch.basic_publish("", q, b"ok", pika.BasicProperties(user_id="guest"))
    channel_error(
        conn,
        lambda c: c.basic_publish("", q, b"bad", pika.BasicProperties(user_id="bob")),
        406,
        "PRECONDITION_FAILED - user_id property set to 'bob' but authenticated user was 'guest'",
    )
    ch = conn.channel()
    assert ch.queue_declare(q, passive=True).method.message_count == 1
    ch.queue_delete(q)


# -- 406 PRECONDITION_FAILED: acks, delete, tx/confirm ---------------------------


def test_unknown_delivery_tag(conn):
    channel_error(conn, lambda ch: ch.basic_ack(3), 406, "PRECONDITION_FAILED - unknown delivery tag 3")


@pytest.mark.parametrize("how", ["ack", "nack", "reject", "ack_multiple"])
def test_double_ack(conn, uid, how):
    q = f"dbl-{uid}"
    conn.channel().queue_declare(q, auto_delete=False)

    def act(ch):
        ch.basic_publish("", q, b"m")
        m, _p, _b = ch.basic_get(q)
        assert m.delivery_tag == 1
        ch.basic_ack(1)
        ch.queue_declare(q, passive=True)  # the first ack is fine
        if how == "ack":
            ch.basic_ack(1)
        elif how == "nack":
            ch.basic_nack(1)
        elif how == "reject":
            ch.basic_reject(1)
        else:
            ch.basic_ack(1, multiple=True)

    channel_error(conn, act, 406, "PRECONDITION_FAILED - unknown delivery tag 1")
    conn.channel().queue_delete(q)


def test_queue_delete_if_unused(conn, uid):
    q = f"du-{uid}"
    ch = conn.channel()
    ch.queue_declare(q, auto_delete=False)
    ch.basic_consume(q, lambda *a: None)
    channel_error(
        conn, lambda c: c.queue_delete(q, if_unused=True), 406, f"PRECONDITION_FAILED - queue '{q}' {V} in use"
    )
    ch.queue_delete(q)


def test_queue_delete_if_empty(conn, uid):
    q = f"de-{uid}"
    ch = conn.channel()
    ch.queue_declare(q, auto_delete=False)
    ch.basic_publish("", q, b"m")
    channel_error(
        conn, lambda c: c.queue_delete(q, if_empty=True), 406, f"PRECONDITION_FAILED - queue '{q}' {V} not empty"
    )
    assert ch.queue_delete(q).method.message_count == 1


def test_exchange_delete_if_unused(conn, uid):
    x = f"xu-{uid}"
    q = f"xuq-{uid}"
    ch = conn.channel()
    ch.exchange_declare(x, "direct")
    ch.queue_declare(q, auto_delete=False)
    ch.queue_bind(q, x, "k")
    channel_error(
        conn, lambda c: c.exchange_delete(x, if_unused=True), 406, f"PRECONDITION_FAILED - exchange '{x}' {V} in use"
    )
    ch.queue_unbind(q, x, "k")
    ch.exchange_delete(x, if_unused=True)
    ch.queue_delete(q)


def test_confirm_then_tx_select(conn):
    def act(ch):
        ch.confirm_delivery()
        ch.tx_select()

    channel_error(conn, act, 406, "PRECONDITION_FAILED - cannot switch from confirm to tx mode")


def test_tx_then_confirm_select(conn):
    def act(ch):
        ch.tx_select()
        ch.confirm_delivery()

    channel_error(conn, act, 406, "PRECONDITION_FAILED - cannot switch from tx to confirm mode")


def test_tx_commit_without_select(conn):
    channel_error(conn, lambda ch: ch.tx_commit(), 406, "PRECONDITION_FAILED - channel is not transactional")


def test_tx_rollback_without_select(conn):
    channel_error(conn, lambda ch: ch.tx_rollback(), 406, "PRECONDITION_FAILED - channel is not transactional")


@pytest.mark.parametrize(
    "xmatch, text",
    [
        ("foo", "PRECONDITION_FAILED - Invalid x-match field value <<\"foo\">>; "
                "expected all, any, all-with-x, or any-with-x"),
        (1, "PRECONDITION_FAILED - Invalid x-match field type signedint (value 1); expected longstr"),
    ],
)
def test_headers_binding_with_invalid_x_match(conn, uid, xmatch, text):
    # rabbit_exchange_type_headers:validate_binding
    q = f"hx-{uid}"
    conn.channel().queue_declare(q, auto_delete=False)
    channel_error(conn, lambda ch: ch.queue_bind(q, "amq.headers", arguments={"x-match": xmatch, "a": 1}), 406, text)
    # and routing through amq.headers still works afterwards
    ch = conn.channel()
    ch.basic_publish("amq.headers", "", b"m", pika.BasicProperties(headers={"a": 1}))
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    ch.queue_delete(q)


# -- successes that RabbitMQ treats as no-ops ------------------------------------


def test_unbind_of_missing_binding_succeeds(conn, uid):
    q = f"ub-{uid}"
    x = f"ubx-{uid}"
    ch = conn.channel()
    ch.queue_declare(q, auto_delete=False)
    ch.exchange_declare(x, "direct")
    ch.queue_unbind(q, x, "never-bound")
    ch.exchange_unbind(x, "amq.direct", "never-bound")
    ch.queue_delete(q)
    ch.exchange_delete(x)
    assert ch.is_open


def test_delete_missing_queue_and_exchange_succeeds(conn, uid):
    ch = conn.channel()
    ok = ch.queue_delete(f"never-{uid}")
    assert ok.method.message_count == 0
    ch.exchange_delete(f"never-x-{uid}")
    assert ch.is_open


# -- connection errors -----------------------------------------------------------


def test_consumer_tag_reuse_is_a_connection_error(conn, uid):
    q = f"ct-{uid}"
    conn.channel().queue_declare(q, auto_delete=False)

    def act(ch):
        ch.basic_consume(q, lambda *a: None, consumer_tag=f"tag-{uid}")
        # pika refuses a duplicate tag itself, so send the second consume directly
        ch._impl._send_method(pika.spec.Basic.Consume(queue=q, consumer_tag=f"tag-{uid}"))
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.2)

    connection_error(conn, act, 530, f"NOT_ALLOWED - attempt to reuse consumer tag 'tag-{uid}'")
    c2 = connect(conn._impl.params.port)
    c2.channel().queue_delete(q)
    c2.close()


def test_qos_prefetch_size_is_not_implemented(conn):
    connection_error(
        conn, lambda ch: ch.basic_qos(prefetch_size=1000, prefetch_count=1), 540,
        "NOT_IMPLEMENTED - prefetch_size!=0 (1000)",
    )


def test_channel_flow_inactive_is_not_implemented(conn):
    # RabbitMQ: handle_method(#'channel.flow'{active = false}) -> not_implemented
    connection_error(conn, lambda ch: ch.flow(False), 540, "NOT_IMPLEMENTED - active=false")


def test_basic_recover_without_requeue_is_not_implemented(conn):
    # RabbitMQ: basic.recover_async{requeue = false} -> not_implemented "requeue=false"
    connection_error(conn, lambda ch: ch.basic_recover(requeue=False), 540, "NOT_IMPLEMENTED - requeue=false")


def test_channel_error_does_not_disturb_other_channels(conn, uid):
    q = f"oc-{uid}"
    keep = conn.channel()
    keep.queue_declare(q, auto_delete=False)
    channel_error(conn, lambda ch: ch.queue_declare(f"nope-{uid}", passive=True), 404,
                  f"NOT_FOUND - no queue 'nope-{uid}' {V}")
    keep.basic_publish("", q, b"m")
    assert keep.basic_get(q, auto_ack=True)[2] == b"m"
    keep.queue_delete(q)


# -- login / vhost -------------------------------------------------------------

AUTH_TEXT = (
    "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. "
    "For details see the broker logfile."
)


def _refused(port, user, password):
    with pytest.raises((ProbableAuthenticationError, ConnectionClosedByBroker)) as ei:
        connect(port, credentials=pika.PlainCredentials(user, password))
    assert f"(403) '{AUTH_TEXT}'" in str(ei.value) or (
        getattr(ei.value, "reply_code", None) == 403 and ei.value.reply_text == AUTH_TEXT
    ), str(ei.value)


def test_wrong_password(broker):
    _refused(broker.port, "guest", "wrong")


def test_unknown_user(broker):
    _refused(broker.port, "nobody", "guest")


def test_unknown_vhost(broker):
    with pytest.raises((ProbableAccessDeniedError, ConnectionClosedByBroker)) as ei:
        connect(broker.port, virtual_host="no-such-vhost")
    s = str(ei.value)
    assert "(530) 'NOT_ALLOWED - vhost no-such-vhost not found'" in s or (
        getattr(ei.value, "reply_code", None) == 530
        and ei.value.reply_text == "NOT_ALLOWED - vhost no-such-vhost not found"
    ), s
    # the broker is fine afterwards
    c = connect(broker.port)
    assert_usable(c)
    c.close()


def _bob_works(b):
    c = connect(b.port, credentials=pika.PlainCredentials("bob", "secret"))
    assert_usable(c)
    c.close()
    _refused(b.port, "guest", "guest")
    _refused(b.port, "bob", "wrong")


def test_default_user_from_flags(broker_factory):
    _bob_works(broker_factory(extra=["--default-user", "bob", "--default-pass", "secret"]))


def test_default_user_from_env(broker_factory):
    _bob_works(broker_factory(env={"BROKER_DEFAULT_USER": "bob", "BROKER_DEFAULT_PASS": "secret"}))
