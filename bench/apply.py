"""Benchmark `reconciler apply` against the latency floor, in one run.

    python bench/apply.py 1000 --latency-ms 50 --parallelism 16

Applies N changes (a fresh fleet: every number is a create) against `reconciler sandbox` answering
each request after L ms, and compares the apply process's wall time with the floor N x L / P: the time
P perfectly parallel requests of latency L would take. Everything else (start-up, planning, the
client, state and audit writes) shows up as the excess.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from fleet import API_KEYS, make_project, run_process, start_sandbox


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("count", type=int, nargs="?", default=1_000)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--parallelism", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-apply-") as folder:
        root = Path(folder)
        make_project(root, args.count)
        sandbox, url = start_sandbox(root, args.latency_ms)
        try:
            env = {**os.environ, **API_KEYS, "KALEYRA_ENDPOINT": url}
            argv = [
                sys.executable,
                "-m",
                "reconciler",
                "apply",
                "--auto-approve",
                "--parallelism",
                str(args.parallelism),
            ]
            wall, peak_mb = run_process(argv, root, env)
        finally:
            sandbox.terminate()
            sandbox.wait()
    floor = args.count * args.latency_ms / 1000 / args.parallelism
    print(f"changes: {args.count:,}   latency: {args.latency_ms:g} ms   parallelism: {args.parallelism}")
    print(f"reconciler apply (whole process): {wall:8.3f} s   peak memory {peak_mb} MiB")
    print(f"latency floor N x L / P:          {floor:8.3f} s")
    if floor:
        print(f"ratio apply / floor: {wall / floor:.2f}x   (target <= 1.3x at 1,000 x 50 ms / 16)")
    print(f"overhead per change: {(wall - floor) / args.count * 1000:.2f} ms")


if __name__ == "__main__":
    main()
