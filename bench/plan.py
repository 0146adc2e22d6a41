"""Benchmark `reconciler plan` against the YAML parse floor, in one run.

    python bench/plan.py 10000

Generates N profiles over four accounts and a state in which 10% of them differ, then times, as whole
processes (best of --repeat): `reconciler plan`, and the floor, a process that walks the same files and
parses each with PyYAML's CSafeLoader. Prints both, their ratio, a breakdown of plan's phases
(measured in this process) and the plan process's peak memory.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reconciler import render
from reconciler.config import load_config
from reconciler.plan import compute_plan
from reconciler.profiles import load_profiles, profile_files
from reconciler.state import Entry, State, StateStore
from reconciler.yamlfile import load_mapping

ACCOUNTS = ["in-retail", "ap-care", "eu-sales", "na-support"]
FLOOR = """
import os, sys, yaml
loader = yaml.CSafeLoader
for folder, _, files in os.walk(sys.argv[1]):
    for name in files:
        if name.endswith((".yaml", ".yml")):
            with open(os.path.join(folder, name), "rb") as file:
                yaml.load(file, Loader=loader)
"""


def make_project(root: Path, count: int) -> None:
    lines = ["profiles_dir: profiles", "accounts:"]
    for index, name in enumerate(ACCOUNTS):
        pod = name.split("-")[0]
        lines += [
            f"  {name}:",
            f"    sid: HXBENCH{index:08d}",
            f'    waba_id: "76600000000{index:04d}"',
            f"    pod: {pod}",
        ]
    (root / "reconciler.yaml").write_text("\n".join(lines) + "\n")
    for index in range(count):
        account = ACCOUNTS[index % len(ACCOUNTS)]
        number = f"+1{4155000000 + index}"
        folder = root / "profiles" / account
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{number}.yaml").write_text(
            "# yaml-language-server: $schema=../../schemas/profile.schema.json\n"
            f'phone_number: "{number}"\n'
            f"account: {account}\n"
            f'address: "{index} Market Street, Suite {index % 400}, San Francisco, CA 94105"\n'
            f'description: "Customer care line {index} for orders, returns and questions"\n'
            "category: SHOPPING_RETAIL\n"
            f"email: care{index}@acme.example\n"
            f'about: "We answer within the hour, every day ({index})"\n'
            f"callback_profile_id: e5a4f212-b0b0-4c77-9f04-{index:012d}\n"
        )


def write_state(root: Path, changed_share: float) -> None:
    """Record every profile as applied, with 1 in 10 recorded with an older `about`."""
    previous = Path.cwd()
    os.chdir(root)
    try:
        config = load_config()
        profiles = load_profiles(config)
    finally:
        os.chdir(previous)
    every = round(1 / changed_share)
    entries = {}
    for index, (number, profile) in enumerate(profiles.items()):
        fields = dict(profile.fields)
        digest = profile.digest
        if index % every == 0:
            fields["about"] = "an older about text"
            digest = "stale"
        account = config.accounts[profile.account]
        entries[number] = Entry(profile.account, f"{account.sid}/{account.waba_id}", fields, "T", digest)
    StateStore(config.state_path).write_state_file(State("bench-lineage", 1, entries))


def run_process(argv: list[str], cwd: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (MiB) of one process."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode not in (0, 2):
        raise SystemExit(f"{argv} failed: {process.stderr.read().decode()}")
    return elapsed, usage.ru_maxrss // 1024


def breakdown(root: Path) -> dict[str, float]:
    previous = Path.cwd()
    os.chdir(root)
    try:
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
        state = StateStore(config.state_path).load()
        targets = {name: f"{a.sid}/{a.waba_id}" for name, a in config.accounts.items()}
        plan = compute_plan(profiles, state, (), targets)
        phases["state + diff"] = time.perf_counter() - started
        started = time.perf_counter()
        render.plan_text(plan)
        phases["render"] = time.perf_counter() - started
        return phases
    finally:
        os.chdir(previous)


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
        print(f"ratio plan / floor: {plan_s / floor_s:.2f}x   (target <= 2.0x at 10,000)")
        print("breakdown, in-process:")
        for phase, seconds in breakdown(root).items():
            print(f"  {phase:20s} {seconds:8.3f} s")


if __name__ == "__main__":
    main()
