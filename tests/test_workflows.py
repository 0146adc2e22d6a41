"""The shipped GitHub workflows, run end to end: an emulated runner, the real gh against a fake GitHub,
reconciler sandbox as Kaleyra (tests/gha/). Each test is one chapter of the story in issue 10; the
ones named after a defect fail on the workflows that came before action.yml.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from reconciler.cli import cli

from gha.fakegithub import git
from gha.world import EXTRA_NUMBERS, KEYS, MARKER, PEOPLE, PROJECT, World, seed_applied, state_on_branch

CHECKSUM = re.compile(r"<!-- reconciler-checksum: ([0-9a-f]{64}) -->")
SUPPORT = "profiles/acme-in/+914846000102.yaml"
SALON = "profiles/acme-in/+919980000103.yaml"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    if shutil.which("gh") is None:
        message = "the workflow tests drive the real gh CLI: apt-get install gh (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    story = World(tmp_path)
    yield story
    story.close()


def edit(world: World, path: str, old: str, new: str) -> dict[str, str]:
    world._git("checkout", "-q", "--detach", world.sha("refs/heads/main"))
    text = (world.clone / path).read_text()
    assert old in text, (old, text)
    return {path: text.replace(old, new)}


def plan_comment(world: World, number: int) -> dict[str, Any]:
    comments = [c for c in world.bot_comments(number) if c["body"].startswith(MARKER)]
    assert len(comments) == 1, [c["body"][:200] for c in world.hub.comments_on(number)]
    return comments[0]


def checksum_of(body: str) -> str:
    found = CHECKSUM.findall(body)
    assert len(found) == 1, body[-500:]
    return found[0]


def only(runs: list[Any], workflow: str) -> Any:
    matching = [run for run in runs if run.workflow == workflow]
    assert len(matching) == 1, [(run.workflow, run.conclusion) for run in runs]
    return matching[0]


def fresh_plan(world: World, ref: str, state: dict[str, Any] | None) -> dict[str, Any]:
    """`reconciler plan --format json` of a commit against a state, computed here, outside CI."""
    tree = world.root / f"plan-{ref[:12]}"
    shutil.rmtree(tree, ignore_errors=True)
    world._git("worktree", "add", "-q", "--detach", str(tree), ref)
    if state is not None:
        (tree / ".reconciler").mkdir(exist_ok=True)
        (tree / ".reconciler" / "state.json").write_text(json.dumps(state))
    old = Path.cwd()
    os.chdir(tree)
    try:
        result = CliRunner().invoke(cli, ["plan", "--format", "json"], env={"NO_COLOR": "1"})
    finally:
        os.chdir(old)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# --- pull requests ----------------------------------------------------------------------------------


def test_a_pull_request_gets_one_plan_comment_updated_in_place_on_each_push(world: World) -> None:
    seed_applied(world)
    pull, runs = world.open_pr(edit(world, SUPPORT, "Order status and returns", "Order tracking"))
    assert only(runs, "reconciler plan").conclusion == "success"
    assert only(runs, "reconciler plan comment").conclusion == "success"
    first = plan_comment(world, pull["number"])
    assert "Order tracking" in first["body"] and "+914846000102" in first["body"]
    assert "Order tracking" in only(runs, "reconciler plan").job().summary

    runs = world.push_pr(pull, edit(world, SUPPORT, "Order status and returns", "Order tracking, 24/7"))
    second = plan_comment(world, pull["number"])
    assert second["id"] == first["id"], "the comment is updated in place, not posted again"
    assert "Order tracking, 24/7" in second["body"]
    assert checksum_of(second["body"]) != checksum_of(first["body"])


def test_defect_1_a_fork_cannot_rewrite_another_pull_requests_comment(world: World) -> None:
    seed_applied(world)
    victim, _ = world.open_pr(edit(world, SUPPORT, "Order status and returns", "Returns desk"))
    before = plan_comment(world, victim["number"])["body"]
    # The fork's pull request runs the fork's own plan workflow, which claims the victim's number and
    # head in the artifact, with a plan of its choosing.
    evil_workflow = f"""
name: reconciler plan
on: pull_request
permissions: {{}}
jobs:
  plan:
    runs-on: ubuntu-latest
    steps:
      - run: |
          mkdir -p out
          echo {victim["number"]} > out/pr-number.txt
          echo {victim["head_sha"]} > out/head-sha.txt
          printf 'Nothing to see here.\\n<!-- reconciler-checksum: {"0" * 64} -->\\n' > out/plan.md
      - uses: actions/upload-artifact@v6
        with:
          name: reconciler-plan
          path: out/
