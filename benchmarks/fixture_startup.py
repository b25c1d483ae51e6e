"""Start-up cost of the pytest plugin's fixtures: the in-process broker (``amqp_broker``) and one
``amqp_url`` (a vhost made with its permission, then deleted), in milliseconds.

    python benchmarks/fixture_startup.py [--runs 20]

"cold" counts importing the engine (what the first ``amqp_broker`` of a test session pays), in a
fresh interpreter each time: until AMQP answers (a protocol header gets Connection.Start; the
fixture returns here) and until the management API answers ``GET /api/overview`` (it comes up in
the background, importing aiohttp); the process's CPU time to AMQP is printed too, since it
varies less than wall time on a loaded machine.  "warm" is the start alone (what ``restart()``
and any later start pay).  The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

COLD = r"""
import time
t0, c0 = time.perf_counter(), time.process_time()
import socket, tempfile
from broker.embedded import EmbeddedBroker
b = EmbeddedBroker(tempfile.mkdtemp()).start(wait_for_management=False)
s = socket.create_connection((b.host, b.port))
s.sendall(b"AMQP\x00\x00\x09\x01")
assert s.recv(7)[:1] == b"\x01"
t1, c1 = time.perf_counter(), time.process_time()
h = socket.create_connection((b.host, b.management_port))
h.sendall(b"GET /api/overview HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n"
          b"Connection: close\r\n\r\n")
answer = b""
while chunk := h.recv(65536):
    answer += chunk
assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
t2 = time.perf_counter()
print((t1 - t0) * 1000, (c1 - c0) * 1000, (t2 - t0) * 1000)
s.close(); h.close(); b.stop()
"""


def ms(values: list[float]) -> str:
    values = sorted(values)
    return (f"median {statistics.median(values):7.2f} ms   p90 {values[int(len(values) * 0.9) - 1]:7.2f} ms   "
            f"max {values[-1]:7.2f} ms   (n={len(values)})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    runs = ap.parse_args().runs
    from broker.embedded import EmbeddedBroker
    from broker.pytest_plugin import AmqpBroker

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    cold_amqp, cold_cpu, cold_mgmt = [], [], []
    for _ in range(max(runs // 2, 10)):
        out = subprocess.run([sys.executable, "-c", COLD], capture_output=True, text=True, check=True).stdout
        amqp, cpu, mgmt = map(float, out.split()[-3:])
        cold_amqp.append(amqp)
        cold_cpu.append(cpu)
        cold_mgmt.append(mgmt)
    warm, restart, url = [], [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            e = EmbeddedBroker(d).start()
            warm.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            e.restart()
            restart.append((time.perf_counter() - t0) * 1000)
            b = AmqpBroker(e.host, e.port, e.user, e.password, e.management_url, e)
            api = b.management()
            for i in range(10):
                t0 = time.perf_counter()
                vhost = f"bench-{i}"
                api.call("PUT", f"vhosts/{vhost}", {})
                api.call("PUT", f"permissions/{vhost}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
                api.call("DELETE", f"vhosts/{vhost}")
                url.append((time.perf_counter() - t0) * 1000)
            api.close()
            e.stop()
    print(f"amqp_broker cold, AMQP answers:             {ms(cold_amqp)}")
    print(f"amqp_broker cold, AMQP answers (CPU time):  {ms(cold_cpu)}")
    print(f"amqp_broker cold, management API answers:   {ms(cold_mgmt)}")
    print(f"amqp_broker start, warm:                    {ms(warm)}")
    print(f"amqp_broker restart() (stop + start):       {ms(restart)}")
    print(f"amqp_url (vhost + permission + delete):     {ms(url)}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
