"""Benchmark `reconciler apply` against the latency floor, in one run.

    python bench/apply.py 1000 --latency-ms 50 --parallelism 16

Applies N changes (a fresh fleet: every number is a create) against `reconciler sandbox` answering
each request after L ms, and compares the apply process's wall time with the floor N x L / P: the time
P perfectly parallel requests of latency L would take. Everything else (start-up, planning, the
client, state and audit writes) shows up as the excess.

It also times the HTTP stack alone, in the same run and against the same sandbox: P threads of a bare
httpx client sending the same PUTs, with nothing else (no start-up, no planning, no recording). The
excess of that run over the floor is what the client library, the sandbox and this machine cost; the
rest of apply's excess is the reconciler's own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from fleet import API_KEYS, make_project, run_process, start_sandbox
from reconciler.config import load_config
from reconciler.profiles import load_profiles


def timed_phases(root: Path, env: dict[str, str], argv: list[str], count: int) -> list[str]:
    """The phase lines of one more apply of a fresh fleet, run through phases.py."""
    with tempfile.TemporaryDirectory(prefix="bench-phases-") as folder:
        fresh = Path(folder)
        make_project(fresh, count)  # the same numbers and accounts, which the sandbox holds
        command = [sys.executable, str(Path(__file__).with_name("phases.py")), *argv[3:]]
        ran = subprocess.run(command, cwd=fresh, env=env, capture_output=True, text=True)
    if ran.returncode != 0:
        raise SystemExit(f"phases.py exited {ran.returncode}: {ran.stderr[-2000:]}")
    return [line.removeprefix("phase ") for line in ran.stderr.splitlines() if line.startswith("phase ")]


def bare_httpx(root: Path, url: str, parallelism: int) -> float:
    """Seconds for `parallelism` threads of one bare httpx client to send every profile's fields."""
    with contextlib.chdir(root):
        config = load_config()
        profiles = load_profiles(config)
    requests = []
    for number, profile in profiles.items():
        account = config.accounts[profile.account]
        path = f"/v2/{account.sid}/whatsapp/{account.waba_id}/number/update"
        key = API_KEYS[account.api_key_env]
        requests.append((url + path, key, json.dumps({"phone_number": number, **profile.fields}).encode()))
    limits = httpx.Limits(max_connections=parallelism, max_keepalive_connections=parallelism)
    with httpx.Client(limits=limits) as client:

        def send(request: tuple[str, str, bytes]) -> None:
            target, key, body = request
            answer = client.put(
                target, content=body, headers={"api-key": key, "Content-Type": "application/json"}
            )
            if answer.json().get("code") != "WA200":
                raise SystemExit(f"the sandbox refused a bare request: {answer.text}")

        started = time.perf_counter()
        with ThreadPoolExecutor(parallelism) as pool:
            list(pool.map(send, requests))
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("count", type=int, nargs="?", default=1_000)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--parallelism", type=int, default=16)
    parser.add_argument(
        "--phases", action="store_true", help="apply once more, printing when each phase ended (phases.py)"
    )
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
            bare = bare_httpx(root, url, args.parallelism)
            phases = timed_phases(root, env, argv, args.count) if args.phases else []
        finally:
            sandbox.terminate()
            sandbox.wait()
    floor = args.count * args.latency_ms / 1000 / args.parallelism
    print(f"changes: {args.count:,}   latency: {args.latency_ms:g} ms   parallelism: {args.parallelism}")
    print(f"reconciler apply (whole process): {wall:8.3f} s   peak memory {peak_mb} MiB")
    print(f"latency floor N x L / P:          {floor:8.3f} s")
    if floor:
        targets = "targets at 1,000 x 50 ms / 16: <= 1.3x; issue 11: <= 1.15x"
        print(f"ratio apply / floor: {wall / floor:.2f}x   ({targets})")
    print(f"overhead per change: {(wall - floor) / args.count * 1000:.2f} ms")
    print(f"bare httpx, {args.parallelism} threads, same PUTs:  {bare:8.3f} s", end="")
    print(f" = {bare / floor:.2f}x the floor (the HTTP stack and the sandbox alone)" if floor else "")
    if phases:
        print("phases of one more apply of a fresh fleet (ms since phases.py began, after Python's start):")
        print("\n".join(f"  {line}" for line in phases))


if __name__ == "__main__":
    main()
