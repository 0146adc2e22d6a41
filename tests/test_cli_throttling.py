"""End to end: apply against a rate-limited sandbox on a real socket (issue 11), and Ctrl-C during a
Retry-After pause (issue 9 section 5)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import pytest

from reconciler.kaleyra.sandbox import Sandbox, SandboxAccount, serve_in_thread

from conftest import API_KEY, OTHER_SID, OTHER_WABA, SID, WABA, Project
from conftest import NUMBERS as PROVISIONED

NUMBERS = [f"+1650777{index:04d}" for index in range(40)]


@pytest.fixture
def limited():
    """A sandbox allowing 40 requests a second per account (burst 4), 5 ms away."""
    held = Sandbox(
        [SandboxAccount(SID, WABA, {n: {} for n in NUMBERS}), SandboxAccount(OTHER_SID, OTHER_WABA, {})],
        latency_ms=5,
        rate_limit=40,
        burst=4,
        retry_after_s=None,
    )
    server = serve_in_thread(held)
    yield server
    server.shutdown()
    server.server_close()


def fleet(project: Project, count: int) -> list[str]:
    for number in NUMBERS[:count]:
        project.write_profile(number, about=f"hello {number}")
    return NUMBERS[:count]


def stats(server) -> dict:
    return httpx.get(server.url + "/_sandbox/stats").json()


def test_a_busy_account_slows_the_run_down_instead_of_failing_numbers(tmp_path, limited):
    project = Project(tmp_path, limited.url)
    # One attempt per number: before, any 429 failed its number at once.
    project.write_config(retry={"attempts": 1, "backoff_base_s": 0.01, "deadline_s": 60})
    numbers = fleet(project, 40)
    result = project.run("apply", "--auto-approve", "--parallelism", "8")
    assert result.exit_code == 0, result.output + result.stderr
    assert set(project.applied()) == set(numbers)
    throttled = stats(limited)["throttled"]
    assert throttled > 0  # the limit really was hit...
    assert f"Kaleyra slowed this run down: {SID}: throttled {throttled} time" in result.stdout
    assert "settled at" in result.stdout  # ...and the summary says how the run slowed


def test_apply_json_reports_the_throttling(tmp_path, limited):
    project = Project(tmp_path, limited.url)
    fleet(project, 30)
    result = project.run("apply", "--auto-approve", "--format", "json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    [account] = report["throttling"]["accounts"]
    assert account["sid"] == SID and account["throttled"] == stats(limited)["throttled"]
    assert report["throttling"]["throttled"] == account["throttled"] > 0
    assert account["settled_rps"] > 0 and account["paused"] == 0


def test_retry_after_pauses_are_counted_and_verbose_says_when_the_pace_changed(tmp_path, limited):
    limited.sandbox.retry_after_s = 1
    project = Project(tmp_path, limited.url)
    fleet(project, 10)
    result = project.run("apply", "--auto-approve", "--verbose")
    assert result.exit_code == 0, result.stderr
    pace = [line for line in result.stderr.splitlines() if line.startswith(f"pace {SID} ")]
    assert any("paused 1s (Retry-After)" in line for line in pace)
    assert any("throttled: no limit -> " in line for line in pace)
    assert "paused" in result.stdout and "for Retry-After" in result.stdout
    assert API_KEY not in result.stdout + result.stderr


def test_without_throttling_there_is_no_summary_and_json_says_none(project, sandbox):
    project.write_profile(PROVISIONED[0], about="x")
    text = project.run("apply", "--auto-approve")
    assert text.exit_code == 0 and "slowed" not in text.stdout
    project.write_profile(PROVISIONED[0], about="y")
    report = json.loads(project.run("apply", "--auto-approve", "--format", "json").stdout)
    assert report["throttling"] == {"throttled": 0, "accounts": []}


def test_ctrl_c_during_a_retry_after_pause_ends_the_run_at_once(tmp_path, limited):
    """A 120 s Retry-After pauses the account; SIGINT must not wait it out."""
    limited.sandbox.retry_after_s = 120
    limited.sandbox.rate_limit, limited.sandbox.burst = 0.001, 3  # three answers, then only 429s
    project = Project(tmp_path, limited.url)
    project.write_config(retry={"attempts": 3, "deadline_s": 600})
    fleet(project, 12)
    env = {**os.environ, **project.env}
    env.pop("KALEYRA_ENDPOINT", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "apply", "--auto-approve", "--format", "json"],
        cwd=project.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while stats(limited)["throttled"] == 0:  # the account is paused now
            assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)  # far less than the pause
    finally:
        process.kill()
    assert process.returncode == 1, stderr
    report = json.loads(stdout)
    assert report["interrupted"] is True
    assert report["summary"]["applied"] == 3
    assert len(project.applied()) == 3  # what Kaleyra accepted was recorded
    # Workers waiting out the pause had sent their number once (throttled) or not at all.
    waited = [r for r in report["results"] if r["status"] != "applied" and r["code"] in ("-", "NOT_SENT")]
    assert waited and all(r["status"] == "not attempted" for r in waited)
    retried = [r for r in report["results"] if r["status"] == "failed"]
    assert all("not retried: the run was interrupted" in r["message"] for r in retried)


# --- one account's Retry-After never stalls another ---------------------------------------------------


@pytest.fixture
def one_paused():
    """Two accounts with 10 numbers each; the first (SID) answers every request but its first with 429
    and a Retry-After the test sets; the other (OTHER_SID) is never throttled."""
    import time

    from reconciler.kaleyra.sandbox import TokenBucket

    held = Sandbox(
        [
            SandboxAccount(SID, WABA, {n: {} for n in NUMBERS[:10]}),
            SandboxAccount(OTHER_SID, OTHER_WABA, {n: {} for n in NUMBERS[10:20]}),
        ],
        latency_ms=20,
        rate_limit=10_000,  # the other account: no limit it can reach
    )
    held.buckets[SID] = TokenBucket(0.000001, 1, time.monotonic())  # one request, then 429 for good
    server = serve_in_thread(held)
    yield server
    server.shutdown()
    server.server_close()


def two_accounts(tmp_path, server) -> Project:
    project = Project(tmp_path, server.url)
    for number in NUMBERS[:10]:
        project.write_profile(number, account="main", about="x")
    for number in NUMBERS[10:20]:
        project.write_profile(number, account="legacy", about="y")
    return project


def requests_by_sid(server) -> list[str]:
    with server.sandbox.lock:
        return [request["path"].split("/")[2] for request in server.sandbox.requests]


def run(project: Project, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **project.env}
    env.pop("KALEYRA_ENDPOINT", None)
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # a worker parked on the 600 s pause would never finish in time
    )


def test_an_account_paused_past_the_deadline_fails_at_once_and_the_other_is_sent(tmp_path, one_paused):
    one_paused.sandbox.retry_after_s = 600
    project = two_accounts(tmp_path, one_paused)
    result = run(project, "apply", "--auto-approve", "--parallelism", "4")
    assert result.returncode == 1, result.stdout + result.stderr
    assert set(NUMBERS[10:20]) <= set(project.applied())  # every number of the other account
    assert "Traceback" not in result.stderr and "OverflowError" not in result.stdout + result.stderr
    assert "Retry-After 600 s is beyond this number's remaining deadline (" in result.stderr
    assert "gave up at the" not in result.stderr
    assert requests_by_sid(one_paused).count(SID) <= 4  # what was in flight when the 429 came; no more
    # No number waited in the 600 s pause Kaleyra asked for: the summary counts no pause.
    assert "for Retry-After" not in result.stdout, result.stdout


def test_workers_send_the_other_accounts_numbers_during_a_pause(tmp_path, one_paused):
    one_paused.sandbox.retry_after_s = 3
    project = two_accounts(tmp_path, one_paused)
    result = run(project, "apply", "--auto-approve", "--parallelism", "2")
    assert result.returncode == 1, result.stdout + result.stderr
    assert set(NUMBERS[10:20]) <= set(project.applied())
    with one_paused.sandbox.lock:
        answered = [
            (r["path"].split("/")[2], r["answer"], r["started"], r["finished"])
            for r in one_paused.sandbox.requests
        ]
    paused_at = min(finished for sid, answer, _, finished in answered if answer == "throttled")
    # Requests to the paused account after its first pause: sent once the pause was over.
    after_pause = [started for sid, _, started, _ in answered if sid == SID and started > paused_at + 1]
    assert after_pause, answered
    # Every number of the other account was answered before the paused account was tried again: no
    # worker waited on the pause while there was other work.
    others = [finished for sid, _, _, finished in answered if sid == OTHER_SID]
    assert len(others) == 10 and max(others) < min(after_pause), answered
