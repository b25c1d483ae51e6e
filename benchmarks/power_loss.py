"""Simulated power loss at many random points: the large run of tests/test_power_loss.py.

Each seed runs a real broker in this process on an in-memory file system that keeps
only what fsyncs made durable (storage/crashfs.py), drives it with aio-pika (confirmed
publishing, get + ack, queue deletes and redeclares, segment rolls on classic queues; a
quorum queue with nacks; a stream with retention and a consumer; exchange, binding and
queue declare/delete churn), takes a crash image before a random share of its file
operations, recovers every image with a new broker and checks it (tests/powerloss.py
says what is checked).

    python benchmarks/power_loss.py                      # 40 seeds, about 30,000 crash points
    python benchmarks/power_loss.py --seeds 200 --steps 120 --crash-every 0.5
    python benchmarks/power_loss.py --no-stream --no-metadata   # classic and quorum queues only
    python benchmarks/power_loss.py --seeds 10 --recrash 0.2    # power lost again while recovering

Prints runs, file operations, crash points and every failure found; exits 1 on any.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from powerloss import Workload, exercise  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=40, help="workload runs (default 40)")
    ap.add_argument("--first-seed", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=80, help="client steps per run (default 80)")
    ap.add_argument("--crash-every", type=float, default=0.6,
                    help="chance of a crash image before each file operation (default 0.6)")
    ap.add_argument("--segment-size", type=int, default=2048, help="segment size in bytes (small: many rolls)")
    ap.add_argument("--no-quorum", action="store_true", help="leave the quorum queue out of the workload")
    ap.add_argument("--no-stream", action="store_true", help="leave the stream out of the workload")
    ap.add_argument("--no-metadata", action="store_true",
                    help="leave exchange, binding and queue declare/delete churn out of the workload")
    ap.add_argument("--recrash", type=float, default=0.0,
                    help="chance of a second power loss before each file operation of a recovery (default 0)")
    args = ap.parse_args()
    work = Workload(quorum=not args.no_quorum, stream=not args.no_stream, metadata=not args.no_metadata)
    logging.disable(logging.CRITICAL)  # every recovery logs what it cut
    t0 = time.monotonic()
    total_points = total_ops = total_runs = 0
    failures: list[str] = []
    for s in range(args.first_seed, args.first_seed + args.seeds):
        rep = exercise(range(s, s + 1), args.crash_every, args.steps, args.segment_size, max_failures=50, work=work,
                       recrash=args.recrash)
        total_points += rep.crash_points
        total_ops += rep.ops
        total_runs += rep.runs
        failures += rep.failures
        print(f"seed {s}: {rep.ops} file operations, {rep.crash_points} crash points, "
              f"{len(rep.failures)} failing", file=sys.stderr)
    print(f"runs {total_runs}  file operations {total_ops}  crash points {total_points}  "
          f"failing {len(failures)}  in {time.monotonic() - t0:.0f} s")
    for f in failures:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
