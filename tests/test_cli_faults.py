"""Faults: SIGKILL at any moment, a flaky network, Ctrl-C, rate and concurrency limits.

These run `python -m reconciler` as a real process where the process itself must die or be
interrupted, against a sandbox in this process on a real socket.
"""

from __future__ import annotations

import itertools
import json
import signal
import time

import pytest

from reconciler.state.local import LocalStateStore

from conftest import API_KEY, Project, assert_state_is_true, make_fleet, requests_seen, run_reconciler


@pytest.mark.parametrize("kill_after_requests", [0, 1, 4, 9, 17, 26, 35])
def test_sigkill_at_any_moment_leaves_a_true_state_and_apply_converges(
    tmp_path, fleet_sandbox, kill_after_requests
):
    project = Project(tmp_path, fleet_sandbox.url)
    numbers = make_fleet(project, 40)
    fleet_sandbox.sandbox.latency_ms = 25
    process = run_reconciler(project, "apply", "--auto-approve", "--parallelism", "4")
    deadline = time.monotonic() + 20
    while requests_seen(fleet_sandbox) < kill_after_requests and process.poll() is None:
        assert time.monotonic() < deadline, "the apply never got going"
        time.sleep(0.002)
    if kill_after_requests == 0:
        time.sleep(0.15)  # during start-up and planning
    process.send_signal(signal.SIGKILL)
    process.wait()

    recorded = assert_state_is_true(project, fleet_sandbox)
    sent_before = requests_seen(fleet_sandbox)
    assert project.run("state", "unlock").exit_code == 0  # the dead process's lock is known stale

    fleet_sandbox.sandbox.latency_ms = 0
    second = project.run("apply", "--auto-approve")
    assert second.exit_code == 0, second.output + second.stderr
    with fleet_sandbox.sandbox.lock:
        resent = [r["body"]["phone_number"] for r in fleet_sandbox.sandbox.requests[sent_before:]]
    assert not set(resent) & set(recorded), "a number already recorded was sent again"
    for number in numbers:
        assert fleet_sandbox.sandbox.number(number) == {"about": f"v1 {number}", "category": "OTHER"}
    assert set(project.applied()) == set(numbers)
    assert project.run("plan", "--detailed-exitcode").exit_code == 0


def test_a_flaky_network_converges_to_exactly_the_desired_profiles(tmp_path, fleet_sandbox):
    project = Project(tmp_path, fleet_sandbox.url)
    project.write_config(
        retry={"attempts": 6, "backoff_base_s": 0.001, "backoff_max_s": 0.01, "deadline_s": 30}
    )
    numbers = make_fleet(project, 200)
    fleet_sandbox.sandbox.fail_rate = 0.3
    fleet_sandbox.sandbox.faults = ("wa500", "429", "drop")
    runs = 0
    while runs < 4:
        runs += 1
        if project.run("apply", "--auto-approve", "--parallelism", "16").exit_code == 0:
            break
    assert project.run("plan", "--detailed-exitcode").exit_code == 0
    answers = {request["answer"] for request in fleet_sandbox.sandbox.requests}
    assert {"wa500", "429", "drop", "WA200"} <= answers  # every kind of fault really happened
    for number in numbers:
        assert fleet_sandbox.sandbox.number(number) == {"about": f"v1 {number}", "category": "OTHER"}
    assert set(project.applied()) == set(numbers)


def test_ctrl_c_finishes_what_is_in_flight_records_it_and_exits_1(tmp_path, fleet_sandbox):
    project = Project(tmp_path, fleet_sandbox.url)
    make_fleet(project, 60)
    fleet_sandbox.sandbox.latency_ms = 40
    process = run_reconciler(project, "apply", "--auto-approve", "--parallelism", "4", "--format", "json")
    while requests_seen(fleet_sandbox) < 8:
        time.sleep(0.002)
    process.send_signal(signal.SIGINT)
    stdout, _ = process.communicate(timeout=30)
    assert process.returncode == 1
    report = json.loads(stdout)
    assert report["interrupted"] is True
    assert report["summary"]["not attempted"] > 0
    time.sleep(0.1)  # let the sandbox finish logging its last answers
    succeeded = {r["body"]["phone_number"] for r in fleet_sandbox.sandbox.requests if r["answer"] == "WA200"}
    recorded = assert_state_is_true(project, fleet_sandbox)
    assert set(recorded) == succeeded, "every answered request was recorded, nothing else"
    store = LocalStateStore(project.state_path)
    assert not store.lock_path.exists() and not store.journal_path.exists()


