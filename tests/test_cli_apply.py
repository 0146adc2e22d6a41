"""End to end: the CLI against the sandbox over a real socket."""

from __future__ import annotations

import json

import pytest

from conftest import NUMBERS, SID, WABA, assert_clean_failure, put_bodies

A, B, C = NUMBERS[0], NUMBERS[1], NUMBERS[2]


def test_first_apply_sends_every_declared_field_and_records_it(project, sandbox):
    project.write_profile(A, address="1 Market St", about="Body care", category="BEAUTY_SPA_SALON")
    result = project.run("apply", "--auto-approve")
    assert result.exit_code == 0, result.output
    assert put_bodies(sandbox, A) == [
        {"phone_number": A, "address": "1 Market St", "about": "Body care", "category": "BEAUTY_SPA_SALON"}
    ]
    assert sandbox.sandbox.number(A) == {
        "address": "1 Market St",
        "about": "Body care",
        "category": "BEAUTY_SPA_SALON",
    }
    assert project.applied()[A] == {
        "about": "Body care",
        "address": "1 Market St",
        "category": "BEAUTY_SPA_SALON",
    }
    assert "Applied 1" in result.stdout


def test_an_edit_sends_only_the_changed_field(project, sandbox):
    project.write_profile(A, address="1 Market St", about="Body care")
    assert project.run("apply", "--auto-approve").exit_code == 0
    project.write_profile(A, address="1 Market St", about="Body care, now with lotions")
    plan = project.run("plan", "--format", "json")
    assert json.loads(plan.stdout)["changes"] == [
        {
            "phone_number": A,
            "account": "main",
            "action": "update",
            "fields": {"about": {"before": "Body care", "after": "Body care, now with lotions"}},
            "destination": {
                "url": f"{sandbox.url}/v2/{SID}/whatsapp/{WABA}/number/update",
                "api_version": "v2",
            },
        }
    ]
    assert project.run("apply", "--auto-approve").exit_code == 0
    assert put_bodies(sandbox, A)[-1] == {"phone_number": A, "about": "Body care, now with lotions"}


def test_removing_a_field_sends_nothing_and_stops_managing_it(project, sandbox):
    project.write_profile(A, address="1 Market St", about="Body care")
    project.run("apply", "--auto-approve")
    sent_before = len(put_bodies(sandbox))
    project.write_profile(A, address="1 Market St")
    plan = json.loads(project.run("plan", "--format", "json").stdout)
    assert plan["changes"][0]["action"] == "unmanage"
    assert plan["changes"][0]["fields"] == {"about": {"before": "Body care", "after": None}}
    result = project.run("apply", "--auto-approve")
    assert result.exit_code == 0, result.output
    assert len(put_bodies(sandbox)) == sent_before
    assert project.applied()[A] == {"address": "1 Market St"}
    assert sandbox.sandbox.number(A)["about"] == "Body care"  # the API keeps it: we only stopped managing


def test_clearing_a_field_with_an_empty_string_sends_the_empty_string(project, sandbox):
    project.write_profile(A, about="Body care")
    project.run("apply", "--auto-approve")
    project.write_profile(A, about="")
    assert project.run("apply", "--auto-approve").exit_code == 0
    assert put_bodies(sandbox, A)[-1] == {"phone_number": A, "about": ""}
    assert sandbox.sandbox.number(A) == {"about": ""}


def test_a_failing_number_stays_pending_while_the_others_are_recorded(project, sandbox):
    project.write_profile(A, about="ok")
    project.write_profile(B, about="ok too")
    project.write_profile("+14155559999", about="not on the WABA")  # the sandbox answers E112
    result = project.run("apply", "--auto-approve")
    assert result.exit_code == 1
    # Errors go to stderr, one line per number with Kaleyra's code and message; the summary to stdout.
    assert "FAILED +14155559999 (main): E112: invalid Phone Number or Phone Number Not Found" in result.stderr
    assert "FAILED" not in result.stdout
    assert "Applied 2" in result.stdout and "failed 1" in result.stdout
    assert set(project.applied()) == {A, B}
    plan = json.loads(project.run("plan", "--format", "json").stdout)
    assert [change["phone_number"] for change in plan["changes"]] == ["+14155559999"]


def test_detailed_exitcode_is_2_with_changes_and_0_right_after_apply(project):
    project.write_profile(A, about="x")
    assert project.run("plan", "--detailed-exitcode").exit_code == 2
    assert project.run("plan").exit_code == 0
    assert project.run("apply", "--auto-approve").exit_code == 0
    result = project.run("plan", "--detailed-exitcode")
    assert result.exit_code == 0, result.output
    assert "No changes" in result.stdout


