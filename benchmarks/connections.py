#!/usr/bin/env python3
"""Open many idle AMQP connections, each with a channel and a consumer, and measure the broker.

Every client connection does the whole handshake (protocol header, Start-Ok, Tune-Ok, Open),
opens channel 1 and starts a consumer on one shared queue, then stays idle.  The clients are
raw asyncio sockets with frames built by pamqp, so one client process holds 10,000 of them.
That client costs about as much CPU per connection as the broker, so on a small machine it
slows the broker it measures: ``--client c`` runs benchmarks/conn_storm.c (librabbitmq, one
blocking handshake after the other in each of ``--concurrency`` threads) instead, which costs
a fraction of that (build it first: ``make -C benchmarks conn_storm``).

Prints the accept rate (completed handshakes + consumer set-ups per second, with
``--concurrency`` of them in flight) and the broker's resident memory per connection
(VmRSS after the connections are up, minus before, divided by their number); with
``--json`` also one JSON line on stdout.  With ``--pid`` it measures a broker already
running on ``--port``; without, it starts a private one from this tree.

    python benchmarks/connections.py                          # 10,000 against a private broker
    python benchmarks/connections.py --count 2000 --json
    python benchmarks/connections.py --port 5672 --pid 1234   # a running broker
    python benchmarks/connections.py --client c               # the C client (make -C benchmarks)

The client and the broker each need a file descriptor per connection: the script raises its
own soft limit to the hard one (``ulimit -n`` decides), and so does ``broker serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pamqp import commands as C
from pamqp import frame as pframe

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"ready: amqp://\S+:(\d+)")
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Client:
    """One raw AMQP client: handshake, a channel, a consumer; then idle."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = b""

    async def expect(self, kind: type) -> object:
        while True:
            if len(self.buf) >= 7:
                size = int.from_bytes(self.buf[3:7], "big")
                if len(self.buf) >= size + 8:
                    _n, _ch, f = pframe.unmarshal(self.buf[: size + 8])
                    self.buf = self.buf[size + 8 :]
                    if isinstance(f, kind):
                        return f
                    if isinstance(f, C.Connection.Close):
                        raise ConnectionError(f"{f.reply_code} {f.reply_text}")
                    continue
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("closed by the broker")
            self.buf += data

    def send(self, channel: int, method: object) -> None:
        self.writer.write(pframe.marshal(method, channel))

    async def setup(self, queue: str, declare: bool) -> None:
        self.writer.write(PROTOCOL_HEADER)
        await self.expect(C.Connection.Start)
        self.send(0, C.Connection.StartOk(mechanism="PLAIN", response="\0guest\0guest", locale="en_US"))
        tune = await self.expect(C.Connection.Tune)
        self.send(0, C.Connection.TuneOk(channel_max=tune.channel_max, frame_max=tune.frame_max, heartbeat=0))
        self.send(0, C.Connection.Open(virtual_host="/"))
        await self.expect(C.Connection.OpenOk)
        self.send(1, C.Channel.Open())
        await self.expect(C.Channel.OpenOk)
        if declare:
            self.send(1, C.Queue.Declare(queue=queue))
            await self.expect(C.Queue.DeclareOk)
        self.send(1, C.Basic.Qos(prefetch_count=10))
        await self.expect(C.Basic.QosOk)
        self.send(1, C.Basic.Consume(queue=queue))
        await self.expect(C.Basic.ConsumeOk)


async def open_all(args: argparse.Namespace) -> tuple[list[Client], float, int]:
    clients: list[Client] = []
    failures = 0
    sem = asyncio.Semaphore(args.concurrency)
    queue = f"conn-bench-{os.getpid()}"

    async def one(i: int) -> None:
        nonlocal failures
        async with sem:
            try:
                r, w = await asyncio.open_connection(args.host, args.port)
                c = Client(r, w)
                await c.setup(queue, declare=(i == 0))
                clients.append(c)
            except (OSError, ConnectionError) as exc:
                failures += 1
                if failures <= 3:
                    print(f"connection {i} failed: {exc}", file=sys.stderr)

    await one(0)  # declares the queue
    t0 = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(1, args.count)))
    took = time.monotonic() - t0
    return clients, took, failures