def test_sigterm_is_treated_like_ctrl_c(tmp_path, fleet_sandbox):
    project = Project(tmp_path, fleet_sandbox.url)
    make_fleet(project, 40)
    fleet_sandbox.sandbox.latency_ms = 40
    process = run_reconciler(project, "apply", "--auto-approve", "--parallelism", "2")
    while requests_seen(fleet_sandbox) < 3:
        time.sleep(0.002)
    process.send_signal(signal.SIGTERM)
    stdout, _ = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "Interrupted" in stdout and "not attempted" in stdout
    assert not LocalStateStore(project.state_path).lock_path.exists()


def test_parallelism_is_respected_and_no_number_has_two_requests_at_once(tmp_path, fleet_sandbox):
    project = Project(tmp_path, fleet_sandbox.url)
    # Near the end only a few numbers are left retrying, so a streak of the seeded dice lands on one.
    project.write_config(retry={"attempts": 10, "backoff_base_s": 0.001, "backoff_max_s": 0.005})
    make_fleet(project, 24)
    fleet_sandbox.sandbox.latency_ms = 30
    fleet_sandbox.sandbox.fail_rate = 0.3  # retries must not overlap the number's earlier attempt
    fleet_sandbox.sandbox.faults = ("wa500",)
    result = project.run("apply", "--auto-approve", "--parallelism", "3")
    assert result.exit_code == 0, result.output
    spans = [(r["started"], r["finished"], r["body"]["phone_number"]) for r in fleet_sandbox.sandbox.requests]
    events = sorted([(start, 1) for start, _, _ in spans] + [(end, -1) for _, end, _ in spans])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert 2 <= peak <= 3
    by_number: dict[str, list[tuple[float, float]]] = {}
    for start, end, number in spans:
        by_number.setdefault(number, []).append((start, end))
    for number, intervals in by_number.items():
        intervals.sort()
        for (_, first_end), (second_start, _) in itertools.pairwise(intervals):
            assert second_start >= first_end, f"two requests at once for {number}"


def test_max_rps_spaces_request_starts(tmp_path, fleet_sandbox):
    project = Project(tmp_path, fleet_sandbox.url)
    make_fleet(project, 8)
    assert project.run("apply", "--auto-approve", "--max-rps", "20", "--parallelism", "8").exit_code == 0
    starts = sorted(r["started"] for r in fleet_sandbox.sandbox.requests)
    assert len(starts) == 8
    # 8 starts at most 20 per second span at least 7 intervals of 50 ms (a slow machine only widens it).
    assert starts[-1] - starts[0] >= 7 * 0.05 * 0.9


def test_apply_prints_a_line_per_number_and_a_progress_line_at_most_every_ten_seconds():
    from reconciler.apply import APPLIED, FAILED, Outcome
    from reconciler.plan import Change
    from reconciler.render import ApplyProgress

    printed: list[str] = []
    now = [0.0]
    progress = ApplyProgress(4, "text", printed.append, clock=lambda: now[0])
    change = Change("+14155550100", "main", "update", {})
    progress(Outcome(change, APPLIED, "WA200", "ok"))
    now[0] = 4.0
    progress(None)  # idle, under 10 s: nothing
    now[0] = 10.5
    progress(Outcome(change, FAILED, "WA400", "invalid email format"))
    now[0] = 15.0
    progress(None)  # 4.5 s since the last progress line: nothing
    now[0] = 21.0
    progress(None)
    lines = "".join(printed).splitlines()
    assert lines[0].split() == ["applied", "+14155550100", "update", "(main)"]
    assert lines[1].endswith("(main): WA400: invalid email format")
    assert lines[2] == "... 2 of 4 done (1 applied, 1 failed) after 10 s"
    assert lines[3] == "... 2 of 4 done (1 applied, 1 failed) after 21 s"
    assert len(lines) == 4


def test_key_is_never_in_the_process_output(tmp_path, fleet_sandbox):
    project = Project(tmp_path, fleet_sandbox.url)
    make_fleet(project, 3)
    process = run_reconciler(project, "apply", "--auto-approve", "--verbose")
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "PUT http" in stderr and API_KEY not in stdout + stderr
