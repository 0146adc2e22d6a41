"""End to end: what the reconciler cannot see (Kaleyra has no read of profile fields) and how it is
corrected: console edits in the sandbox, `--replace`, import's unverified entries, re-assertion."""

from __future__ import annotations

import json
import urllib.request

import pytest

from conftest import NUMBERS, SID, assert_clean_failure, put_bodies

A, B, C = NUMBERS[0], NUMBERS[1], NUMBERS[2]


def console_edit(sandbox, number: str, **fields: str) -> dict:
    """Edit a profile in the sandbox as a person in Kaleyra's console would: no update API call."""
    request = urllib.request.Request(
        f"{sandbox.url}/_sandbox/console/{number}?sid={SID}",
        data=json.dumps(fields).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request) as answer:
        return json.load(answer)


def held(sandbox, number: str) -> dict[str, str]:
    """What the sandbox holds for `number` on the main account, as GET /_sandbox/numbers shows it."""
    with urllib.request.urlopen(f"{sandbox.url}/_sandbox/numbers") as answer:
        accounts = json.load(answer)["accounts"]
    return next(account for account in accounts if account["sid"] == SID)["numbers"][number]


def applied_two(project) -> None:
    project.write_profile(A, address="1 Market St", about="Body care")
    project.write_profile(B, about="Hair care")
    assert project.run("apply", "--auto-approve").exit_code == 0


# --- apply --replace ---------------------------------------------------------------------------


def test_a_console_edit_is_invisible_to_drift_and_apply_replace_converges_it(project, sandbox):
    applied_two(project)
    sent = len(put_bodies(sandbox))
    console_edit(sandbox, A, about="Edited in the console")
    assert held(sandbox, A)["about"] == "Edited in the console"
    assert len(put_bodies(sandbox)) == sent  # the console edit is not an API request
    assert project.run("drift").exit_code == 0  # the state matches the profiles: drift cannot see it

    plan = project.run("plan", "--replace", A)
    assert plan.exit_code == 0, plan.output
    assert f"! {A}  replace  (main)" in plan.stdout
    assert '"Body care"  (as recorded; sent again)' in plan.stdout
    assert "0 to create, 0 to update, 1 to replace" in plan.stdout

    result = project.run("apply", "--replace", A, "--auto-approve")
    assert result.exit_code == 0, result.output
    assert put_bodies(sandbox)[sent:] == [{"phone_number": A, "about": "Body care", "address": "1 Market St"}]
    assert held(sandbox, A)["about"] == "Body care"
    record = project.audit()[-1]
    assert (record["phone_number"], record["action"], record["result"]) == (A, "replace", "WA200")
    assert record["reassert"] is False
    assert record["fields"]["about"] == {"old": "Body care", "new": "Body care"}


def test_replace_json_lists_every_managed_field_and_its_checksum_differs_from_no_replace(project, sandbox):
    applied_two(project)
    project.write_profile(B, about="Hair care", address="2 Market St")
    plain = json.loads(project.run("plan", "--format", "json").stdout)
    replaced = json.loads(project.run("plan", "--replace", "main", "--format", "json").stdout)
    assert replaced["format_version"] == "1.1"
    assert replaced["summary"]["replace"] == 2 and replaced["summary"]["puts"] == 2
    # Each replace is sent, so it carries its destination, which the checksum covers too.
    assert all(change.pop("destination")["url"].startswith(sandbox.url) for change in replaced["changes"])
    assert replaced["changes"] == [
        {
            "phone_number": A,
            "account": "main",
            "action": "replace",
            "fields": {
                "about": {"before": "Body care", "after": "Body care"},
                "address": {"before": "1 Market St", "after": "1 Market St"},
            },
        },
        {
            "phone_number": B,
            "account": "main",
            "action": "replace",
            "fields": {
                "about": {"before": "Hair care", "after": "Hair care"},
                "address": {"before": None, "after": "2 Market St"},
            },
        },
    ]
    assert plain["checksum"] != replaced["checksum"]
    markdown = project.run("plan", "--replace", "+1415555*", "--format", "markdown").stdout
    assert "| create | update | replace | unmanage | forget |" in markdown
    assert f"! <b>{A}</b> replace (main)" in markdown


