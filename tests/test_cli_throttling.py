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
