"""End to end: validate --online and plan --online against the sandbox's callback profiles (issue 12 section 4)."""

from __future__ import annotations

import httpx
import respx

from conftest import API_KEY, NUMBERS, SID, assert_clean_failure

A, B, C = NUMBERS[:3]
# Where write_profile puts the id: `phone_number`, `account`, then the field, on line 3.
COLUMN = len("callback_profile_id: ") + 1


def held(sandbox, **statuses: int) -> None:
    sandbox.sandbox.callback_profiles = {
        SID: {
            profile_id: {"profile_id": profile_id, "status": status}
            for profile_id, status in statuses.items()
        }
    }


def lookups(sandbox, profile_id: str | None = None) -> list[str]:
    with sandbox.sandbox.lock:
        paths = [lookup["path"] for lookup in sandbox.sandbox.lookups]
    return [path for path in paths if profile_id is None or path.endswith(f"/{profile_id}")]


def test_an_unknown_callback_profile_is_an_error_at_its_line_and_column(project, sandbox):
    held(sandbox, good=1)
    project.write_profile(A, callback_profile_id="typo")
    result = project.run("validate", "--online")
    assert_clean_failure(result)
    assert (
        f"profiles/{A}.yaml:3:{COLUMN}: callback_profile_id: no callback profile 'typo' exists on Kaleyra "
        "(account 'main'); check the id"
    ) in result.stderr
    assert project.run("validate").exit_code == 0  # offline, nothing is checked


def test_disabled_and_auto_disabled_profiles_are_errors_and_every_problem_is_listed(project, sandbox):
    held(sandbox, off=3, tired=2, good=1)
    project.write_profile(A, callback_profile_id="off")
    project.write_profile(B, callback_profile_id="good", outgoing_callback_profile_id="tired")
    result = project.run("validate", "--online")
    assert_clean_failure(result)
    assert (
        f"profiles/{A}.yaml:3:{COLUMN}: callback_profile_id: callback profile 'off' is disabled"
        in result.stderr
    )
    assert (
        f"profiles/{B}.yaml:4:{len('outgoing_callback_profile_id: ') + 1}: outgoing_callback_profile_id: "
        "callback profile 'tired' is auto-disabled on Kaleyra"
    ) in result.stderr
    assert "2 errors found; nothing was changed." in result.stderr


def test_active_profiles_pass_and_each_id_is_fetched_once(project, sandbox):
    held(sandbox, shared=1, other=1)
    for number in (A, B, C):
        project.write_profile(number, callback_profile_id="shared", outgoing_callback_profile_id="shared")
    project.write_profile(NUMBERS[3], callback_profile_id="other")
    result = project.run("validate", "--online")
    assert result.exit_code == 0, result.stderr
    assert "Online: 2 callback profile id(s) checked on Kaleyra" in result.stdout
    assert len(lookups(sandbox, "shared")) == 1 and len(lookups(sandbox, "other")) == 1


def test_the_same_id_on_two_accounts_is_fetched_for_each(project, sandbox):
    sandbox.sandbox.callback_profiles = {
        SID: {"cb": {"profile_id": "cb", "status": 1}},
        "HXTEST0000000002": {"cb": {"profile_id": "cb", "status": 3}},
    }
    project.write_profile(A, callback_profile_id="cb")
    project.write_profile(B, account="legacy", callback_profile_id="cb")
    result = project.run("validate", "--online")
    assert_clean_failure(result)
    assert len(lookups(sandbox, "cb")) == 2
    assert f"profiles/{B}.yaml:3:{COLUMN}" in result.stderr and "(account 'legacy')" in result.stderr
    assert f"profiles/{A}.yaml" not in result.stderr


def test_plan_online_checks_only_what_the_changes_send(project, sandbox):
    held(sandbox, applied=1, new=1)
    project.write_profile(A, callback_profile_id="applied", about="x")
    assert project.run("apply", "--auto-approve").exit_code == 0
    held(sandbox, applied=3, new=1)  # disabled since: A's id is no longer sent, so it is not checked
    project.write_profile(A, callback_profile_id="applied", about="changed")
    project.write_profile(B, callback_profile_id="new")
    before = len(lookups(sandbox))
    result = project.run("plan", "--online", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert [path.rsplit("/", 1)[1] for path in lookups(sandbox)[before:]] == ["new"]
    project.write_profile(B, callback_profile_id="missing")
    result = project.run("plan", "--online")
    assert_clean_failure(result)
    assert (
        f"profiles/{B}.yaml:3:{COLUMN}: callback_profile_id: no callback profile 'missing'" in result.stderr
    )
    assert "Checksum" not in result.stdout  # no plan is shown when the check fails


def test_a_default_callback_profile_is_reported_in_reconciler_yaml(project, sandbox):
    held(sandbox)
    project.write_config(defaults={"callback_profile_id": "gone"})
    project.write_profile(A, about="x")
    result = project.run("validate", "--online")
    assert_clean_failure(result)
    assert "reconciler.yaml:" in result.stderr and "no callback profile 'gone'" in result.stderr


def test_online_needs_the_keys_of_the_accounts_involved_and_sends_nothing_without_them(project, sandbox):
    held(sandbox, good=1)
    project.write_profile(A, callback_profile_id="good")
    project.write_profile(B, account="legacy", callback_profile_id="good")
    result = project.run("validate", "--online", env={"KALEYRA_API_KEY": "", "KALEYRA_API_KEY_OTHER": ""})
    assert_clean_failure(result)
    assert (
        "KALEYRA_API_KEY is not set" in result.stderr and "KALEYRA_API_KEY_OTHER is not set" in result.stderr
    )
    assert lookups(sandbox) == []


def test_a_wrong_key_is_reported_as_unchecked_not_as_unknown(project, sandbox):
    held(sandbox, good=1)
    sandbox.sandbox.api_key = "the-right-key"
    project.write_profile(A, callback_profile_id="good")
    result = project.run("validate", "--online")
    assert_clean_failure(result)
    assert "could not be checked (account 'main'): RBC001: Incorrect SID or API key." in result.stderr


def test_no_callback_profiles_no_requests_and_no_keys_needed(project, sandbox):
    project.write_profile(A, about="x")
    result = project.run("validate", "--online", env={"KALEYRA_API_KEY": ""})
    assert result.exit_code == 0 and "0 callback profile id(s) checked" in result.stdout
    assert lookups(sandbox) == []


@respx.mock
def test_a_key_echoed_by_the_server_never_reaches_the_output(project):
    echo = {"code": "RBC001", "message": f"Incorrect SID or API key {API_KEY}", "data": [], "error": {}}
    respx.get(url__regex=r".*/callback/profiles/.*").mock(return_value=httpx.Response(401, json=echo))
    project.write_profile(A, callback_profile_id="x")
    result = project.run("validate", "--online", "--verbose")
    assert_clean_failure(result)
    assert "RBC001: Incorrect SID or API key [redacted]" in result.stderr
    assert API_KEY not in result.output + result.stderr
