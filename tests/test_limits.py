"""Vhost limits (max-connections, max-queues) and user limits (max-connections, max-channels)
against a real broker: refusals with RabbitMQ's codes and texts seen by pika, the HTTP API's
shapes and bad input, and the CLI verbs."""

from __future__ import annotations

import json
import re

import pika
import pika.exceptions
import pytest

from conftest import _make
from test_admin_cli import run
from test_management_api import Http, connect, mgmt_url


@pytest.fixture(scope="module")
def lb(tmp_path_factory):
    b = _make(tmp_path_factory.mktemp("limits-broker"), extra=["--management-port", "0"]).start()
    b.url = mgmt_url(b)
    yield b
    b.stop()


@pytest.fixture
def api(lb) -> Http:
    return Http(lb.url)


@pytest.fixture
def vhost(api, uid):
    """A vhost of its own, with the guest user allowed in."""
    name = f"lv{uid}"
    api.ok("PUT", f"/api/vhosts/{name}")
    api.ok("PUT", f"/api/permissions/{name}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    yield name
    api.delete(f"/api/vhosts/{name}")


@pytest.fixture
def user(api, uid):
    name = f"lu{uid}"
    api.ok("PUT", f"/api/users/{name}", {"password": "pw", "tags": "management"})
    api.ok("PUT", f"/api/permissions/%2F/{name}", {"configure": ".*", "write": ".*", "read": ".*"})
    yield name
    api.delete(f"/api/users/{name}")


def refused_at_open(b, **kw) -> tuple[int, str]:
    """(reply code, text) of the Connection.Close that refused a connection at Connection.Open
    (pika reports it as a ProbableAccessDeniedError quoting the broker's close)."""
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as e:
        connect(b, **kw)
    m = re.fullmatch(r'ConnectionClosedByBroker: \((\d+)\) "(.*)"', str(e.value.args[0]), re.S)
    assert m, repr(e.value)
    return int(m.group(1)), m.group(2)


def test_vhost_max_connections(api, lb, vhost):
    api.ok("PUT", f"/api/vhost-limits/{vhost}/max-connections", {"value": 2})
    assert api.get(f"/api/vhost-limits/{vhost}").json == [{"vhost": vhost, "value": {"max-connections": 2}}]
    conns = [connect(lb, vhost=vhost) for _ in range(2)]
    assert refused_at_open(lb, vhost=vhost) == (
        530, f"NOT_ALLOWED - access to vhost '{vhost}' refused for user 'guest': connection limit (2) is reached")
    connect(lb).close()  # other vhosts are not counted
    conns.pop().close()
    conns.append(connect(lb, vhost=vhost))  # a freed place is taken again
    # -1: no limit; 0: no connection at all
    api.ok("PUT", f"/api/vhost-limits/{vhost}/max-connections", {"value": -1})
    conns.append(connect(lb, vhost=vhost))
    api.ok("PUT", f"/api/vhost-limits/{vhost}/max-connections", {"value": 0})
    assert refused_at_open(lb, vhost=vhost)[0] == 530
    assert all(c.is_open for c in conns)  # what is open stays open
    assert api.delete(f"/api/vhost-limits/{vhost}/max-connections").status == 204
    assert api.get(f"/api/vhost-limits/{vhost}").json == []
    conns.append(connect(lb, vhost=vhost))
    for c in conns:
        c.close()


def test_vhost_max_queues(api, lb, vhost):
    api.ok("PUT", f"/api/vhost-limits/{vhost}/max-queues", {"value": 2})
    conn = connect(lb, vhost=vhost)
    ch = conn.channel()
    ch.queue_declare("a")
    ch.queue_declare("b")
    ch.queue_declare("a")  # a redeclare is not a new queue
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("c")
    assert (e.value.reply_code, e.value.reply_text) == (
        406, f"PRECONDITION_FAILED - cannot declare queue 'c': queue limit in vhost '{vhost}' (2) is reached")
    assert conn.is_open
    r = api.put(f"/api/queues/{vhost}/c", {"durable": True})
    assert r.status == 400 and "queue limit in vhost" in r.json["reason"]
    api.ok("PUT", f"/api/vhost-limits/{vhost}/max-queues", {"value": 0})
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("", exclusive=True)
    assert e.value.reply_code == 406 and "(0) is reached" in e.value.reply_text
    api.delete(f"/api/vhost-limits/{vhost}/max-queues")
    conn.channel().queue_declare("c")
    conn.close()


def test_user_max_connections_and_channels(api, lb, user):
    api.ok("PUT", f"/api/user-limits/{user}/max-connections", {"value": 1})
    api.ok("PUT", f"/api/user-limits/{user}/max-channels", {"value": 2})
    assert api.get(f"/api/user-limits/{user}").json == [
        {"user": user, "value": {"max-connections": 1, "max-channels": 2}}]
    assert {"user": user, "value": {"max-connections": 1, "max-channels": 2}} in api.get("/api/user-limits").json
    assert api.get(f"/api/users/{user}").json["limits"] == {"max-connections": 1, "max-channels": 2}
    conn = connect(lb, user, "pw")
    assert refused_at_open(lb, user=user, password="pw") == (
        530, f"NOT_ALLOWED - connection refused for user '{user}': user connection limit (1) is reached")
    connect(lb).close()  # another user is not counted
    conn.channel()
    conn.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        conn.channel()
    assert (e.value.reply_code, e.value.reply_text) == (
        530, f"NOT_ALLOWED - number of channels opened for user '{user}' has reached the maximum allowed user "
             "limit of 2")
    # a changed password keeps the limits; clearing one leaves the other
    api.ok("PUT", f"/api/users/{user}", {"password": "pw2"})
    assert api.delete(f"/api/user-limits/{user}/max-connections").status == 204
    assert api.get(f"/api/user-limits/{user}").json == [{"user": user, "value": {"max-channels": 2}}]
    c1, c2 = connect(lb, user, "pw2"), connect(lb, user, "pw2")
    c1.channel()
    c2.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker):
        c2.channel()  # channels count across the user's connections
    c1.close()


