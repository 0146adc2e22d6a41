"""Benchmark state bookkeeping during apply: what it adds to apply time, and that it grows linearly.

    python bench/state.py 10000

Applies N/4, N/2 and N changes at zero latency (the sandbox in its own process) in this process,
twice each: once as shipped (journal records fsynced per batch, audit records fsynced per batch,
compaction into state.json at the end), and once with those writes replaced by in-memory no-ops.
The difference is what state bookkeeping costs; a flat cost per change means it grows linearly.
(Timing the bookkeeping calls themselves would count time spent waiting for the GIL behind 16
worker threads, and overstate it.)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

from fleet import API_KEYS, make_project, start_sandbox
from reconciler import audit
from reconciler.apply import api_keys, apply_plan
from reconciler.config import load_config
from reconciler.kaleyra import KaleyraClient
from reconciler.plan import compute_plan
from reconciler.profiles import load_profiles
from reconciler.state import Journal, StateStore


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


def apply_once(count: int, parallelism: int, bookkeeping: bool) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="bench-state-") as folder, contextlib.chdir(folder):
        root = Path(folder)
        make_project(root, count)
        sandbox, url = start_sandbox(root, 0)
        os.environ.update(API_KEYS, KALEYRA_ENDPOINT=url)
        try:
            config = load_config()
            profiles = load_profiles(config)
            store = StateStore(config.state_path)
            state = store.load()
            plan = compute_plan(profiles, state, account_targets=config.waba_keys())
            audit_log = audit.AuditLog(config.audit_path)
            patches = contextlib.ExitStack()
            calls = CallTimer()
            if bookkeeping:
                for owner, name in ((Journal, "record"), (Journal, "close"), (audit.AuditLog, "append")):
                    patches.enter_context(mock.patch.object(owner, name, calls.wrap(getattr(owner, name))))
            else:
                patches.enter_context(mock.patch.object(Journal, "record", record_in_memory))
                patches.enter_context(mock.patch.object(Journal, "close", lambda journal: None))
                patches.enter_context(mock.patch.object(audit.AuditLog, "append", lambda log, records: None))
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
    args = parser.parse_args()
    print(f"apply at zero latency, parallelism {args.parallelism}, best of {args.repeat}")
    print(
        f"{'changes':>8} {'with state s':>13} {'without s':>10} {'state share':>12} {'us/change':>10}   calls"
    )
    for count in sorted({max(1, args.count // 4), max(1, args.count // 2), args.count}):
        runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _ in range(args.repeat):  # interleaved, so both variants see the same machine load
            for bookkeeping in (False, True):
                runs[bookkeeping].append(apply_once(count, args.parallelism, bookkeeping))
        (with_state, in_calls), (without, _) = min(runs[True]), min(runs[False])
        cost = with_state - without
        share, per_change = cost / with_state, cost / count * 1e6
        print(
            f"{count:>8,} {with_state:>13.3f} {without:>10.3f} {share:>12.1%} {per_change:>10.1f}"
            f"   {in_calls / with_state:.1%}"
        )
    print("state share = (with - without) / with; calls = main-thread time in bookkeeping calls / with,")
    print("an upper bound. Target: under 10% at 10,000 changes; a flat us/change means linear cost.")


if __name__ == "__main__":
    main()
