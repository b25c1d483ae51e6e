#!/usr/bin/env python3
"""Push N messages through an AMQP 0-9-1 broker with pure-Python clients (pika).

One publisher process (pika BlockingConnection, optionally with publisher
confirms and persistent messages) and one consumer process (manual ack,
prefetch) talk to the broker through one queue. Every body starts with
``seq:u64 sent_ns:u64`` where ``sent_ns`` is ``time.monotonic_ns()``
(CLOCK_MONOTONIC, the same clock in every process on Linux), so the consumer
can measure publish-to-receive latency.

Prints one human-readable summary (and with --json one JSON line on stdout);
progress goes to stderr once a second. Exits 1 if any message was lost,
2 on a setup error.

    python benchmarks/pushpull.py --start-broker            # a private BurrowMQ
    python benchmarks/pushpull.py --port 5672 --count 50000 # any running broker
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue as queue_mod
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from array import array

import pika

STAMP = struct.Struct(">QQ")  # seq, send time (monotonic ns)


def params(args: argparse.Namespace) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(host=args.host, port=args.port, heartbeat=0, blocked_connection_timeout=None)


# -- the two client processes ---------------------------------------------------
def publisher(args, queue, ready, published, result) -> None:
    conn = pika.BlockingConnection(params(args))
    ch = conn.channel()
    if args.confirm:
        ch.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=2 if args.persistent else 1)
    pad = b"x" * (args.size - STAMP.size)
    ready.wait()
    pack, publish, now = STAMP.pack, ch.basic_publish, time.monotonic_ns
    t0 = now()
    for i in range(args.count):
        publish("", queue, pack(i, now()) + pad, props)
        if i % 1000 == 999:
            published.value = i + 1
    t1 = now()
    published.value = args.count
    conn.close()
    result.put(("pub", {"t0": t0, "t1": t1}))


def consumer(args, queue, ready, done_publishing, received, result) -> None:
    n = args.count
    seen = bytearray(n)
    lat = array("q")
    state = {"got": 0, "distinct": 0, "dups": 0, "last": 0}
    unpack, now = STAMP.unpack_from, time.monotonic_ns

    def on_message(ch, method, _props, body):
        t = now()
        seq, sent = unpack(body)
        lat.append(t - sent)
        if seq < n and not seen[seq]:
            seen[seq] = 1
            state["distinct"] += 1
        else:
            state["dups"] += 1
        state["got"] += 1
        state["last"] = t
        ch.basic_ack(method.delivery_tag)

    conn = pika.BlockingConnection(params(args))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=args.prefetch)
    ch.basic_consume(queue, on_message)
    ready.set()
    idle_since = None
    while True:
        before = state["got"]
        conn.process_data_events(time_limit=0.25)
        received.value = state["got"]
        if state["distinct"] == n:
            break
        if state["got"] != before or not done_publishing.is_set():
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > args.drain_timeout:
            break  # publisher finished and nothing arrives any more: the rest is lost
    conn.close()
    result.put(("con", {**state, "lat": lat.tobytes()}))


# -- orchestration --------------------------------------------------------------
def percentile(sorted_vals, p: float) -> float:
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, int(round(p / 100 * (len(sorted_vals) - 1))))
    return sorted_vals[i] / 1e6  # ns -> ms


def start_broker(args):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        args.port = s.getsockname()[1]
    datadir = tempfile.mkdtemp(prefix="pushpull-broker-")
    cmd = ["broker", "serve", "--port", str(args.port), "--host", args.host, "--log-level", "warning", "--data-dir", datadir]
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection((args.host, args.port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_broker(proc, datadir)
                sys.exit(f"could not start the broker: {' '.join(cmd)}")
            time.sleep(0.1)
    print(f"started broker pid {proc.pid} on {args.host}:{args.port}", file=sys.stderr)
    return proc, datadir


def stop_broker(proc, datadir) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    shutil.rmtree(datadir, ignore_errors=True)


def run(args) -> dict:
    queue = f"pushpull-{os.getpid()}-{int(time.time())}"
    conn = pika.BlockingConnection(params(args))
    server = getattr(conn._impl, "server_properties", {}).get("product", b"?")
    server = server.decode() if isinstance(server, bytes) else str(server)
    conn.channel().queue_declare(queue, durable=args.persistent)
    conn.close()

    ctx = mp.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    published, received = ctx.Value("q", 0, lock=False), ctx.Value("q", 0, lock=False)
    result = ctx.Queue()
    pub = ctx.Process(target=publisher, args=(args, queue, ready, published, result), name="publisher")
    con = ctx.Process(target=consumer, args=(args, queue, ready, done, received, result), name="consumer")
    con.start()
    pub.start()
    out = {}
    t_last = time.monotonic()
    while len(out) < 2:
        dead = [name for name, proc in (("pub", pub), ("con", con)) if name not in out and not proc.is_alive()]
        try:  # a process that exited has already flushed its result into the queue
            kind, data = result.get(timeout=0.5 if dead else 0.2)
            out[kind] = data
            if kind == "pub":
                done.set()
            continue
        except queue_mod.Empty:
            pass
        if "con" in dead:
            pub.kill()
            sys.exit("the consumer process failed")
        if "pub" in dead:
            print("the publisher process failed", file=sys.stderr)
            out["pub"] = None  # the consumer still reports what arrived
            done.set()
        if time.monotonic() - t_last >= 1.0:
            t_last = time.monotonic()
            print(f"  published {published.value:>9,}  received {received.value:>9,} / {args.count:,}", file=sys.stderr)
    pub.join()
    con.join()

    conn = pika.BlockingConnection(params(args))
    conn.channel().queue_delete(queue)
    conn.close()

    p, c = out["pub"], out["con"]
    lat = array("q")
    lat.frombytes(c["lat"])
    lat = sorted(lat)
    pub_s = (p["t1"] - p["t0"]) / 1e9 if p else float("nan")
    e2e_s = (c["last"] - p["t0"]) / 1e9 if p and c["last"] else float("nan")
    return {
        "server": server,
        "host": args.host,
        "port": args.port,
        "count": args.count,
        "size": args.size,
        "prefetch": args.prefetch,
        "confirm": args.confirm,
        "persistent": args.persistent,
        "published": args.count if p else None,
        "received": c["got"],
        "distinct": c["distinct"],
        "dups": c["dups"],
        "lost": args.count - c["distinct"],
        "publish_s": round(pub_s, 3),
        "publish_rate": round(args.count / pub_s) if p else None,
        "e2e_s": round(e2e_s, 3),
        "e2e_rate": round(c["distinct"] / e2e_s) if c["last"] and p else None,
        "latency_ms": {f"p{q}": round(percentile(lat, q), 3) for q in (50, 90, 99, 99.9)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5672)
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=16, help="body bytes (at least 16)")
    ap.add_argument("--prefetch", type=int, default=100)
    ap.add_argument("--confirm", action="store_true", help="publisher confirms (pika waits for each one)")
    ap.add_argument("--persistent", action="store_true", help="delivery_mode 2 to a durable queue")
    ap.add_argument("--drain-timeout", type=float, default=10.0, help="seconds without a message before giving up")
    ap.add_argument("--start-broker", action="store_true", help="run `broker serve` on a free port for this run")
    ap.add_argument("--json", action="store_true", help="also print one JSON line")
    args = ap.parse_args()
    args.size = max(args.size, STAMP.size)

    broker = start_broker(args) if args.start_broker else None
    try:
        r = run(args)
    except pika.exceptions.AMQPError as e:
        sys.exit(f"broker error: {e!r}")
    finally:
        if broker:
            stop_broker(*broker)

    lat = r["latency_ms"]
    flags = " ".join(f for f in ("confirm", "persistent") if r[f]) or "transient, no confirms"
    print(
        f"{r['server']} {r['host']}:{r['port']}  {r['count']:,} x {r['size']} B, prefetch {r['prefetch']}, {flags}\n"
        f"  publish     {r['publish_rate'] or 0:>9,} msg/s  ({r['publish_s']} s)\n"
        f"  end-to-end  {r['e2e_rate'] or 0:>9,} msg/s  ({r['e2e_s']} s)\n"
        f"  latency ms  p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  p99.9 {lat['p99.9']}\n"
        f"  received {r['received']:,}, distinct {r['distinct']:,}, duplicates {r['dups']:,}, lost {r['lost']:,}"
    )
    if args.json:
        print(json.dumps(r))
    if r["lost"]:
        print(f"FAIL: {r['lost']:,} messages lost", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
