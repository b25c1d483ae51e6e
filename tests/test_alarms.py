"""Memory and disk alarms block publishers (connection.blocked) and let consumers drain.

The publisher runs in its own thread with its own BlockingConnection: once the
broker stops reading it, its basic_publish waits, as a real publisher's would.
"""

from __future__ import annotations

import os
import threading
import time

import pika
import pytest

from conftest import BrokerProcess


class Publisher(threading.Thread):
    """Publishes ``count`` messages, recording connection.blocked / unblocked."""

    def __init__(self, port: int, queue: str, body: bytes, count: int, durable: bool, props=None, arguments=None):
        super().__init__(daemon=True)
        self.port, self.queue, self.body, self.count, self.durable, self.props = port, queue, body, count, durable, props
        self.arguments = arguments
        self.sent = 0
        self.blocked: str | None = None
        self.unblocked = False
        self.error: BaseException | None = None
        self.ready = threading.Event()

    def run(self) -> None:
        try:
            conn = pika.BlockingConnection(
                pika.ConnectionParameters("127.0.0.1", self.port, blocked_connection_timeout=120)
            )
            conn.add_on_connection_blocked_callback(lambda c, m: setattr(self, "blocked", m.method.reason))
            conn.add_on_connection_unblocked_callback(lambda c, m: setattr(self, "unblocked", True))
            ch = conn.channel()
            ch.queue_declare(self.queue, durable=self.durable, arguments=self.arguments)
            self.ready.set()
            for _ in range(self.count):
                ch.basic_publish("", self.queue, self.body, self.props)
                self.sent += 1
            ch.confirm_delivery()  # a round trip: everything before it has been taken
            # pika hands blocked/unblocked to the callbacks only while processing events
            deadline = time.time() + 10
            while not self.unblocked and time.time() < deadline:
                conn.process_data_events(0.1)
            conn.close()
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.ready.set()


def _wait_log(b: BrokerProcess, text: str, timeout: float = 20) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in b.log_text():
            return True
        time.sleep(0.05)
    return False


def _drain(port: int, queue: str, pub: Publisher, timeout: float = 60) -> int:
    """Consume until the publisher is done and the queue is empty; return the count."""
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    ch = conn.channel()
    got = 0
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = ch.basic_get(queue, auto_ack=True)
        if m[0] is not None:
            got += 1
        elif not pub.is_alive():
            break
        else:
            time.sleep(0.02)
    conn.close()
    return got


@pytest.mark.slow
def test_memory_alarm_blocks_publishers_and_consumers_drain(broker_factory):
    b = broker_factory(extra=["--memory-high-watermark", "150MB"])
    # a priority queue keeps its messages in memory (a plain queue pages a transient backlog to disk)
    pub = Publisher(b.port, "big", os.urandom(1024 * 1024), 400, durable=False, arguments={"x-max-priority": 2})
    pub.start()
    assert pub.ready.wait(10) and pub.error is None
    assert _wait_log(b, "memory alarm set"), "400 MiB published and no memory alarm"
    assert _wait_log(b, "blocked: low on memory")
    time.sleep(0.5)
    stalled_at = pub.sent
    time.sleep(1.0)
    assert pub.sent - stalled_at <= 5, "a blocked publisher is not read"
    got = _drain(b.port, "big", pub)
    pub.join(30)
    assert pub.error is None, pub.error
    assert pub.blocked == "low on memory" and pub.unblocked
    assert "memory alarm cleared" in b.log_text()
    assert got == pub.sent == 400, "nothing published is lost"


def test_disk_alarm_blocks_publishers_until_space_is_freed(small_disk, tmp_path):
    b = BrokerProcess(small_disk("64m"), tmp_path / "broker.log", ["--disk-free-limit", "40MB"]).start()
    try:
        props = pika.BasicProperties(delivery_mode=2)
        pub = Publisher(b.port, "dq", os.urandom(512 * 1024), 200, durable=True, props=props)
        pub.start()
        assert pub.ready.wait(10) and pub.error is None
        assert _wait_log(b, "disk alarm set"), "100 MiB into a 64 MiB disk and no disk alarm"
        assert _wait_log(b, "blocked: low on disk")
        assert "No space left" not in b.log_text(), "the alarm must come before the disk is full"
        got = _drain(b.port, "dq", pub)
        pub.join(30)
        assert pub.error is None, pub.error
        assert pub.blocked == "low on disk" and pub.unblocked
        assert "disk alarm cleared" in b.log_text()
        assert got == pub.sent == 200
    finally:
        b.stop()
