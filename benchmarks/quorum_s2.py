"""Quorum-queue publish with confirms (scenario S2), BurrowMQ beside RabbitMQ, in one sitting.

Runs the shared C load tool (``amqpload``) against a private BurrowMQ and, if given the
shared bench's ``peers/rabbitmq.sh``, a private RabbitMQ, alternating the two (ours,
RabbitMQ, ours, ...) so that both see the same machine.  Each run is S2 on a quorum queue:
1 publisher and 1 consumer, 1 KiB persistent messages, confirm window 100, prefetch 100,
manual ack; our classic durable queue runs beside it for reference.  Prints a markdown table
of medians (confirmed msg/s, deliveries/s, confirm latency p50/p99, broker cores, broker RSS)
and, with ``--json``, every run as a JSON line.

    python benchmarks/quorum_s2.py --amqpload BENCH/amqpload --rabbitmq BENCH/peers/rabbitmq.sh \\
        --rabbitmq-port 25901 --rounds 3 --duration 10
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"ready: amqp://[^:]+:(\d+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_burrowmq(data: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir",
            str(data), "--management-port", "-1", "--metrics-port", "-1", "--log-level", "info"]
    log = open(data.parent / "burrowmq.log", "wb")
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if READY.search((data.parent / "burrowmq.log").read_text(errors="replace")):
            return proc, port
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("BurrowMQ did not start:\n" + (data.parent / "burrowmq.log").read_text(errors="replace"))


def load(amqpload: str, port: int, pid: int, queue_type: str, duration: float, label: str) -> dict:
    args = [amqpload, "-p", str(port), "-P", "1", "-C", "1", "-Q", "1", "-s", "1024", "-d", str(duration),
            "--persistent", "--durable", "-c", "100", "-q", "100", "--fresh", "--prefix", f"s2{queue_type}",
            "--queue-arg", f"x-queue-type={queue_type}", "--broker-pid", str(pid), "--drain-timeout", "30",
            "--quiet", "--label", label]
    out = subprocess.run(args, capture_output=True, text=True, timeout=duration + 120)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit(f"amqpload failed: {out.stderr[-2000:]}")
    return json.loads(lines[-1])


def rabbitmq(script: str, verb: str, port: int, data: Path) -> str:
    r = subprocess.run(["bash", script, verb, str(port), str(data)], capture_output=True, text=True, timeout=180)
    if r.returncode != 0:
        raise SystemExit(f"rabbitmq.sh {verb} failed: {r.stderr[-2000:]}")
    return r.stdout.strip()


def row(name: str, runs: list[dict]) -> str:
    def med(f) -> float:
        return statistics.median(f(r) for r in runs)

    return (f"| {name} | {med(lambda r: r['confirm_rate']):,.0f} | {med(lambda r: r['cons_rate']):,.0f} | "
            f"{med(lambda r: r['confirm_lat_us']['p50']) / 1000:.1f} / "
            f"{med(lambda r: r['confirm_lat_us']['p99']) / 1000:.1f} ms | {med(lambda r: r['broker_cores']):.2f} | "
            f"{med(lambda r: r['broker_rss_kb_max']) / 1024:.0f} MiB | {sum(r['lost'] for r in runs)} | {len(runs)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--amqpload", required=True, help="the shared bench's amqpload binary")
    ap.add_argument("--rabbitmq", help="the shared bench's peers/rabbitmq.sh (omit: BurrowMQ only)")
    ap.add_argument("--rabbitmq-port", type=int, default=25901)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--json", action="store_true", help="print every run as a JSON line too")
    a = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="quorum-s2-"))
    ours, ours_port = start_burrowmq(tmp / "burrowmq-data")
    rmq_data = tmp / "rabbitmq-data"
    rmq_pid = 0
    results: dict[str, list[dict]] = {"BurrowMQ quorum": [], "BurrowMQ classic durable": [], "RabbitMQ quorum": []}
    try:
        if a.rabbitmq:
            rabbitmq(a.rabbitmq, "start", a.rabbitmq_port, rmq_data)
            rmq_pid = int(rabbitmq(a.rabbitmq, "pid", a.rabbitmq_port, rmq_data))
        for i in range(a.rounds):
            results["BurrowMQ quorum"].append(load(a.amqpload, ours_port, ours.pid, "quorum", a.duration, "ours-qq"))
            if a.rabbitmq:
                results["RabbitMQ quorum"].append(
                    load(a.amqpload, a.rabbitmq_port, rmq_pid, "quorum", a.duration, "rabbitmq-qq"))
            results["BurrowMQ classic durable"].append(
                load(a.amqpload, ours_port, ours.pid, "classic", a.duration, "ours-classic"))
            print(f"round {i + 1}/{a.rounds} done", file=sys.stderr)
    finally:
        ours.terminate()
        ours.wait(30)
        if a.rabbitmq:
            try:
                rabbitmq(a.rabbitmq, "stop", a.rabbitmq_port, rmq_data)
            except SystemExit as exc:
                print(exc, file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)

    print("| broker, queue | confirmed msg/s | delivered msg/s | confirm p50 / p99 | broker cores | broker RSS "
          "| lost | runs |")
    print("|---|---|---|---|---|---|---|---|")
    for name, runs in results.items():
        if runs:
            print(row(name, runs))
    if a.json:
        for runs in results.values():
            for r in runs:
                print(json.dumps(r))


if __name__ == "__main__":
    main()
