"""Benchmark `reconciler apply` against a rate-limited sandbox, with and without Retry-After.

    python bench/ratelimit.py 500 --rate-limit 50 --burst 10 --latency-ms 20

Applies N changes (a fresh fleet on one account: every number is a create) with default apply flags,
as a whole process, against `reconciler sandbox --rate-limit RPS --burst B` in its own process, which
answers 429 beyond its token bucket: once with `Retry-After: 1`, once without the header. For each
case it prints the apply's exit code, the numbers a plan afterwards still has to apply, the apply's
wall time against N / RPS (the time a client sending at exactly the limit would need), and the share
of requests the sandbox throttled (from GET /_sandbox/stats).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from fleet import ACCOUNTS, API_KEYS, make_project, start_sandbox

CASES = {"with Retry-After: 1": "1", "without Retry-After": "none"}


def run_case(count: int, rate: float, burst: int, latency_ms: float, retry_after: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-ratelimit-") as folder:
        root = Path(folder)
        make_project(root, count, accounts=ACCOUNTS[:1], backoff_base_s=None)
        options = ("--rate-limit", str(rate), "--burst", str(burst), "--retry-after", retry_after)
        sandbox, url = start_sandbox(root, latency_ms, *options)
        try:
            env = {**os.environ, **API_KEYS, "KALEYRA_ENDPOINT": url}
            reconciler = [sys.executable, "-m", "reconciler"]
            started = time.perf_counter()
            applied = subprocess.run(
                [*reconciler, "apply", "--auto-approve"], cwd=root, env=env, capture_output=True, text=True
            )
            wall = time.perf_counter() - started
            planned = subprocess.run(
                [*reconciler, "plan", "--format", "json"], cwd=root, env=env, capture_output=True, text=True
            )
            left = len(json.loads(planned.stdout)["changes"])
            with urllib.request.urlopen(f"{url}/_sandbox/stats") as answer:
                stats = json.load(answer)
        finally:
            sandbox.terminate()
            sandbox.wait()
    summary = [line for line in applied.stdout.splitlines() if line.startswith(("Applied", "Kaleyra slowed"))]
    requests = stats["served"] + stats["throttled"]
    return {
        "exit": applied.returncode,
        "left": left,
        "wall": wall,
        "throttled": stats["throttled"],
        "requests": requests,
        "summary": " / ".join(summary),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("count", type=int, nargs="?", default=500)
    parser.add_argument("--rate-limit", type=float, default=50)
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--latency-ms", type=float, default=20)
    args = parser.parse_args()
    floor = args.count / args.rate_limit
    print(
        f"changes: {args.count:,} on one account   sandbox: {args.rate_limit:g} requests/s, burst "
        f"{args.burst}, {args.latency_ms:g} ms   N / rate: {floor:.2f} s"
    )
    for case, retry_after in CASES.items():
        result = run_case(args.count, args.rate_limit, args.burst, args.latency_ms, retry_after)
        share = result["throttled"] / result["requests"] if result["requests"] else 0.0
        print(
            f"{case:22s} exit {result['exit']}   left to apply {result['left']}   "
            f"{result['wall']:6.2f} s = {result['wall'] / floor:.2f}x N/rate   "
            f"throttled {result['throttled']}/{result['requests']} = {share:.0%}"
        )
        if result["summary"]:
            print(f"{'':22s} apply said: {result['summary']}")
    print("targets, both cases: exit 0, nothing left, <= 1.2x N/rate, <= 10% throttled")


if __name__ == "__main__":
    main()