def test_drift_exits_2_when_desired_and_applied_differ_and_0_when_not(project):
    project.write_profile(A, about="x")
    assert project.run("drift").exit_code == 2
    project.run("apply", "--auto-approve")
    assert project.run("drift").exit_code == 0
    project.write_profile(A, about="y")
    drifted = project.run("drift", "--format", "json")
    assert drifted.exit_code == 2
    assert json.loads(drifted.stdout)["changes"][0]["fields"] == {"about": {"before": "x", "after": "y"}}


def test_a_deleted_profile_is_forgotten_without_sending_anything(project, sandbox):
    project.write_profile(A, about="x")
    project.write_profile(B, about="y")
    project.run("apply", "--auto-approve")
    sent = len(put_bodies(sandbox))
    project.profile_path(B).unlink()
    plan = json.loads(project.run("plan", "--format", "json").stdout)
    assert plan["changes"] == [
        {
            "phone_number": B,
            "account": "main",
            "action": "forget",
            "fields": {"about": {"before": "y", "after": None}},
        }
    ]
    assert project.run("apply", "--auto-approve").exit_code == 0
    assert len(put_bodies(sandbox)) == sent
    assert set(project.applied()) == {A}


def test_a_number_moved_to_another_account_is_sent_in_full_there(project, sandbox):
    project.write_profile(A, about="x", address="y")
    project.run("apply", "--auto-approve")
    project.write_profile(A, account="legacy", about="x", address="y")
    plan = json.loads(project.run("plan", "--format", "json").stdout)
    assert plan["changes"][0]["action"] == "create"
    assert plan["changes"][0]["moved_from"] == "main"
    assert project.run("apply", "--auto-approve").exit_code == 0
    last = sandbox.sandbox.requests[-1]
    assert "HXTEST0000000002" in last["path"]
    assert last["body"] == {"phone_number": A, "about": "x", "address": "y"}


def test_defaults_are_merged_under_profiles_and_a_profile_value_wins(project, sandbox):
    project.write_config(defaults={"category": "OTHER", "about": "default about"})
    project.write_profile(A, about="own about")
    project.run("apply", "--auto-approve")
    assert put_bodies(sandbox, A) == [{"phone_number": A, "about": "own about", "category": "OTHER"}]


def test_target_limits_plan_and_apply_to_the_named_numbers(project, sandbox):
    project.write_profile(A, about="x")
    project.write_profile(B, about="y")
    plan = json.loads(project.run("plan", "--target", B, "--format", "json").stdout)
    assert [change["phone_number"] for change in plan["changes"]] == [B]
    assert project.run("apply", "--auto-approve", "--target", B).exit_code == 0
    assert [body["phone_number"] for body in put_bodies(sandbox)] == [B]
    unknown = project.run("plan", "--target", "+19999999999")
    assert_clean_failure(unknown)
    assert "+19999999999" in unknown.stderr


def test_apply_without_a_terminal_or_auto_approve_refuses_and_sends_nothing(project, sandbox):
    project.write_profile(A, about="x")
    result = project.run("apply")
    assert_clean_failure(result)
    assert "--auto-approve" in result.stderr
    assert put_bodies(sandbox) == [] and not project.state_path.exists()


def test_a_missing_api_key_stops_the_run_before_anything_is_sent(project, sandbox):
    project.write_profile(A, about="x")
    project.write_profile(B, account="legacy", about="y")
    result = project.run("apply", "--auto-approve", env={"KALEYRA_API_KEY_OTHER": ""})
    assert_clean_failure(result)
    assert "KALEYRA_API_KEY_OTHER" in result.stderr
    assert put_bodies(sandbox) == [] and not project.state_path.exists()


def test_a_wrong_api_key_is_reported_with_kaleyras_code(project, sandbox):
    sandbox.sandbox.api_key = "the-right-key"
    project.write_profile(A, about="x")
    result = project.run("apply", "--auto-approve")
    assert result.exit_code == 1
    assert "RBC001: Incorrect SID or API key." in result.stderr
    assert project.applied() == {}


def test_safety_max_changes_refuses_a_large_plan_unless_forced(project, sandbox):
    project.write_config(safety={"max_changes": 1})
    project.write_profile(A, about="x")
    project.write_profile(B, about="y")
    refused = project.run("apply", "--auto-approve")
    assert_clean_failure(refused)
    assert "safety.max_changes" in refused.stderr and put_bodies(sandbox) == []
    assert project.run("apply", "--auto-approve", "--force").exit_code == 0
    assert len(put_bodies(sandbox)) == 2


