"""Shared by the benchmarks: a generated fleet of profiles, a sandbox process, timing of processes."""

from __future__ import annotations

import compileall
import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import reconciler
from reconciler.config import load_config
from reconciler.profiles import load_profiles
from reconciler.state.local import LocalStateStore
from reconciler.state.model import Entry, State

ACCOUNTS = ["in-retail", "ap-care", "eu-sales", "na-support"]
API_KEYS = {f"KALEYRA_API_KEY_{name.upper().replace('-', '_')}": "bench-key" for name in ACCOUNTS}


def compile_bytecode() -> None:
    """Compile the package's bytecode, as `pip install` does for an installed package. From an editable
    install, with PYTHONDONTWRITEBYTECODE set (as on this project's CI machines), every reconciler
    process would otherwise compile its source again: 40 ms of start-up no installed copy pays."""
    compileall.compile_dir(Path(reconciler.__file__).parent, quiet=1)


def make_project(
    root: Path,
    count: int,
    about: str = "We answer within the hour",
    accounts: list[str] = ACCOUNTS,
    backoff_base_s: float | None = 0.05,
) -> None:
    """reconciler.yaml with four accounts (or those given), and `count` realistic profiles spread over
    them; `backoff_base_s=None` leaves the retry settings at their defaults. Every benchmark starts
    here, so this is also where the reconciler is made to start as an installed copy would."""
    compile_bytecode()
    lines = ["profiles_dir: profiles"]
    if backoff_base_s is not None:
        lines += ["retry:", f"  backoff_base_s: {backoff_base_s}"]
    lines.append("accounts:")
    for index, name in enumerate(accounts):
        pod = name.split("-")[0]
        lines += [
            f"  {name}:",
            f"    sid: HXBENCH{index:08d}",
            f'    waba_id: "76600000000{index:04d}"',
            f"    pod: {pod}",
            f"    api_key_env: KALEYRA_API_KEY_{name.upper().replace('-', '_')}",
        ]
    (root / "reconciler.yaml").write_text("\n".join(lines) + "\n")
    for index in range(count):
        account = accounts[index % len(accounts)]
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
            f'about: "{about} ({index})"\n'
            f"callback_profile_id: e5a4f212-b0b0-4c77-9f04-{index:012d}\n"
        )


def write_state(root: Path, changed_share: float) -> None:
    """Record every profile as applied, with `changed_share` of them recorded with an older `about`."""
    with contextlib.chdir(root):
        config = load_config()
        profiles = load_profiles(config)
    every = round(1 / changed_share)
    entries = {}
    for index, (number, profile) in enumerate(profiles.items()):
        fields, digest = dict(profile.fields), profile.digest
        if index % every == 0:
            fields["about"], digest = "an older about text", "stale"
        entries[number] = Entry(
            profile.account, config.accounts[profile.account].waba_key, fields, "T", digest
        )
    LocalStateStore(config.state_path).write_state_file(State("bench-lineage", 1, entries))


def run_process(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (MiB) of one process; exits 0 or 2 expected."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 2):
        raise SystemExit(f"{' '.join(argv)} exited {code}: {process.stderr.read().decode()[-2000:]}")
    return elapsed, usage.ru_maxrss // 1024


def start_sandbox(root: Path, latency_ms: float, *options: str) -> tuple[subprocess.Popen, str]:
    """`reconciler sandbox` in its own process (provisioned from the project), on a free port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "reconciler", "sandbox", "--port", str(port)),
            *("--latency-ms", str(latency_ms), *options),
        ],
        cwd=root,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the sandbox did not start")
