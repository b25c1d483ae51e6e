#!/usr/bin/env python3
"""TLS against plain AMQP on one broker: handshake cost and S1 throughput, measured the same way.

Starts a private BurrowMQ (or uses --plain-port/--tls-port of a running one) with a plain and an
AMQPS listener, certificates made with trustme, and alternates plain and TLS runs so that a busy,
shared machine hurts both alike:

* handshakes: ``--clients`` concurrent clients (one asyncio process) open a socket, do the TLS
  handshake (TLS runs), the whole AMQP handshake (Start/Start-Ok PLAIN/Tune/Tune-Ok/Open) and
  Connection.Close, for ``--connections`` connections: connections per second, and the broker's
  CPU milliseconds per connection (from /proc, so other load on the machine does not count);
* S1 (the shared bench's scenario): 16 B transient messages, one publisher process, one consumer
  process (prefetch 100, one Basic.Ack per message), unthrottled, ``--duration`` s after a 1 s
  warm-up: messages consumed per second and the broker's CPU cores.

The clients are raw asyncio AMQP (frames built once with pamqp, parsed by hand), so they cost
little next to the broker. One JSON line per run on stdout; a summary at the end.

    python benchmarks/tls_bench.py                    # rounds=3, duration=10 s, 500 connections
    python benchmarks/tls_bench.py --rounds 1 --duration 5 --connections 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pamqp import commands as C
from pamqp import frame as F
from pamqp import body as B
from pamqp import header as H

ROOT = Path(__file__).resolve().parent.parent
HEADER = b"AMQP\x00\x00\x09\x01"
FRAME = struct.Struct(">BHI")
TICK = os.sysconf("SC_CLK_TCK")


def broker_cpu(pid: int) -> float:
    """CPU seconds the broker process used so far."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / TICK


# -- a minimal AMQP client -----------------------------------------------------------------------------

async def read_frame(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    ftype, channel, size = FRAME.unpack(await reader.readexactly(7))
    payload = await reader.readexactly(size + 1)
    return ftype, channel, payload[:-1]


async def expect(reader: asyncio.StreamReader, cls: type) -> None:
    while True:
        ftype, channel, payload = await read_frame(reader)
        if ftype != 1:
            continue
        _, _, method = F.unmarshal(FRAME.pack(ftype, channel, len(payload)) + payload + b"\xce")
        if isinstance(method, cls):
            return
        raise RuntimeError(f"expected {cls.__name__}, got {method!r}")


async def open_connection(port: int, tls: ssl.SSLContext | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls,
                                                   server_hostname="localhost" if tls else None)
    writer.write(HEADER)
    await expect(reader, C.Connection.Start)
    writer.write(F.marshal(C.Connection.StartOk(client_properties={}, mechanism="PLAIN",
                                                response="\0guest\0guest"), 0))
    await expect(reader, C.Connection.Tune)
    writer.write(F.marshal(C.Connection.TuneOk(channel_max=16, frame_max=131072, heartbeat=0), 0)
                 + F.marshal(C.Connection.Open(virtual_host="/"), 0))
    await expect(reader, C.Connection.OpenOk)
    return reader, writer


async def close_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(F.marshal(C.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0), 0))
    await expect(reader, C.Connection.CloseOk)
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, ssl.SSLError):
        pass


async def channel_open(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, queue: str) -> None:
    writer.write(F.marshal(C.Channel.Open(), 1))
    await expect(reader, C.Channel.OpenOk)
    writer.write(F.marshal(C.Queue.Declare(queue=queue, auto_delete=False), 1))
    await expect(reader, C.Queue.DeclareOk)


# -- handshakes ----------------------------------------------------------------------------------------

async def handshakes(port: int, tls: ssl.SSLContext | None, count: int, clients: int) -> float:
    left = count

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await close_connection(*await open_connection(port, tls))

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - t0


# -- S1 ------------------------------------------------------------------------------------------------

def publisher(port: int, tls: bool, ca: str, queue: str, stop_at: float) -> None:
    async def run() -> None:
        reader, writer = await open_connection(port, client_context(ca) if tls else None)
        await channel_open(reader, writer, queue)
        body = b"x" * 16
        one = (F.marshal(C.Basic.Publish(exchange="", routing_key=queue), 1)
               + F.marshal(H.ContentHeader(0, len(body), C.Basic.Properties(delivery_mode=1)), 1)
               + F.marshal(B.ContentBody(body), 1))
        batch = one * 200
        while time.time() < stop_at:
            writer.write(batch)
            await writer.drain()
        writer.close()

    asyncio.run(run())


def consumer(port: int, tls: bool, ca: str, queue: str, start_at: float, stop_at: float, out: mp.Queue) -> None:
    async def run() -> None:
        reader, writer = await open_connection(port, client_context(ca) if tls else None)
        await channel_open(reader, writer, queue)
        writer.write(F.marshal(C.Basic.Qos(prefetch_count=100), 1))
        await expect(reader, C.Basic.QosOk)
        writer.write(F.marshal(C.Basic.Consume(queue=queue, consumer_tag="bench"), 1))
        await expect(reader, C.Basic.ConsumeOk)
        ack = struct.Struct(">BHI HH Q B B")  # method frame: Basic.Ack(tag, multiple=False)
        buf = b""
        tag = 0
        counted = 0
        counting = False
        while True:
            now = time.time()
            if now >= stop_at:
                break
            if not counting and now >= start_at:
                counting, counted = True, 0
            buf += await reader.read(262144)
            off, end = 0, len(buf)
            acks = []
            while end - off >= 7:
                ftype, _, size = FRAME.unpack_from(buf, off)
                if end - off < size + 8:
                    break
                off += size + 8
                if ftype == 3:  # a body frame: one 16 B message
                    tag += 1
                    counted += 1
                    acks.append(ack.pack(1, 1, 13, 60, 80, tag, 0, 0xCE))
            buf = buf[off:]
            if acks:
                writer.write(b"".join(acks))
        out.put(counted)
        writer.close()

    asyncio.run(run())


