"""Topic permissions against a real broker: the HTTP API, the CLI, pika publishing and binding,
definitions export/import and a restart."""

from __future__ import annotations

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from conftest import _make
from test_admin_cli import run, table
from test_management_api import Http, connect, mgmt_url, q


@pytest.fixture(scope="module")
def tb(tmp_path_factory):
    b = _make(tmp_path_factory.mktemp("topic-perms"), extra=["--management-port", "0"]).start()
    b.url = mgmt_url(b)
    yield b
    b.stop()


@pytest.fixture
def api(tb) -> Http:
    return Http(tb.url)


@pytest.fixture
def user(api, uid):
    """A user with full ordinary permissions on '/', and a topic exchange."""
    name = f"tp{uid}"
    api.ok("PUT", f"/api/users/{name}", {"password": "pw", "tags": ""})
    api.ok("PUT", f"/api/permissions/%2F/{name}", {"configure": ".*", "write": ".*", "read": ".*"})
    api.ok("PUT", f"/api/exchanges/%2F/logs-{uid}", {"type": "topic"})
    return name


def refused(what: str, key: str, exchange: str, user: str, vhost: str = "/") -> str:
    return (f"ACCESS_REFUSED - {what} access to topic '{key}' in exchange '{exchange}' in vhost '{vhost}' "
            f"refused for user '{user}'")


def test_publish_is_checked_against_the_write_regex_with_variables(tb, api, user, uid):
    x = f"logs-{uid}"
    api.ok("PUT", f"/api/topic-permissions/%2F/{user}", {"exchange": x, "write": "^{username}\\.", "read": ".*"})
    conn = connect(tb, user, "pw")
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(x, f"{user}.info", b"ok")  # matches
        ch.basic_publish("amq.direct", "anything", b"ok")  # not a topic exchange: not checked
        ch.basic_publish("amq.topic", "anything", b"ok")  # no topic permission there: not restricted
        with pytest.raises(ChannelClosedByBroker) as e:
            ch.basic_publish(x, "someone-else.info", b"no")
        assert e.value.reply_code == 403
        assert e.value.reply_text == refused("write", "someone-else.info", x, user)
        assert conn.is_open
    finally:
        conn.close()


def test_bind_and_unbind_are_checked_against_the_read_regex(tb, api, user, uid):
    x = f"logs-{uid}"
    api.ok("PUT", f"/api/topic-permissions/%2F/{user}", {"exchange": x, "write": ".*", "read": "^{vhost}audit\\."})
    conn = connect(tb, user, "pw")
    try:
        ch = conn.channel()
        qn = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(qn, x, "/audit.#")
        ch.queue_unbind(qn, x, "/audit.#")
        with pytest.raises(ChannelClosedByBroker) as e:
            ch.queue_bind(qn, x, "payments.#")
        assert e.value.reply_text == refused("read", "payments.#", x, user)
        ch = conn.channel()
        ch.exchange_declare(f"dest-{uid}", "fanout", auto_delete=True)
        with pytest.raises(ChannelClosedByBroker) as e:
            ch.exchange_bind(f"dest-{uid}", x, "payments.#")
        assert e.value.reply_text == refused("read", "payments.#", x, user)
        ch = conn.channel()
        with pytest.raises(ChannelClosedByBroker) as e:
            ch.queue_unbind(qn, x, "other")
        assert e.value.reply_code == 403
    finally:
        conn.close()


def test_empty_regex_allows_only_the_empty_key_and_names_match_literally(tb, api, uid):
    name = f"a.b{uid}"  # a '.' in a name must not match any character
    api.ok("PUT", f"/api/users/{q(name)}", {"password": "pw", "tags": ""})
    api.ok("PUT", f"/api/permissions/%2F/{q(name)}", {"configure": ".*", "write": ".*", "read": ".*"})
    api.ok("PUT", f"/api/topic-permissions/%2F/{q(name)}", {"exchange": "amq.topic", "write": "^{username}$",
                                                            "read": ""})
    conn = connect(tb, name, "pw")
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("amq.topic", name, b"ok")
        with pytest.raises(ChannelClosedByBroker):
            ch.basic_publish("amq.topic", name.replace(".", "X"), b"no")
        ch = conn.channel()
        qn = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(qn, "amq.topic", "")  # the empty read regex allows only the empty key
        with pytest.raises(ChannelClosedByBroker):
            ch.queue_bind(qn, "amq.topic", "x")
    finally:
        conn.close()