"""
    fork, runs = world.open_pr(
        {
            **edit(world, SALON, "Book a slot in seconds", "Fork was here"),
            ".github/workflows/reconciler-plan.yml": evil_workflow,
        },
        branch="main",
        fork=True,
        author="mallory",
    )
    assert plan_comment(world, victim["number"])["body"] == before, "the victim's comment is untouched"
    own = plan_comment(world, fork["number"])["body"]
    assert "Fork was here" in own and "Nothing to see here" not in own
    # The fork's job had a read-only token and no secrets.
    assert only(runs, "reconciler plan").job().permissions == {}


def test_defect_2_only_the_bots_comment_is_updated_and_its_checksum_applied(world: World) -> None:
    seed_applied(world)
    pull, _ = world.open_pr(edit(world, SUPPORT, "Order status and returns", "Reviewed change"), run=False)
    # A third party writes the marker first, before the bot has commented.
    forged = world.hub.add_comment(pull["number"], f"{MARKER}\nI am the plan now", PEOPLE["mallory"])
    world._pull_event(pull, "opened")
    reviewed = plan_comment(world, pull["number"])
    assert "Reviewed change" in reviewed["body"]
    assert world.hub.comments[forged["id"]]["body"] == f"{MARKER}\nI am the plan now"

    # A later push adds a change, but its comment run fails (GitHub refuses the update), so the bot's
    # comment still shows the reviewed plan. A third party posts the checksum of the merged plan.
    world.hub.fail("PATCH", r"/issues/comments/", status=502)
    unreviewed = edit(world, SALON, "Book a slot in seconds", "Unreviewed change")
    world.push_pr(pull, {**edit(world, SUPPORT, "Order status and returns", "Reviewed change"), **unreviewed})
    assert "Unreviewed change" not in plan_comment(world, pull["number"])["body"]
    merged = fresh_plan(world, pull["merge_sha"], world.saved_state())
    world.hub.add_comment(
        pull["number"], f"{MARKER}\n<!-- reconciler-checksum: {merged['checksum']} -->", PEOPLE["mallory"]
    )
    world.merge(pull)
    apply_run = world.runner.runs[-1]
    assert apply_run.workflow == "reconciler apply"
    assert apply_run.conclusion == "failure", "the bot's reviewed checksum is stale, so apply refuses"
    assert not [body for body in world.kaleyra_puts() if body.get("about") == "Unreviewed change"]
    assert world.kaleyra_numbers()["+919980000103"].get("about") != "Unreviewed change"


def test_defect_3_the_comment_is_rendered_by_the_default_branchs_code(world: World) -> None:
    seed_applied(world)
    render = (world.clone / "reconciler" / "render.py").read_text()
    lie = (
        'def plan_markdown(plan: Plan, title: str = "Kaleyra profile plan", limit: int = MARKDOWN_LIMIT) -> str:\n'
        '    return f"### {title}\\n\\nNo changes.\\n<!-- reconciler-checksum: {plan.checksum} -->\\n"\n\n\n'
        "def _original_plan_markdown("
    )
    assert "def plan_markdown(" in render
    pull, runs = world.open_pr(
        {
            **edit(world, SUPPORT, "Order status and returns", "Quietly changed"),
            "reconciler/render.py": render.replace("def plan_markdown(", lie, 1),
        }
    )
    assert "No changes." in only(runs, "reconciler plan").job().summary  # the PR's own code lies...
    body = plan_comment(world, pull["number"])["body"]
    assert "Quietly changed" in body and "No changes." not in body  # ...the comment does not


def test_defect_3_a_pull_request_editing_the_state_is_flagged_with_the_numbers(world: World) -> None:
    state = seed_applied(world)
    # Hide a change from the plan: the PR's state claims the new value was already applied.
    state["numbers"]["+914846000102"]["fields"]["description"] = "Hidden change"
    pull, _ = world.open_pr(
        {
            **edit(world, SUPPORT, "Order status and returns", "Hidden change"),
            ".reconciler/state.json": json.dumps(state, indent=2),
        }
    )
    body = plan_comment(world, pull["number"])["body"]
    top = body[: body.index("###")]
    assert "edits the applied state" in top or "adds the applied state" in top, body[:800]
    assert "+914846000102" in top
    assert "Hidden change" in body[body.index("###") :], "the plan still shows the change"


# --- merge and apply --------------------------------------------------------------------------------


def test_defect_4_merge_applies_the_reviewed_plan_and_keeps_the_state_with_main_protected(
    world: World,
) -> None:
    world.hub.protect("main")
    pull, _ = world.open_pr(edit(world, SUPPORT, "Order status and returns", "Applied on merge"))
    world.merge(pull)
    apply_run = world.runner.runs[-1]
    assert apply_run.workflow == "reconciler apply" and apply_run.conclusion == "success", apply_run.job().log
    assert world.kaleyra_numbers()["+914846000102"]["description"] == "Applied on merge"
    state = world.saved_state()
    assert (
        state is not None and state["numbers"]["+914846000102"]["fields"]["description"] == "Applied on merge"
    )
    assert len(state["numbers"]) == 5
    puts = len(world.kaleyra_puts())

    # The next merge sends only its own change: the saved state was read.
    pull, _ = world.open_pr(edit(world, SALON, "Book a slot in seconds", "Book in seconds"), branch="next")
    world.merge(pull)
    assert world.runner.runs[-1].conclusion == "success"
    assert [body["phone_number"] for body in world.kaleyra_puts()[puts:]] == ["+919980000103"]
    # And no key was written anywhere: comments, summaries, logs, artifacts, the repository.
    written = world.everything_written()
    assert all(key not in written for key in KEYS.values())


def test_a_state_that_cannot_be_saved_fails_loudly_and_is_kept_as_an_artifact(world: World) -> None:
    world.hub.protect("main")
    world.hub.protect("reconciler-state")  # a misconfiguration: the state branch must not be protected
    pull, _ = world.open_pr(edit(world, SUPPORT, "Order status and returns", "Sent, not saved"))
    world.merge(pull)
    apply_run = world.runner.runs[-1]
    job = apply_run.job()
    assert apply_run.conclusion == "failure"
    assert any("state" in error for error in job.errors()), job.annotations
    assert world.kaleyra_numbers()["+914846000102"]["description"] == "Sent, not saved"
    kept = [files for (run_id, _name), files in world.runner.artifacts.items() if run_id == apply_run.id]
    assert kept, "the state and journal are kept as an artifact"
    state = json.loads(kept[0]["state.json"])
    assert state["numbers"]["+914846000102"]["fields"]["description"] == "Sent, not saved"


@pytest.mark.parametrize("conflict", [False, True], ids=["race", "conflicting-race"])
def test_a_push_race_is_rebased_and_a_conflict_aborted_cleanly(world: World, conflict: bool) -> None:
    seed_applied(world)
    branch = "reconciler-state" if state_on_branch() else "main"
    # Someone else moves the branch while apply runs: the first push is refused and, meanwhile, the
    # branch gets another commit (a note beside the state, or an edit of the state itself).
    text = world.show(f"refs/heads/{branch}", ".reconciler/state.json") or "{}"
    other = (
        {".reconciler/state.json": json.dumps(json.loads(text), indent=4)}
        if conflict
        else {"NOTES.md": "kept by people\n"}
    )
    race = world.put_state(other)
    git("update-ref", "refs/race", race, cwd=world.hub.bare)
    git("update-ref", f"refs/heads/{branch}", f"{race}~1", cwd=world.hub.bare)
    hooks = world.hub.bare / "hooks"
    (hooks / "inject").write_text(
        "#!/usr/bin/env bash\n"
        f'[ -n "${{FAKEGH_ACTOR:-}}" ] && [ -e "{hooks}/race-once" ] || exit 0\n'
        f'rm -f "{hooks}/race-once"\n'
        "env -u GIT_QUARANTINE_PATH -u GIT_OBJECT_DIRECTORY -u GIT_ALTERNATE_OBJECT_DIRECTORIES "
        f'git --git-dir="{world.hub.bare}" update-ref refs/heads/{branch} refs/race\n'
        'echo "error: simulated race"; exit 1\n'
    )
    (hooks / "inject").chmod(0o755)
    (hooks / "race-once").touch()
    pull, _ = world.open_pr(edit(world, SUPPORT, "Order status and returns", "Raced"))
    world.merge(pull)
    apply_run = world.runner.runs[-1]
    assert world.kaleyra_numbers()["+914846000102"]["description"] == "Raced"
    if not conflict:
        assert apply_run.conclusion == "success", apply_run.job().log
        assert world.saved_state()["numbers"]["+914846000102"]["fields"]["description"] == "Raced"
        assert world.show(f"refs/heads/{branch}", "NOTES.md") == "kept by people"
    else:
        assert apply_run.conclusion == "failure"
        assert [f for (run_id, _n), f in world.runner.artifacts.items() if run_id == apply_run.id]
        clones = list((world.root / "runs").glob(f"{apply_run.id}-*/temp/*/.git"))
        assert clones and not any(
            (c / "rebase-merge").exists() or (c / "rebase-apply").exists() for c in clones
        )


def test_defect_9_two_merges_seconds_apart_both_apply(world: World) -> None:
    seed_applied(world)
    first, _ = world.open_pr(edit(world, SUPPORT, "Order status and returns", "First merge"), branch="one")
    second, _ = world.open_pr(edit(world, SALON, "Book a slot in seconds", "Second merge"), branch="two")
    one = world.merge(first, run=False)
    two = world.merge(second, run=False)
    # Both pushes queue in the apply group; they run one after the other.
    world.push_event(*one)
    world.push_event(*two)
    applies = [run for run in world.runner.runs if run.workflow == "reconciler apply"]
    assert [run.conclusion for run in applies] == ["success", "success"], applies[-1].job().log
    numbers = world.kaleyra_numbers()
    assert numbers["+914846000102"]["description"] == "First merge"
    assert numbers["+919980000103"]["about"] == "Second merge"
    fields = world.saved_state()["numbers"]
    assert fields["+914846000102"]["fields"]["description"] == "First merge"
    assert fields["+919980000103"]["fields"]["about"] == "Second merge"


# --- drift ------------------------------------------------------------------------------------------


def drift_issues(world: World) -> list[dict[str, Any]]:
    return world.hub.open_issues("reconciler-drift")


def test_drift_opens_updates_and_closes_one_issue(world: World) -> None:
    seed_applied(world)
    world.hub.labels.add("reconciler-drift")
    decoy = world.hub.add_issue("Discuss drift", "people talk", ["reconciler-drift"], PEOPLE["alice"])
    assert only(world.schedule(), "reconciler drift").conclusion == "success"
    assert [i["number"] for i in drift_issues(world)] == [decoy["number"]]

    world.push_main(edit(world, SUPPORT, "Order status and returns", "Drifted once"))
    run = only(world.schedule(), "reconciler drift")
    assert run.conclusion == "failure"
    mine = [i for i in drift_issues(world) if i["number"] != decoy["number"]]
    assert len(mine) == 1 and "Drifted once" in mine[0]["body"]

    world.push_main(edit(world, SALON, "Book a slot in seconds", "Drifted twice"))
    only(world.schedule(), "reconciler drift")
    again = [i for i in drift_issues(world) if i["number"] != decoy["number"]]
    assert [i["number"] for i in again] == [mine[0]["number"]]
    assert "Drifted twice" in again[0]["body"]

    world.push_main(
        {
            **edit(world, SUPPORT, "Drifted once", "Order status and returns"),
            **edit(world, SALON, "Drifted twice", "Book a slot in seconds"),
        }
    )
    assert only(world.schedule(), "reconciler drift").conclusion == "success"
    assert [i["number"] for i in drift_issues(world)] == [decoy["number"]]
    closing = world.hub.comments_on(mine[0]["number"])
    assert closing and "No drift any more" in closing[-1]["body"]
    assert world.hub.issues[decoy["number"]]["body"] == "people talk"


def test_defect_6_a_crashed_drift_check_fails_and_leaves_the_issue_alone(world: World) -> None:
    seed_applied(world)
    world.push_main(edit(world, SUPPORT, "Order status and returns", "Drifted"))
    only(world.schedule(), "reconciler drift")
    [issue] = drift_issues(world)
    body = issue["body"]
    # The drift check is killed (exit 137, as by the OOM killer).
    cli_source = (world.clone / "reconciler" / "cli.py").read_text()
    # The entry point every way of running the reconciler goes through; only `drift` is killed.
    crash = cli_source.replace(
        '    cli(prog_name="reconciler")\n',
        '    if "drift" in sys.argv:\n        os.kill(os.getpid(), 9)\n    cli(prog_name="reconciler")\n',
    )
    assert crash != cli_source
    world.push_main(
        {**edit(world, SUPPORT, "Drifted", "Order status and returns"), "reconciler/cli.py": crash}
    )
    requests = len(world.hub.requests)
    run = only(world.schedule(), "reconciler drift")
    assert run.conclusion == "failure"
    assert world.hub.requests[requests:] == [], "no call to GitHub's API at all after a crash"
    assert drift_issues(world) == [issue] and world.hub.issues[issue["number"]]["body"] == body


# --- comments: size, errors, robustness -------------------------------------------------------------


def test_defect_5_a_large_hindi_plan_keeps_its_checksum_marker(world: World) -> None:
    hindi = "ग्राहक सेवा केंद्र, मुंबई शाखा — आपकी सहायता के लिए हम हर समय उपलब्ध हैं। "
    files = {}
    for number in EXTRA_NUMBERS:
        files[f"profiles/acme-in/{number}.yaml"] = yaml.safe_dump(
            {
                "phone_number": number,
                "account": "acme-in",
                "address": (hindi * 4)[:256],
                "description": (hindi * 4)[:256],
                "about": (hindi * 3)[:139],
            },
            allow_unicode=True,
        )
    pull, _runs = world.open_pr(files, branch="hindi")
    body = plan_comment(world, pull["number"])["body"]
    full = fresh_plan(world, pull["merge_sha"], None)
    assert len(full["changes"]) == 5 + len(EXTRA_NUMBERS)
    assert checksum_of(body) == full["checksum"], "the marker survived the cut"
    assert len(body.encode()) <= 64_000
    assert "more number(s) not shown" in body, "the plan was long enough to be cut"


def test_defect_7_a_broken_state_reaches_the_summary_and_the_comment(world: World) -> None:
    seed_applied(world)
    world.put_state({".reconciler/state.json": '{"format_version": 1, "numbers": '})  # a bad hand edit
    pull, runs = world.open_pr(edit(world, SUPPORT, "Order status and returns", "After the breakage"))
    summary = only(runs, "reconciler plan").job().summary
    assert "state.json" in summary and "reconciler-checksum" not in summary
    body = plan_comment(world, pull["number"])["body"]
    assert "state.json" in body and "<pre>" in body
    assert not CHECKSUM.search(body), "no plan, so nothing to apply"


def test_validation_errors_are_escaped_in_the_summary_and_the_comment(world: World) -> None:
    pull, runs = world.open_pr(
        {SUPPORT: (world.clone / SUPPORT).read_text() + 'adress: "<img src=x onerror=alert(1)> @everyone"\n'}
    )
    for text in (only(runs, "reconciler plan").job().summary, plan_comment(world, pull["number"])["body"]):
        assert "unknown key" in text and "adress" in text
        assert "<img" not in text and "@everyone" not in text


def test_defect_8_rerunning_the_plan_job_works(world: World) -> None:
    _pull, runs = world.open_pr(edit(world, SUPPORT, "Order status and returns", "Re-run me"))
    plan = only(runs, "reconciler plan")
    again = world.runner.rerun(plan)
    assert again.attempt == 2 and again.conclusion == "success", again.job().log
    github_section = (PROJECT / "README.md").read_text().split("## Using it in GitHub")[1].split("\n## ")[0]
    assert "re-run the job" not in github_section.lower()
    assert "push" in github_section


def test_a_failed_comment_listing_fails_the_job_instead_of_posting_a_duplicate(world: World) -> None:
    pull, _ = world.open_pr(edit(world, SUPPORT, "Order status and returns", "Once"))
    plan_comment(world, pull["number"])
    world.hub.fail("GET", rf"/issues/{pull['number']}/comments", status=502)
    runs = world.push_pr(pull, edit(world, SUPPORT, "Order status and returns", "Twice"))
    assert only(runs, "reconciler plan comment").conclusion == "failure"
    assert len(world.bot_comments(pull["number"])) == 1


# --- the files themselves ---------------------------------------------------------------------------


def workflow_files() -> dict[str, dict[str, Any]]:
    folder = PROJECT / ".github" / "workflows"
    return {path.name: yaml.safe_load(path.read_text()) for path in sorted(folder.glob("*.yml"))}


def test_the_comment_workflow_runs_one_at_a_time_per_pull_request() -> None:
    comment = workflow_files()["reconciler-plan-comment.yml"]
    groups = [comment.get("concurrency")] + [job.get("concurrency") for job in comment["jobs"].values()]
    group = next(g for g in groups if g)
    assert "head_branch" in group["group"] and "head_repository" in group["group"]
    assert group.get("cancel-in-progress") is False


def test_every_action_is_pinned_by_commit_sha_with_its_version() -> None:
    texts = [p.read_text() for p in (PROJECT / ".github" / "workflows").glob("*.yml")]
    texts.append((PROJECT / "action.yml").read_text())
    uses = [
        line.strip()
        for text in texts
        for line in text.splitlines()
        if line.strip().startswith(("uses:", "- uses:"))
    ]
    assert uses
    for line in uses:
        target = line.split("uses:", 1)[1].strip()
        if target.startswith("./"):
            continue
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40} # v\d+(\.\d+)*", target), line


def test_the_shipped_workflows_are_thin_callers_of_the_action() -> None:
    for name, workflow in workflow_files().items():
        if not name.startswith("reconciler-"):
            continue
        for job in workflow["jobs"].values():
            steps = job["steps"]
            assert len(steps) <= 2 and steps[-1]["uses"] == "./", name
            assert not any("run" in step for step in steps), name