@pytest.mark.parametrize("path, body, status, reason", [
    ("vhost-limits/%2F/max-conections", {"value": 5}, 400,
     'Validation failed\n\nUnrecognised terms [{<<"max-conections">>,5}] in limits\n'),
    ("vhost-limits/%2F/max-connections", {"value": "ten"}, 400,
     'Validation failed\n\nmax-connections should be a number, actually was <<"ten">>\n'),
    ("vhost-limits/%2F/max-queues", {"value": 1.5}, 400, "max-queues should be a number, actually was 1.5"),
    ("vhost-limits/%2F/max-queues", {}, 400, "[{key_missing,value}]"),
    ("vhost-limits/nosuchvhost/max-queues", {"value": 1}, 404, None),
    ("user-limits/guest/max-queues", {"value": 1}, 400, "Unrecognised terms [{<<\"max-queues\">>,1}] in user-limits"),
    ("user-limits/guest/max-channels", {"value": True}, 400, "max-channels should be a number, actually was true"),
    ("user-limits/nosuchuser/max-channels", {"value": 1}, 404, None),
])
def test_bad_limits_are_refused(api, path, body, status, reason):
    r = api.put(f"/api/{path}", body)
    assert r.status == status, r
    if reason is not None:
        assert reason in r.json["reason"], r.json["reason"]
    assert api.get("/api/vhost-limits/%2F").json == []
    assert api.get("/api/user-limits/guest").json == []


def test_limits_need_an_administrator(api, lb, user):
    r = Http(lb.url, user, "pw").put("/api/vhost-limits/%2F/max-queues", {"value": 1})
    assert r.status == 403 and r.json["reason"] == "Not administrator user"
    assert Http(lb.url, user, "pw").put(f"/api/user-limits/{user}/max-channels", {"value": 1}).status == 403
    assert Http(lb.url, user, "pw").get("/api/user-limits").status == 403


def test_limits_cli_verbs(api, lb, vhost, user):
    def cli(*args, check=True):
        return run(list(args), url=lb.url, check=check)

    r = cli("set-vhost-limits", "-p", vhost, '{"max-connections": 10, "max-queues": 20}')
    assert r.stdout.strip() == \
        f'Setting vhost limits to "{{"max-connections": 10, "max-queues": 20}}" for vhost "{vhost}" ...'
    assert json.loads(cli("list-vhost-limits", "-p", vhost).stdout) == {"max-connections": 10, "max-queues": 20}
    rows = [ln.split(None, 1) for ln in cli("list-vhost-limits", "--global").stdout.splitlines()]
    assert rows[0] == ["vhost", "limits"] and [vhost, '{"max-connections":10,"max-queues":20}'] in rows
    # a definition with one bad value changes nothing
    r = cli("set-vhost-limits", "-p", vhost, '{"max-connections": 1, "max-queues": "x"}', check=False)
    assert r.returncode == 1 and 'max-queues should be a number, actually was <<"x">>' in r.stderr
    assert api.get(f"/api/vhost-limits/{vhost}").json[0]["value"] == {"max-connections": 10, "max-queues": 20}
    assert cli("clear-vhost-limits", "-p", vhost).stdout.strip() == f'Clearing vhost "{vhost}" limits ...'
    assert api.get(f"/api/vhost-limits/{vhost}").json == []
    r = cli("set-user-limits", user, '{"max-channels": 3}')
    assert r.stdout.strip() == f'Setting user limits to "{{"max-channels": 3}}" for user "{user}" ...'
    assert json.loads(cli("list-user-limits", user).stdout) == {"max-channels": 3}
    assert [user, '{"max-channels":3}'] in [ln.split(None, 1) for ln in
                                            cli("list-user-limits", "--global").stdout.splitlines()]
    r = cli("clear-user-limits", user, "max-channels")
    assert r.stdout.strip() == f'Clearing "max-channels" limit for user "{user}" ...'
    cli("set-user-limits", user, '{"max-channels": 3, "max-connections": 4}')
    assert cli("clear-user-limits", user, "all").stdout.strip() == f'Clearing all limits for user "{user}" ...'
    assert json.loads(cli("list-user-limits", user).stdout) == {}
    r = cli("set-user-limits", f"ghost{user}", '{"max-channels": 3}', check=False)
    assert r.returncode == 1 and f"user 'ghost{user}' does not exist" in r.stderr
