"""Hostile input, disk and definitions: the disk alarm comes before the write
that would cross the limit, and a definitions import says what it did not apply.

The disk tests run on a real tmpfs (``small_disk``; needs root, skipped
otherwise).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time

import aio_pika
import pika
import pika.exceptions
import pytest

from conftest import ROOT, BrokerProcess
from test_management_api import Http, mgmt_url

MiB = 1024 * 1024


# -- the disk alarm before the write --------------------------------------------------------------

def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _async_wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _free(path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _queue_counts(port: int, names: list[str]) -> list[int]:
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    try:
        ch = conn.channel()
        return [ch.queue_declare(n, durable=True, passive=True).method.message_count for n in names]
    finally:
        conn.close()


@pytest.mark.slow
async def test_fanout_to_many_durable_queues_is_stopped_before_the_disk_limit(small_disk, tmp_path, caplog):
    """100 durable queues, 32 KiB persistent messages (3.2 MiB a publish) into a 64 MiB disk
    with a 32 MiB free limit, 40 publishes pipelined with confirms (aio-pika): the alarm must
    come before the publish that crosses the limit, and what the broker had already read
    waits for the alarm to clear, so free space never falls under the limit by more than one
    publish's fanout."""
    disk = small_disk("64m")
    limit = 32 * MiB
    nq = 100
    body = os.urandom(32 * 1024)
    # what one publish takes on the disk: a record per queue (header, properties, names: < 100
    # bytes), each queue's segment file growing by up to one page more than the record
    fanout_bytes = nq * (len(body) + 100 + 4096)
    names = [f"fq{i:03d}" for i in range(nq)]
    extra = ["--disk-free-limit", str(limit)]
    b = BrokerProcess(disk, tmp_path / "broker.log", extra).start()
    aconn = None
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        ch = conn.channel()
        ch.exchange_declare("fan", "fanout", durable=True)
        for n in names:
            ch.queue_declare(n, durable=True)
            ch.queue_bind(n, "fan")
        conn.close()
        caplog.set_level(logging.WARNING, logger="aiormq")
        aconn = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{b.port}/")
        ach = await aconn.channel(publisher_confirms=True)
        fan = await ach.get_exchange("fan")
        message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        pubs = [asyncio.ensure_future(fan.publish(message, "")) for _ in range(40)]  # 128 MiB, 64 MiB disk
        await _async_wait(lambda: "disk alarm set" in b.log_text(), 60, "the disk alarm")
        # the broker takes nothing more from the publisher until the alarm clears
        last = -1
        while sum(p.done() for p in pubs) != last:
            last = sum(p.done() for p in pubs)
            await asyncio.sleep(1.5)
        confirmed = sum(1 for p in pubs if p.done() and not p.cancelled() and p.exception() is None)
        refused = sum(1 for p in pubs if p.done() and not p.cancelled() and p.exception() is not None)
        free = _free(disk)
        overshoot = limit - free
        print(f"free {free} bytes, limit {limit}: overshoot {overshoot} bytes "
              f"(one publish's fanout: {fanout_bytes} bytes); {confirmed} confirmed, {refused} refused")
        assert overshoot <= fanout_bytes, (
            f"free space fell {overshoot} bytes under the limit; one publish's fanout is {fanout_bytes}")
        assert "blocked: low on disk" in b.log_text()
        assert any("blocked" in r.getMessage() and "low on disk" in r.getMessage() for r in caplog.records), \
            "the publisher got connection.blocked"
        assert "No space left" not in b.log_text()
        assert confirmed >= 1 and refused == 0
        assert last < len(pubs), "the publisher should be blocked, not done"
        for p in pubs:
            p.cancel()
    finally:
        if aconn is not None:
            await aconn.close()
        b.stop()
    # nothing confirmed is lost: every confirmed message is in every queue after a restart
    b = BrokerProcess(disk, tmp_path / "broker2.log", extra).start()
    try:
        counts = _queue_counts(b.port, names)
        assert min(counts) >= confirmed, (min(counts), confirmed)
        # the disk is still under the limit: the alarm is up again, and clears once space is freed
        _wait(lambda: "disk alarm set" in b.log_text(), 10, "the disk alarm after the restart")
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        ch = conn.channel()
        for n in names[: nq // 2]:
            ch.queue_purge(n)
        conn.close()
        _wait(lambda: "disk alarm cleared" in b.log_text(), 10, "the disk alarm to clear")
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("", names[0], b"after", pika.BasicProperties(delivery_mode=2))  # confirmed: no NackError
        assert ch.basic_get(names[0], auto_ack=True)[2] == b"after"
        conn.close()
    finally:
        b.stop()


def test_publish_that_cannot_fit_is_refused_before_it_is_written(small_disk, tmp_path):
    """A single publish bigger than the free space (less half the limit) is nacked up front:
    nothing is written, no write fails, the broker goes on taking what fits."""
    disk = small_disk("32m")
    b = BrokerProcess(disk, tmp_path / "broker.log", ["--disk-free-limit", str(8 * MiB)]).start()
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        ch = conn.channel()
        ch.exchange_declare("fan", "fanout", durable=True)
        for i in range(40):
            ch.queue_declare(f"rq{i}", durable=True)
            ch.queue_bind(f"rq{i}", "fan")
        ch.confirm_delivery()
        before = _free(disk)
        with pytest.raises(pika.exceptions.NackError):
            ch.basic_publish("fan", "", os.urandom(1024 * 1024), pika.BasicProperties(delivery_mode=2))  # 40 MiB
        assert _free(disk) >= before - 64 * 1024, "a refused publish must not be written"
        assert "refused" in b.log_text() and "No space left" not in b.log_text()
        assert ch.queue_declare("rq0", durable=True, passive=True).method.message_count == 0
        ch.basic_publish("fan", "", b"small", pika.BasicProperties(delivery_mode=2))
        assert ch.basic_get("rq39", auto_ack=True)[2] == b"small"
        conn.close()
    finally:
        b.stop()


# -- definitions import: what is not applied is said, never dropped -------------------------------

def hostile_definitions(uid: str, broken: bool = True) -> dict:
    """A definitions document with parts this broker does not apply; with ``broken``,
    also a binding whose destination is missing and a permission for an unknown user."""
    vh, user = f"hd{uid}", f"hu{uid}"
    defs = {
        "rabbit_version": "3.12.0",
        "vhosts": [{"name": vh, "description": "the shop", "tags": ["prod"],
                    "metadata": {"description": "the shop", "tags": ["prod"]}, "limits": {"max-connections": 10}}],
        "users": [{"name": user, "password": "hupw", "tags": "management", "limits": {"max-connections": 5}}],
        "permissions": [{"user": user, "vhost": vh, "configure": ".*", "write": ".*", "read": ".*"}],
        "topic_permissions": [{"user": user, "vhost": vh, "exchange": "amq.topic", "write": "^eu", "read": ".*"}],
        "policies": [{"vhost": vh, "name": "ttl-all", "pattern": ".*", "apply-to": "queues",
                      "definition": {"message-ttl": 1000}, "priority": 0}],
        "parameters": [{"vhost": vh, "component": "vhost-limits", "name": "limits", "value": {"max-queues": 3}},
                       {"vhost": vh, "component": "federation-upstream", "name": "up",
                        "value": {"uri": "amqp://elsewhere"}}],
        "global_parameters": [{"name": "cluster_name", "value": "rabbit@old"}],
        "federation_upstreams": [{"name": "up", "uri": "amqp://elsewhere"}],
        "exchanges": [{"name": "hx", "vhost": vh, "type": "topic", "durable": True, "auto_delete": False,
                       "internal": False, "arguments": {}, "colour": "blue"}],
        "queues": [{"name": "hq", "vhost": vh, "durable": True, "auto_delete": False, "arguments": {},
                    "shiny": True}],
        "bindings": [{"source": "hx", "vhost": vh, "destination": "hq", "destination_type": "queue",
                      "routing_key": "eu.#", "arguments": {}}],
    }
    if broken:
        defs["permissions"].append({"user": f"ghost{uid}", "vhost": vh, "configure": ".*", "write": ".*",
                                    "read": ".*"})
        defs["bindings"].append({"source": "hx", "vhost": vh, "destination": "nowhere", "destination_type": "queue",
                                 "routing_key": "x", "arguments": {}})
    return defs


def expected_not_applied(uid: str, broken: bool = True) -> set[tuple[str, str, str]]:
    """(section, item, field) of everything the import must report."""
    vh = f"hd{uid}"
    out = {
        ("vhosts", vh, "description"), ("vhosts", vh, "tags"), ("vhosts", vh, "metadata"),
        ("parameters", "up", ""),
        ("global_parameters", "cluster_name", ""), ("federation_upstreams", "", ""),
        ("exchanges", "hx", "colour"), ("queues", "hq", "shiny"),
    }
    if broken:
        out |= {("permissions", f"ghost{uid}", ""), ("bindings", "hx -> nowhere", "")}
    return out


def _reported(answer: dict) -> set[tuple[str, str, str]]:
    return {(e["section"], e["item"], e.get("field", "")) for e in answer["not_applied"]}


def _supported_parts_applied(api: Http, uid: str) -> None:
    vh, user = f"hd{uid}", f"hu{uid}"
    assert api.get(f"/api/vhosts/{vh}").status == 200
    assert api.get(f"/api/queues/{vh}/hq").status == 200
    assert api.get(f"/api/exchanges/{vh}/hx").json["type"] == "topic"
    assert [b["routing_key"] for b in api.get(f"/api/bindings/{vh}/e/hx/q/hq").json] == ["eu.#"]
    assert api.get(f"/api/permissions/{vh}/{user}").json["write"] == ".*"
    assert api.as_user(user, "hupw").get("/api/whoami").json["name"] == user
    assert api.get(f"/api/policies/{vh}/ttl-all").json["definition"] == {"message-ttl": 1000}
    assert api.get(f"/api/vhost-limits/{vh}").json == [{"vhost": vh, "value": {"max-queues": 3}}]
    assert api.get(f"/api/user-limits/{user}").json == [{"user": user, "value": {"max-connections": 5}}]


def test_http_import_lists_what_it_did_not_apply(broker, uid):
    api = Http(mgmt_url(broker))
    r = api.post("/api/definitions", hostile_definitions(uid))
    # an item that failed makes it a bad request, as in RabbitMQ; the answer lists everything left out
    assert r.status == 400, r
    assert r.json["error"] == "bad_request"
    assert "nowhere" in r.json["reason"] and f"ghost{uid}" in r.json["reason"] and "federation-upstream" in r.json["reason"]
    assert _reported(r.json) == expected_not_applied(uid)
    assert all(e["reason"] for e in r.json["not_applied"])
    _supported_parts_applied(api, uid)
    # nothing failed, parts left out: a success that says what it left out
    uid2 = uid + "b"
    r = api.post("/api/definitions", hostile_definitions(uid2, broken=False))
    assert r.status == 200, r
    assert _reported(r.json) == expected_not_applied(uid2, broken=False)
    _supported_parts_applied(api, uid2)
    # a vhost's import reports the sections it does not take
    vh = f"hd{uid}"
    r = api.post(f"/api/definitions/{vh}", {
        "queues": [{"name": "vq", "durable": True, "auto_delete": False, "arguments": {}, "x": 1}],
        "users": [{"name": f"nobody{uid}", "password": "x"}],
        "policies": [{"name": "p", "pattern": ".*", "definition": {"max-length": 5}}],
    })
    assert r.status == 200, r
    assert _reported(r.json) == {("queues", "vq", "x"), ("users", "", "")}
    assert api.get(f"/api/queues/{vh}/vq").status == 200
    assert api.get(f"/api/policies/{vh}/p").json["definition"] == {"max-length": 5}
    assert api.get(f"/api/users/nobody{uid}").status == 404


def test_definitions_at_boot_log_each_part_not_applied(broker_factory, tmp_path):
    defs = hostile_definitions("boot")
    defs["users"].append({"name": "guest", "password": "guest", "tags": "administrator"})  # to look at the result
    f = tmp_path / "defs.json"
    f.write_text(json.dumps(defs))
    b = broker_factory(extra=["--definitions", str(f), "--management-port", "0"])
    text = b.log_text()
    lines = [ln for ln in text.splitlines() if f"definitions from {f}: not applied:" in ln]
    expected = expected_not_applied("boot")
    assert len(lines) == len(expected), "\n".join(lines)
    for section, item, fld in expected:
        assert any(section in ln and item in ln and fld in ln for ln in lines), (section, item, fld)
    assert f"; {len(expected)} not applied (see above)" in text
    _supported_parts_applied(Http(mgmt_url(b)), "boot")


def test_cli_import_prints_what_it_did_not_apply(broker_factory, tmp_path):
    b = broker_factory(extra=["--management-port", "0"])
    f = tmp_path / "defs.json"
    f.write_text(json.dumps(hostile_definitions("cli", broken=False)))
    r = subprocess.run([sys.executable, "-m", "cli", "import-definitions", str(f)], cwd=ROOT, capture_output=True,
                       text=True, check=False, env={**os.environ, "BROKER_URL": mgmt_url(b), "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    printed = [ln for ln in r.stdout.splitlines() if ln.startswith("Not applied: ")]
    assert len(printed) == len(expected_not_applied("cli", broken=False)), r.stdout
    assert any("parameters 'up'" in ln for ln in printed)
    assert r.stdout.strip().endswith("Done")