def test_a_saved_replace_plan_applies_exactly_and_the_checksum_guards_it(project, sandbox):
    applied_two(project)
    console_edit(sandbox, B, about="Console")
    saved = project.run("plan", "--replace", B, "--out", "plan.json")
    assert saved.exit_code == 0, saved.output
    document = json.loads((project.root / "plan.json").read_text())
    assert document["replaces"] == [B]
    assert project.run("apply", "plan.json", "--replace", A).exit_code == 1  # it carries its own selection
    sent = len(put_bodies(sandbox))
    result = project.run("apply", "plan.json")
    assert result.exit_code == 0, result.output
    assert put_bodies(sandbox)[sent:] == [{"phone_number": B, "about": "Hair care"}]
    assert held(sandbox, B)["about"] == "Hair care"

    checksum = json.loads(project.run("plan", "--replace", A, "--format", "json").stdout)["checksum"]
    wrong = json.loads(project.run("plan", "--replace", B, "--format", "json").stdout)["checksum"]
    refused = project.run("apply", "--replace", A, "--checksum", wrong)
    assert_clean_failure(refused)
    assert "stale plan" in refused.stderr and len(put_bodies(sandbox)) == sent + 1
    accepted = project.run("apply", "--replace", A, "--checksum", checksum)
    assert accepted.exit_code == 0, accepted.output
    assert put_bodies(sandbox)[-1]["phone_number"] == A


def test_max_changes_counts_replaces(project, sandbox):
    applied_two(project)
    project.write_config(safety={"max_changes": 1})
    sent = len(put_bodies(sandbox))
    refused = project.run("apply", "--replace", "main", "--auto-approve")
    assert_clean_failure(refused)
    assert "safety.max_changes" in refused.stderr and len(put_bodies(sandbox)) == sent
    assert project.run("apply", "--replace", A, "--auto-approve").exit_code == 0
    assert project.run("apply", "--replace", "main", "--auto-approve", "--force").exit_code == 0
    assert len(put_bodies(sandbox)) == sent + 3


def test_replace_of_a_number_with_no_profile_is_a_clear_error_and_sends_nothing(project, sandbox):
    applied_two(project)
    (project.profile_path(B)).unlink()
    sent = len(put_bodies(sandbox))
    for command in (["plan"], ["apply", "--auto-approve"]):
        result = project.run(*command, "--replace", B)
        assert_clean_failure(result)
        assert f"--replace {B}: no profile declares this number" in result.stderr
    unknown = project.run("apply", "--replace", C, "--auto-approve")
    assert_clean_failure(unknown)
    assert f"--replace {C}" in unknown.stderr
    assert len(put_bodies(sandbox)) == sent
    assert project.applied()[B] == {"about": "Hair care"}


# --- honest import -----------------------------------------------------------------------------


