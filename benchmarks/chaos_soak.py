"""Chaos soak: confirmed publishing and consuming while the broker is killed with -9 and
restarted, again and again.

A private broker runs on a fresh data directory.  One pika publisher sends persistent
messages (numbered) to a durable queue with publisher confirms; one pika consumer
acks what it receives.  Both reconnect whenever the broker goes away.  Meanwhile the
broker is killed with SIGKILL at random moments and started again on the same data
directory, ``--kills`` times (100 by default).  At the end publishing stops, the
consumer drains the queue, and the script prints

    confirmed  received  lost  duplicates  unconfirmed-arrived

``lost`` counts confirmed messages never received: it must be 0 (exit status 1
otherwise).  ``duplicates`` are redeliveries (a message delivered again because its
ack had not reached the broker before a kill): at-least-once allows them.
``unconfirmed-arrived`` are publishes cut off by a kill before their confirm that
made it anyway.

    python benchmarks/chaos_soak.py                   # 100 kills
    python benchmarks/chaos_soak.py --kills 10 --min-up 0.5 --max-up 2

kill -9 keeps the operating system's page cache, so this shows that the broker's own
state machine loses nothing confirmed; tests/test_power_loss.py covers the writes the
page cache would lose on a power cut.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pika
from pika.exceptions import AMQPError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READY = re.compile(rb"ready: amqp://[^:]+:(\d+)")
QUEUE = "chaos-soak"


class Broker:
    """A ``broker serve`` child on one data directory, restarted on a new port each time."""

    def __init__(self, data_dir: str, log_path: str) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.generation = 0

    def start(self, timeout: float = 60.0) -> None:
        log = open(self.log_path, "ab")
        start_at = log.tell()
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", self.data_dir,
             "--management-port", "-1", "--metrics-port", "-1", "--log-level", "info"],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(start_at)
                m = READY.search(f.read())
            if m:
                self.port = int(m.group(1))
                self.generation += 1
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self.proc.returncode}; see {self.log_path}")
            time.sleep(0.05)
        raise RuntimeError(f"broker not ready in {timeout} s; see {self.log_path}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Soak:
    def __init__(self, broker: Broker, size: int) -> None:
        self.broker = broker
        self.body_pad = b"x" * max(0, size - 12)
        self.stop_publishing = threading.Event()
        self.stop_consuming = threading.Event()
        self.lock = threading.Lock()
        self.confirmed: set[int] = set()
        self.attempted = 0
        self.received: set[int] = set()
        self.deliveries = 0
        self.last_delivery = time.monotonic()
        self.reconnects = 0

    def _connect(self) -> pika.BlockingConnection:
        while True:
            try:
                return pika.BlockingConnection(
                    pika.ConnectionParameters("127.0.0.1", self.broker.port, heartbeat=0, connection_attempts=1,
                                              socket_timeout=5, blocked_connection_timeout=30)
                )
            except AMQPError:
                with self.lock:
                    self.reconnects += 1
                time.sleep(0.1)

    def publisher(self) -> None:
        n = 0
        while not self.stop_publishing.is_set():
            try:
                conn = self._connect()
                ch = conn.channel()
                ch.queue_declare(QUEUE, durable=True)
                ch.confirm_delivery()
                while not self.stop_publishing.is_set():
                    n += 1
                    self.attempted = n
                    ch.basic_publish("", QUEUE, b"%011d|" % n + self.body_pad,
                                     pika.BasicProperties(delivery_mode=2), mandatory=True)
                    with self.lock:
                        self.confirmed.add(n)  # basic_publish returned: the broker confirmed it
                conn.close()
            except (AMQPError, OSError):
                continue  # a kill: reconnect; message n stays unconfirmed

    def consumer(self) -> None:
        while not self.stop_consuming.is_set():
            try:
                conn = self._connect()
                ch = conn.channel()
                ch.queue_declare(QUEUE, durable=True)
                ch.basic_qos(prefetch_count=200)
                for meth, _props, body in ch.consume(QUEUE, inactivity_timeout=0.5):
                    if self.stop_consuming.is_set():
                        break
                    if body is None:
                        continue
                    n = int(body[:11])
                    with self.lock:
                        self.deliveries += 1
                        self.received.add(n)
                        self.last_delivery = time.monotonic()
                    ch.basic_ack(meth.delivery_tag)
                conn.close()
            except (AMQPError, OSError):
                continue


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=100, help="how many times the broker is killed (default 100)")
    ap.add_argument("--min-up", type=float, default=1.0, help="shortest time up between kills, seconds")
    ap.add_argument("--max-up", type=float, default=3.0, help="longest time up between kills, seconds")
    ap.add_argument("--size", type=int, default=256, help="message body size in bytes (default 256)")
    ap.add_argument("--drain-timeout", type=float, default=15.0,
                    help="at the end, seconds without a delivery after which the queue counts as drained")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the data directory and log")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = tempfile.mkdtemp(prefix="chaos-soak-")
    broker = Broker(os.path.join(work, "data"), os.path.join(work, "broker.log"))
    broker.start()
    soak = Soak(broker, args.size)
    threads = [threading.Thread(target=soak.publisher, daemon=True), threading.Thread(target=soak.consumer, daemon=True)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    try:
        for i in range(args.kills):
            time.sleep(rng.uniform(args.min_up, args.max_up))
            broker.kill()
            broker.start()
            print(f"kill {i + 1}/{args.kills}: confirmed {len(soak.confirmed)}, received {len(soak.received)}",
                  file=sys.stderr)
        time.sleep(args.min_up)
        soak.stop_publishing.set()
        threads[0].join(30)
        while time.monotonic() - soak.last_delivery < args.drain_timeout:
            with soak.lock:
                if soak.confirmed <= soak.received:
                    break
            time.sleep(0.2)
        soak.stop_consuming.set()
        threads[1].join(30)
    finally:
        broker.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    with soak.lock:
        lost = soak.confirmed - soak.received
        duplicates = soak.deliveries - len(soak.received)
        extra = soak.received - soak.confirmed
    print(f"kills {args.kills}  in {time.monotonic() - t0:.0f} s  confirmed {len(soak.confirmed)}  "
          f"received {len(soak.received)}  lost {len(lost)}  duplicates {duplicates}  "
          f"unconfirmed-arrived {len(extra)}")
    if lost:
        print(f"lost, e.g.: {sorted(lost)[:20]}")
        if args.keep:
            print(f"data directory and log kept in {work}")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
