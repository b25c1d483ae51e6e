"""In-process tests of the delayed-message scheduler on a real broker engine and data directory:
wide buckets are split into seconds and released in due order, restart recovery of the buckets,
and x-delay parsing from the header bytes.  End to end: test_delayed_exchange.py."""

from __future__ import annotations

import asyncio
import time

from pamqp import commands, frame, header

from broker.delayed import MAX_DELAY, delay_of
from broker.message import Message
from broker.server import Broker
from protocol import names
from storage.delay_log import DAY, HOUR, MINUTE, SECOND, bucket_width


def _header(headers: dict | None, persistent: bool = True) -> bytes:
    props = commands.Basic.Properties(delivery_mode=2 if persistent else 1, headers=headers)
    return frame.marshal(header.ContentHeader(0, 8, props), 1)[7:-1]


def _msg(rk: str, body: bytes, headers: dict | None = None) -> Message:
    return Message("dx", rk, names.shortstr("dx"), names.shortstr(rk), _header(headers), body)


class Recorder:
    """A subscriber that records what a queue hands it (and settles it)."""

    tag = "rec"
    no_ack = True
    exclusive = False
    priority = 0
    arguments: dict = {}
    channel = None

    def __init__(self) -> None:
        self.got: list[tuple[float, bytes]] = []

    def can_take(self) -> bool:
        return True

    def deliver(self, queue, msg) -> None:
        self.got.append((time.time() * 1000, msg.body))
        queue.settle(msg)


def test_bucket_widths_and_x_delay_parsing():
    assert [bucket_width(d) for d in (1, 59_999, MINUTE, HOUR - 1, HOUR, DAY - 1, DAY, MAX_DELAY)] == [
        SECOND, SECOND, MINUTE, MINUTE, HOUR, HOUR, DAY, DAY]
    assert delay_of(_msg("k", b"", {"x-delay": 1500})) == 1500
    assert delay_of(_msg("k", b"", {"x-delay": 2**40})) is None  # over 2^32-1: at once
    assert delay_of(_msg("k", b"", {"x-delay": -3})) is None
    assert delay_of(_msg("k", b"", {"x-delay": 1.5})) is None
    assert delay_of(_msg("k", b"", {"x-delay": "100"})) is None
    assert delay_of(_msg("k", b"", {"other": "x-delay"})) is None
    assert delay_of(_msg("k", b"", None)) is None


def test_wide_buckets_are_split_and_released_in_order_and_survive_restart(tmp_path):
    async def run(first: bool) -> list[tuple[float, bytes]]:
        b = Broker(data_dir=str(tmp_path / "d"), port=0)
        await b.prepare()
        vh = b.vhosts["/"]
        x = vh.exchanges.get("dx")
        if first:
            x, _ = vh.declare_exchange("dx", "x-delayed-message", True, False, False, {"x-delayed-type": "direct"})
            q, _ = vh.declare_queue("q", True, False, False, {}, None)
            vh.bind(x, q, "k", {})
        q = vh.queues["q"]
        rec = Recorder()
        q.add_consumer(rec)
        if first:
            now = int(time.time() * 1000)
            # in hour-wide buckets (as for delays of hours) but due in 0.3 to 1.5 s
            for i, offset in enumerate([1500, 300, 900, 600, 1200]):
                vh.delayed.hold_until(x, _msg("k", str(offset).encode()), now + offset, HOUR + i)
            # and some for later, kept over the restart
            for i in range(3):
                vh.delayed.hold_until(x, _msg("k", b"later%d" % i), now + 4000 + i, DAY + i)
            assert x.waiting == 8
        deadline = time.monotonic() + 8
        want = 5 if first else 3
        while len(rec.got) < want and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert vh.exchanges["dx"].waiting == (3 if first else 0)
        await b.stop()
        return rec.got

    got = asyncio.run(run(True))
    assert [body for _t, body in got] == [b"300", b"600", b"900", b"1200", b"1500"]
    got2 = asyncio.run(run(False))
    assert sorted(body for _t, body in got2) == [b"later0", b"later1", b"later2"]
    assert not list((tmp_path / "d" / "delayed").glob("*/*-*")), "empty buckets are removed"


def test_without_a_data_directory_messages_are_held_in_memory():
    async def run() -> list[tuple[float, bytes]]:
        b = Broker(port=0)  # no data dir: nothing on disk
        await b.prepare()
        vh = b.vhosts["/"]
        x, _ = vh.declare_exchange("dx", "x-delayed-message", False, False, False, {"x-delayed-type": "fanout"})
        q, _ = vh.declare_queue("q", False, False, False, {}, None)
        vh.bind(x, q, "", {})
        rec = Recorder()
        q.add_consumer(rec)
        t0 = time.time() * 1000
        for d in (400, 200):
            out = vh.publish(x, _msg("k", str(d).encode(), {"x-delay": d}))
            assert out.routed and not out.queues
        assert x.waiting == 2 and not rec.got
        while len(rec.got) < 2 and time.time() * 1000 - t0 < 5000:
            await asyncio.sleep(0.02)
        await b.stop()
        # never early (due times are whole milliseconds, so a delivery may come within 1 ms of t0 + delay)
        assert all(t - t0 >= int(body) - 1 for t, body in rec.got), (t0, rec.got)
        return rec.got

    assert [body for _t, body in asyncio.run(run())] == [b"200", b"400"]
