"""Benchmark `reconciler report --html DIR` on a fleet with a state and an audit log, in one run.

    python bench/report.py 10000

Generates N profiles over four accounts, a state in which 10% of them differ, and an audit log of
three runs per number over 90 days (a create, an update, a re-assertion; 2% of the updates failed),
then times the whole process (best of --repeat), prints the page's size and a breakdown of its phases
(measured in this process). Target: under 2 s at 10,000 numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fleet import ACCOUNTS, make_project, run_process, write_state
from reconciler.config import load_config
from reconciler.escape import json_line
from reconciler.plan import compute_plan
from reconciler.profiles import load_profiles
from reconciler.report import build_report, html_page, report_markdown
from reconciler.state.backends import open_store


def write_audit_log(root: Path) -> int:
    """Three records per number: a create 90 days ago, an update spread over the next 60 days (one
    in 50 refused), a scheduled re-assertion in the last 30. Returns how many were written."""
    with contextlib.chdir(root):
        config = load_config()
        profiles = load_profiles(config)
    start = datetime(2026, 9, 1, tzinfo=UTC)
    by = {"actor": "bench", "commit": "0123456789abcdef0123456789abcdef01234567", "branch": "main"}
    lines = []
    for index, (number, profile) in enumerate(profiles.items()):
        fields = {name: {"old": None, "new": value} for name, value in profile.fields.items()}
        for action, days, result, extra in (
            ("create", 0, "WA200", {}),
            ("update", 30 + index % 60, "WA400" if index % 50 == 0 else "WA200", {}),
            ("replace", 90 + index % 30, "WA200", {"reassert": True}),
        ):
            time_text = (start + timedelta(days=days, seconds=index)).strftime("%Y-%m-%dT%H:%M:%SZ")
            record = {
                "time": time_text,
                "phone_number": number,
                "account": profile.account,
                "action": action,
                "fields": fields,
                "result": result,
                "message": "ok" if result == "WA200" else "refused",
                "by": by,
                **extra,
            }
            lines.append(json_line(record))
    config.audit_path.parent.mkdir(parents=True, exist_ok=True)
    config.audit_path.write_text("".join(lines))
    return len(lines)


def breakdown(root: Path) -> dict[str, float]:
    phases: dict[str, float] = {}
    with contextlib.chdir(root):
        started = time.perf_counter()
        config = load_config()
        profiles = load_profiles(config)
        store = open_store(config)
        state = store.load()
        plan = compute_plan(profiles, state, account_targets=config.waba_keys())
        phases["load + plan"] = time.perf_counter() - started
        started = time.perf_counter()
        records = list(store.audit_log().read())
        phases["read audit log"] = time.perf_counter() - started
        started = time.perf_counter()
        fleet = build_report(profiles, state, plan, records)
        phases["build report"] = time.perf_counter() - started
        started = time.perf_counter()
        html_page(fleet)
        phases["render html"] = time.perf_counter() - started
        started = time.perf_counter()
        report_markdown(fleet)
        phases["render markdown"] = time.perf_counter() - started
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("count", type=int, nargs="?", default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of the process; the best is kept")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-report-") as folder:
        root = Path(folder)
        make_project(root, args.count)
        write_state(root, 0.10)
        records = write_audit_log(root)
        argv = [sys.executable, "-m", "reconciler", "report", "--html", str(root / "report")]
        runs = [run_process(argv, root) for _ in range(args.repeat)]
        seconds, peak = min(runs)[0], max(run[1] for run in runs)
        size = (root / "report" / "index.html").stat().st_size
        print(
            f"numbers: {args.count:,} over {len(ACCOUNTS)} accounts, 10% pending; {records:,} audit records"
        )
        print(f"reconciler report --html (whole process, best of {args.repeat}): {seconds:8.3f} s")
        print(f"peak memory {peak} MiB; page {size / 1e6:.1f} MB   (target: under 2 s at 10,000)")
        print("breakdown, in-process:")
        for phase, phase_seconds in breakdown(root).items():
            print(f"  {phase:20s} {phase_seconds:8.3f} s")


if __name__ == "__main__":
    main()