def test_a_saved_plan_applies_exactly_and_is_refused_once_stale(project, sandbox, tmp_path):
    project.write_profile(A, about="x")
    plan_file = tmp_path / "plan.json"
    assert project.run("plan", "--out", str(plan_file)).exit_code == 0
    assert project.run("apply", str(plan_file)).exit_code == 0
    assert put_bodies(sandbox, A) == [{"phone_number": A, "about": "x"}]
    stale = project.run("apply", str(plan_file))  # the state moved on since the plan was made
    assert_clean_failure(stale)
    assert "stale plan" in stale.stderr

    project.write_profile(A, about="y")
    project.run("plan", "--out", str(plan_file))
    project.write_profile(A, about="z")  # the profiles moved on
    stale = project.run("apply", str(plan_file))
    assert_clean_failure(stale)
    assert "profiles changed" in stale.stderr
    assert len(put_bodies(sandbox, A)) == 1


@pytest.mark.parametrize(("part", "now"), [("waba_id", "766000000000009"), ("sid", "HXTEST0000000009")])
@pytest.mark.parametrize("profiles_too", [False, True])
def test_a_saved_plan_stale_for_its_wabas_destination_says_so_not_that_the_profiles_changed(
    project, sandbox, tmp_path, part, now, profiles_too
):
    """Editing an account's sid or waba_id after `plan --out` changes where it sends, not the profiles:
    the refusal names the account and both WABAs, and mentions the profiles only if they changed too."""
    project.write_profile(A, about="x")
    assert project.run("apply", "--auto-approve").exit_code == 0  # A has a state entry, no change
    project.write_profile(NUMBERS[1], about="new")  # a change that sends
    plan_file = tmp_path / "plan.json"
    assert project.run("plan", "--out", str(plan_file)).exit_code == 0
    config = (project.root / "reconciler.yaml").read_text()
    was = {"sid": SID, "waba_id": WABA}[part]
    (project.root / "reconciler.yaml").write_text(config.replace(was, now, 1))
    if profiles_too:
        project.write_profile(A, about="y")
    stale = project.run("apply", str(plan_file))
    assert_clean_failure(stale)
    assert "the WABA of account 'main' changed in reconciler.yaml since" in stale.stderr
    assert ("and the profiles changed too" in stale.stderr) is profiles_too
    assert "the profiles changed since" not in stale.stderr
    reviewed, current = f"{SID}/{WABA}", f"{SID}/{WABA}".replace(was, now)
    assert f"main sid/waba_id: {reviewed} reviewed, {current} now" in stale.stderr
    assert len(put_bodies(sandbox)) == 1  # only the first apply's


def test_apply_checksum_stale_after_a_waba_edit_names_the_destination_as_a_possible_cause(project, sandbox):
    project.write_profile(A, about="x")
    reviewed = json.loads(project.run("plan", "--format", "json").stdout)["checksum"]
    config = (project.root / "reconciler.yaml").read_text()
    (project.root / "reconciler.yaml").write_text(config.replace(WABA, "766000000000009", 1))
    refused = project.run("apply", "--checksum", reviewed)
    assert_clean_failure(refused)
    assert "where an account sends (its sid, waba_id, pod, endpoint or api_version" in refused.stderr
    assert put_bodies(sandbox) == []


def test_apply_checksum_applies_only_the_reviewed_plan(project, sandbox):
    project.write_profile(A, about="x")
    reviewed = json.loads(project.run("plan", "--format", "json").stdout)["checksum"]
    project.write_profile(A, about="changed after review")
    refused = project.run("apply", "--checksum", reviewed)
    assert_clean_failure(refused)
    assert "stale plan" in refused.stderr and put_bodies(sandbox) == []
    project.write_profile(A, about="x")
    assert project.run("apply", "--checksum", reviewed).exit_code == 0
    assert put_bodies(sandbox, A) == [{"phone_number": A, "about": "x"}]


def test_import_records_live_profiles_without_sending(project, sandbox):
    project.write_profile(A, about="x")
    result = project.run("import", "--auto-approve")
    assert result.exit_code == 0, result.output
    assert put_bodies(sandbox) == []
    assert project.applied() == {A: {"about": "x"}}
    assert project.run("plan", "--detailed-exitcode").exit_code == 0
    assert project.audit()[-1]["result"] == "IMPORTED"


