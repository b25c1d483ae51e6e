"""What a policy change costs a broker with many queues, and whether it stalls other clients.

Declares N queues (default 10,000) in a vhost of its own, then sets a policy that matches
all of them, changes it, and clears it, through the management API.  For each step it
prints how long the HTTP answer took, how long until every queue showed the new policy
(RabbitMQ applies policies asynchronously), and the AMQP round-trip latency (a passive
queue.declare, in a loop on a second connection) before and during the change: the
latency during the change says how long the broker's event loop was held.

    python benchmarks/policy_apply.py --start-broker                 # a private BurrowMQ
    python benchmarks/policy_apply.py --port 5672 --mgmt-url http://127.0.0.1:15672
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pika

VHOST = "policy-bench"


class Api:
    def __init__(self, url: str, user: str, password: str) -> None:
        self.url = url.rstrip("/")
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def call(self, method: str, path: str, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + "/api/" + path, data=data, method=method,
                                     headers={"Authorization": self.auth, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as r:
            raw = r.read()
        return json.loads(raw) if raw else None


class Prober(threading.Thread):
    """Passive declares in a loop on its own connection: (time, round trip in ms)."""

    def __init__(self, params: pika.ConnectionParameters, queue: str) -> None:
        super().__init__(daemon=True)
        self.params, self.queue = params, queue
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        conn = pika.BlockingConnection(self.params)
        ch = conn.channel()
        while not self.stop.is_set():
            t0 = time.monotonic()
            ch.queue_declare(self.queue, passive=True)
            t1 = time.monotonic()
            self.samples.append((t1, (t1 - t0) * 1000))
            time.sleep(0.002)
        conn.close()

    def between(self, t0: float, t1: float) -> list[float]:
        return sorted(ms for t, ms in self.samples if t0 <= t <= t1)


def pct(vals: list[float], p: float) -> float:
    return vals[min(len(vals) - 1, int(round(p / 100 * (len(vals) - 1))))] if vals else float("nan")


def all_show(api: Api, name: str | None, n: int) -> bool:
    qs = api.call("GET", f"queues/{urllib.parse.quote(VHOST, safe='')}?columns=name,policy")
    return len(qs) >= n and all((q.get("policy") or None) == name for q in qs)


def samples_show(api: Api, name: str | None, n: int) -> bool:
    """25 queues spread over the N show the policy (cheap GETs: listing all of them would
    itself hold a broker's loop)."""
    v = urllib.parse.quote(VHOST, safe="")
    return all((api.call("GET", f"queues/{v}/bench.q{i}").get("policy") or None) == name for i in range(0, n, max(1, n // 25)))


def step(api: Api, prober: Prober, label: str, method: str, body, expect: str | None, n: int) -> dict:
    t0 = time.monotonic()
    api.call(method, f"policies/{urllib.parse.quote(VHOST, safe='')}/bench", body)
    answered = time.monotonic()
    while not samples_show(api, expect, n):
        time.sleep(0.02)
    applied = time.monotonic()
    during = prober.between(t0, applied)
    deadline = time.monotonic() + 30  # RabbitMQ's listings follow its stats, a few seconds late
    while not all_show(api, expect, n):
        if time.monotonic() > deadline:
            print(f"warning: after {label}, the queue listing still shows queues without policy {expect!r}",
                  file=sys.stderr)
            break
        time.sleep(1.0)
    time.sleep(1.0)
    out = {"step": label, "http_ms": (answered - t0) * 1000, "applied_ms": (applied - t0) * 1000,
           "probe_p50_ms": pct(during, 50), "probe_max_ms": during[-1] if during else float("nan"),
           "probes": len(during)}
    print(f"{label:<24} answer {out['http_ms']:6.0f} ms  applied {out['applied_ms']:6.0f} ms  "
          f"AMQP round trip meanwhile: p50 {out['probe_p50_ms']:5.1f} ms, max {out['probe_max_ms']:6.1f} ms "
          f"({len(during)} probes)")
    return out


def start_broker() -> tuple[subprocess.Popen, str, int, str]:
    datadir = tempfile.mkdtemp(prefix="policy-bench-")
    log = Path(datadir) / "broker.log"
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", "0", "--management-port", "0",
           "--metrics-port", "-1", "--data-dir", datadir + "/data", "--log-level", "info"]
    proc = subprocess.Popen(cmd, cwd=root, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        amqp = re.search(r"ready: amqp://[^:]+:(\d+)", text)
        mgmt = re.search(r"management API listening on (http://[^\s]+)", text)
        if amqp and mgmt:
            return proc, datadir, int(amqp.group(1)), mgmt.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    sys.exit("could not start the broker:\n" + log.read_text(errors="replace"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--start-broker", action="store_true")
    ap.add_argument("--port", type=int, default=5672)
    ap.add_argument("--mgmt-url", default="http://127.0.0.1:15672")
    ap.add_argument("--user", default="guest")
    ap.add_argument("--password", default="guest")
    ap.add_argument("--queues", type=int, default=10_000)
    ap.add_argument("--json", action="store_true", help="one JSON line with the results at the end")
    args = ap.parse_args()
    broker = start_broker() if args.start_broker else None
    if broker is not None:
        args.port, args.mgmt_url = broker[2], broker[3]
    api = Api(args.mgmt_url, args.user, args.password)
    try:
        api.call("PUT", f"vhosts/{VHOST}", {})
        api.call("PUT", f"permissions/{VHOST}/{args.user}", {"configure": ".*", "write": ".*", "read": ".*"})
        params = pika.ConnectionParameters("127.0.0.1", args.port, VHOST,
                                           pika.PlainCredentials(args.user, args.password))
        conn = pika.BlockingConnection(params)
        ch = conn.channel()
        t0 = time.monotonic()
        for i in range(args.queues):
            ch.queue_declare(f"bench.q{i}")
        declared = time.monotonic() - t0
        product = conn._impl.server_properties.get("product", b"?")
        product = product.decode() if isinstance(product, bytes) else product
        print(f"{product}: declared {args.queues} queues in {declared:.1f} s")
        prober = Prober(params, "bench.q0")
        prober.start()
        time.sleep(1.0)
        idle = prober.between(0, time.monotonic())
        print(f"{'idle':<24} AMQP round trip p50 {pct(idle, 50):6.1f} ms, max {idle[-1]:7.1f} ms")
        pol = {"pattern": r"^bench\.", "definition": {"max-length": 1000}, "apply-to": "queues"}
        results = [
            step(api, prober, "policy set (all queues)", "PUT", pol, "bench", args.queues),
            step(api, prober, "policy changed", "PUT", dict(pol, definition={"max-length": 500}), "bench",
                 args.queues),
            step(api, prober, "policy cleared", "DELETE", None, None, args.queues),
        ]
        prober.stop.set()
        prober.join()
        conn.close()
        if args.json:
            print(json.dumps({"product": product, "queues": args.queues, "declare_s": declared,
                              "idle_p50_ms": pct(idle, 50), "steps": results}))
    finally:
        try:
            api.call("DELETE", f"vhosts/{VHOST}")
        except Exception:
            pass
        if broker is not None:
            broker[0].terminate()
            broker[0].wait(30)
            shutil.rmtree(broker[1], ignore_errors=True)


if __name__ == "__main__":
    main()
