"""--lock-timeout with the local state: fail at once, or wait for the lock and then plan afresh.

(The same for the s3 backend is in test_cli_s3.py.)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from reconciler.state.local import LocalStateStore

from conftest import NUMBERS, Project, assert_clean_failure, put_bodies


def hold_lock(project: Project, command: str = "apply") -> None:
    """A lock as a live run of this host would hold it (this test process is alive)."""
    holder = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "user": "ops",
        "command": command,
        "since": "now",
    }
    lock = LocalStateStore(project.state_path).lock_path
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps(holder))


def start_apply(project: Project, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", "apply", "--auto-approve", "--parallelism", "1", *args],
        cwd=project.root,
        env={**os.environ, **project.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def release_when(seen: threading.Event, project: Project) -> threading.Thread:
    def release() -> None:
        seen.wait(30)
        LocalStateStore(project.state_path).lock_path.unlink()

    thread = threading.Thread(target=release)
    thread.start()
    return thread


def test_a_held_lock_fails_at_once_by_default_naming_the_holder(project, sandbox):
    project.write_profile(NUMBERS[0], about="x")
    hold_lock(project)
    result = project.run("apply", "--auto-approve")
    assert_clean_failure(result)
    assert f"ops@{socket.gethostname()} (pid {os.getpid()}, `apply`)" in result.stderr
    assert "waited" not in result.stderr and put_bodies(sandbox) == []


def test_apply_waits_for_the_lock_then_plans_afresh(project, sandbox):
    """The run that held the lock applied the changes meanwhile: the waiting run's plan is made after
    it gets the lock, so it finds nothing to do and sends nothing."""
    for number in NUMBERS[:8]:
        project.write_profile(number, about="x")
    sandbox.sandbox.latency_ms = 300  # the first run holds the lock until the second is seen waiting
    first = start_apply(project)
    while not put_bodies(sandbox):
        assert first.poll() is None, first.communicate()
        time.sleep(0.005)
    second = start_apply(project, "--lock-timeout", "1m")
    waiting = second.stderr.readline() if second.stderr else ""
    sandbox.sandbox.latency_ms = 0
    assert "waiting up to 60 s for the state lock, held by" in waiting and f"pid {first.pid}" in waiting
    _, first_err = first.communicate(timeout=60)
    stdout, stderr = second.communicate(timeout=60)
    assert first.returncode == 0 and second.returncode == 0, first_err + stderr
    assert "No changes" in stdout
    assert sorted(body["phone_number"] for body in put_bodies(sandbox)) == NUMBERS[:8]


def test_import_waits_for_the_lock_or_fails_once_the_timeout_is_over(project, sandbox):
    project.write_profile(NUMBERS[1], about="live already")
    hold_lock(project, "apply")
    expired = project.run("import", "--auto-approve", "--lock-timeout", "0.2s")
    assert_clean_failure(expired)
    assert "the state is locked by ops@" in expired.stderr and "(waited 0.2 s)" in expired.stderr
    assert project.applied() == {}

    seen = threading.Event()
    releaser = release_when(seen, project)
    with pytest.MonkeyPatch.context() as patch:
        # The waiting message is the moment the holder may go: release the lock then.
        import reconciler.cli.apply

        original = reconciler.cli.apply.notify
        patch.setattr(reconciler.cli.apply, "notify", lambda text: (original(text), seen.set()))
        waited = project.run("import", "--auto-approve", "--lock-timeout", "30")
    releaser.join()
    assert waited.exit_code == 0, waited.output + waited.stderr
    assert "waiting up to 30 s" in waited.stderr and "Imported 1 number(s)" in waited.output
    assert project.applied() == {NUMBERS[1]: {"about": "live already"}}
    assert not LocalStateStore(project.state_path).lock_path.exists()


@pytest.mark.parametrize("value", ["", "soon", "-5", "5x", "2d", "nan"])
def test_a_bad_lock_timeout_is_a_usage_error(project, sandbox, value):
    project.write_profile(NUMBERS[0], about="x")
    result = project.run("apply", "--auto-approve", "--lock-timeout", value)
    assert_clean_failure(result)
    assert "is not a duration" in result.output + result.stderr
    assert put_bodies(sandbox) == []


def test_a_run_whose_lock_was_forced_away_writes_nothing_and_leaves_the_new_holder_alone(
    tmp_path, fleet_sandbox
):
    """Run 1 is mid-apply; `state unlock --force`; run 2 takes the lock and records. When run 1 goes on,
    it writes no state and removes no lock, and says what it did not record."""
    import signal

    from conftest import FLEET, accepted_numbers, assert_state_is_true, run_reconciler, wait_for_requests

    project = Project(tmp_path, fleet_sandbox.url)
    for number in FLEET[:60]:
        project.write_profile(number, about=f"v1 {number}")
    fleet_sandbox.sandbox.latency_ms = 100
    first = run_reconciler(project, "apply", "--auto-approve", "--parallelism", "2")
    wait_for_requests(fleet_sandbox, 6, first)
    first.send_signal(signal.SIGSTOP)  # mid-apply, its lock held, requests perhaps in flight
    try:
        time.sleep(0.3)  # let the first run's records settle: what is in its journal is now fixed
        assert project.run("state", "unlock", "--force").exit_code == 0
        project.write_profile(FLEET[0], about="run 2")
        second = run_reconciler(project, "apply", "--auto-approve", "--parallelism", "2")
        deadline = time.monotonic() + 30
        while FLEET[0] not in LocalStateStore(project.state_path).load().entries or (
            project.applied()[FLEET[0]] != {"about": "run 2"}
        ):
            assert second.poll() is None and time.monotonic() < deadline, second.communicate()
            time.sleep(0.01)
        lock = LocalStateStore(project.state_path).read_lock()
        assert lock is not None and lock.pid == second.pid
    finally:
        first.send_signal(signal.SIGCONT)
    _, first_err = first.communicate(timeout=60)
    assert second.poll() is None, "the second run should still be sending (a slow sandbox)"
    # Run 1 wrote nothing over run 2's records and left run 2's lock alone.
    assert project.applied()[FLEET[0]] == {"about": "run 2"}
    lock = LocalStateStore(project.state_path).read_lock()
    assert lock is not None and lock.pid == second.pid, lock
    assert first.returncode == 1
    assert "is no longer this run's lock" in first_err and "Traceback" not in first_err, first_err
    assert "the lock now there was left alone" in first_err

    _, second_err = second.communicate(timeout=60)
    assert second.returncode == 0, second_err
    assert json.loads(project.state_path.read_text())["numbers"][FLEET[0]]["fields"] == {"about": "run 2"}
    recorded = assert_state_is_true(project, fleet_sandbox)
    assert accepted_numbers(fleet_sandbox) <= set(recorded)