def test_import_prints_every_value_marks_unverified_and_replace_unverified_sends_them(project, sandbox):
    project.write_config(defaults={"category": "OTHER"})
    project.write_profile(A, about="Body care", address="1 Market St")
    project.write_profile(B, about="Evil \u202e reversed")  # escaped wherever it is shown
    imported = project.run("import", "--auto-approve")
    assert imported.exit_code == 0, imported.output
    out = imported.stdout
    assert f"import {A} (main): 3 field(s)" in out
    assert 'about    = "Body care"' in out and 'category = "OTHER"' in out
    assert 'address  = "1 Market St"' in out
    assert '"Evil \\u202e reversed"' in out and "\u202e" not in out
    assert put_bodies(sandbox) == []

    listed = json.loads(project.run("state", "list", "--format", "json").stdout)
    assert listed["numbers"][A]["unverified"] is True and listed["numbers"][B]["unverified"] is True
    text = project.run("state", "list").stdout
    assert "2 unverified" in text and text.count("unverified (recorded by import, never sent in full)") == 2
    assert "unverified: recorded by import, never sent" in project.run("state", "show", A).stdout

    plan = project.run("plan")
    assert plan.exit_code == 0
    assert "2 number(s) unverified: recorded by import, never sent" in plan.stdout
    assert "`reconciler apply --replace unverified` sends them" in plan.stdout
    assert json.loads(project.run("plan", "--format", "json").stdout)["unverified"] == [A, B]

    result = project.run("apply", "--replace", "unverified", "--auto-approve")
    assert result.exit_code == 0, result.output
    assert sorted(body["phone_number"] for body in put_bodies(sandbox)) == [A, B]
    assert held(sandbox, A) == {"about": "Body care", "address": "1 Market St", "category": "OTHER"}
    listed = json.loads(project.run("state", "list", "--format", "json").stdout)
    assert "unverified" not in listed["numbers"][A] and "unverified" not in listed["numbers"][B]
    assert "unverified" not in project.run("plan").stdout


def test_an_update_keeps_an_imported_entry_unverified(project, sandbox):
    project.write_profile(A, about="Body care", address="1 Market St")
    assert project.run("import", "--auto-approve").exit_code == 0
    project.write_profile(A, about="Body care!", address="1 Market St")
    assert project.run("apply", "--auto-approve").exit_code == 0
    assert put_bodies(sandbox) == [{"phone_number": A, "about": "Body care!"}]  # address is still unsent
    assert json.loads(project.run("plan", "--format", "json").stdout)["unverified"] == [A]
    # It has been sent, just not in full: every place that lists it says so.
    assert "unverified: recorded by import, never sent in full" in project.run("state", "show", A).stdout
    assert "(recorded by import, never sent in full)" in project.run("state", "list").stdout
    assert "recorded by import, never sent in full;" in project.run("plan").stdout


def test_history_names_an_import_once(project, sandbox):
    project.write_profile(A, about="Body care")
    assert project.run("import", "--auto-approve").exit_code == 0
    history = project.run("history", A).stdout
    assert "imported: recorded as applied, nothing sent" in history
    assert "IMPORTED: imported" not in history and "imported: imported" not in history.lower()


# --- scheduled re-assertion --------------------------------------------------------------------


def age(project, days: dict[str, int], keys: tuple[str, ...] = ("applied_at", "sent_in_full_at")) -> None:
    """Make the state say each number was last sent (by default: in full) that many days ago."""
    from datetime import UTC, datetime, timedelta

    document = json.loads(project.state_path.read_text())
    for number, ago in days.items():
        when = datetime.now(UTC) - timedelta(days=ago)
        for key in keys:
            document["numbers"][number][key] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    project.state_path.write_text(json.dumps(document))


def reassert_config(project, **extra) -> None:
    project.write_config(reassert={"every_days": 30, "max_per_run": 1}, **extra)


def test_reassert_is_off_without_a_reassert_section(project, sandbox):
    applied_two(project)
    age(project, {A: 400})
    result = project.run("reassert", "--auto-approve")
    assert result.exit_code == 0, result.output
    assert "Re-assertion is off" in result.stdout and "reassert:" in result.stdout
    assert len(put_bodies(sandbox)) == 2