def s1(port: int, tls: bool, ca: str, pid: int, duration: float, n: int) -> tuple[float, float]:
    queue = f"tls-bench-s1-{n}-{'tls' if tls else 'plain'}"
    now = time.time()
    start_at, stop_at = now + 2.0, now + 2.0 + duration
    out: mp.Queue = mp.Queue()
    cons = mp.Process(target=consumer, args=(port, tls, ca, queue, start_at, stop_at, out))
    cons.start()
    time.sleep(0.5)
    pub = mp.Process(target=publisher, args=(port, tls, ca, queue, stop_at))
    pub.start()
    while time.time() < start_at:
        time.sleep(0.01)
    cpu0 = broker_cpu(pid)
    consumed = out.get(timeout=duration + 30)
    cpu = broker_cpu(pid) - cpu0
    pub.join(10)
    cons.join(10)
    return consumed / duration, cpu / duration


# -- the broker and its certificates ------------------------------------------------------------------------

def client_context(ca: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca)


def start_broker(tmp: Path) -> tuple[subprocess.Popen, int, int, str]:
    import trustme

    authority = trustme.CA()
    cert = authority.issue_cert("localhost", "127.0.0.1")
    ca = tmp / "ca.pem"
    authority.cert_pem.write_to_path(str(ca))
    cert.cert_chain_pems[0].write_to_path(str(tmp / "server.crt"))
    cert.private_key_pem.write_to_path(str(tmp / "server.key"))
    log = tmp / "broker.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", "0", "--tls-port", "0",
         "--tls-cert", str(tmp / "server.crt"), "--tls-key", str(tmp / "server.key"), "--data-dir",
         str(tmp / "data"), "--management-port", "-1", "--metrics-port", "-1", "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=open(log, "wb"), cwd=str(ROOT), env=env,
    )
    # the ready line is at info level: find the ports in /proc instead of the log
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ports = listening_ports(proc.pid)
        if len(ports) == 2:
            break
        if proc.poll() is not None:
            raise SystemExit(f"the broker exited:\n{log.read_text()}")
        time.sleep(0.1)
    else:
        proc.kill()
        raise SystemExit("the broker did not start")
    plain, tls = sorted(ports, key=lambda p: probe_tls(p))
    return proc, plain, tls, str(ca)


def listening_ports(pid: int) -> list[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            m = re.match(r"socket:\[(\d+)\]", os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
        if m:
            inodes.add(m.group(1))
    ports = []
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and parts[9] in inodes:
                ports.append(int(parts[1].split(":")[1], 16))
    return ports


def probe_tls(port: int) -> bool:
    """Whether ``port`` answers a TLS ClientHello (the AMQPS one) rather than AMQP."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    import socket

    try:
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5)):
            return True
    except (ssl.SSLError, OSError):
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="plain/TLS pairs of each measurement")
    ap.add_argument("--connections", type=int, default=500, help="connections per handshake run")
    ap.add_argument("--clients", type=int, default=4, help="concurrent handshaking clients")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of each S1 run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tls-bench-") as tmp:
        proc, plain_port, tls_port, ca = start_broker(Path(tmp))
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        try:
            for r in range(args.rounds):
                for kind, port, ctx in (("plain", plain_port, None), ("tls", tls_port, client_context(ca))):
                    cpu0 = broker_cpu(proc.pid)
                    took = asyncio.run(handshakes(port, ctx, args.connections, args.clients))
                    cpu_ms = (broker_cpu(proc.pid) - cpu0) * 1000 / args.connections
                    rate = args.connections / took
                    results.setdefault(("handshake", kind), []).append((rate, cpu_ms))
                    print(json.dumps({"test": "handshake", "kind": kind, "round": r, "connections_per_s": round(rate),
                                      "broker_cpu_ms_per_connection": round(cpu_ms, 3)}), flush=True)
            for r in range(args.rounds):
                for kind, port in (("plain", plain_port), ("tls", tls_port)):
                    rate, cores = s1(port, kind == "tls", ca, proc.pid, args.duration, r)
                    results.setdefault(("s1", kind), []).append((rate, cores))
                    print(json.dumps({"test": "S1", "kind": kind, "round": r, "msgs_per_s": round(rate),
                                      "broker_cores": round(cores, 2),
                                      "broker_cpu_us_per_msg": round(cores * 1e6 / max(rate, 1), 1)}), flush=True)
        finally:
            proc.terminate()
            proc.wait(15)
    print("\nmedians (plain vs TLS):", file=sys.stderr)
    for test, unit, extra in (("handshake", "connections/s", "broker CPU ms/connection"),
                              ("s1", "msgs/s", "broker cores")):
        for kind in ("plain", "tls"):
            runs = results[(test, kind)]
            line = (f"  {test:9} {kind:5} {statistics.median(r[0] for r in runs):10,.0f} {unit}, "
                    f"{statistics.median(r[1] for r in runs):.3f} {extra}")
            if test == "s1":
                line += f", {statistics.median(r[1] * 1e6 / max(r[0], 1) for r in runs):.1f} broker CPU us/msg"
            print(line, file=sys.stderr)
    print(f"  load average at the end: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)", file=sys.stderr)


if __name__ == "__main__":
    main()