def test_http_api_shapes_and_bad_input(api, user, uid):
    x = f"logs-{uid}"
    base = f"/api/topic-permissions/%2F/{user}"
    assert api.put(base, {"exchange": x, "write": "^a", "read": "^b"}).status == 201
    assert api.put(base, {"exchange": x, "write": "^a2", "read": "^b"}).status == 204
    api.ok("PUT", base, {"exchange": "amq.topic", "write": ".*", "read": ".*"})
    row = {"user": user, "vhost": "/", "exchange": x, "write": "^a2", "read": "^b"}
    got = api.get(base).json
    assert row in got and len(got) == 2
    assert row in api.get("/api/topic-permissions").json
    assert row in api.get(f"/api/users/{user}/topic-permissions").json
    assert row in api.get("/api/vhosts/%2F/topic-permissions").json
    # bad input: 400 naming the field, nothing changed
    for body, field in [
        ({"exchange": x, "write": "(a", "read": ".*"}, "'write'"),
        ({"exchange": x, "write": ".*", "read": "(?=x)"}, "'read'"),
        ({"exchange": x, "write": ".*"}, "'read'"),
        ({"write": ".*", "read": ".*"}, "'exchange'"),
        ({"exchange": "", "write": ".*", "read": ".*"}, "'exchange'"),
        ({"exchange": "x" * 256, "write": ".*", "read": ".*"}, "'exchange'"),
        ({"exchange": x, "write": "a" * 5000, "read": ".*"}, "'write'"),
    ]:
        r = api.put(base, body)
        assert r.status == 400 and field in r.json["reason"], (body, r)
    assert api.get(base).json == got
    assert api.put(f"/api/topic-permissions/%2F/nobody-{uid}", {"exchange": x, "write": "", "read": ""}).status == 400
    assert api.put(f"/api/topic-permissions/nowhere-{uid}/{user}",
                   {"exchange": x, "write": "", "read": ""}).status == 400
    # one exchange, then all
    api.ok("DELETE", f"{base}?exchange=amq.topic")
    assert [r["exchange"] for r in api.get(base).json] == [x]
    api.ok("DELETE", base)
    assert api.get(base).status == 404
    assert api.delete(base).status == 404
    # a user without the administrator tag may not manage them
    assert api.as_user(user, "pw").get("/api/topic-permissions").status in (401, 403)


@pytest.mark.slow
def test_cli_verbs(tb, api, user, uid):
    x = f"logs-{uid}"
    r = run(["set-topic-permissions", user, x, "^w", "^r"], url=tb.url, check=True)
    assert f'Setting topic permissions on "{x}" for user "{user}"' in r.stdout
    rows = table(run(["list-topic-permissions"], url=tb.url, check=True).stdout)
    assert [user, x, "^w", "^r"] in rows
    rows = table(run(["list-user-topic-permissions", user], url=tb.url, check=True).stdout)
    assert ["/", x, "^w", "^r"] in rows
    r = run(["set-topic-permissions", user, x, "(", "^r"], url=tb.url)
    assert r.returncode != 0 and "'write'" in r.stderr
    run(["clear-topic-permissions", user, x], url=tb.url, check=True)
    assert api.get(f"/api/topic-permissions/%2F/{user}").status == 404
    r = run(["clear-topic-permissions", f"ghost-{uid}"], url=tb.url)
    assert r.returncode != 0 and "does not exist" in r.stderr