def test_reassert_converges_console_edits_oldest_first_at_most_max_per_run(project, sandbox):
    applied_two(project)
    project.write_profile(C, about="Nail care")
    assert project.run("apply", "--auto-approve").exit_code == 0
    reassert_config(project)
    age(project, {A: 40, B: 50, C: 10})
    console_edit(sandbox, A, about="Console A")
    console_edit(sandbox, B, about="Console B")
    sent = len(put_bodies(sandbox))

    dry = project.run("reassert", "--dry-run", "--format", "json")
    assert dry.exit_code == 0, dry.output
    planned = json.loads(dry.stdout)
    assert [(c["phone_number"], c["action"]) for c in planned["changes"]] == [(B, "replace")]
    assert "Re-asserting 1 number(s)" in dry.stderr and "1 more wait for the next run" in dry.stderr
    assert len(put_bodies(sandbox)) == sent

    first = project.run("reassert", "--auto-approve")
    assert first.exit_code == 0, first.output
    assert put_bodies(sandbox)[sent:] == [{"phone_number": B, "about": "Hair care"}]
    assert held(sandbox, B)["about"] == "Hair care" and held(sandbox, A)["about"] == "Console A"
    record = project.audit()[-1]
    assert (record["phone_number"], record["action"], record["reassert"]) == (B, "replace", True)

    second = project.run("reassert", "--auto-approve", "--format", "json")
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["summary"]["applied"] == 1
    assert held(sandbox, A) == {"about": "Body care", "address": "1 Market St"}

    third = project.run("reassert", "--auto-approve")
    assert third.exit_code == 0 and "Nothing to re-assert" in third.stdout
    dry = project.run("reassert", "--dry-run")
    assert (
        dry.exit_code == 0
        and dry.stdout.startswith("Nothing to re-assert")
        and "No changes" not in dry.stdout
    )
    assert len(put_bodies(sandbox)) == sent + 2
    history = project.run("history", A).stdout
    assert "replace" in history


def test_reassert_sends_unverified_entries_first(project, sandbox):
    applied_two(project)
    project.write_profile(C, about="Imported")
    assert project.run("import", "--auto-approve").exit_code == 0
    reassert_config(project)
    age(project, {A: 90, B: 90})
    result = project.run("reassert", "--auto-approve")
    assert result.exit_code == 0, result.output
    assert put_bodies(sandbox)[-1] == {"phone_number": C, "about": "Imported"}
    assert (
        "unverified" not in json.loads(project.run("state", "list", "--format", "json").stdout)["numbers"][C]
    )


def test_an_update_of_one_field_does_not_postpone_the_reassertion_of_the_others(project, sandbox):
    applied_two(project)
    reassert_config(project)
    age(project, {A: 60, B: 60})
    console_edit(sandbox, A, address="Console street")
    project.write_profile(A, address="1 Market St", about="Body care!")  # edited in git: only about is sent
    assert project.run("apply", "--auto-approve").exit_code == 0
    assert put_bodies(sandbox)[-1] == {"phone_number": A, "about": "Body care!"}
    entry = json.loads(project.state_path.read_text())["numbers"][A]
    assert entry["sent_in_full_at"] < entry["applied_at"]  # the update did not count as a full send
    assert f"sent in full at: {entry['sent_in_full_at']}" in project.run("state", "show", A).stdout

    dry = project.run("reassert", "--dry-run", "--format", "json")
    assert dry.exit_code == 0, dry.output
    assert [c["phone_number"] for c in json.loads(dry.stdout)["changes"]] == [A]  # A before B: same age
    result = project.run("reassert", "--auto-approve")
    assert result.exit_code == 0, result.output
    assert put_bodies(sandbox)[-1] == {"phone_number": A, "about": "Body care!", "address": "1 Market St"}
    assert held(sandbox, A)["address"] == "1 Market St"


def test_an_entry_written_before_sent_in_full_at_keeps_its_applied_at_as_its_last_full_send(project, sandbox):
    applied_two(project)
    reassert_config(project)
    document = json.loads(project.state_path.read_text())
    for entry in document["numbers"].values():
        del entry["sent_in_full_at"]  # as an older reconciler wrote it
    project.state_path.write_text(json.dumps(document))
    age(project, {A: 40, B: 20}, keys=("applied_at",))
    old = json.loads(project.state_path.read_text())["numbers"][A]["applied_at"]
    project.write_profile(A, address="1 Market St", about="Body care!")
    assert project.run("apply", "--auto-approve").exit_code == 0
    assert json.loads(project.state_path.read_text())["numbers"][A]["sent_in_full_at"] == old
    dry = project.run("reassert", "--dry-run", "--format", "json")
    assert [c["phone_number"] for c in json.loads(dry.stdout)["changes"]] == [A]


