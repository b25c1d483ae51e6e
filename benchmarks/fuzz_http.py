"""Fuzz the management HTTP API for minutes: the long run of tests/test_http_fuzz.py.

Starts a private broker (management API on a free port), sets it up as the test
does, then sends seeded hostile requests (tests/http_fuzz.py makes them) over a
few keep-alive connections for the given time while a canary AMQP client
publishes and consumes.  Prints requests/s, the status histogram, and every 5xx,
hang, dropped connection or wrong status with its reproducer (``seed:index`` and
the request bytes; ``--replay seed:index`` sends that request again on a fresh broker).

    python benchmarks/fuzz_http.py                   # 5 minutes, seed 1
    python benchmarks/fuzz_http.py --minutes 60 --seed 7 --big
    python benchmarks/fuzz_http.py --replay 7:1234          # or 7:1200-1234, one after another

Exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from conftest import _make  # noqa: E402
from http_fuzz import Canary, CaseMaker, RawClient, Report, api_routes, run_cases, setup_requests, verdict  # noqa: E402
from test_management_api import Http, mgmt_url  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0, help="how long to fuzz (default 5)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=3, help="keep-alive connections sending at once (default 3)")
    ap.add_argument("--answer-within", type=float, default=1.0, help="seconds a request may take (default 1)")
    ap.add_argument("--big", action="store_true", help="also send huge headers and multi-MiB bodies")
    ap.add_argument("--replay", metavar="SEED:INDEX[-LAST]", help="send these cases one by one and print the answers")
    ap.add_argument("--every", type=float, default=30.0, help="seconds between progress lines (default 30)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fuzz-http-") as tmp:
        b = _make(Path(tmp), extra=["--management-port", "0"]).start()
        try:
            b.url = mgmt_url(b)
            guest = Http(b.url)
            for method, path, body in setup_requests():
                guest.ok(method, path, body)
            host, port = b.url.split("//", 1)[1].rsplit(":", 1)
            if args.replay:
                seed, _, span = args.replay.partition(":")
                first, _, last = span.partition("-")
                maker = CaseMaker(api_routes(), int(seed))
                for index in range(int(first), int(last or first) + 1):
                    case = maker.make(index, args.big)
                    ans = RawClient(host, int(port), 10.0).send(case)
                    print(case.reproducer(b.url)[:300])
                    print(f"  -> {ans.status} {ans.problem or ''} {ans.seconds:.3f} s {ans.body[:300]!r}")
                    print("  verdict:", verdict(case, ans, args.answer_within) or "ok")
                return 0
            return fuzz(b, host, int(port), args)
        finally:
            b.stop()


def fuzz(b, host: str, port: int, args: argparse.Namespace) -> int:
    maker = CaseMaker(api_routes(), args.seed)
    canary = Canary("127.0.0.1", b.port).start()
    end = time.monotonic() + args.minutes * 60
    total = Report()
    counter = itertools.count()
    while time.monotonic() < end:
        chunk = run_cases(host, port, maker, counter, args.threads, args.answer_within, args.big,
                          deadline=min(end, time.monotonic() + args.every))
        total.requests += chunk.requests
        total.seconds += chunk.seconds
        total.slowest = max(total.slowest, chunk.slowest)
        total.slow = sorted(total.slow + chunk.slow, reverse=True)[:5]
        for s, n in chunk.statuses.items():
            total.statuses[s] = total.statuses.get(s, 0) + n
        for f in chunk.failures:
            print("FAIL", f, flush=True)
        total.failures += chunk.failures
        print(f"{total.requests} requests, {chunk.requests / max(chunk.seconds, 1e-9):.0f}/s now, "
              f"{len(total.failures)} failing, canary {canary.received} round trips "
              f"(worst {canary.worst:.2f} s)", file=sys.stderr, flush=True)
        if not b.alive:
            print("FAIL the broker died", flush=True)
            return 1
    canary.stop()
    print(f"requests {total.requests} in {total.seconds:.0f} s ({total.requests / max(total.seconds, 1e-9):.0f}/s), "
          f"slowest {total.slowest:.2f} s")
    print(f"statuses {total.histogram()}")
    for secs, what in total.slow:
        print(f"slow: {secs:.3f} s  {what}")
    print(f"canary: {canary.sent} sent, {canary.received} received, lost {len(canary.lost)}, "
          f"worst round trip {canary.worst:.2f} s, error {canary.error!r}")
    print(f"failing {len(total.failures)}")
    bad = total.failures or canary.lost or canary.error is not None
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
