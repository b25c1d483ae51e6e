#!/usr/bin/env python3
"""Streams measured with the C load tool (amqpload): memory under a long stream, and
one publisher read by 1, 4 and 16 consumers from ``first``.

    # a long stream costs no memory: RSS of a private BurrowMQ with an empty stream,
    # then after publishing N messages into it, then after a restart
    python benchmarks/streams.py memory --amqpload PATH --count 10000000

    # 1 publisher, then 1 / 4 / 16 readers from first: deliveries/s and broker RSS,
    # alternating a private BurrowMQ and a RabbitMQ already running (PORT, beam PID)
    python benchmarks/streams.py readers --amqpload PATH --count 200000 \\
        --rabbitmq 25911:BEAM_PID --repeat 2

Every run uses a fresh stream; each reader reads all of it (``--consume-limit`` is the
count times the readers: the amqpload build must let that limit stand above the queue
depth it sees at the start).  The tables print medians over ``--repeat`` runs; the
raw amqpload JSON lines go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


class OurBroker:
    """A private BurrowMQ on a free port with its own data directory."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        """Start it; return seconds until it accepts connections."""
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", str(self.port), "--data-dir",
             self.data_dir, "--management-port", "-1", "--metrics-port", "-1", "--log-level", "warning"],
            cwd=str(ROOT), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        while time.monotonic() - t0 < 600:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return time.monotonic() - t0
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("the broker exited at start") from None
                time.sleep(0.05)
        raise RuntimeError("the broker did not start in time")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def amqpload(tool: str, port: int, pid: int, *args: str) -> dict:
    out = subprocess.run([tool, "-p", str(port), "--broker-pid", str(pid), "--quiet", *args],
                         capture_output=True, text=True, timeout=3600)
    line = (out.stdout.strip().splitlines() or [""])[-1]
    print(line, file=sys.stderr)
    try:
        return json.loads(line)
    except ValueError:
        raise RuntimeError(f"amqpload failed: {out.stdout[-500:]} {out.stderr[-500:]}") from None


def stream_args(prefix: str) -> list[str]:
    return ["--durable", "--prefix", prefix, "--queue-arg", "x-queue-type=stream"]


def publish(tool: str, port: int, pid: int, prefix: str, count: int, size: int) -> dict:
    return amqpload(tool, port, pid, "-P", "1", "-C", "0", "-n", str(count), "-s", str(size), "-c", "1000",
                    "--drain-timeout", "120", *stream_args(prefix))


def read(tool: str, port: int, pid: int, prefix: str, count: int, readers: int) -> dict:
    return amqpload(tool, port, pid, "-P", "0", "-C", str(readers), "-q", "1000", "--no-declare",
                    "--consume-arg", "x-stream-offset=first", "--consume-limit", str(count * readers),
                    "--drain-timeout", "120", *stream_args(prefix))


def cmd_memory(a: argparse.Namespace) -> None:
    data = tempfile.mkdtemp(prefix="bmq-stream-mem-")
    b = OurBroker(data)
    try:
        b.start()
        amqpload(a.amqpload, b.port, b.pid, "--declare-only", *stream_args("mem"))
        time.sleep(2)
        empty = rss_kb(b.pid)
        t0 = time.monotonic()
        pub = publish(a.amqpload, b.port, b.pid, "mem", a.count, a.size)
        took = time.monotonic() - t0
        time.sleep(2)
        full = rss_kb(b.pid)
        disk = sum(f.stat().st_size for f in Path(data).rglob("*.seg"))
        b.stop()
        restart_s = b.start()
        time.sleep(2)
        after_restart = rss_kb(b.pid)
        tail = read(a.amqpload, b.port, b.pid, "mem", min(a.count, 100_000), 1)
    finally:
        b.stop()
        shutil.rmtree(data, ignore_errors=True)
    print(f"stream of {a.count:,} messages of {a.size} B (1 publisher, confirms 1000)")
    print("| | value |\n|---|---|")
    print(f"| broker RSS, empty stream | {empty / 1024:.1f} MiB |")
    print(f"| broker RSS, {a.count:,} messages in it | {full / 1024:.1f} MiB |")
    print(f"| broker RSS after a restart | {after_restart / 1024:.1f} MiB |")
    print(f"| publish time | {took:.0f} s ({pub['confirm_rate']:,} msg/s confirmed) |")
    print(f"| segment files | {disk / 2**20:.0f} MiB |")
    print(f"| restart until accepting connections | {restart_s:.1f} s |")
    print(f"| first 100k read back after the restart | {tail['cons_rate']:,} msg/s, lost {tail['lost']} |")


def cmd_readers(a: argparse.Namespace) -> None:
    counts = [int(x) for x in a.readers.split(",")]
    targets: list[tuple[str, int, int]] = []
    ours: OurBroker | None = None
    data = tempfile.mkdtemp(prefix="bmq-stream-readers-")
    results: dict[tuple[str, str], list[float]] = {}
    try:
        ours = OurBroker(data)
        ours.start()
        targets.append(("BurrowMQ", ours.port, ours.pid))
        if a.rabbitmq:
            port, pid = a.rabbitmq.split(":")
            targets.append(("RabbitMQ", int(port), int(pid)))
        for _r in range(a.repeat):
            for name, port, pid in targets:
                prefix = f"sbench-{uuid.uuid4().hex[:8]}"
                pub = publish(a.amqpload, port, pid, prefix, a.count, a.size)
                results.setdefault((name, "publish msg/s"), []).append(pub["confirm_rate"])
                for n in counts:
                    r = read(a.amqpload, port, pid, prefix, a.count, n)
                    results.setdefault((name, f"{n} readers deliveries/s"), []).append(r["cons_rate"])
                    results.setdefault((name, f"{n} readers RSS MiB"), []).append(r["broker_rss_kb_max"] / 1024)
                    results.setdefault((name, f"{n} readers broker cores"), []).append(r["broker_cores"])
                    results.setdefault((name, f"{n} readers deliveries per broker CPU-second"), []).append(
                        r["deliv_per_broker_cpu_s"])
                    results.setdefault((name, f"{n} readers delivered"), []).append(r["consumed"])
    finally:
        if ours is not None:
            ours.stop()
        shutil.rmtree(data, ignore_errors=True)
    names = [t[0] for t in targets]
    rows = ["publish msg/s"] + [f"{n} readers {k}" for n in counts
                                for k in ("delivered", "deliveries/s", "deliveries per broker CPU-second",
                                          "RSS MiB", "broker cores")]
    print(f"stream of {a.count:,} x {a.size} B; medians of {a.repeat} alternating runs")
    print("| | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for row in rows:
        cells = []
        for n in names:
            v = statistics.median(results[(n, row)])
            cells.append(f"{v:,.2f}" if "cores" in row else f"{v:,.0f}")
        print(f"| {row} | " + " | ".join(cells) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("memory", "readers"):
        s = sub.add_parser(name)
        s.add_argument("--amqpload", required=True, help="path of the built amqpload tool")
        s.add_argument("--size", type=int, default=16)
    sub.choices["memory"].add_argument("--count", type=int, default=10_000_000)
    r = sub.choices["readers"]
    r.add_argument("--count", type=int, default=200_000)
    r.add_argument("--readers", default="1,4,16")
    r.add_argument("--repeat", type=int, default=2)
    r.add_argument("--rabbitmq", help="PORT:PID of a running RabbitMQ to measure beside ours")
    a = p.parse_args()
    cmd_memory(a) if a.cmd == "memory" else cmd_readers(a)


if __name__ == "__main__":
    main()