@pytest.mark.parametrize("output", ["json", "jsonl", "markdown"])
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
@pytest.mark.parametrize("case", ["off", "nothing due", "due"])
def test_reassert_stdout_is_one_json_document_jsonl_lines_or_true_markdown_on_every_path(
    project, sandbox, case, dry_run, output
):
    applied_two(project)
    if case != "off":
        reassert_config(project)
    if case == "due":
        age(project, {A: 40})
    result = project.run(
        "reassert", "--auto-approve", "--format", output, *(["--dry-run"] if dry_run else [])
    )
    assert result.exit_code == 0, result.output
    why = {"off": "Re-assertion is off", "nothing due": "Nothing to re-assert", "due": "Re-asserting 1"}[case]
    if output == "json":
        document = json.loads(result.stdout)  # exactly one document, nothing else
        assert ("changes" if dry_run else "summary") in document
        assert why in result.stderr
    elif output == "jsonl":
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert lines and lines[-1]["event"] == ("plan" if dry_run else "summary")
        if case == "due":
            assert [line["phone_number"] for line in lines if line["event"] == "result"] == (
                [] if dry_run else [A]
            )
        assert why in result.stderr
    else:
        assert "match the applied state" not in result.stdout and "No changes" not in result.stdout
        assert "### Kaleyra profile" in result.stdout
        assert why in (result.stdout if dry_run or case != "due" else result.stderr)
    assert len(put_bodies(sandbox)) == 2 + (case == "due" and not dry_run)


def test_reassert_fails_at_once_while_the_lock_is_held(project, sandbox):
    from reconciler.state.local import LocalStateStore
    from reconciler.state.lock import LockInfo

    applied_two(project)
    reassert_config(project)
    age(project, {A: 40})
    assert LocalStateStore(project.state_path).create_lock(LockInfo.mine("apply"))
    result = project.run("reassert", "--auto-approve")
    assert_clean_failure(result)
    assert "lock" in result.stderr
    assert len(put_bodies(sandbox)) == 2


def test_reassert_without_a_terminal_or_auto_approve_sends_nothing(project, sandbox):
    applied_two(project)
    reassert_config(project)
    age(project, {A: 40})
    result = project.run("reassert")
    assert_clean_failure(result)
    assert "--auto-approve" in result.stderr and len(put_bodies(sandbox)) == 2


def test_a_reassert_run_larger_than_max_changes_is_a_config_error(project, sandbox):
    project.write_config(reassert={"every_days": 7, "max_per_run": 20}, safety={"max_changes": 5})
    result = project.run("validate")
    assert_clean_failure(result)
    assert "reassert.max_per_run (20) is more than safety.max_changes (5)" in result.stderr
    assert "reconciler.yaml" in result.stderr
    project.write_config(reassert={"every_days": 7})
    missing = project.run("validate")
    assert_clean_failure(missing)
    assert "max_per_run" in missing.stderr


# --- drift says what it compares ---------------------------------------------------------------

NOTE = (
    "desired vs recorded (Kaleyra offers no read of profile fields; edits made in Kaleyra's console are "
    "found by re-assertion)"
)


def test_drift_says_it_compares_desired_with_recorded_in_every_format(project, sandbox):
    applied_two(project)
    console_edit(sandbox, A, about="Console")
    clean = project.run("drift")
    assert clean.exit_code == 0
    assert NOTE in clean.stdout.splitlines()[0]
    assert "No drift: all 2 number(s) match the applied state." in clean.stdout

    project.write_profile(B, about="Hair care!")
    drifted = project.run("drift")
    assert drifted.exit_code == 2
    assert NOTE in drifted.stdout.splitlines()[0]
    document = json.loads(project.run("drift", "--format", "json").stdout)
    assert document["format_version"] == "1.1"
    assert document["compares"] == "desired vs recorded" and "no read of profile fields" in document["note"]
    assert "compares" not in json.loads(project.run("plan", "--format", "json").stdout)
    markdown = project.run("drift", "--format", "markdown").stdout
    assert markdown.startswith(
        "### Kaleyra profile drift\n\nCompares **desired vs recorded** (Kaleyra offers"
    )
    assert "found by re-assertion" in markdown


