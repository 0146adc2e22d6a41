"""The commands people reach for next, end to end against the sandbox: selection by account and glob,
`state rm`, `state mv`, and shell completion."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import API_KEY, NUMBERS, SID, WABA, Project, assert_clean_failure, put_bodies

A, B, C = NUMBERS[0], NUMBERS[1], NUMBERS[2]


def planned(project: Project, *args: str) -> list[str]:
    result = project.run("plan", "--format", "json", *args)
    assert result.exit_code == 0, result.output + result.stderr
    return [change["phone_number"] for change in json.loads(result.stdout)["changes"]]


def test_target_and_exclude_take_accounts_and_globs_in_plan_apply_drift_and_import(project, sandbox):
    project.write_profile(A, about="main a")
    project.write_profile(B, about="main b")
    project.write_profile(C, account="legacy", about="legacy c")
    assert planned(project, "--target", "legacy") == [C]
    assert planned(project, "--target", "main", "--exclude", B) == [A]
    assert planned(project, "--target", "+1415555010*", "--exclude", "legacy") == [A, B]
    drift = project.run("drift", "--format", "json", "--exclude", "main")
    assert [c["phone_number"] for c in json.loads(drift.stdout)["changes"]] == [C]

    assert project.run("apply", "--auto-approve", "--target", "main", "--exclude", A).exit_code == 0
    assert [body["phone_number"] for body in put_bodies(sandbox)] == [B]
    assert project.run("import", "--auto-approve", "--target", "legacy").exit_code == 0
    assert set(project.applied()) == {B, C}
    assert planned(project) == [A]


def test_a_saved_plan_remembers_its_selection(project, sandbox):
    project.write_profile(A, about="a")
    project.write_profile(C, account="legacy", about="c")
    plan_file = project.root / "plan.json"
    assert project.run("plan", "--target", "legacy", "--out", str(plan_file)).exit_code == 0
    assert project.run("apply", str(plan_file)).exit_code == 0
    assert [body["phone_number"] for body in put_bodies(sandbox)] == [C]
    refused = project.run("apply", str(plan_file), "--exclude", "main")
    assert_clean_failure(refused)


def test_a_glob_matching_nothing_is_an_error_not_an_empty_plan(project):
    project.write_profile(A, about="a")
    result = project.run("plan", "--target", "+44*")
    assert_clean_failure(result)
    assert "--target +44*: no profile or state entry has that glob" in result.stderr


def test_state_rm_stops_managing_numbers_and_sends_nothing(project, sandbox):
    project.write_profile(A, about="a")
    project.write_profile(B, about="b")
    assert project.run("apply", "--auto-approve").exit_code == 0
    sent = len(put_bodies(sandbox))
    result = project.run("state", "rm", A)
    assert result.exit_code == 0, result.output + result.stderr
    assert set(project.applied()) == {B} and len(put_bodies(sandbox)) == sent
    assert project.audit()[-1]["action"] == "state rm" and project.audit()[-1]["phone_number"] == A
    assert json.loads(project.run("plan", "--format", "json").stdout)["changes"][0]["action"] == "create"
    unknown = project.run("state", "rm", A, B)
    assert_clean_failure(unknown)
    assert set(project.applied()) == {B}  # all or nothing


def test_state_mv_renames_a_label_so_its_numbers_are_not_resent(project, sandbox):
    for number in (A, B, C):
        project.write_profile(number, about=number)
    assert project.run("apply", "--auto-approve").exit_code == 0
    sent = len(put_bodies(sandbox))
    # The label "main" is renamed "primary" in reconciler.yaml; sid and waba_id are unchanged.
    config = (project.root / "reconciler.yaml").read_text().replace("  main:", "  primary:")
    (project.root / "reconciler.yaml").write_text(config)
    for number in (A, B, C):
        project.write_profile(number, account="primary", about=number)
    before = json.loads(project.run("plan", "--format", "json").stdout)
    assert {c["action"] for c in before["changes"]} == {"create"}  # without mv: re-sent as moved
    assert "account 'main', which reconciler.yaml does not have" in project.run("plan").stderr

    result = project.run("state", "mv", "main", "primary")
    assert result.exit_code == 0, result.output + result.stderr
    assert project.run("plan", "--detailed-exitcode").exit_code == 0
    assert project.run("apply", "--auto-approve").exit_code == 0
    assert len(put_bodies(sandbox)) == sent
    state = json.loads(project.state_path.read_text())
    assert {entry["account"] for entry in state["numbers"].values()} == {"primary"}
    assert {entry["target"] for entry in state["numbers"].values()} == {f"{SID}/{WABA}"}


def test_state_mv_refuses_a_label_pointing_at_another_waba(project, sandbox):
    project.write_profile(A, about="a")
    assert project.run("apply", "--auto-approve").exit_code == 0
    result = project.run("state", "mv", "main", "legacy")  # legacy is another sid/waba
    assert_clean_failure(result)
    assert "applied to another WABA" in result.stderr
    assert json.loads(project.state_path.read_text())["numbers"][A]["account"] == "main"
    assert_clean_failure(project.run("state", "mv", "main", "nowhere"))


def test_shell_completion_completes_commands_and_options(project):
    env = {
        **os.environ,
        "_RECONCILER_COMPLETE": "bash_complete",
        "COMP_WORDS": "reconciler sta",
        "COMP_CWORD": "1",
    }
    result = subprocess.run(
        [sys.executable, "-c", "from reconciler.cli import main; main()"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert "plain,state" in result.stdout.splitlines()
    script = subprocess.run(
        [sys.executable, "-c", "from reconciler.cli import main; main()"],
        env={**os.environ, "_RECONCILER_COMPLETE": "zsh_source"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert "compdef" in script.stdout


def test_state_pull_without_the_branch_is_one_clear_error_and_writes_nothing(project):
    subprocess.run(["git", "init", "-q", str(project.root)], check=True)
    result = project.run("state", "pull", "--remote", "nowhere")
    assert_clean_failure(result)
    assert "cannot fetch the branch reconciler-state from nowhere" in result.stderr
    assert "the first apply in CI creates it" in result.stderr
    assert not project.state_path.exists()
    assert project.run("state", "pull", "--branch", "--upload-pack=evil").exit_code == 1


def _state_document(lineage: str, serial: int, phone_number: str) -> str:
    fields = {"about": "x"}
    entry = {"account": "main", "fields": fields}
    numbers = {phone_number: entry}
    return json.dumps({"format_version": 1, "lineage": lineage, "serial": serial, "numbers": numbers})


def _state_branch(project, tmp_path, lineage: str, serial: int) -> None:
    """An `origin` whose reconciler-state branch holds a state of `lineage` at `serial`."""
    upstream = tmp_path / "upstream"
    (upstream / ".reconciler").mkdir(parents=True)
    (upstream / ".reconciler" / "state.json").write_text(_state_document(lineage, serial, A))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "reconciler-state", str(upstream)], check=True)
    subprocess.run([*git, "-C", str(upstream), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(upstream), "commit", "-q", "-m", "state"], check=True)
    subprocess.run(["git", "init", "-q", str(project.root)], check=True)
    subprocess.run(["git", "-C", str(project.root), "remote", "add", "origin", str(upstream)], check=True)


def test_state_pull_refuses_to_replace_a_local_state_of_another_lineage_or_a_higher_serial(project, tmp_path):
    _state_branch(project, tmp_path, "aaaa", 1)
    project.state_path.parent.mkdir(parents=True, exist_ok=True)
    for lineage, serial in (("bbbb", 5), ("bbbb", 0), ("aaaa", 5)):
        local = _state_document(lineage, serial, B)
        project.state_path.write_text(local)
        (project.root / ".reconciler" / "audit.jsonl").write_text('{"local": true}\n')
        result = project.run("state", "pull")
        assert_clean_failure(result)
        assert "--force" in result.stderr and "nothing was written" in result.stderr
        assert project.state_path.read_text() == local
        assert (project.root / ".reconciler" / "audit.jsonl").read_text() == '{"local": true}\n'

    forced = project.run("state", "pull", "--force")
    assert forced.exit_code == 0, forced.output + forced.stderr
    assert set(project.applied()) == {A}
    backups = list((project.root / ".reconciler").glob("state.json.before-pull-*"))
    assert len(backups) == 1 and str(backups[0]) in forced.stdout.replace("\n", "")
    assert (backups[0] / "state.json").read_text() == local
    assert (backups[0] / "audit.jsonl").read_text() == '{"local": true}\n'

    project.state_path.write_text(local)
    again = project.run("state", "pull", "--force")
    assert again.exit_code == 0, again.output + again.stderr
    assert len(list((project.root / ".reconciler").glob("state.json.before-pull-*"))) == 2


def test_state_pull_over_an_older_state_of_the_same_lineage_needs_no_force(project, tmp_path):
    _state_branch(project, tmp_path, "aaaa", 3)
    project.state_path.parent.mkdir(parents=True, exist_ok=True)
    project.state_path.write_text(_state_document("aaaa", 2, B))
    result = project.run("state", "pull")
    assert result.exit_code == 0, result.output + result.stderr
    assert set(project.applied()) == {A}
    assert not list((project.root / ".reconciler").glob("state.json.before-pull-*"))


def test_state_pull_reports_gits_whole_message_and_does_not_claim_a_missing_remote_exists(project):
    subprocess.run(["git", "init", "-q", str(project.root)], check=True)
    result = project.run("state", "pull", "--remote", "nowhere")
    assert_clean_failure(result)
    message = " ".join(result.stderr.split())
    assert "(git says: fatal: 'nowhere' does not appear to be a git repository" in message
    assert "if the remote is right and the branch does not exist yet" in message


def test_state_pull_redacts_a_key_in_gits_message(project, tmp_path):
    subprocess.run(["git", "init", "-q", str(project.root)], check=True)
    remote = str(tmp_path / f"mirror-{API_KEY}")
    subprocess.run(["git", "-C", str(project.root), "remote", "add", "origin", remote], check=True)
    result = project.run("state", "pull")
    assert_clean_failure(result)
    assert "does not appear to be a git repository" in result.stderr
    assert API_KEY not in result.stderr and API_KEY[:12] not in result.stderr
