"""Memory and disk alarms block publishers (connection.blocked) and let consumers drain."""

from __future__ import annotations

import os
import subprocess
import time

import pika
import pytest

from conftest import BrokerProcess


def _publish_until_blocked(port: int, queue: str, body: bytes, props=None, limit: int = 2000, declare=None):
    """Publish until the broker says connection.blocked; return (connection, channel, state, count)."""
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, blocked_connection_timeout=60))
    state = {"blocked": None, "unblocked": False}
    conn.add_on_connection_blocked_callback(lambda c, m: state.__setitem__("blocked", m.method.reason))
    conn.add_on_connection_unblocked_callback(lambda c, m: state.__setitem__("unblocked", True))
    ch = conn.channel()
    if declare:
        declare(ch)
    n = 0
    while state["blocked"] is None and n < limit:
        ch.basic_publish("", queue, body, props)
        n += 1
        conn.process_data_events(0)
    deadline = time.time() + 10
    while state["blocked"] is None and time.time() < deadline:
        conn.process_data_events(0.1)
    return conn, ch, state, n


def _count(port: int, queue: str, durable: bool = False) -> int:
    c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    try:
        return c.channel().queue_declare(queue, durable=durable, passive=True).method.message_count
    finally:
        c.close()


def test_memory_alarm_blocks_publishers_and_consumers_drain(broker_factory):
    b = broker_factory(extra=["--memory-high-watermark", "150MB"])
    body = os.urandom(1024 * 1024)
    pub, pch, state, sent = _publish_until_blocked(
        b.port, "big", body, declare=lambda ch: ch.queue_declare("big")
    )
    assert state["blocked"] == "low on memory", f"never blocked after {sent} MiB"
    assert "memory alarm set" in b.log_text()
    # a consumer on another connection drains while the publisher is blocked
    con = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
    cch = con.channel()
    got = 0
    deadline = time.time() + 30
    while not state["unblocked"] and time.time() < deadline:
        m = cch.basic_get("big", auto_ack=True)
        if m[0] is not None:
            got += 1
        else:
            time.sleep(0.05)
        pub.process_data_events(0)
    assert state["unblocked"], "publishers were not unblocked after the queue drained"
    # nothing published is lost: what the publisher wrote arrives once it is read again
    deadline = time.time() + 30
    while got < sent and time.time() < deadline:
        pub.process_data_events(0)
        m = cch.basic_get("big", auto_ack=True)
        if m[0] is not None:
            got += 1
        else:
            time.sleep(0.02)
    assert got == sent
    pch.basic_publish("", "big", b"after")
    assert cch.basic_get("big", auto_ack=True)[2] == b"after" or _count(b.port, "big") == 1
    pub.close()
    con.close()


@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_alarm_blocks_publishers_until_space_is_freed(tmpfs, tmp_path):
    b = BrokerProcess(tmpfs, tmp_path / "broker.log", ["--disk-free-limit", "40MB"]).start()
    try:
        body = os.urandom(512 * 1024)
        props = pika.BasicProperties(delivery_mode=2)
        pub, pch, state, sent = _publish_until_blocked(
            b.port, "dq", body, props, declare=lambda ch: ch.queue_declare("dq", durable=True)
        )
        assert state["blocked"] == "low on disk", f"never blocked after {sent} messages"
        assert "disk alarm set" in b.log_text()
        # consumers are not blocked: drain (and ack) everything, which frees the segments
        con = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        cch = con.channel()
        got = 0
        deadline = time.time() + 30
        while not state["unblocked"] and time.time() < deadline:
            m = cch.basic_get("dq", auto_ack=True)
            if m[0] is not None:
                got += 1
            else:
                time.sleep(0.05)
            pub.process_data_events(0)
        assert state["unblocked"]
        assert "disk alarm cleared" in b.log_text()
        pch.confirm_delivery()
        pch.basic_publish("", "dq", b"confirmed after the alarm", props)
        con.close()
        pub.close()
    finally:
        b.stop()