def test_drift_lists_unverified_numbers(project, sandbox):
    project.write_profile(A, about="Body care")
    assert project.run("import", "--auto-approve").exit_code == 0
    result = project.run("drift")
    assert result.exit_code == 0
    assert "1 number(s) unverified: recorded by import, never sent" in result.stdout


def test_a_saved_plan_of_format_1_0_is_still_read(project, sandbox):
    project.write_profile(A, about="Body care")
    assert project.run("plan", "--out", "plan.json").exit_code == 0
    saved = json.loads((project.root / "plan.json").read_text())
    saved["format_version"] = "1.0"
    for key in ("replaces", "unverified"):
        del saved[key]
    del saved["summary"]["replace"]
    (project.root / "plan.json").write_text(json.dumps(saved))
    result = project.run("apply", "plan.json")
    assert result.exit_code == 0, result.output
    assert put_bodies(sandbox) == [{"phone_number": A, "about": "Body care"}]


def test_the_fleet_report_tells_reassertion_from_replace_and_shows_unverified(project, sandbox):
    applied_two(project)
    project.write_profile(C, about="Imported")
    assert project.run("import", "--auto-approve").exit_code == 0
    reassert_config(project)
    age(project, {B: 90})
    assert project.run("apply", "--replace", A, "--target", A, "--auto-approve").exit_code == 0
    report = project.run("report", "--format", "markdown")
    assert report.exit_code == 0, report.output
    rows = {
        line.split(" | ")[0].lstrip("| "): line
        for line in report.stdout.splitlines()
        if line.startswith("| +")
    }
    assert rows[A].endswith("| no | never |")  # apply --replace is not a re-assertion
    assert rows[C].endswith("| yes | never |")  # imported: unverified
    assert project.run("reassert", "--auto-approve").exit_code == 0  # takes C: unverified first
    assert project.run("reassert", "--auto-approve").exit_code == 0  # then B, the oldest
    report = project.run("report", "--format", "markdown").stdout
    rows = {line.split(" | ")[0].lstrip("| "): line for line in report.splitlines() if line.startswith("| +")}
    assert rows[C].endswith(" |") and "| no | never |" not in rows[C] and "| no |" in rows[C]
    assert not rows[B].endswith("| never |")


def test_a_replace_selector_that_is_nothing_known_is_a_usage_error_naming_unverified(project, sandbox):
    applied_two(project)
    result = project.run("apply", "--replace", "Unverified", "--auto-approve")
    assert_clean_failure(result)
    assert "--replace 'Unverified' is not a phone number" in result.stderr and "'unverified'" in result.stderr
    assert len(put_bodies(sandbox)) == 2


def test_import_then_reassert_on_an_s3_state_sends_and_audits_the_unverified(s3_project, sandbox):
    project = s3_project
    project.write_config(reassert={"every_days": 30, "max_per_run": 5})
    project.write_profile(A, about="Body care")
    assert project.run("import", "--auto-approve").exit_code == 0
    assert "1 number(s) unverified" in project.run("plan").stdout
    result = project.run("reassert", "--auto-approve")
    assert result.exit_code == 0, result.output
    assert put_bodies(sandbox) == [{"phone_number": A, "about": "Body care"}]
    entry = project.store().load().entries[A]
    assert entry.unverified is False and entry.sent_in_full_at == entry.applied_at
    records = [r for r in project.audit() if r["action"] == "replace"]
    assert [(r["phone_number"], r["result"], r["reassert"]) for r in records] == [(A, "WA200", True)]
