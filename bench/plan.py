"""Benchmark `reconciler plan` against the YAML parse floor, in one run.

    python bench/plan.py 10000

Generates N profiles over four accounts and a state in which 10% of them differ, then times, as whole
processes (best of --repeat): `reconciler plan`, and the floor, a process that walks the same files and
parses each with PyYAML's CSafeLoader. Prints both, their ratio, a breakdown of plan's phases
(measured in this process) and the plan process's peak memory.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

from fleet import ACCOUNTS, make_project, run_process, write_state
from reconciler import render
from reconciler.config import load_config
from reconciler.plan import compute_plan
from reconciler.profiles import load_profiles, profile_files
from reconciler.state.local import LocalStateStore
from reconciler.yamlfile import load_mapping

FLOOR = """
import os, sys, yaml
for folder, _, files in os.walk(sys.argv[1]):
    for name in files:
        if name.endswith((".yaml", ".yml")):
            with open(os.path.join(folder, name), "rb") as file:
                yaml.load(file, Loader=yaml.CSafeLoader)
"""


def breakdown(root: Path) -> dict[str, float]:
    with contextlib.chdir(root):
        phases: dict[str, float] = {}
        started = time.perf_counter()
        config = load_config()
        files = profile_files(config.profiles_dir, [])
        for file in files:
            load_mapping(file, str(file))
        phases["load (read + parse)"] = time.perf_counter() - started
        started = time.perf_counter()
        profiles = load_profiles(config)  # loads again, then validates
        phases["validate"] = time.perf_counter() - started - phases["load (read + parse)"]
        started = time.perf_counter()
        state = LocalStateStore(config.state_path).load()
        plan = compute_plan(profiles, state, account_targets=config.waba_keys())
        phases["state + diff"] = time.perf_counter() - started
        started = time.perf_counter()
        render.plan_text(plan)
        phases["render"] = time.perf_counter() - started
        return phases


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("count", type=int, nargs="?", default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each process; the best is kept")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as folder:
        root = Path(folder)
        make_project(root, args.count)
        write_state(root, 0.10)
        plan_runs, floor_runs = [], []
        for _ in range(args.repeat):  # interleaved, so both see the same machine load
            plan_runs.append(run_process([sys.executable, "-m", "reconciler", "plan"], root))
            floor_runs.append(run_process([sys.executable, "-c", FLOOR, str(root / "profiles")], root))
        plan_s, plan_mb = min(plan_runs)[0], max(run[1] for run in plan_runs)
        floor_s = min(floor_runs)[0]
        print(f"profiles: {args.count:,} over {len(ACCOUNTS)} accounts, 10% changed; best of {args.repeat}")
        print(f"reconciler plan (whole process): {plan_s:8.3f} s   peak memory {plan_mb} MiB")
        print(f"parse floor (CSafeLoader, whole process): {floor_s:8.3f} s")
        print(f"ratio plan / floor: {plan_s / floor_s:.2f}x   (target <= 1.6x at 10,000)")
        print("breakdown, in-process:")
        for phase, seconds in breakdown(root).items():
            print(f"  {phase:20s} {seconds:8.3f} s")


if __name__ == "__main__":
    main()
