"""Durable metadata under hostile input and failing disks: bounded arguments, saves
that fail the operation instead of being logged and forgotten, and recovery that
keeps message data it cannot match (lost+found) instead of deleting it.

Every test runs real broker processes with real clients (pika, urllib, the
``broker`` command); the full disk is a real tmpfs.
"""

from __future__ import annotations

import json
import os
import time

import pika
import pika.exceptions
import pytest

from broker.management.http import HTTPError, json_object
from conftest import BrokerProcess, _make
from protocol import fields
from test_admin_cli import run
from test_management_api import Http, mgmt_url


def _nested(depth: int) -> dict:
    d: dict = {"leaf": 1}
    for _ in range(depth - 1):
        d = {"x": d}
    return d


def _start(tmp, name="b", extra=None) -> BrokerProcess:
    return _make(tmp / name, extra=["--management-port", "0", *(extra or [])]).start()


def _publish_confirmed(port: int, queue: str, n: int) -> None:
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    ch = conn.channel()
    ch.confirm_delivery()
    for i in range(n):
        ch.basic_publish("", queue, f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
    conn.close()


def _drain(port: int, queue: str) -> list[bytes]:
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    ch = conn.channel()
    out = []
    while True:
        _m, _p, body = ch.basic_get(queue, auto_ack=True)
        if body is None:
            break
        out.append(body)
    conn.close()
    return out


# -- in-process: the bounds themselves ---------------------------------------------------

def test_table_bounds_depth_and_size():
    assert fields.table_bounds_problem(_nested(fields.MAX_TABLE_DEPTH)) is None
    assert "nested more than" in fields.table_bounds_problem(_nested(fields.MAX_TABLE_DEPTH + 1))
    assert "nested more than" in fields.table_bounds_problem({"a": _nested(5000)})
    assert fields.table_bounds_problem({"k": "v" * 1000}) is None
    assert "larger than" in fields.table_bounds_problem({"k": "v" * (fields.MAX_TABLE_BYTES + 1)})
    assert "larger than" in fields.table_bounds_problem({f"k{i}": i for i in range(20000)})


def test_json_object_refuses_deep_documents():
    for depth in (100, 100_000):  # over the bound; over Python's recursion limit
        raw = '{"a":' * depth + "1" + "}" * depth
        with pytest.raises(HTTPError) as e:
            json_object(raw, "the request body")
        assert e.value.status == 400 and "nested more than 64 levels" in e.value.reason
    assert json_object('{"a": {"b": [1, {"c": 2}]}}', "x") == {"a": {"b": [1, {"c": 2}]}}


# -- the finding: deep arguments used to break every later save ------------------------------

def test_deep_arguments_refused_and_nothing_confirmed_is_lost(tmp_path):
    b = _start(tmp_path)
    api = Http(mgmt_url(b))
    # the attack: a management user PUTs a durable queue with arguments 600 levels deep
    api.ok("PUT", "/api/users/mallory", {"password": "pw", "tags": "management"})
    api.ok("PUT", "/api/permissions/%2F/mallory", {"configure": ".*", "write": ".*", "read": ".*"})
    evil = api.as_user("mallory", "pw")
    r = evil.req("PUT", "/api/queues/%2F/q", {"durable": True, "arguments": {"deep": _nested(600)}})
    assert r.status == 400, r
    assert "nested more than" in r.json["reason"]
    # within the body bound but deeper than the arguments bound: named as such
    r = evil.req("PUT", "/api/queues/%2F/q", {"durable": True, "arguments": {"deep": _nested(40)}})
    assert r.status == 400 and "arguments" in r.json["reason"] and "32 levels" in r.json["reason"], r
    # the API keeps answering, and every later change is saved
    assert api.req("GET", "/api/queues").status == 200
    assert api.req("GET", "/api/definitions").status == 200
    api.ok("PUT", "/api/users/newbie", {"password": "pw", "tags": ""})
    api.ok("DELETE", "/api/users/mallory")
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
    conn.channel().queue_declare("orders", durable=True)
    conn.close()
    _publish_confirmed(b.port, "orders", 100)
    b.stop()
    b.start()
    api = Http(mgmt_url(b))
    users = {u["name"] for u in api.req("GET", "/api/users").json}
    assert "newbie" in users and "mallory" not in users
    assert _drain(b.port, "orders") == [f"m{i}".encode() for i in range(100)]
    b.stop()


def test_deep_arguments_over_amqp_are_406(broker, uid):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(f"deep-{uid}", durable=True, arguments={"deep": _nested(40)})
    assert e.value.reply_code == 406
    assert "field tables nested more than 32 levels deep" in e.value.reply_text
    ch = conn.channel()
    ch.exchange_declare(f"x-{uid}", "direct")
    ch.queue_declare(f"ok-{uid}")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_bind(f"ok-{uid}", f"x-{uid}", "k", arguments={"deep": _nested(40)})
    assert e.value.reply_code == 406
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.exchange_declare(f"big-{uid}", "direct", arguments={"big": "x" * 70_000})
    assert e.value.reply_code == 406 and "larger than 65536 bytes" in e.value.reply_text
    conn.close()


# -- a save that fails fails the operation, and raises the metadata alarm ----------------------

def _fill(disk) -> str:
    """Fill a tmpfs to the last byte; return the filler's path."""
    path = os.path.join(disk, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return path


def test_failed_metadata_save_fails_the_operation(small_disk, tmp_path):
    disk = small_disk("8m")
    b = BrokerProcess(disk, tmp_path / "broker.log",
                      ["--disk-free-limit", "0", "--management-port", "0"]).start()
    try:
        api = Http(mgmt_url(b))
        assert api.req("GET", "/api/health/checks/alarms").status == 200
        filler = _fill(disk)
        # AMQP: the Declare-Ok never comes; the connection is closed with 541
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
            ch.exchange_declare("durable-x", "topic", durable=True)
        assert e.value.reply_code == 541
        assert "durable metadata could not be saved" in e.value.reply_text
        # a durable queue whose log cannot even be made is not declared at all
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
            ch.queue_declare("durable-q", durable=True)
        assert e.value.reply_code == 541
        assert "cannot create the message log of queue 'durable-q'" in e.value.reply_text
        assert api.req("GET", "/api/queues/%2F/durable-q").status == 404
        # HTTP: 500 with the reason
        r = api.put("/api/vhosts/v2")
        assert r.status == 500 and "durable metadata could not be saved" in r.json["reason"], r
        # the alarm shows in the health check, the overview and the metrics
        r = api.req("GET", "/api/health/checks/alarms")
        assert r.status == 503
        assert any(a["resource"] == "metadata" for a in r.json["alarms"])
        node = api.req("GET", "/api/nodes").json[0]
        assert node["metadata_alarm"]
        # transient work carries on meanwhile
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        ch = conn.channel()
        ch.queue_declare("mem")
        ch.basic_publish("", "mem", b"still here")
        assert ch.basic_get("mem", auto_ack=True)[2] == b"still here"
        conn.close()
        # room again: the retry saves everything and clears the alarm
        os.unlink(filler)
        deadline = time.monotonic() + 10
        while api.req("GET", "/api/health/checks/alarms").status != 200:
            assert time.monotonic() < deadline, "the metadata alarm did not clear after space was freed"
            time.sleep(0.2)
        assert "metadata alarm cleared" in b.log_text()
    finally:
        b.stop()
    b2 = BrokerProcess(disk, tmp_path / "broker2.log", ["--disk-free-limit", "0", "--management-port", "0"]).start()
    try:
        api = Http(mgmt_url(b2))
        assert api.req("GET", "/api/exchanges/%2F/durable-x").status == 200
        assert api.req("GET", "/api/vhosts/v2").status == 200
    finally:
        b2.stop()


# -- recovery keeps what it cannot match -------------------------------------------------------

def _lose_queue_metadata(tmp, queue: str, n: int) -> BrokerProcess:
    """A broker whose durable queue ``queue`` holds ``n`` confirmed messages, restarted
    after its metadata lost the queue (as a failed save used to make it do)."""
    b = _start(tmp)
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
    conn.channel().queue_declare(queue, durable=True)
    conn.close()
    _publish_confirmed(b.port, queue, n)
    b.stop()
    path = b.data_dir / "definitions.json"
    defs = json.loads(path.read_text())
    defs["queues"] = [q for q in defs["queues"] if q["name"] != queue]
    path.write_text(json.dumps(defs))
    return b.start()


def test_unmatched_queue_data_goes_to_lost_found_and_back(tmp_path):
    b = _lose_queue_metadata(tmp_path, "订单", 50)
    assert "matches no declared queue: moved to" in b.log_text()
    lost = list((b.data_dir / "lost+found").iterdir())
    assert len(lost) == 1 and any(p.suffix == ".seg" for p in lost[0].iterdir())
    url = mgmt_url(b)
    r = run(["list-lost-found", "--json"], url=url, check=True)
    entries = json.loads(r.stdout)
    assert len(entries) == 1
    entry = entries[0]
    assert (entry["vhost"], entry["queue"], entry["messages"]) == ("/", "订单", 50)
    # a non-administrator may not see or import it
    api = Http(url)
    api.ok("PUT", "/api/users/mon", {"password": "pw", "tags": "monitoring"})
    assert api.as_user("mon", "pw").req("GET", "/api/lost-found").status == 403
    r = run(["import-lost-found", entry["id"]], url=url, check=True)
    assert "Imported 50 messages into queue '订单' in vhost '/' (declared it)" in r.stdout
    assert json.loads(run(["list-lost-found", "--json"], url=url, check=True).stdout) == []
    r = run(["import-lost-found", entry["id"]], url=url)
    assert r.returncode == 1 and "no lost+found entry" in r.stderr
    # the messages are back, in order, and durable again
    b.stop()
    b.start()
    assert _drain(b.port, "订单") == [f"m{i}".encode() for i in range(50)]
    b.stop()


def test_lost_found_delete(tmp_path):
    b = _lose_queue_metadata(tmp_path, "gone", 3)
    url = mgmt_url(b)
    (entry,) = json.loads(run(["list-lost-found", "--json"], url=url, check=True).stdout)
    assert entry["messages"] == 3
    r = run(["delete-lost-found", entry["id"]], url=url, check=True)
    assert "Deleted lost+found entry" in r.stdout
    assert not list((b.data_dir / "lost+found").iterdir())
    b.stop()
