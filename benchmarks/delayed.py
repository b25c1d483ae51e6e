#!/usr/bin/env python3
"""Many delayed messages held by an x-delayed-message exchange: memory, rates, timing, restart.

Starts a private BurrowMQ (a fresh data directory), declares a durable delayed
exchange bound to a durable queue, and publishes ``--count`` persistent messages
with delays of one to two hours (they stay held), then ``--probe`` messages due
in 2 to 6 s whose bodies carry their due time: a consumer measures how late each
arrives.  Prints the broker's RSS before and after, the publish rate, the
lateness p50/p99/max of the probes, the disk used, then stops the broker and
times a restart (to the "ready" line) and reads ``messages_delayed`` back from the
management API.

    python benchmarks/delayed.py                    # 1,000,000 held messages
    python benchmarks/delayed.py --count 100000 --json
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pika

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"ready: amqp://[^:]+:(\d+)")
MGMT = re.compile(r"management API listening on http://([^:\s]+):(\d+)")
DUE = struct.Struct(">Q")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, data_dir: str, log_path: str) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.port = free_port()
        self.mgmt = free_port()

    def start(self) -> float:
        """Start and wait for the ready line; returns the seconds it took."""
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        log = open(self.log_path, "ab")
        offset = os.path.getsize(self.log_path)
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", self.data_dir, "--management-port", str(self.mgmt), "--metrics-port", "-1",
             "--log-level", "info"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        while True:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                if READY.search(f.read().decode(errors="replace")):
                    return time.monotonic() - t0
            if self.proc.poll() is not None:
                raise SystemExit(f"broker exited with {self.proc.returncode}; see {self.log_path}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        self.proc = None

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def messages_delayed(self, exchange: str) -> int:
        req = urllib.request.Request(f"http://127.0.0.1:{self.mgmt}/api/exchanges/%2F/{exchange}",
                                     headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
        with urllib.request.urlopen(req, timeout=30) as r:
            return int(json.loads(r.read())["messages_delayed"])


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))] if s else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1_000_000, help="messages held for 1-2 h")
    ap.add_argument("--probe", type=int, default=2000, help="messages due in 2-6 s, timed")
    ap.add_argument("--size", type=int, default=32, help="body bytes of the held messages")
    ap.add_argument("--json", action="store_true", help="also print one JSON line")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="bmq-delayed-")
    b = Broker(os.path.join(work, "data"), os.path.join(work, "broker.log"))
    out: dict = {"count": args.count, "probe": args.probe, "size": args.size}
    try:
        b.start()
        params = pika.ConnectionParameters("127.0.0.1", b.port, heartbeat=0, blocked_connection_timeout=None)
        conn = pika.BlockingConnection(params)
        ch = conn.channel()
        ch.exchange_declare("delayed", "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"})
        ch.queue_declare("held", durable=True)
        ch.queue_bind("held", "delayed", "held")
        ch.queue_declare("probe", durable=True)
        ch.queue_bind("probe", "delayed", "probe")
        time.sleep(0.5)
        out["rss_idle_mb"] = round(b.rss_mb(), 1)

        body = b"x" * args.size
        rnd = random.Random(1)
        t0 = time.monotonic()
        for i in range(args.count):
            props = pika.BasicProperties(delivery_mode=2, headers={"x-delay": 3_600_000 + rnd.randrange(3_600_000)})
            ch.basic_publish("delayed", "held", body, props)
            if i % 100_000 == 99_999:
                print(f"  {i + 1} published, RSS {b.rss_mb():.0f} MB", file=sys.stderr)
        confirm = conn.channel()
        confirm.confirm_delivery()  # one confirmed publish after all: everything before it is on disk
        confirm.basic_publish("delayed", "held", body, pika.BasicProperties(delivery_mode=2,
                                                                             headers={"x-delay": 3_600_000}))
        elapsed = time.monotonic() - t0
        out["publish_rate"] = round((args.count + 1) / elapsed)
        time.sleep(1.0)
        out["rss_held_mb"] = round(b.rss_mb(), 1)

        # probes: due in 2-6 s, each body its due time (ms since the epoch)
        sent_due = []
        for _ in range(args.probe):
            delay = 2000 + rnd.randrange(4000)
            due = int(time.time() * 1000) + delay
            sent_due.append(due)
            ch.basic_publish("delayed", "probe", DUE.pack(due), pika.BasicProperties(headers={"x-delay": delay}))
        late: list[float] = []

        def on_probe(c, m, p, data):
            late.append(time.time() * 1000 - DUE.unpack(data)[0])

        ch.basic_consume("probe", on_probe, auto_ack=True)
        deadline = time.monotonic() + 30
        while len(late) < args.probe and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.01)
        out["probes_received"] = len(late)
        out["late_ms_p50"] = round(pct(late, 0.5), 1)
        out["late_ms_p99"] = round(pct(late, 0.99), 1)
        out["late_ms_max"] = round(max(late), 1) if late else None
        out["early"] = sum(1 for x in late if x < -1)
        conn.close()
        out["rss_after_probes_mb"] = round(b.rss_mb(), 1)
        du = sum(f.stat().st_size for f in Path(b.data_dir, "delayed").rglob("*") if f.is_file())
        out["disk_mb"] = round(du / 2**20, 1)

        b.stop()
        out["restart_s"] = round(b.start(), 2)
        out["rss_after_restart_mb"] = round(b.rss_mb(), 1)
        out["held_after_restart"] = b.messages_delayed("delayed")
    finally:
        b.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"held messages:      {args.count} persistent, {args.size} B bodies, delays 1-2 h")
    print(f"publish rate:       {out['publish_rate']} msg/s (one pika publisher, one confirm at the end)")
    print(f"broker RSS:         idle {out['rss_idle_mb']} MB, holding them {out['rss_held_mb']} MB, "
          f"after the probes {out['rss_after_probes_mb']} MB, after a restart {out['rss_after_restart_mb']} MB")
    print(f"disk:               {out['disk_mb']} MB")
    print(f"lateness ({out['probes_received']}/{args.probe} probes due in 2-6 s): p50 {out['late_ms_p50']} ms, "
          f"p99 {out['late_ms_p99']} ms, max {out['late_ms_max']} ms, early {out['early']}")
    print(f"restart:            {out['restart_s']} s to ready; messages_delayed after it: {out['held_after_restart']}")
    if args.json:
        print(json.dumps(out))
    return 0 if out["probes_received"] == args.probe and out["held_after_restart"] == args.count + 1 else 1


if __name__ == "__main__":
    sys.exit(main())