def test_a_held_lock_fails_at_once_naming_the_holder(project):
    project.write_profile(A, about="x")
    project.state_path.parent.mkdir(parents=True)
    lock = project.state_path.with_name("state.json.lock")
    lock.write_text(
        json.dumps({"host": "ci-runner-7", "pid": 4242, "user": "bob", "command": "apply", "since": "T"})
    )
    result = project.run("apply", "--auto-approve")
    assert_clean_failure(result)
    assert "bob@ci-runner-7" in result.stderr and "pid 4242" in result.stderr
    assert project.run("state", "unlock").exit_code == 1  # another host: not known to be stale
    assert project.run("state", "unlock", "--force").exit_code == 0
    assert project.run("apply", "--auto-approve").exit_code == 0


def test_audit_log_and_history_record_who_changed_what(project):
    project.write_profile(A, about="x")
    project.run("apply", "--auto-approve", env={"GITHUB_ACTOR": "octocat", "GITHUB_SHA": "abc123def456"})
    project.write_profile(A, about="y")
    project.run("apply", "--auto-approve", env={"GITHUB_ACTOR": "octocat", "GITHUB_SHA": "abc123def456"})
    entries = project.audit()
    assert [entry["fields"]["about"] for entry in entries] == [
        {"old": None, "new": "x"},
        {"old": "x", "new": "y"},
    ]
    assert entries[-1]["by"]["actor"] == "octocat" and entries[-1]["by"]["commit"] == "abc123def456"
    assert entries[-1]["result"] == "WA200"
    shown = project.run("history", A)
    assert shown.exit_code == 0
    assert 'about: "x" -> "y"' in shown.stdout and "octocat@abc123def4" in shown.stdout


def test_state_list_and_show(project):
    project.write_profile(A, about="x")
    project.run("apply", "--auto-approve")
    listed = project.run("state", "list")
    assert A in listed.stdout and "serial 1" in listed.stdout
    shown = project.run("state", "show", A)
    assert 'about: "x"' in shown.stdout
    assert_clean_failure(project.run("state", "show", B))


def test_usage_errors_exit_1_not_2(project):
    result = project.run("plan", "--no-such-flag")
    assert result.exit_code == 1
    assert "No such option" in result.output


def test_schema_command_prints_the_shipped_schemas():
    from pathlib import Path

    from click.testing import CliRunner

    from reconciler.cli import cli

    shipped = Path(__file__).parent.parent / "schemas"
    for kind in ("profile", "config"):
        printed = CliRunner().invoke(cli, ["schema", kind]).stdout
        assert json.loads(printed) == json.loads((shipped / f"{kind}.schema.json").read_text()), (
            f"schemas/{kind}.schema.json is out of date: run `reconciler schema {kind} > schemas/{kind}.schema.json`"
        )


def test_editing_one_field_and_dropping_another_sends_only_the_edit(project, sandbox):
    project.write_profile(A, address="1 Market St", about="Body care")
    project.run("apply", "--auto-approve")
    project.write_profile(A, about="Lotions")
    plan = json.loads(project.run("plan", "--format", "json").stdout)
    assert plan["changes"][0]["action"] == "update"
    assert plan["changes"][0]["fields"] == {
        "about": {"before": "Body care", "after": "Lotions"},
        "address": {"before": "1 Market St", "after": None},
    }
    assert project.run("apply", "--auto-approve").exit_code == 0
    assert put_bodies(sandbox, A)[-1] == {"phone_number": A, "about": "Lotions"}
    assert project.applied()[A] == {"about": "Lotions"}


def test_every_command_help_shows_an_example():
    from click.testing import CliRunner

    from reconciler.cli import cli

    commands = [[name] for name in cli.commands if name != "state"]
    commands += [["state", name] for name in cli.commands["state"].commands]
    # Every command SPEC names is here (a renamed or lost one fails this), each with an example.
    assert {"validate", "plan", "apply", "drift", "import", "history", "schema", "fmt", "sandbox"} <= set(
        cli.commands
    )
    assert {"list", "show", "rm", "mv", "unlock", "migrate"} <= set(cli.commands["state"].commands)
    for command in commands:
        result = CliRunner().invoke(cli, [*command, "--help"])
        assert result.exit_code == 0, command
        assert "Example" in result.stdout and "reconciler " in result.stdout, command


