"""Start-up cost of the pytest plugin's fixtures: the in-process broker (``amqp_broker``) and one
``amqp_url`` (a vhost made with its permission, then deleted), in milliseconds.

    python benchmarks/fixture_startup.py [--runs 20]

"cold" counts importing the engine (what the first ``amqp_broker`` of a test session pays);
"warm" is the start alone (what ``restart()`` and any later start pay).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

COLD = """
import tempfile, time
t0 = time.perf_counter()
from broker.embedded import EmbeddedBroker
b = EmbeddedBroker(tempfile.mkdtemp()).start()
print((time.perf_counter() - t0) * 1000)
b.stop()
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

    cold = [float(subprocess.run([sys.executable, "-c", COLD], capture_output=True, text=True, check=True)
                  .stdout.split()[-1]) for _ in range(min(runs, 10))]
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
    print(f"amqp_broker start, cold (imports included): {ms(cold)}")
    print(f"amqp_broker start, warm:                    {ms(warm)}")
    print(f"amqp_broker restart() (stop + start):       {ms(restart)}")
    print(f"amqp_url (vhost + permission + delete):     {ms(url)}")


if __name__ == "__main__":
    main()
