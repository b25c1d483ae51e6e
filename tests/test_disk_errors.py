"""A full disk: publishes that cannot be written are nacked, the broker goes on serving.

The data directory is a real 2 MiB tmpfs (needs root to mount; the test says so
and is skipped otherwise).
"""

from __future__ import annotations

import os

import pika

from conftest import BrokerProcess


def test_full_disk_nacks_and_keeps_serving(small_disk, tmp_path):
    disk = small_disk("2m")
    # the disk alarm would block the publisher first: this test is about failing writes
    b = BrokerProcess(disk, tmp_path / "broker.log", ["--disk-free-limit", "0"]).start()
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        ch = conn.channel()
        ch.queue_declare("dq", durable=True)
        ch.confirm_delivery()
        body = os.urandom(16 * 1024)
        acked = 0
        nacked = 0
        for _ in range(400):  # 6.4 MiB into a 2 MiB disk
            try:
                ch.basic_publish("", "dq", body, pika.BasicProperties(delivery_mode=2))
                acked += 1
            except pika.exceptions.NackError:
                nacked += 1
        assert nacked > 0, "a full disk must nack persistent publishes"
        assert acked > 0
        # what was confirmed is all there, nothing that was nacked is
        count = ch.queue_declare("dq", durable=True, passive=True).method.message_count
        assert count == acked
        assert "nacked" in b.log_text()
        # the broker goes on serving: transient traffic, and the disk again once it has room
        ch.queue_declare("mem")
        ch.basic_publish("", "mem", b"still here")
        assert ch.basic_get("mem", auto_ack=True)[2] == b"still here"
        ch.queue_purge("dq")
        ok = 0
        for _ in range(10):
            try:
                ch.basic_publish("", "dq", body, pika.BasicProperties(delivery_mode=2))
                ok += 1
            except pika.exceptions.NackError:
                pass
        assert ok == 10, "after space is freed, publishes are confirmed again"
        conn.close()
    finally:
        b.stop()
    # and everything confirmed after the purge survives a restart
    b2 = BrokerProcess(disk, tmp_path / "broker2.log", ["--disk-free-limit", "0"]).start()
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b2.port))
        ch = conn.channel()
        assert ch.queue_declare("dq", durable=True, passive=True).method.message_count == 10
        conn.close()
    finally:
        b2.stop()
