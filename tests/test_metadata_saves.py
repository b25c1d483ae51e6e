"""Saving the durable metadata never stalls other clients: the save runs off the event loop,
and the client whose change it is waits for it alone.

The broker runs in this process on a disk whose syncs are slow (the storage file layer with a
delay, as a busy disk would be); a canary connection keeps making round trips while another
connection declares durable queues, and a management API client declares one too.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.request

import aio_pika

from broker.server import Broker
from storage.fileio import OsFileIO

SLOW_SYNC = 0.3  # seconds each fsync takes on this disk


class SlowSyncDisk(OsFileIO):
    """The real file layer, with every fsync taking ``SLOW_SYNC`` seconds."""

    def fdatasync(self, fd: int) -> None:
        time.sleep(SLOW_SYNC)
        super().fdatasync(fd)

    def fsync_dir(self, path: str) -> None:
        time.sleep(SLOW_SYNC)
        super().fsync_dir(path)


def http_put(port: int, path: str, body: dict) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), method="PUT",
                                 headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status


def test_durable_declares_do_not_stall_other_clients(tmp_path):
    async def run() -> None:
        broker = Broker(host="127.0.0.1", port=0, data_dir=str(tmp_path / "data"), file_io=SlowSyncDisk(),
                        heartbeat=0, disk_free_limit=0)
        await broker.start()
        try:
            canary = await aio_pika.connect(host="127.0.0.1", port=broker.port)
            cch = await canary.channel()
            cq = await cch.declare_queue("", exclusive=True)
            declarer = await aio_pika.connect(host="127.0.0.1", port=broker.port)
            dch = await declarer.channel()
            round_trips: list[float] = []
            done = asyncio.Event()

            async def keep_going() -> None:
                while not done.is_set():
                    t = time.monotonic()
                    await cch.default_exchange.publish(aio_pika.Message(b"ping"), routing_key=cq.name)
                    while await cq.get(no_ack=True, fail=False) is None:
                        pass
                    round_trips.append(time.monotonic() - t)

            task = asyncio.create_task(keep_going())
            t0 = time.monotonic()
            for i in range(4):
                await dch.declare_queue(f"durable-{i}", durable=True)
            took = time.monotonic() - t0
            done.set()
            await task
            # each declare waited for its own save (a write and fsync, a rename and a directory fsync) ...
            assert took >= 4 * 2 * SLOW_SYNC * 0.9, took
            # ... while the canary went on: no round trip waited for a save
            assert len(round_trips) > 20 and max(round_trips) < SLOW_SYNC, (len(round_trips), max(round_trips))
            await canary.close()
            await declarer.close()
        finally:
            await broker.stop()
        # every declared queue is on disk
        with open(tmp_path / "data" / "definitions.json") as f:
            names = {q["name"] for q in json.load(f)["queues"]}
        assert {f"durable-{i}" for i in range(4)} <= names

    asyncio.run(run())
