"""Integrity, end to end: sent equals reviewed, recorded or stopped, keys never written, outside text
escaped, guards that cover whole classes of mistakes. Each test failed on the reconciler before the
fix it names (issue 9)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from reconciler.escape import UNSAFE

from conftest import (
    API_KEY,
    FLEET,
    NUMBERS,
    SID,
    WABA,
    Project,
    accepted_numbers,
    assert_clean_failure,
    put_bodies,
    run_reconciler,
    wait_for_requests,
)

A, B, C = NUMBERS[0], NUMBERS[1], NUMBERS[2]


def state_document(project: Project) -> dict:
    return json.loads(project.state_path.read_text())


# --- exactly what was reviewed ---------------------------------------------------------------------


def test_a_state_value_edited_under_its_old_digest_still_plans_as_a_change(project, sandbox):
    project.write_profile(A, about="Body care")
    assert project.run("apply", "--auto-approve").exit_code == 0
    document = state_document(project)
    document["numbers"][A]["fields"]["about"] = "edited by hand"  # the digest is left as it was
    project.state_path.write_text(json.dumps(document))
    plan = json.loads(project.run("plan", "--format", "json").stdout)
    assert plan["changes"] == [
        {
            "phone_number": A,
            "account": "main",
            "action": "update",
            "fields": {"about": {"before": "edited by hand", "after": "Body care"}},
            "destination": {
                "url": f"{sandbox.url}/v2/{SID}/whatsapp/{WABA}/number/update",
                "api_version": "v2",
            },
        }
    ]


def rechecksum(document: dict) -> None:
    named = ("phone_number", "account", "action", "fields", "destination")
    entries = [{key: change[key] for key in named if key in change} for change in document["changes"]]
    canonical = json.dumps(entries, sort_keys=True, separators=(",", ":"))
    document["checksum"] = hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d["changes"][0]["fields"]["about"].update(after="EVIL"),  # a value
        lambda d: d["changes"][0]["fields"].update(email={"before": None, "after": "x@evil.example"}),
        lambda d: d["changes"][0].update(account="legacy"),  # another account
        lambda d: d["changes"].append(  # another number
            {"phone_number": C, "account": "main", "action": "create", "fields": {}}
        ),
    ],
    ids=["value", "added-field", "account", "added-number"],
)
def test_a_saved_plan_edited_with_a_recomputed_checksum_is_refused_showing_what_differs(
    project, sandbox, tamper
):
    project.write_profile(A, about="reviewed")
    plan_file = project.root / "plan.json"
    assert project.run("plan", "--out", str(plan_file)).exit_code == 0
    document = json.loads(plan_file.read_text())
    tamper(document)
    rechecksum(document)
    plan_file.write_text(json.dumps(document))
    result = project.run("apply", str(plan_file))
    assert_clean_failure(result)
    assert "stale plan" in result.stderr and "What differs" in result.stderr
    assert put_bodies(sandbox) == [] and not project.state_path.exists()


def test_an_untouched_saved_plan_applies_exactly_its_changes(project, sandbox):
    project.write_profile(A, about="reviewed")
    plan_file = project.root / "plan.json"
    project.run("plan", "--out", str(plan_file))
    result = project.run("apply", str(plan_file))
    assert result.exit_code == 0, result.output + result.stderr
    assert put_bodies(sandbox) == [{"phone_number": A, "about": "reviewed"}]


@pytest.mark.parametrize(
    "content", ["[]", '"text"', "{}", '{"kind": "saved-plan", "format_version": "1.0"}', "{no"]
)
def test_a_plan_file_of_the_wrong_shape_is_a_clear_error(project, sandbox, content):
    project.write_profile(A, about="x")
    plan_file = project.root / "plan.json"
    plan_file.write_text(content)
    result = project.run("apply", str(plan_file))
    assert_clean_failure(result)
    assert "plan.json" in result.stderr
    assert put_bodies(sandbox) == []


@pytest.mark.parametrize("checksum", ["", " ", "abc", "g" * 64, "a" * 63, "a" * 65])
def test_a_checksum_is_exactly_64_hex_characters(project, sandbox, checksum):
    project.write_profile(A, about="x")
    result = project.run("apply", "--checksum", checksum, "--auto-approve")
    assert_clean_failure(result)
    assert "is not a plan checksum" in result.output + result.stderr
    assert put_bodies(sandbox) == []


def test_import_adopts_only_numbers_without_a_state_entry_and_lists_the_skipped(project, sandbox):
    project.write_profile(A, about="applied")
    project.write_profile(B, about="applied")
    assert project.run("apply", "--auto-approve").exit_code == 0
    project.write_profile(A, about="an edit nobody applied")
    project.write_profile(B, account="legacy", about="applied")  # an account move
    project.write_profile(C, about="live already")  # new to the state
    result = project.run("import", "--auto-approve")
    assert result.exit_code == 0, result.output + result.stderr
    assert project.applied() == {
        A: {"about": "applied"},
        B: {"about": "applied"},
        C: {"about": "live already"},
    }
    assert f"skip   {A} (main): already managed, update pending" in result.stdout
    assert f"skip   {B} (legacy): managed under main" in result.stdout
    assert project.state_path.exists() and len(put_bodies(sandbox)) == 2  # import sent nothing
    assert json.loads(project.run("plan", "--format", "json").stdout)["summary"]["puts"] == 2


# --- guards ----------------------------------------------------------------------------------------


def test_a_plan_dropping_every_managed_number_is_refused_without_force(project, sandbox):
    for number in (A, B, C):
        project.write_profile(number, about="x")
    assert project.run("apply", "--auto-approve").exit_code == 0
    for number in (A, B, C):
        project.profile_path(number).unlink()
    result = project.run("apply", "--auto-approve")
    assert_clean_failure(result)
    assert "forgets every managed number it covers (3)" in result.stderr
    assert len(project.applied()) == 3
    assert project.run("apply", "--auto-approve", "--force").exit_code == 0
    assert project.applied() == {}


def test_max_changes_counts_forgets_and_unmanages_not_only_puts(project, sandbox):
    for number in (A, B, C):
        project.write_profile(number, about="x", email="a@b.co")
    project.write_profile(NUMBERS[3], about="kept")
    assert project.run("apply", "--auto-approve").exit_code == 0
    project.write_config(safety={"max_changes": 2})
    project.profile_path(A).unlink()  # forget
    project.write_profile(B, about="x")  # unmanage email
    project.profile_path(C).unlink()  # forget
    result = project.run("apply", "--auto-approve")
    assert_clean_failure(result)
    assert "changes 3 numbers (0 PUTs, 2 forgets, 1 unmanages)" in result.stderr
    assert set(project.applied()) == {A, B, C, NUMBERS[3]}


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "1e9", "fast"])
def test_max_rps_takes_a_finite_positive_rate(project, sandbox, value):
    project.write_profile(A, about="x")
    result = project.run("apply", "--auto-approve", "--max-rps", value)
    assert_clean_failure(result)
    assert put_bodies(sandbox) == []


@pytest.mark.parametrize(
    "endpoint", ["ftp://203.0.113.5", "203.0.113.5:80", "http://", "https://user:pw@api.in.kaleyra.io"]
)
def test_an_endpoint_is_http_or_https_with_a_host(project, sandbox, endpoint):
    project.write_profile(A, about="x")
    result = project.run("apply", "--auto-approve", env={"KALEYRA_ENDPOINT": endpoint})
    assert_clean_failure(result)
    assert "KALEYRA_ENDPOINT" in result.stderr
    assert put_bodies(sandbox) == []


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"profiles_dir": "/"}, "profiles_dir"),
        ({"profiles_dir": ".."}, "profiles_dir"),
        ({"state": {"path": "../elsewhere/state.json"}}, "state.path"),
        ({"state": {"path": "/tmp/state.json"}}, "state.path"),
    ],
)
def test_profiles_dir_and_state_path_stay_inside_the_project(project, extra, key):
    project.write_config(**extra)
    result = project.run("validate")
    assert_clean_failure(result)
    assert f"{key}: " in result.stderr and "leads outside the folder of reconciler.yaml" in result.stderr


def test_a_symlinked_profiles_dir_leading_outside_is_refused(project, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (project.root / "linked").symlink_to(outside)
    project.write_config(profiles_dir="linked")
    result = project.run("validate")
    assert_clean_failure(result)
    assert "leads outside" in result.stderr


def test_a_state_entry_for_an_account_the_config_lacks_is_named_in_a_warning(project, sandbox):
    project.write_profile(A, about="x")
    assert project.run("apply", "--auto-approve").exit_code == 0
    document = state_document(project)
    document["numbers"][A]["account"] = "gone"
    project.state_path.write_text(json.dumps(document))
    result = project.run("plan")
    assert f"account 'gone', which reconciler.yaml does not have: {A}" in result.stderr


def test_a_refused_key_fails_the_accounts_remaining_numbers_without_sending_them(project, sandbox):
    sandbox.sandbox.api_key = "the-only-good-key"  # every request with another key: RBC001
    for number in NUMBERS[:10]:
        project.write_profile(number, about="x")
    project.write_profile(NUMBERS[10], account="legacy", about="y")
    result = project.run(
        "apply", "--auto-approve", "--parallelism", "2", env={"KALEYRA_API_KEY_OTHER": "the-only-good-key"}
    )
    assert result.exit_code == 1
    sent_for_main = [b for b in put_bodies(sandbox) if b["phone_number"] in NUMBERS[:10]]
    assert 1 <= len(sent_for_main) <= 2  # at most what was already in flight
    assert result.stderr.count("FAILED") == 10 and result.stderr.count("RBC001") == 10
    assert project.applied() == {NUMBERS[10]: {"about": "y"}}  # the other account went on


def test_failures_are_sorted_by_phone_number_and_history_names_the_code_once(project, sandbox):
    unknown = [f"+1999555{index:04d}" for index in range(12)]  # not on the WABA: E112
    for number in reversed(unknown):
        project.write_profile(number, about="x")
    result = project.run("apply", "--auto-approve", "--parallelism", "8", "--format", "json")
    report = json.loads(result.stdout)
    assert [r["phone_number"] for r in report["results"]] == sorted(unknown)
    text = project.run("apply", "--auto-approve", "--parallelism", "8")
    failed = [line.split()[1] for line in text.stderr.splitlines() if line.startswith("FAILED")]
    assert failed == sorted(unknown)
    history = project.run("history", unknown[0]).stdout
    assert "E112: invalid Phone Number" in history and "E112: E112" not in history


# --- recorded or stopped --------------------------------------------------------------------------


def test_an_audit_log_that_cannot_be_written_stops_the_run_before_any_put(project, sandbox):
    project.write_profile(A, about="x")
    (project.root / ".reconciler" / "audit.jsonl").mkdir(parents=True)  # cannot be opened as a file
    result = project.run("apply", "--auto-approve")
    assert_clean_failure(result)
    assert "audit.jsonl: cannot write the audit log" in result.stderr and "nothing was sent" in result.stderr
    assert put_bodies(sandbox) == []
    assert [p.name for p in (project.root / ".reconciler").iterdir()] == ["audit.jsonl"]


def test_a_journal_failing_mid_run_stops_sending_and_prints_what_was_sent_unrecorded(
    project, sandbox, monkeypatch
):
    from reconciler.state import local as state_module

    for number in NUMBERS[:16]:
        project.write_profile(number, about=f"value {number}")
    syncs = {"count": 0}
    real_sync = state_module.sync_appended

    def failing_after_two(descriptor):  # the preflight sync, one batch, then the disk is full
        syncs["count"] += 1
        if syncs["count"] > 2:
            raise OSError(28, "No space left on device")
        real_sync(descriptor)

    monkeypatch.setattr(state_module, "sync_appended", failing_after_two)
    sandbox.sandbox.latency_ms = 20
    result = project.run("apply", "--auto-approve", "--parallelism", "2")
    monkeypatch.undo()
    assert result.exit_code == 1
    assert "recording failed" in result.stderr and "No space left on device" in result.stderr
    accepted = {body["phone_number"] for body in put_bodies(sandbox)}
    assert len(accepted) < 16, "sending went on after recording failed"
    recorded = set(project.applied())
    unrecorded = accepted - recorded
    assert unrecorded, "the failure came after some sends"
    for number in unrecorded:  # each printed with its values
        assert f'{number} (main): {{"about": "value {number}"}}' in result.stderr
    assert not list(project.state_path.parent.glob(".*.tmp"))


# --- interrupts -----------------------------------------------------------------------------------


def test_a_second_ctrl_c_still_records_every_accepted_result_and_prints_the_report(tmp_path):
    import signal
    import subprocess
    import time

    from reconciler.kaleyra.sandbox import Sandbox, SandboxAccount, serve_in_thread

    from conftest import OTHER_SID, OTHER_WABA, SID, WABA

    fleet = [f"+1650555{index:04d}" for index in range(40)]
    server = serve_in_thread(
        Sandbox(
            [SandboxAccount(SID, WABA, {n: {} for n in fleet}), SandboxAccount(OTHER_SID, OTHER_WABA, {})]
        )
    )
    try:
        project = Project(tmp_path, server.url)
        for number in fleet:
            project.write_profile(number, about="x")
        server.sandbox.latency_ms = 300
        process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "apply", "--auto-approve", "--parallelism", "4"],
            cwd=project.root,
            env={**os.environ, **project.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 20
        while not server.sandbox.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.35)  # the first answers are being recorded, the next requests are in flight
        for _ in range(3):
            process.send_signal(signal.SIGINT)
            time.sleep(0.02)
        stdout, stderr = process.communicate(timeout=30)
        assert process.returncode == 1
        assert "Interrupted" in stdout and "not attempted" in stdout, stdout + stderr
        assert "Aborted: nothing was changed" not in stderr
        time.sleep(0.1)
        with server.sandbox.lock:
            accepted = {r["body"]["phone_number"] for r in server.sandbox.requests if r["answer"] == "WA200"}
        assert accepted and set(project.applied()) == accepted
    finally:
        server.shutdown()
        server.server_close()


# --- secrets and outside text ---------------------------------------------------------------------


class EchoingServer(BaseHTTPRequestHandler):
    """A hostile 'Kaleyra': refuses every update with a message that echoes the key and tries to
    take over the terminal."""

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        message = f"\x1b[2J\x1b[Hbad key {self.headers.get('api-key')}\rApplied 22, failed 0.\u202e"
        payload = json.dumps({"code": "WA400", "message": message}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echoing_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoingServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_key_echoed_by_the_server_is_redacted_everywhere_whatever_its_variable_is_called(
    tmp_path, echoing_server
):
    project = Project(tmp_path, echoing_server)
    config = (project.root / "reconciler.yaml").read_text()
    (project.root / "reconciler.yaml").write_text(
        config.replace("api_key_env: KALEYRA_API_KEY_OTHER", "api_key_env: ACME_CRED")
    )
    key = "Zx9-plain-named-credential-4471"
    project.env = {"ACME_CRED": key, "KALEYRA_API_KEY": API_KEY, "NO_COLOR": "1"}
    project.write_profile(A, account="legacy", about="x")
    outputs = []
    for args in (
        ["apply", "--auto-approve"],
        ["apply", "--auto-approve", "--format", "json"],
        ["apply", "--auto-approve", "--format", "jsonl"],
        ["history"],
        ["history", "--format", "json"],
    ):
        result = project.run(*args)
        outputs.append(result.stdout + result.stderr)
    assert "WA400" in outputs[0]
    for text in outputs:
        assert key not in text
        assert not UNSAFE.search(text.replace("\n", "")), text  # no ESC, CR or bidi override raw
    for path in project.root.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


# --- found by a hostile review of the fixes above -------------------------------------------------


def test_a_stdout_that_fails_mid_apply_stops_sending_and_loses_no_record(tmp_path, fleet_sandbox):
    project = Project(tmp_path, fleet_sandbox.url)
    for number in FLEET[:120]:
        project.write_profile(number, about="x")
    fleet_sandbox.sandbox.latency_ms = 10
    with open("/dev/full", "w") as full:
        process = run_reconciler(
            project, "apply", "--auto-approve", "--format", "jsonl", stdout=full, stderr=subprocess.PIPE
        )
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    accepted = accepted_numbers(fleet_sandbox)
    assert len(accepted) < len(FLEET[:120]), "sending went on with nowhere to report"
    assert set(project.applied()) == accepted
    assert "progress could not be shown" in stderr


def test_a_storm_of_signals_still_prints_the_report_and_exits_1(tmp_path, fleet_sandbox):
    project = Project(tmp_path, fleet_sandbox.url)
    for number in FLEET[:40]:
        project.write_profile(number, about="x")
    fleet_sandbox.sandbox.latency_ms = 200
    # stderr to a file: each signal adds a line, and a pipe nobody reads while signalling fills up and
    # blocks the process in its signal handler for good (under load it takes long enough to fill).
    with open(tmp_path / "stderr", "w") as errors:
        process = run_reconciler(project, "apply", "--auto-approve", "--parallelism", "4", stderr=errors)
        wait_for_requests(fleet_sandbox, 1, process)
        time.sleep(0.3)
        while process.poll() is None:  # SIGINT and SIGTERM every few milliseconds until it exits
            for number in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(number)
            time.sleep(0.003)
        stdout, _ = process.communicate(timeout=30)
    stderr = (tmp_path / "stderr").read_text()
    assert process.returncode == 1, (process.returncode, stdout, stderr)
    assert "Interrupted" in stdout and "Applied" in stdout, (stdout, stderr)
    assert "Aborted: nothing was changed" not in stderr, (stdout, stderr)
    assert set(project.applied()) == accepted_numbers(fleet_sandbox)
    assert not (project.root / ".reconciler" / "state.json.lock").exists()


def test_innocent_variables_with_secret_sounding_names_corrupt_nothing(project, sandbox):
    project.write_profile(A, about="Body Care (Body Lotion)")
    env = {"TOKENIZERS_PARALLELISM": "false", "MY_TOKEN_TYPE": "Body"}
    result = project.run("apply", "--auto-approve", "--format", "json", env=env)
    assert json.loads(result.stdout)["interrupted"] is False  # valid JSON, "false" left alone
    assert project.applied()[A] == {"about": "Body Care (Body Lotion)"}
    assert project.run("plan", "--detailed-exitcode", env=env).exit_code == 0


def test_a_profile_value_holding_a_secret_variables_value_is_refused(project, sandbox):
    token = "ghp_0123456789abcdefghijklmnop"
    project.write_profile(A, about=f"call us {token}")
    result = project.run("apply", "--auto-approve", env={"GITHUB_TOKEN": token})
    assert_clean_failure(result)
    assert "never put a key in a profile" in result.stderr and token not in result.stderr
    assert put_bodies(sandbox) == []


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d["changes"].insert(
            0, {**d["changes"][0], "fields": {"about": {"before": None, "after": "EVIL"}}}
        ),
        lambda d: d["changes"].append(
            {"phone_number": "__ +14155550199", "account": "main", "action": "forget", "fields": {}}
        ),
    ],
    ids=["duplicate-number", "private-looking-key"],
)
def test_a_saved_plan_with_extra_entries_is_refused(project, sandbox, tamper):
    project.write_profile(A, about="reviewed")
    plan_file = project.root / "plan.json"
    project.run("plan", "--out", str(plan_file))
    document = json.loads(plan_file.read_text())
    tamper(document)
    rechecksum(document)
    plan_file.write_text(json.dumps(document))
    result = project.run("apply", str(plan_file))
    assert_clean_failure(result)
    assert "stale plan" in result.stderr and put_bodies(sandbox) == []


def test_a_prompt_always_shows_the_plan_first_whatever_the_format(project, sandbox, monkeypatch):
    import reconciler.cli.apply

    monkeypatch.setattr(reconciler.cli.apply, "_interactive", lambda: True)
    project.write_profile(A, about="shown before asking")
    result = project.run("apply", "--format", "json", input="n\n")
    assert_clean_failure(result)
    assert '"shown before asking"' in result.stderr and result.stderr.index(
        "shown before"
    ) < result.stderr.index("Apply these")
    assert put_bodies(sandbox) == []


def test_a_hand_edited_state_cannot_reach_the_terminal_raw(project, sandbox):
    project.write_profile(A, about="x")
    assert project.run("apply", "--auto-approve").exit_code == 0
    document = state_document(project)
    entry = document["numbers"].pop(A)
    entry["account"] = "main\x1b]0;TITLE\x07\u202e"
    entry["fields"] = {"about\x1b[31m": "x", "about": "y"}
    document["numbers"]["+1\x1b[2K\rPlan: No changes"] = entry
    project.state_path.write_text(json.dumps(document))
    for args in (["plan"], ["drift"], ["state", "list"], ["plan", "--format", "markdown"]):
        result = project.run(*args)
        assert not UNSAFE.search((result.stdout + result.stderr).replace("\n", "")), args


def test_state_rm_says_the_state_changed_when_only_the_audit_log_failed(project, sandbox, monkeypatch):
    from reconciler.state import audit
    from reconciler.state.model import RecordingFailed

    project.write_profile(A, about="x")
    assert project.run("apply", "--auto-approve").exit_code == 0

    def full(self, records):
        raise RecordingFailed("audit.jsonl: cannot append (File too large)")

    monkeypatch.setattr(audit.LocalAuditLog, "append", full)
    result = project.run("state", "rm", A)
    assert_clean_failure(result)
    assert "the state WAS changed (1 number(s)), but the audit log could not record it" in result.stderr
    assert project.applied() == {}


@pytest.mark.parametrize("where", ["plan file", "audit log"])
def test_deeply_nested_json_is_a_clear_error_not_a_recursion_crash(project, sandbox, where):
    project.write_profile(A, about="x")
    nested = "[" * 200_000
    if where == "plan file":
        (project.root / "plan.json").write_text(nested)
        result = project.run("apply", "plan.json")
    else:
        (project.root / ".reconciler").mkdir()
        (project.root / ".reconciler" / "audit.jsonl").write_text(nested + "\n{}\n")
        result = project.run("history")
    assert_clean_failure(result)


def test_history_survives_a_hand_edited_who(project, sandbox):
    (project.root / ".reconciler").mkdir()
    (project.root / ".reconciler" / "audit.jsonl").write_text(
        json.dumps({"by": "x", "phone_number": A}) + "\n"
    )
    result = project.run("history")
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize(
    "setting", ["timeout_s: .nan", "deadline_s: .inf", "backoff_max_s: .nan", "timeout_s: 100000"]
)
def test_retry_settings_are_finite_and_bounded(project, setting):
    text = (project.root / "reconciler.yaml").read_text()
    name, value = setting.split(": ")
    text = (
        re.sub(rf"{name}: [^\n,}}]+", f"{name}: {value}", text)
        if name in text
        else text.replace("retry:\n", f"retry:\n  {setting}\n")
    )
    (project.root / "reconciler.yaml").write_text(text)
    result = project.run("validate")
    assert_clean_failure(result)
    assert f"{name}:" in result.stderr and "finite" in result.stderr


def test_an_exclude_matching_nothing_is_an_error_and_globs_read_like_numbers(project, sandbox):
    project.write_profile(A, about="a")
    project.write_profile(B, about="b")
    assert_clean_failure(project.run("apply", "--auto-approve", "--exclude", "4155550100"))
    assert put_bodies(sandbox) == []
    plan = project.run("plan", "--format", "json", "--exclude", f"+1 415-555-{A[-4:-1]}*")
    assert [c["phone_number"] for c in json.loads(plan.stdout)["changes"]] == []


def test_forgetting_every_number_a_selection_covers_needs_force(project, sandbox):
    for number in (A, B):
        project.write_profile(number, about="x")
    project.write_profile(C, account="legacy", about="y")
    assert project.run("apply", "--auto-approve").exit_code == 0
    for number in (A, B):
        project.profile_path(number).unlink()
    result = project.run("apply", "--auto-approve", "--target", "main")
    assert_clean_failure(result)
    assert "forgets every managed number it covers (2)" in result.stderr
    # One number forgotten on purpose is fine.
    assert project.run("apply", "--auto-approve", "--target", A).exit_code == 0
    assert set(project.applied()) == {B, C}


@pytest.mark.parametrize(
    "args",
    [
        ["apply", "--checksum", " " + "a" * 64],
        ["apply", "--checksum", "a" * 64 + "\n"],
        ["state", "mv", "main", "main"],
    ],
)
def test_small_misuses_are_refused(project, sandbox, args):
    project.write_profile(A, about="x")
    if args[0] == "state":
        assert project.run("apply", "--auto-approve").exit_code == 0
    result = project.run(*args)
    assert_clean_failure(result)
    assert (
        "is not a plan checksum" if args[0] == "apply" else "are the same label"
    ) in result.output + result.stderr
    if args[0] == "apply":
        assert put_bodies(sandbox) == []


def test_an_endpoint_with_whitespace_is_refused(project, sandbox):
    project.write_profile(A, about="x")
    result = project.run("apply", "--auto-approve", env={"KALEYRA_ENDPOINT": " " + sandbox.url})
    assert_clean_failure(result)
    assert "whitespace" in result.stderr


@pytest.mark.parametrize("name", ["audit.jsonl", "state.json.journal", "state.json.lock", "state.json"])
def test_a_symlink_beside_the_state_is_refused_before_anything_is_read_or_written(
    project, sandbox, tmp_path_factory, name
):
    outside = tmp_path_factory.mktemp("outside") / "bashrc"
    outside.write_text("# mine\n")
    folder = project.root / ".reconciler"
    folder.mkdir()
    (folder / name).symlink_to(outside)
    project.write_profile(A, about="x")
    result = project.run("apply", "--auto-approve")
    assert_clean_failure(result)
    assert f"{name}: is a symlink" in result.stderr
    assert outside.read_text() == "# mine\n" and put_bodies(sandbox) == []


@pytest.mark.parametrize("removed", ["the state folder", "the lock"])
def test_losing_the_state_folder_or_the_lock_mid_run_stops_sending(tmp_path, fleet_sandbox, removed):
    import shutil

    project = Project(tmp_path, fleet_sandbox.url)
    for number in FLEET[:120]:
        project.write_profile(number, about="x")
    fleet_sandbox.sandbox.latency_ms = 30
    process = run_reconciler(project, "apply", "--auto-approve", "--parallelism", "2")
    wait_for_requests(fleet_sandbox, 6, process)
    if removed == "the state folder":
        shutil.rmtree(project.root / ".reconciler")
    else:
        (project.root / ".reconciler" / "state.json.lock").unlink()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "during the run" in stderr
    assert len(accepted_numbers(fleet_sandbox)) < len(FLEET[:120])


@pytest.mark.parametrize("name", ["state.json", "state.json.journal", "state.json.lock"])
def test_deeply_nested_state_files_are_clear_errors(project, sandbox, name):
    folder = project.root / ".reconciler"
    folder.mkdir()
    (folder / name).write_text("[" * 200_000)
    project.write_profile(A, about="x")
    for args in (["plan"], ["apply", "--auto-approve"], ["state", "unlock", "--force"]):
        result = project.run(*args)
        assert "internal error" not in result.stderr and "Traceback" not in result.stderr, (
            args,
            result.stderr,
        )


@pytest.mark.parametrize("pid", ['"abc"', "100000000000000000000", "-5", "true"])
def test_a_lock_with_a_nonsense_pid_is_reported_not_crashed_on(project, sandbox, pid):
    folder = project.root / ".reconciler"
    folder.mkdir()
    (folder / "state.json.lock").write_text(
        f'{{"host": "h", "pid": {pid}, "user": "u", "command": "apply", "since": "T"}}'
    )
    project.write_profile(A, about="x")
    result = project.run("apply", "--auto-approve")
    assert_clean_failure(result)
    assert "locked by an unknown process" in result.stderr
    assert project.run("state", "unlock", "--force").exit_code == 0


def test_sigterm_before_the_first_put_releases_the_lock_and_exits_1(tmp_path, fleet_sandbox):
    project = Project(tmp_path, fleet_sandbox.url)
    for number in FLEET[:120]:
        project.write_profile(number, about="x")
    lock = project.root / ".reconciler" / "state.json.lock"
    # A held lock makes the run wait (--lock-timeout) with its plan not made: the moment to cancel it.
    lock.parent.mkdir()
    holder = {"host": "elsewhere", "pid": 4242, "user": "ci", "command": "apply", "since": "T"}
    lock.write_text(json.dumps(holder))
    process = run_reconciler(
        project,
        "apply",
        "--auto-approve",
        "--lock-timeout",
        "60",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.0)
    lock.unlink()  # the holder is done; ours takes the lock and plans 120 numbers
    deadline = time.monotonic() + 20
    while not lock.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.001)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1, (process.returncode, stderr)
    assert not lock.exists(), "the lock outlived the run"
    assert set(project.applied()) == accepted_numbers(fleet_sandbox)


@pytest.mark.parametrize(
    ("out", "complaint"),
    [
        (".reconciler/state.json", "one of the project's own files"),
        ("reconciler.yaml", "one of the project's own files"),
        ("profiles/plan.yaml", "one of the project's own files"),
        ("missing/folder/plan.json", "does not exist"),
    ],
)
def test_plan_out_never_overwrites_the_projects_own_files(project, sandbox, out, complaint):
    project.write_profile(A, about="x")
    assert project.run("apply", "--auto-approve").exit_code == 0
    state_before = project.state_path.read_bytes()
    result = project.run("plan", "--out", out)
    assert_clean_failure(result)
    assert complaint in result.output + result.stderr
    assert project.state_path.read_bytes() == state_before
    assert not (project.root / "missing").exists()


def test_invisible_characters_are_shown_and_a_change_of_joiners_alone_is_visible(project, sandbox):
    project.write_profile(A, about="Body care")
    assert project.run("apply", "--auto-approve").exit_code == 0
    project.write_profile(A, about="Body\u200dcare\u200b")  # a joiner, and a zero-width space
    for args in (["plan"], ["plan", "--format", "markdown"]):
        shown = project.run(*args).stdout
        assert "\u200b" not in shown and "\u200d" not in shown, args
        assert "u200b" in shown and "u200d" in shown, args
    project.write_profile(A, about="नमस्ते")  # Devanagari: its joiners stay readable when not the change
    project.run("apply", "--auto-approve")
    project.write_profile(A, about="नमस्ते\u200d")
    assert "u200d" in project.run("plan").stdout


def test_a_usage_error_shows_what_was_typed_escaped(project):
    result = project.run("state", "show", "1\x1b[2J\x07")
    assert_clean_failure(result)
    assert not UNSAFE.search((result.output + result.stderr).replace("\n", ""))


@pytest.mark.parametrize(
    "args",
    [["--latency-ms", "nan"], ["--latency-ms", "inf"], ["--fail-rate", "nan"], ["--rate-limit", "nan"]],
)
def test_the_sandbox_takes_finite_numbers(project, args):
    result = project.run("sandbox", "--port", "0", *args)
    assert_clean_failure(result)
    assert "not a finite number" in result.output + result.stderr or "not in the range" in result.stderr


# --- a plan's checksum covers where it is sent -------------------------------------------------------


@pytest.mark.parametrize(
    "moved",
    [
        {"sid": "HXTEST0000000002", "waba_id": "766000000000002"},
        {"sid": "HXTEST0000000002"},
        {"api_version": "v1"},
        {"endpoint": "http://127.0.0.2:9"},
    ],
    ids=["sid-and-waba", "sid", "api-version", "endpoint"],
)
def test_a_plan_reviewed_for_one_destination_is_never_sent_to_another(project, sandbox, moved):
    project.write_profile(A, about="Body care")
    reviewed = json.loads(project.run("plan", "--format", "json").stdout)
    saved = project.root / "plan.json"
    assert project.run("plan", "--out", str(saved)).exit_code == 0

    config = project.root / "reconciler.yaml"
    document = yaml.safe_load(config.read_text())
    document["accounts"]["main"].update(moved)
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    fresh = json.loads(project.run("plan", "--format", "json").stdout)
    assert fresh["changes"][0]["fields"] == reviewed["changes"][0]["fields"]  # the same profile
    assert fresh["checksum"] != reviewed["checksum"]
    assert reviewed["changes"][0]["destination"]["url"].startswith(sandbox.url)
    assert fresh["changes"][0]["destination"] != reviewed["changes"][0]["destination"]

    by_checksum = project.run("apply", "--checksum", reviewed["checksum"], "--auto-approve")
    assert_clean_failure(by_checksum)
    assert "stale plan" in by_checksum.stderr
    by_file = project.run("apply", str(saved))
    assert_clean_failure(by_file)
    assert "stale plan" in by_file.stderr
    # The refusal names what moved: the account's WABA, or where it sends; not the profiles or an edit.
    moved_waba = "sid" in moved or "waba_id" in moved
    said = "the WABA of account 'main' changed" if moved_waba else "where an account sends (its pod"
    assert said in by_file.stderr, by_file.stderr
    assert "profiles changed" not in by_file.stderr and "was it edited?" not in by_file.stderr
    assert put_bodies(sandbox) == [] and not project.state_path.exists()


def test_a_state_file_that_is_not_utf8_is_a_clear_error_naming_it(project):
    project.write_profile(A, about="x")
    project.state_path.parent.mkdir()
    project.state_path.write_bytes(b'{"format_version": 1, "lineage": "caf\xe9"}')
    for command in (["plan"], ["apply", "--auto-approve"], ["state", "list"]):
        result = project.run(*command)
        assert_clean_failure(result)
        assert f"{project.state_path}: is not a valid state file (not UTF-8" in result.stderr
        assert "codec" not in result.stderr


# --- no part of a key leaks ---------------------------------------------------------------------------


class ManglingServer(BaseHTTPRequestHandler):
    """A 'Kaleyra' that refuses every update, echoing the key mangled (`mangle` set per test)."""

    mangle = staticmethod(lambda key: key)

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        message = f"bad key {self.mangle(self.headers.get('api-key') or '')} (check it)"
        payload = json.dumps({"code": "WA400", "message": message}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Echo", message)  # logged nowhere, but a future --verbose might
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    "mangle",
    [
        lambda key: key[:-3],  # truncated
        lambda key: key[4:],  # shifted
        lambda key: key.upper(),
        lambda key: key.lower(),
        lambda key: key[2:14],  # any 12 characters in a row
        lambda key: f"{key[:12]}...{key[-12:]}",  # both ends
    ],
    ids=["truncated", "shifted", "upper-cased", "lower-cased", "twelve-characters", "both-ends"],
)
def test_no_run_of_twelve_characters_of_a_key_reaches_any_output_or_file(tmp_path, mangle):
    handler = type("Mangling", (ManglingServer,), {"mangle": staticmethod(mangle)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        project = Project(tmp_path, f"http://127.0.0.1:{server.server_address[1]}")
        project.write_profile(A, about="x")
        outputs = []
        for args in (
            ["--verbose", "apply", "--auto-approve"],
            ["apply", "--auto-approve", "--format", "json"],
            ["apply", "--auto-approve", "--format", "jsonl"],
            ["apply", "--auto-approve", "--format", "markdown"],
            ["history"],
            ["history", "--format", "json"],
        ):
            result = project.run(*args)
            outputs.append(result.stdout + result.stderr)
    finally:
        server.shutdown()
        server.server_close()
    assert "WA400" in outputs[0] and "bad key [redacted]" in outputs[0], outputs[0]
    fragments = {API_KEY[start : start + 12].lower() for start in range(len(API_KEY) - 11)}
    written = [path.read_bytes().decode().lower() for path in project.root.rglob("*") if path.is_file()]
    assert any("bad key [redacted]" in text for text in written), "the audit log holds the message"
    for text in [output.lower() for output in outputs] + written:
        assert not [fragment for fragment in fragments if fragment in text], text


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"state": {"path": "profiles/state.json"}}, "is inside profiles_dir 'profiles'"),
        ({"state": {"path": "profiles/.reconciler/state.json"}}, "is inside profiles_dir 'profiles'"),
        ({"state": {"path": f"profiles/{A}.yaml"}}, "is inside profiles_dir 'profiles'"),
        ({"state": {"path": "reconciler.yaml"}}, "over reconciler.yaml"),
        ({"state": {"path": "profiles/../reconciler.yaml"}}, "over reconciler.yaml"),
        ({"state": {"path": "audit.jsonl"}}, "is the name of the audit log beside it"),
        ({"profiles_dir": "."}, "is inside profiles_dir '.'"),
        ({"profiles_dir": ".reconciler"}, "is inside profiles_dir '.reconciler'"),
    ],
)
def test_a_state_path_overlapping_the_config_or_the_profiles_is_one_error_at_its_line(project, extra, says):
    project.write_profile(A, about="x")
    project.write_config(**extra)
    key = "state:" if "state" in extra else "profiles_dir:"
    line = 1 + next(
        number
        for number, text in enumerate((project.root / "reconciler.yaml").read_text().splitlines())
        if text.startswith(key)
    )
    line += "state" in extra  # the value of state.path is on the line below `state:`
    for command in ("validate", "plan", "apply"):
        result = project.run(command, *(["--auto-approve"] if command == "apply" else []))
        assert_clean_failure(result)
        errors = [text for text in result.stderr.splitlines() if text.startswith("reconciler.yaml:")]
        assert len(errors) == 1 and errors[0].startswith(f"reconciler.yaml:{line}:"), result.stderr
        assert says in errors[0]
    assert not project.state_path.exists()
    assert not (project.root / "profiles" / "state.json").exists()