def test_apply_asks_on_a_terminal_and_sends_nothing_when_refused(project, sandbox, monkeypatch):
    import reconciler.cli.apply

    monkeypatch.setattr(reconciler.cli.apply, "_interactive", lambda: True)
    project.write_profile(A, about="x")
    refused = project.run("apply", input="n\n")
    assert refused.exit_code == 1 and "Aborted" in refused.stderr
    assert put_bodies(sandbox) == [] and not project.state_path.exists()
    accepted = project.run("apply", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert put_bodies(sandbox, A) == [{"phone_number": A, "about": "x"}]


def test_apply_markdown_report_lists_failures_for_a_job_summary(project):
    project.write_profile(A, about="x")
    project.write_profile("+14155559999", about="not on the WABA")
    result = project.run("apply", "--auto-approve", "--format", "markdown")
    assert result.exit_code == 1
    assert "| 1 | 0 | 1 | 0 |" in result.stdout
    assert "| &#43;14155559999 |" in result.stdout or "| +14155559999 |" in result.stdout
    assert "E112" in result.stdout


def test_phone_numbers_on_the_command_line_are_taken_as_people_type_them(project):
    project.write_profile(A, about="x")
    for typed in (A, A.lstrip("+"), "+1 415-555-0100", "(1) 415.555.0100"):
        plan = project.run("plan", "--target", typed, "--format", "json")
        assert plan.exit_code == 0, (typed, plan.output)
        assert [change["phone_number"] for change in json.loads(plan.stdout)["changes"]] == [A]
    bad = project.run("plan", "--target", "call-me")
    assert_clean_failure(bad)
    assert "'call-me' is not a phone number" in bad.stderr


def test_the_last_results_are_recorded_when_the_last_worker_ends_not_after_a_commit_pause(
    project, sandbox, monkeypatch
):
    """Results that arrive close together are synced as one batch (group commit), but a run does
    not sit out the rest of a commit interval once nothing more can come."""
    import time

    from reconciler import apply

    monkeypatch.setattr(apply, "COMMIT_INTERVAL_S", 5.0)
    for number in (A, B, C):
        project.write_profile(number, about="Body care")
    started = time.monotonic()
    result = project.run("apply", "--auto-approve", "--parallelism", "1")
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert set(project.applied()) == {A, B, C}
    assert elapsed < 2.5, f"apply waited out the group-commit interval: {elapsed:.1f} s"


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_a_rerun_of_an_applied_checksum_at_the_same_commit_says_so_and_sends_nothing(request, backend):
    project = request.getfixturevalue("project" if backend == "local" else "s3_project")
    sandbox = request.getfixturevalue("sandbox")
    ci = {"GITHUB_SHA": "c0ffee" * 6 + "abcd", "GITHUB_SERVER_URL": "https://github.example"}
    ci |= {"GITHUB_REPOSITORY": "acme/profiles", "GITHUB_RUN_ID": "4242"}
    project.write_profile(A, about="x")
    project.write_profile(B, about="y")
    reviewed = json.loads(project.run("plan", "--format", "json").stdout)["checksum"]
    assert project.run("apply", "--checksum", reviewed, env=ci).exit_code == 0
    applied, sent = project.applied(), len(put_bodies(sandbox))
    audit_before = project.audit()
    again = project.run("apply", "--checksum", reviewed, env={**ci, "GITHUB_RUN_ID": "4243"})
    assert again.exit_code == 0, again.output
    assert f"already applied at commit {ci['GITHUB_SHA'][:12]}, in run 4242 / at" in again.stdout
    assert len(put_bodies(sandbox)) == sent and project.applied() == applied
    assert project.audit() == audit_before, "nothing saved"
    # At another commit, or after a run that failed for a number, the same checksum is a stale plan.
    other = project.run("apply", "--checksum", reviewed, env={**ci, "GITHUB_SHA": "f" * 40})
    assert other.exit_code == 1 and "stale plan" in other.stderr


def test_a_plan_over_the_safety_limit_says_so_first_with_how_to_proceed(project, sandbox):
    project.write_config(safety={"max_changes": 1})
    project.write_profile(A, about="x")
    project.write_profile(B, about="y")
    for output in ("text", "markdown"):
        shown = project.run("plan", "--format", output)
        assert shown.exit_code == 0, shown.output
        first_lines = "\n".join(shown.stdout.splitlines()[:4])
        assert "Over the safety limit: this plan changes 2 numbers" in first_lines, shown.stdout
        assert "raise safety.max_changes to at least 2" in first_lines and "--force" in first_lines
    project.write_config(safety={"max_changes": 2})
    assert "safety limit" not in project.run("plan").stdout