def start_broker(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    datadir = tempfile.mkdtemp(prefix="conn-bench-")
    log = open(os.path.join(datadir, "broker.log"), "wb")
    cmd = [sys.executable, "-m", "cli", "serve", "--host", args.host, "--port", "0", "--data-dir",
           os.path.join(datadir, "data"), "--log-level", "info", "--management-port", "-1", "--metrics-port", "-1"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT), env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = READY.search(Path(datadir, "broker.log").read_text(errors="replace"))
        if m:
            args.port = int(m.group(1))
            return proc, datadir
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    text = Path(datadir, "broker.log").read_text(errors="replace")[-2000:]
    shutil.rmtree(datadir, ignore_errors=True)
    sys.exit("could not start the broker:\n" + text)


C_CLIENT = ROOT / "benchmarks" / "conn_storm"
C_RESULT = re.compile(r"opened (\d+) failed (\d+) seconds ([\d.]+) client_cpu_ms_per_connection ([\d.]+)")


async def open_all_c(args: argparse.Namespace, pid: int) -> tuple[subprocess.Popen, int, int, float, float, float]:
    """Run the C client; (its process, opened, failed, seconds, its CPU ms per connection, broker CPU s)."""
    if not os.access(C_CLIENT, os.X_OK):
        sys.exit(f"{C_CLIENT} is not built: make -C {C_CLIENT.parent} conn_storm")
    cpu0 = cpu_s(pid)
    proc = subprocess.Popen([str(C_CLIENT), args.host, str(args.port), str(args.count), str(args.concurrency),
                             f"conn-bench-{os.getpid()}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = await asyncio.to_thread(proc.stdout.readline)
    cpu1 = cpu_s(pid)
    m = C_RESULT.search(line)
    if m is None:
        proc.kill()
        sys.exit(f"the C client did not report: {line!r}")
    return proc, int(m.group(1)), int(m.group(2)), float(m.group(3)), float(m.group(4)), cpu1 - cpu0


async def main_async(args: argparse.Namespace, pid: int) -> dict:
    await asyncio.sleep(0.5)
    before = rss_kb(pid)
    c_proc = None
    if args.client == "c":
        c_proc, n, failures, took, client_ms, broker_cpu = await open_all_c(args, pid)
        clients: list[Client] = []
    else:
        cpu0, my0 = cpu_s(pid), time.process_time()
        clients, took, failures = await open_all(args)
        cpu1, my1 = cpu_s(pid), time.process_time()
        n, broker_cpu = len(clients), cpu1 - cpu0
        client_ms = (my1 - my0) * 1000 / max(n - 1, 1)
    await asyncio.sleep(args.settle)
    after = rss_kb(pid)
    result = {
        "connections": n,
        "failed": failures,
        "accept_rate_per_s": round((n - 1) / took, 1) if took > 0 else None,
        "seconds": round(took, 2),
        "broker_rss_kb_before": before,
        "broker_rss_kb_after": after,
        "kb_per_connection": round((after - before) / n, 2) if n else None,
        # on a shared machine the rate follows the CPU the broker gets; its CPU per connection does not
        "broker_cpu_ms_per_connection": round(broker_cpu * 1000 / max(n - 1, 1), 3),
        "client_cpu_ms_per_connection": round(client_ms, 3),
        "client": args.client,
    }
    for c in clients:
        c.writer.close()
    if c_proc is not None:
        c_proc.communicate(timeout=60)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="a running broker's port (with --pid)")
    ap.add_argument("--pid", type=int, default=0, help="that broker's process id (for its RSS)")
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=200, help="handshakes in flight at once")
    ap.add_argument("--client", choices=("python", "c"), default="python",
                    help="python: asyncio + pamqp in this process; c: benchmarks/conn_storm (librabbitmq)")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds to wait before reading RSS")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    need = args.count + 100
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < need:
        sys.exit(f"open file limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]} < {need}: raise `ulimit -n`")
    proc = datadir = None
    if args.pid:
        pid = args.pid
    else:
        proc, datadir = start_broker(args)
        pid = proc.pid
    try:
        result = asyncio.run(main_async(args, pid))
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            shutil.rmtree(datadir or "", ignore_errors=True)
    print(f"{result['connections']} connections ({result['failed']} failed) with a channel and a consumer each, "
          f"opened in {result['seconds']} s: {result['accept_rate_per_s']}/s; broker RSS "
          f"{result['broker_rss_kb_before'] / 1024:.1f} -> {result['broker_rss_kb_after'] / 1024:.1f} MiB, "
          f"{result['kb_per_connection']} KiB per connection; CPU per connection: broker "
          f"{result['broker_cpu_ms_per_connection']} ms, client {result['client_cpu_ms_per_connection']} ms")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    socket.setdefaulttimeout(30)
    main()