def test_deleting_the_user_drops_its_topic_permissions(api, user, uid):
    api.ok("PUT", f"/api/topic-permissions/%2F/{user}", {"exchange": "amq.topic", "write": ".*", "read": ".*"})
    api.ok("DELETE", f"/api/users/{user}")
    assert all(r["user"] != user for r in api.get("/api/topic-permissions").json)


@pytest.mark.slow
def test_saved_exported_imported_and_kept_over_restart(broker_factory, uid):
    a = broker_factory(extra=["--management-port", "0"])
    api = Http(mgmt_url(a))
    api.ok("PUT", "/api/users/alice", {"password": "pw", "tags": ""})
    api.ok("PUT", "/api/permissions/%2F/alice", {"configure": ".*", "write": ".*", "read": ".*"})
    api.ok("PUT", "/api/topic-permissions/%2F/alice", {"exchange": "amq.topic", "write": "^alice\\.", "read": ""})
    defs = api.get("/api/definitions").json
    row = {"user": "alice", "vhost": "/", "exchange": "amq.topic", "write": "^alice\\.", "read": ""}
    assert defs["topic_permissions"] == [row]
    a.stop()
    a.start()
    api = Http(mgmt_url(a))
    assert api.get("/api/topic-permissions").json == [row]
    conn = connect(a, "alice", "pw")
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        with pytest.raises(ChannelClosedByBroker):
            ch.basic_publish("amq.topic", "bob.x", b"no")
    finally:
        conn.close()
    # imported into another broker as RabbitMQ exports them
    b = broker_factory(extra=["--management-port", "0"])
    api_b = Http(mgmt_url(b))
    assert api_b.post("/api/definitions", defs).status == 204
    assert api_b.get("/api/topic-permissions").json == [row]
    bad = dict(defs, topic_permissions=[dict(row, write="(")])
    r = api_b.post("/api/definitions", bad)
    assert r.status == 400 and "'write'" in r.json["reason"]


def test_no_topic_permissions_costs_nothing_on_publish(tb, api, user, uid):
    """Many users' topic permissions: another user's publishes stay unrestricted."""
    x = f"logs-{uid}"
    others = [f"{user}-other{i}" for i in range(500)]
    api.ok("POST", "/api/definitions", {
        "users": [{"name": n, "password": "pw", "tags": ""} for n in others],
        "topic_permissions": [{"user": n, "vhost": "/", "exchange": x, "write": "^nothing$", "read": ""}
                              for n in others],
    })
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", tb.port,
                                                             credentials=pika.PlainCredentials(user, "pw")))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        for i in range(50):
            ch.basic_publish(x, f"any.key.{i}", b"ok")
        assert ch.is_open
    finally:
        conn.close()


def test_http_publish_and_binding_are_checked_for_non_administrators(api, user, uid):
    x = f"logs-{uid}"
    api.ok("PUT", f"/api/users/{user}", {"password": "pw", "tags": "management"})
    api.ok("PUT", f"/api/topic-permissions/%2F/{user}", {"exchange": x, "write": "^ok\\.", "read": "^ok\\."})
    api.ok("PUT", f"/api/queues/%2F/tq-{uid}", {})
    as_user = api.as_user(user, "pw")
    r = as_user.post(f"/api/exchanges/%2F/{x}/publish", {"routing_key": "ok.1", "payload": "p",
                                                         "payload_encoding": "string", "properties": {}})
    assert r.status == 200, r
    r = as_user.post(f"/api/exchanges/%2F/{x}/publish", {"routing_key": "no.1", "payload": "p",
                                                         "payload_encoding": "string", "properties": {}})
    assert r.status == 403 and refused("write", "no.1", x, user) in r.json["reason"]
    assert as_user.post(f"/api/bindings/%2F/e/{x}/q/tq-{uid}", {"routing_key": "ok.#"}).status == 201
    r = as_user.post(f"/api/bindings/%2F/e/{x}/q/tq-{uid}", {"routing_key": "no.#"})
    assert r.status == 403 and refused("read", "no.#", x, user) in r.json["reason"]
