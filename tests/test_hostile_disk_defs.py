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
import time

import aio_pika
import pika
import pika.exceptions
import pytest

from conftest import BrokerProcess
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
