"""Benchmark state bookkeeping during apply: what it adds to apply time, and that it grows linearly.

    python bench/state.py 10000                    # the local state (journal file, state.json)
    python bench/state.py 1000 --backend s3        # the s3 state, against moto's server on loopback

Applies N/4, N/2 and N changes at zero latency (the sandbox in its own process) in this process,
twice each: once as shipped (journal records fsynced per batch, audit records fsynced per batch,
compaction into state.json at the end), and once with those writes replaced by in-memory no-ops.
The difference is what state bookkeeping costs; a flat cost per change means it grows linearly.
(Timing the bookkeeping calls themselves would count time spent waiting for the GIL behind 16
worker threads, and overstate it.) With --backend s3 the writes are journal segment objects, the
audit object and the compaction into the state object, on moto's S3 server in its own process
(tests/s3server.py, needs `pip install -e '.[test,s3]'`); the preflight runs in both variants.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

from fleet import API_KEYS, make_project, start_sandbox
from reconciler.apply import api_keys, apply_plan
from reconciler.config import load_config
from reconciler.kaleyra.client import KaleyraClient
from reconciler.plan import compute_plan
from reconciler.profiles import load_profiles
from reconciler.state import audit
from reconciler.state.backends import open_store
from reconciler.state.local import Journal

S3_SERVER = Path(__file__).resolve().parent.parent / "tests" / "s3server.py"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def record_in_memory(journal: Journal, changes) -> None:
    for phone_number, entry in changes:
        journal.state.serial += 1
        if entry is None:
            journal.state.entries.pop(phone_number, None)
        else:
            journal.state.entries[phone_number] = entry


class CallTimer:
    """Main-thread time inside the bookkeeping calls: an upper bound on their cost (sync waits, counted
    here, release the GIL to the workers)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, function: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        return timed


def start_s3() -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen(
        [sys.executable, str(S3_SERVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    url = server.stdout.readline().strip() if server.stdout else ""
    if not url:
        raise SystemExit("moto's S3 server did not start: pip install -e '.[test,s3]'")
    os.environ.update(AWS_ENV)
    return server, url


def use_s3(root: Path, s3_url: str) -> None:
    """Point the project's state at a new bucket on the S3 server."""
    import boto3

    bucket = f"bench-{uuid.uuid4().hex[:20]}"
    boto3.client("s3", endpoint_url=s3_url).create_bucket(Bucket=bucket)
    with (root / "reconciler.yaml").open("a") as config:
        config.write(
            f"state:\n  backend: s3\n  bucket: {bucket}\n  key: state.json\n  endpoint_url: {s3_url}\n"
        )


def apply_once(count: int, parallelism: int, bookkeeping: bool, s3_url: str | None) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="bench-state-") as folder, contextlib.chdir(folder):
        root = Path(folder)
        make_project(root, count)
        if s3_url:
            use_s3(root, s3_url)
        sandbox, url = start_sandbox(root, 0)
        os.environ.update(API_KEYS, KALEYRA_ENDPOINT=url)
        try:
            config = load_config()
            profiles = load_profiles(config)
            store = open_store(config)
            state = store.load()
            plan = compute_plan(profiles, state, account_targets=config.waba_keys())
            audit_log = store.audit_log()
            journal_class, audit_class = Journal, audit.LocalAuditLog
            if s3_url:
                from reconciler.state.s3 import S3Journal

                journal_class, audit_class = S3Journal, audit.S3AuditLog
            patches = contextlib.ExitStack()
            calls = CallTimer()
            if bookkeeping:
                for owner, name in (
                    (journal_class, "record"),
                    (journal_class, "close"),
                    (audit_class, "append"),
                ):
                    patches.enter_context(mock.patch.object(owner, name, calls.wrap(getattr(owner, name))))
            else:
                patches.enter_context(mock.patch.object(journal_class, "record", record_in_memory))
                patches.enter_context(mock.patch.object(journal_class, "close", lambda journal: None))
                patches.enter_context(mock.patch.object(audit_class, "append", lambda log, records: None))
            with patches:
                started = time.perf_counter()
                with (
                    KaleyraClient(config.retry, max_connections=parallelism) as client,
                    store.writer(state) as journal,
                ):
                    keys = api_keys(plan, config)
                    report = apply_plan(
                        plan, config, state, journal, audit_log, client, keys, parallelism=parallelism
                    )
                elapsed = time.perf_counter() - started
            audit_log.close()
            if len(report.having("applied")) != count:
                raise SystemExit("not every change was applied")
            if bookkeeping and len(store.load().entries) != count:
                raise SystemExit("the state does not hold every change")
        finally:
            sandbox.terminate()
            sandbox.wait()
    return elapsed, calls.seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("count", type=int, nargs="?", default=10_000)
    parser.add_argument("--parallelism", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs of each variant; best kept")
    parser.add_argument("--backend", choices=["local", "s3"], default="local")
    args = parser.parse_args()
    s3_server, s3_url = start_s3() if args.backend == "s3" else (None, None)
    print(
        f"{args.backend} state, apply at zero latency, parallelism {args.parallelism}, best of {args.repeat}"
    )
    print(
        f"{'changes':>8} {'with state s':>13} {'without s':>10} {'state share':>12} {'us/change':>10}   calls"
    )
    for count in sorted({max(1, args.count // 4), max(1, args.count // 2), args.count}):
        runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _ in range(args.repeat):  # interleaved, so both variants see the same machine load
            for bookkeeping in (False, True):
                runs[bookkeeping].append(apply_once(count, args.parallelism, bookkeeping, s3_url))
        (with_state, in_calls), (without, _) = min(runs[True]), min(runs[False])
        cost = with_state - without
        share, per_change = cost / with_state, cost / count * 1e6
        print(
            f"{count:>8,} {with_state:>13.3f} {without:>10.3f} {share:>12.1%} {per_change:>10.1f}"
            f"   {in_calls / with_state:.1%}"
        )
    print("state share = (with - without) / with; calls = main-thread time in bookkeeping calls / with,")
    target = "at most 15% at 1,000 changes" if s3_url else "under 10% at 10,000 changes"
    print(f"an upper bound. Target: {target}; a flat us/change means linear cost.")
    if s3_server and s3_server.stdin:
        s3_server.stdin.close()
        s3_server.wait()


if __name__ == "__main__":
    main()
