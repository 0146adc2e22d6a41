"""The s3 state backend end to end: the CLI against moto's S3 server on loopback, as a user runs it.

Runs that must die or overlap are real `python -m reconciler` processes; the sandbox (Kaleyra) runs
in this process on a real socket, and the S3 server in its own process (tests/s3server.py).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest

from reconciler.errors import StateCorrupt

from conftest import (
    API_KEY,
    AWS_SECRET,
    FLEET,
    STATE_KEY,
    S3Project,
    accepted_numbers,
    assert_state_is_true,
    make_fleet,
    requests_seen,
    run_reconciler,
    s3_client,
    wait_for_requests,
)

JOURNAL = STATE_KEY + ".journal/"


@pytest.fixture
def checkout(tmp_path, fleet_sandbox, s3_endpoint, s3_bucket) -> S3Project:
    return S3Project(tmp_path / "one", fleet_sandbox.url, s3_endpoint, s3_bucket)


def second_checkout(tmp_path, first: S3Project) -> S3Project:
    """Another clone of the same repository: the same profiles, the same bucket, its own folder."""
    other = S3Project(tmp_path / "two", first.endpoint, first.s3_endpoint, first.bucket)
    for path in (first.root / "profiles").glob("*.yaml"):
        (other.root / "profiles" / path.name).write_bytes(path.read_bytes())
    return other


def sent_numbers(server, since: int = 0) -> list[str]:
    with server.sandbox.lock:
        return [r["body"]["phone_number"] for r in server.sandbox.requests[since:]]


def unrecorded_in(stderr: str) -> set[str]:
    """The numbers a run printed as accepted by Kaleyra but not in the state."""
    if "NOT in the state" not in stderr:
        return set()
    block = stderr.split("NOT in the state", 1)[1]
    return set(re.findall(r"^\s+(\+\d+) \(", block, re.MULTILINE))


def test_apply_records_on_s3_and_plan_drift_history_read_it_with_no_secret_anywhere(checkout, fleet_sandbox):
    numbers = make_fleet(checkout, 5)
    result = checkout.run("apply", "--auto-approve", "--verbose")
    assert result.exit_code == 0, result.output + result.stderr
    assert set(checkout.applied()) == set(numbers)
    objects = checkout.objects()
    assert STATE_KEY in objects and not any(key.startswith(JOURNAL) for key in objects)
    assert [key for key in objects if key.startswith(STATE_KEY + ".audit/")], objects.keys()
    assert STATE_KEY + ".lock" not in objects
    assert not (checkout.root / ".reconciler").exists(), "the s3 backend writes no local state"

    outputs = [result.output + result.stderr]
    for command in (["plan", "--detailed-exitcode"], ["drift"], ["state", "list"], ["history"]):
        shown = checkout.run(*command)
        assert shown.exit_code == 0, (command, shown.output + shown.stderr)
        outputs.append(shown.output + shown.stderr)
    assert "No changes" in outputs[1] and "No drift" in outputs[2]
    assert all(number in outputs[4] for number in numbers)  # history reads the audit objects
    assert {record["phone_number"] for record in checkout.audit()} == set(numbers)
    for text in [*outputs, *(data.decode() for data in objects.values())]:
        assert API_KEY not in text and AWS_SECRET not in text


def test_two_applies_from_two_checkouts_one_runs_and_the_other_fails_at_once_naming_the_holder(
    tmp_path, checkout, fleet_sandbox
):
    numbers = make_fleet(checkout, 20)
    other = second_checkout(tmp_path, checkout)
    fleet_sandbox.sandbox.latency_ms = 300  # slow, so the first run surely holds the lock meanwhile
    first = run_reconciler(checkout, "apply", "--auto-approve", "--parallelism", "2")
    wait_for_requests(fleet_sandbox, 1, first)

    refused = other.run("apply", "--auto-approve")
    fleet_sandbox.sandbox.latency_ms = 0
    assert refused.exit_code == 1
    assert "the state is locked by" in refused.stderr and f"pid {first.pid}, `apply`" in refused.stderr
    assert "Traceback" not in refused.stderr

    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stderr
    assert sorted(sent_numbers(fleet_sandbox)) == sorted(numbers), "each number was sent exactly once"
    assert set(checkout.applied()) == set(numbers)


def test_a_second_apply_waits_with_lock_timeout_then_plans_afresh_and_sends_nothing(
    tmp_path, checkout, fleet_sandbox
):
    numbers = make_fleet(checkout, 16)
    other = second_checkout(tmp_path, checkout)
    fleet_sandbox.sandbox.latency_ms = 300  # slow, until the second run is seen waiting
    first = run_reconciler(checkout, "apply", "--auto-approve", "--parallelism", "2")
    wait_for_requests(fleet_sandbox, 1, first)
    second = run_reconciler(other, "apply", "--auto-approve", "--lock-timeout", "2m")
    waiting = second.stderr.readline() if second.stderr else ""
    fleet_sandbox.sandbox.latency_ms = 0

    _, first_err = first.communicate(timeout=60)
    second_out, second_err = second.communicate(timeout=60)
    assert first.returncode == 0, first_err
    assert second.returncode == 0, second_err
    assert "waiting up to 120 s for the state lock, held by" in waiting and f"pid {first.pid}" in waiting
    assert "No changes" in second_out  # its plan was made after the first run had recorded everything
    assert sorted(sent_numbers(fleet_sandbox)) == sorted(numbers)


@pytest.mark.parametrize("kill_after_requests", [0, 2, 9, 23])
def test_sigkill_mid_apply_loses_no_success_and_a_second_run_converges(
    checkout, fleet_sandbox, kill_after_requests
):
    numbers = make_fleet(checkout, 30)
    fleet_sandbox.sandbox.latency_ms = 20
    process = run_reconciler(checkout, "apply", "--auto-approve", "--parallelism", "4")
    if kill_after_requests:
        wait_for_requests(fleet_sandbox, kill_after_requests, process)
    else:
        time.sleep(0.3)  # during start-up, planning or the preflight
    process.send_signal(signal.SIGKILL)
    process.wait()

    recorded = assert_state_is_true(checkout, fleet_sandbox)
    sent_before = requests_seen(fleet_sandbox)
    unlocked = checkout.run("state", "unlock")  # the dead process's lock is known stale
    assert unlocked.exit_code == 0, unlocked.stderr

    fleet_sandbox.sandbox.latency_ms = 0
    second = checkout.run("apply", "--auto-approve")
    assert second.exit_code == 0, second.output + second.stderr
    assert not set(sent_numbers(fleet_sandbox, sent_before)) & set(recorded), "a recorded number was re-sent"
    for number in numbers:
        assert fleet_sandbox.sandbox.number(number) == {"about": f"v1 {number}", "category": "OTHER"}
    assert set(checkout.applied()) == set(numbers)
    assert not [key for key in checkout.objects() if key.startswith(JOURNAL)], "compaction deletes segments"
    assert checkout.run("plan", "--detailed-exitcode").exit_code == 0


def test_a_state_object_changed_during_a_run_is_not_overwritten_and_nothing_sent_is_lost(
    checkout, fleet_sandbox
):
    numbers = make_fleet(checkout, 24)
    fleet_sandbox.sandbox.latency_ms = 30
    process = run_reconciler(checkout, "apply", "--auto-approve", "--parallelism", "2")
    wait_for_requests(fleet_sandbox, 3, process)
    # Someone else rewrites the state object (same state, other bytes): its ETag changes.
    client = s3_client(checkout.s3_endpoint)
    body = client.get_object(Bucket=checkout.bucket, Key=STATE_KEY)["Body"].read()
    client.put_object(Bucket=checkout.bucket, Key=STATE_KEY, Body=body + b"\n")

    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "the state object changed since this run read it" in stderr and "not overwritten" in stderr
    assert "state.json.journal/ keeps every success" in stderr and "Traceback" not in stderr
    assert client.get_object(Bucket=checkout.bucket, Key=STATE_KEY)["Body"].read() == body + b"\n"
    assert [key for key in checkout.objects() if key.startswith(JOURNAL)], "the segments were kept"

    # Every success of the run is in the state the next command loads (segments replayed).
    assert set(assert_state_is_true(checkout, fleet_sandbox)) == set(numbers)
    sent_before = requests_seen(fleet_sandbox)
    again = checkout.run("apply", "--auto-approve")
    assert again.exit_code == 0 and "No changes" in again.output, again.output + again.stderr
    assert requests_seen(fleet_sandbox) == sent_before


def test_a_forced_unlock_during_a_run_lets_a_second_run_in_and_no_success_is_lost(
    tmp_path, checkout, fleet_sandbox
):
    numbers = make_fleet(checkout, 40)
    other = second_checkout(tmp_path, checkout)
    fleet_sandbox.sandbox.latency_ms = 150  # the first run lasts about 3 s: the second starts within it
    first = run_reconciler(checkout, "apply", "--auto-approve", "--parallelism", "2")
    wait_for_requests(fleet_sandbox, 4, first)
    forced = other.run("state", "unlock", "--force")
    assert forced.exit_code == 0 and "removed the lock held by" in forced.output, forced.output
    second = run_reconciler(other, "apply", "--auto-approve", "--parallelism", "2")

    _, first_err = first.communicate(timeout=60)
    _, second_err = second.communicate(timeout=60)
    # The two runs collide on a journal segment (or the state object): one stops, saying why.
    assert 1 in (first.returncode, second.returncode), first_err + second_err
    assert "another run wrote this journal segment first" in first_err + second_err or (
        "the state object changed since this run read it" in first_err + second_err
    )
    assert "Traceback" not in first_err + second_err
    # Nothing lost: every number Kaleyra accepted is in the state, or was printed as not recorded.
    recorded = assert_state_is_true(checkout, fleet_sandbox)
    assert accepted_numbers(fleet_sandbox) <= set(recorded) | unrecorded_in(first_err) | unrecorded_in(
        second_err
    )

    checkout.run("state", "unlock")  # a run that stopped may have found its lock gone; nothing to do
    final = checkout.run("apply", "--auto-approve")
    assert final.exit_code == 0, final.output + final.stderr
    assert set(checkout.applied()) == set(numbers)
    assert checkout.run("plan", "--detailed-exitcode").exit_code == 0


def test_plan_and_drift_read_the_state_without_the_lock_and_write_nothing(checkout, fleet_sandbox):
    make_fleet(checkout, 3)
    assert checkout.run("apply", "--auto-approve").exit_code == 0
    checkout.write_profile(FLEET[0], about="v2", category="OTHER")
    holder = {"host": "ci-runner-7", "pid": 4242, "user": "deploy", "command": "apply", "since": "now"}
    client = s3_client(checkout.s3_endpoint)
    client.put_object(Bucket=checkout.bucket, Key=STATE_KEY + ".lock", Body=json.dumps(holder).encode())
    before = checkout.objects()

    planned = checkout.run("plan", "--detailed-exitcode")
    drifted = checkout.run("drift")
    assert planned.exit_code == 2 and "v2" in planned.output, planned.output + planned.stderr
    assert drifted.exit_code == 2
    assert checkout.objects() == before


def test_state_unlock_on_s3_clears_a_stale_lock_and_only_force_clears_a_live_one(checkout):
    client = s3_client(checkout.s3_endpoint)
    lock = STATE_KEY + ".lock"
    elsewhere = {"host": "ci-runner-7", "pid": 4242, "user": "deploy", "command": "apply", "since": "now"}
    client.put_object(Bucket=checkout.bucket, Key=lock, Body=json.dumps(elsewhere).encode())
    refused = checkout.run("state", "unlock")
    assert refused.exit_code == 1 and "deploy@ci-runner-7" in refused.stderr and "--force" in refused.stderr
    assert lock in checkout.objects()
    assert checkout.run("state", "unlock", "--force").exit_code == 0
    assert lock not in checkout.objects()

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    import socket

    here = {**elsewhere, "host": socket.gethostname(), "pid": int(dead.stdout)}
    client.put_object(Bucket=checkout.bucket, Key=lock, Body=json.dumps(here).encode())
    assert "stale" in checkout.run("apply", "--auto-approve").stderr
    cleared = checkout.run("state", "unlock")
    assert cleared.exit_code == 0 and lock not in checkout.objects(), cleared.output + cleared.stderr
    assert checkout.run("state", "unlock").output == "the state is not locked\n"


def test_migrate_copies_state_and_audit_to_s3_and_back(checkout, fleet_sandbox):
    numbers = make_fleet(checkout, 4)
    checkout.write_config(state=checkout.state_settings(backend="local"))
    assert checkout.run("apply", "--auto-approve").exit_code == 0
    local_state = json.loads(checkout.state_path.read_text())
    local_audit = (checkout.root / ".reconciler" / "audit.jsonl").read_text().splitlines()

    moved = checkout.run("state", "migrate", "--to", "s3")
    assert moved.exit_code == 0, moved.output + moved.stderr
    assert "Set `state.backend: s3`" in moved.output
    remote = json.loads(checkout.objects()[STATE_KEY])
    assert remote == local_state  # lineage, serial and entries, as they were
    assert [json.loads(line) for line in local_audit] == checkout.audit()

    checkout.write_config()  # backend s3 from here on
    checkout.write_profile(numbers[0], about="v2", category="OTHER")
    assert checkout.run("apply", "--auto-approve").exit_code == 0
    assert len(checkout.audit()) == len(local_audit) + 1

    back = checkout.run("state", "migrate", "--to", "local")
    assert back.exit_code == 0 and "and 1 audit record(s)" in back.output, back.output + back.stderr
    local_again = json.loads(checkout.state_path.read_text())
    assert local_again["lineage"] == local_state["lineage"]
    assert local_again["serial"] == local_state["serial"] + 1
    assert local_again["numbers"][numbers[0]]["fields"]["about"] == "v2"
    lines = (checkout.root / ".reconciler" / "audit.jsonl").read_text().splitlines()
    assert len(lines) == len(local_audit) + 1
    again = checkout.run("state", "migrate", "--to", "s3")  # both ends equal: no record is doubled
    assert again.exit_code == 0 and "and 0 audit record(s)" in again.output, again.output + again.stderr
    assert len(checkout.audit()) == len(lines)
    assert STATE_KEY + ".lock" not in checkout.objects()
    assert not (checkout.root / ".reconciler" / "state.json.lock").exists()


def test_migrate_refuses_to_overwrite_another_lineage_or_a_newer_serial(tmp_path, checkout, fleet_sandbox):
    make_fleet(checkout, 2)
    assert checkout.run("apply", "--auto-approve").exit_code == 0  # on s3
    on_s3 = checkout.objects()[STATE_KEY]
    other = second_checkout(tmp_path, checkout)
    other.write_config(state=other.state_settings(backend="local"))
    other.write_profile(FLEET[5], about="x", category="OTHER")
    assert other.run("import", "--auto-approve").exit_code == 0  # a different local state

    refused = other.run("state", "migrate", "--to", "s3")
    assert refused.exit_code == 1 and "holds another state (lineage" in refused.stderr
    assert checkout.objects()[STATE_KEY] == on_s3
    refused = other.run("state", "migrate", "--to", "local")
    assert refused.exit_code == 1 and "holds another state (lineage" in refused.stderr

    assert checkout.run("state", "migrate", "--to", "local").exit_code == 0
    checkout.write_profile(FLEET[0], about="newer", category="OTHER")
    # The S3 copy is only a marker now: applying to it (backend still s3) is refused, so the two copies
    # cannot diverge and a later migration cannot lose a success.
    stale = checkout.run("apply", "--auto-approve")
    assert stale.exit_code == 1 and "was moved to" in stale.stderr and "state migrate" in stale.stderr
    assert checkout.run("state", "migrate", "--to", "local").exit_code == 1  # nothing live to move


def test_migrate_never_overwrites_a_live_copy_that_diverged(tmp_path, checkout, fleet_sandbox):
    numbers = make_fleet(checkout, 3)
    checkout.write_config(state=checkout.state_settings(backend="local"))
    assert checkout.run("apply", "--auto-approve").exit_code == 0
    assert checkout.run("state", "migrate", "--to", "s3").exit_code == 0
    # Someone restores the local file from git (so it is live again) and applies there meanwhile.
    restored = json.loads(checkout.state_path.read_text())
    del restored["moved_to"]
    checkout.state_path.write_text(json.dumps(restored))
    checkout.write_profile(numbers[1], about="local only", category="OTHER")
    assert checkout.run("apply", "--auto-approve").exit_code == 0
    checkout.write_config()  # and on S3, another change
    checkout.write_profile(numbers[1], about="x", category="OTHER")
    checkout.write_profile(numbers[0], about="s3 only", category="OTHER")
    assert checkout.run("apply", "--auto-approve").exit_code == 0
    on_s3 = checkout.objects()[STATE_KEY]
    refused = checkout.run("state", "migrate", "--to", "s3")
    assert refused.exit_code == 1 and "live copy of this state" in refused.stderr
    assert checkout.objects()[STATE_KEY] == on_s3


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"backend": "s3", "bucket": "acme-state"}, "state.backend s3 needs state.key"),
        ({"backend": "s3", "bucket": "b", "key": "k"}, "is not an S3 bucket name"),
        (
            {"backend": "s3", "bucket": "acme", "key": "k", "endpoint_url": "http://203.0.113.5:9000"},
            "uses http:// to a non-loopback host",
        ),
        (
            {"backend": "s3", "bucket": "acme", "key": "k", "aws_secret_access_key": AWS_SECRET},
            "AWS credentials never go in reconciler.yaml",
        ),
        ({"backend": "s3", "bucket": "acme", "key": "k", "access_key": "AKIA"}, "standard AWS chain"),
        ({"backend": "gcs", "bucket": "acme", "key": "k"}, "backend: 'gcs' is not one of the allowed values"),
    ],
)
def test_a_bad_state_section_is_one_clear_error_and_nothing_is_sent(
    checkout, fleet_sandbox, settings, complaint
):
    make_fleet(checkout, 2)
    checkout.write_config(state=settings)
    result = checkout.run("apply", "--auto-approve")
    assert result.exit_code == 1 and complaint in result.stderr, result.stderr
    assert AWS_SECRET not in result.stderr + result.output and "Traceback" not in result.stderr
    assert requests_seen(fleet_sandbox) == 0


def test_missing_credentials_or_bucket_are_clear_errors_before_anything_is_sent(checkout, fleet_sandbox):
    make_fleet(checkout, 2)
    no_credentials = checkout.run(
        "apply", "--auto-approve", env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    )
    assert no_credentials.exit_code == 1 and "no AWS credentials found" in no_credentials.stderr
    checkout.bucket = "no-such-bucket-here"
    checkout.write_config()
    no_bucket = checkout.run("plan")
    assert no_bucket.exit_code == 1 and "there is no bucket 'no-such-bucket-here'" in no_bucket.stderr
    assert "Traceback" not in no_credentials.stderr + no_bucket.stderr
    assert requests_seen(fleet_sandbox) == 0


def test_without_boto3_the_error_names_the_extra_to_install(checkout, monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)  # `import boto3` now raises ImportError
    result = checkout.run("plan")
    assert result.exit_code == 1
    assert "pip install 'kaleyra-reconciler[s3]'" in result.stderr and "Traceback" not in result.stderr


def test_a_state_object_that_is_not_utf8_is_a_clear_error_naming_it(checkout):
    make_fleet(checkout, 1)
    client = s3_client(checkout.s3_endpoint)
    client.put_object(Bucket=checkout.bucket, Key=STATE_KEY, Body=b'{"format_version": 1, "lineage": "\xff"}')
    for command in (["plan"], ["drift"], ["state", "list"]):
        result = checkout.run(*command)
        assert result.exit_code == 1, (command, result.output)
        assert f"s3://{checkout.bucket}/{STATE_KEY}: is not a valid state file (not UTF-8" in result.stderr
        assert "codec" not in result.stderr and "Traceback" not in result.stderr


def test_a_state_key_longer_than_s3_allows_is_refused_by_validate(checkout):
    checkout.write_config(
        state={**checkout.state_settings(), "key": "é" * 500}
    )  # 500 characters, 1,000 bytes
    result = checkout.run("validate")
    assert result.exit_code == 1, result.output
    assert "state.key is 1,000 bytes in UTF-8" in result.stderr and "at most 977 bytes" in result.stderr
    checkout.write_config(state={**checkout.state_settings(), "key": "é" * 488})  # 976 bytes
    assert checkout.run("validate").exit_code == 0


def s3_store(s3_endpoint, bucket):
    from reconciler.config import S3Location
    from reconciler.state.s3 import S3StateStore
    from reconciler.state.s3objects import ObjectStore

    location = S3Location(bucket, STATE_KEY, endpoint_url=s3_endpoint)
    return S3StateStore(location, ObjectStore(location, s3_client(s3_endpoint)))


def test_a_reader_never_sees_the_old_state_without_the_segments_a_compaction_just_folded_in(
    s3_endpoint, s3_bucket, monkeypatch
):
    from reconciler.state.model import Entry

    entry = Entry("main", "HX/1", {"about": "a"}, "T", "d")
    writer = s3_store(s3_endpoint, s3_bucket)
    with writer.writer(writer.load()) as journal:
        journal.record([("+1", entry)])  # compacted into the state object on the way out
    state = writer.load()
    running = writer.writer(state)
    journal = running.__enter__()
    journal.record([("+2", entry)])  # a run mid-apply: its success is in a segment
    reader = s3_store(s3_endpoint, s3_bucket)
    listed = reader.objects.list

    def compact_first(prefix):
        if not getattr(compact_first, "done", False):
            compact_first.done = True
            running.__exit__(None, None, None)  # the run ends: state replaced, segments deleted
        return listed(prefix)

    monkeypatch.setattr(reader.objects, "list", compact_first)
    seen = reader.load()
    assert set(seen.entries) == {"+1", "+2"} and seen.serial == 2


def test_a_reader_gives_up_clearly_when_the_state_keeps_changing(s3_endpoint, s3_bucket, monkeypatch):
    from reconciler.state.model import Entry

    writer = s3_store(s3_endpoint, s3_bucket)
    with writer.writer(writer.load()) as journal:
        journal.record([("+1", Entry("main", "HX/1", {"about": "a"}, "T", "d"))])
    reader = s3_store(s3_endpoint, s3_bucket)
    listed, client = reader.objects.list, s3_client(s3_endpoint)

    def rewrite_first(prefix):
        body = client.get_object(Bucket=s3_bucket, Key=STATE_KEY)["Body"].read()
        client.put_object(Bucket=s3_bucket, Key=STATE_KEY, Body=body + b" ")  # a new ETag each time
        return listed(prefix)

    monkeypatch.setattr(reader.objects, "list", rewrite_first)
    with pytest.raises(StateCorrupt, match="kept changing while they were read"):
        reader.load()
