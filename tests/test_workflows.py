"""The shipped GitHub workflows, run end to end: an emulated runner, the real gh against a fake GitHub,
reconciler sandbox as Kaleyra (tests/gha/). Each test is one chapter of the story in issue 10; the
ones named after a defect fail on the workflows that came before action.yml. The last chapter keeps
the state on S3 (issue 13): moto's S3 server, and AWS roles trusted as the README says.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from reconciler.cli import cli
from reconciler.state.lock import locked

from conftest import AWS_ENV
from gha.examples import NAMES, example_set
from gha.fakegithub import git
from gha.runner import AwsSession
from gha.world import (
    APPLY_ROLE,
    EXTRA_NUMBERS,
    KEYS,
    MARKER,
    ONBOARDING,
    PEOPLE,
    PROJECT,
    READ_ROLE,
    S3Setup,
    World,
    seed_applied,
    state_on_branch,
)

CHECKSUM = re.compile(r"<!-- reconciler-checksum: ([0-9a-f]{64}) -->")
SUPPORT = "profiles/acme-in/+914846000102.yaml"
SALON = "profiles/acme-in/+919980000103.yaml"


def need_gh() -> None:
    if shutil.which("gh") is None:
        message = "the workflow tests drive the real gh CLI: apt-get install gh (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    need_gh()
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


def fresh_plan(
    world: World, ref: str, state: dict[str, Any] | None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """`reconciler plan --format json` of a commit against a state (or, with the state on S3 and `env`
    holding credentials, against the bucket), computed here, outside CI."""
    tree = world.root / f"plan-{ref[:12]}"
    shutil.rmtree(tree, ignore_errors=True)
    world._git("worktree", "add", "-q", "--detach", str(tree), ref)
    if state is not None:
        (tree / ".reconciler").mkdir(exist_ok=True)
        (tree / ".reconciler" / "state.json").write_text(json.dumps(state))
    old = Path.cwd()
    os.chdir(tree)
    try:
        # The runners' environment points every account at the fake Kaleyra: the checksum covers where
        # each change is sent, so the plan computed here must see the same endpoint.
        env = {"NO_COLOR": "1", "KALEYRA_ENDPOINT": world.kaleyra.url, **(env or {})}
        result = CliRunner().invoke(cli, ["plan", "--format", "json"], env=env)
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
        "def plan_markdown(plan: Plan, title: str = 'Kaleyra profile plan', **_: object) -> str:\n"
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


def test_a_journal_or_lock_committed_in_a_pull_request_is_flagged_and_never_obeyed(world: World) -> None:
    state = seed_applied(world)
    # The journal claims the PR's change was already applied (one record after the state's serial),
    # and a lock would stop every apply: neither ever belongs in git.
    entry = dict(state["numbers"]["+914846000102"])
    entry["fields"] = {**entry["fields"], "description": "Hidden change"}
    record = {"lineage": state["lineage"], "serial": state["serial"] + 1, "phone_number": "+914846000102"}
    lock = {"host": "elsewhere", "pid": 4242, "user": "mallory", "command": "apply", "since": "T"}
    pull, _ = world.open_pr(
        {
            **edit(world, SUPPORT, "Order status and returns", "Hidden change"),
            ".reconciler/state.json.journal": json.dumps({**record, "entry": entry}) + "\n",
            ".reconciler/state.json.lock": json.dumps(lock),
        }
    )
    body = plan_comment(world, pull["number"])["body"]
    top = body[: body.index("###")]
    assert "commits the state's journal" in top and "commits the state's lock" in top, body[:1200]
    assert "Hidden change" in body[body.index("###") :], "the plan still shows the change"
    world.merge(pull)
    apply_run = world.runner.runs[-1]
    assert apply_run.workflow == "reconciler apply" and apply_run.conclusion == "success", apply_run.job().log
    assert world.kaleyra_numbers()["+914846000102"]["description"] == "Hidden change"
    assert "was committed to git; removed it" in apply_run.job().log


def test_every_git_call_sends_one_authorization_header_whatever_the_environment_holds(world: World) -> None:
    """github.com answers two Authorization headers with 400 `Duplicate header`. The runner's
    environment already carries an extraheader (a git setting exported for another purpose, with
    another token): the comment, apply and the state branch still send exactly one header, the job's."""
    other = world.hub.issue_token({"contents": "read"})
    world.runner.environment.update(
        GIT_CONFIG_COUNT="1",
        GIT_CONFIG_KEY_0="http.http://github.localhost/.extraheader",
        GIT_CONFIG_VALUE_0=f"AUTHORIZATION: basic {base64.b64encode(f'x:{other}'.encode()).decode()}",
    )
    seed_applied(world)
    pull, runs = world.open_pr(edit(world, SUPPORT, "Order status and returns", "One header"))
    comment = only(runs, "reconciler plan comment")
    assert comment.conclusion == "success", comment.job().log
    assert "One header" in plan_comment(world, pull["number"])["body"]
    world.merge(pull)
    apply_run = world.runner.runs[-1]
    assert apply_run.workflow == "reconciler apply" and apply_run.conclusion == "success", apply_run.job().log
    assert world.saved_state()["numbers"]["+914846000102"]["fields"]["description"] == "One header"
    assert world.hub.refused == []
    # The state branch was pushed with the apply job's token, not the one in the environment.
    assert world.hub.token_pushes == [("github-actions[bot]", "refs/heads/reconciler-state")]
    # ...and, as on GitHub, a push made with a job's token started no workflow run.
    assert [run.event_name for run in world.runner.runs].count("push") == 1, "only the merge's own push"


def test_statebranch_git_replaces_every_header_a_checkout_config_or_the_environment_holds(
    world: World,
) -> None:
    """actions/checkout leaves `http.<server>/.extraheader` in the repository's config (unless
    persist-credentials is false), a global config may hold one, and a caller may have exported
    GIT_CONFIG_* or GIT_CONFIG_PARAMETERS: git would send each of them. The one credential path
    sends the job token's header alone."""
    token = world.hub.issue_token({"contents": "read"})
    stale = world.hub.issue_token({"contents": "read"})
    header = f"AUTHORIZATION: basic {base64.b64encode(f'x-access-token:{stale}'.encode()).decode()}"
    repo = world.root / "checked-out"
    git("init", "-q", str(repo))
    git("-C", str(repo), "remote", "add", "origin", f"http://github.localhost/{world.hub.repository}")
    git("-C", str(repo), "config", "http.http://github.localhost/.extraheader", header)
    (world.root / "global.gitconfig").write_text(f'[http]\n\textraheader = "{header}"\n')
    env = {
        **world.person_env,
        "GIT_CONFIG_GLOBAL": str(world.root / "global.gitconfig"),
        "HTTP_PROXY": world.hub.proxy,
        "http_proxy": world.hub.proxy,
        "GH_TOKEN": token,
        "GITHUB_SERVER_URL": "http://github.localhost",
        "GITHUB_REPOSITORY": world.hub.repository,
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.http://github.localhost/.extraheader",
        "GIT_CONFIG_VALUE_0": header,
        "GIT_CONFIG_PARAMETERS": f"'http.extraheader'='{header}'",
    }

    def ls_remote() -> subprocess.CompletedProcess[str]:
        command = ["reconciler.github.statebranch", "git", "-C", str(repo), "ls-remote", "origin"]
        return subprocess.run([sys.executable, "-I", "-m", *command], env=env, capture_output=True, text=True)

    listed = ls_remote()
    assert listed.returncode == 0, listed.stderr
    assert "refs/heads/main" in listed.stdout
    assert world.hub.refused == []
    # The header that went out was the job token's: with it revoked, the same call is refused.
    world.hub.revoke(token)
    again = ls_remote()
    assert again.returncode != 0


def test_the_fake_github_refuses_a_duplicate_authorization_header(world: World) -> None:
    token = world.hub.issue_token({"contents": "read"})
    header = f"AUTHORIZATION: basic {base64.b64encode(f'x:{token}'.encode()).decode()}"
    url = f"http://github.localhost/{world.hub.repository}"
    env = {**world.person_env, "HTTP_PROXY": world.hub.proxy, "http_proxy": world.hub.proxy}
    once = subprocess.run(
        ["git", "-c", f"http.extraheader={header}", "ls-remote", url], env=env, capture_output=True, text=True
    )
    assert once.returncode == 0, once.stderr
    twice = subprocess.run(
        [
            "git",
            "-c",
            f"http.extraheader={header}",
            "-c",
            f"http.{url}.extraheader={header}",
            "ls-remote",
            url,
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert twice.returncode != 0 and "400" in twice.stderr, twice.stderr
    assert world.hub.refused and world.hub.refused[0][2] == "duplicate Authorization header"


def test_first_time_set_up_workflows_then_profiles_state_branch_on_first_use_then_state_pull(
    world: World,
) -> None:
    """A new team: main has no workflows yet. A pull request that adds them gets no comment (GitHub
    runs workflow_run workflows only from the default branch), so they land first, on their own; the
    next pull request gets its comment, its merge applies, and the first apply creates the state
    branch. `reconciler state pull` then brings that state to a person's checkout."""
    workflows = example_set("local-state")
    world.push_main(dict.fromkeys(workflows), "No workflows yet")
    assert world.runner.runs == []
    change = edit(world, SUPPORT, "Order status and returns", "First change")
    early, runs = world.open_pr({**workflows, **change}, branch="early")
    assert [run.workflow for run in runs] == ["reconciler plan"], "the comment workflow is not on main"
    assert world.bot_comments(early["number"]) == []

    setup, runs = world.open_pr(workflows, branch="workflows")
    assert runs == [], "no profile changed: nothing to plan"
    world.merge(setup)
    assert world.runner.runs[-1].workflow == "reconciler plan", "the merge touched no profile: no apply"
    with pytest.raises(RuntimeError):
        world.sha("refs/heads/reconciler-state")

    pull, runs = world.open_pr(change, branch="first")
    assert only(runs, "reconciler plan comment").conclusion == "success"
    assert "First change" in plan_comment(world, pull["number"])["body"]
    world.merge(pull)
    apply_run = world.runner.runs[-1]
    assert apply_run.workflow == "reconciler apply" and apply_run.conclusion == "success", apply_run.job().log
    saved = world.saved_state()
    assert saved is not None and world.sha("refs/heads/reconciler-state")

    world._git("checkout", "-q", "--detach", world.sha("refs/heads/main"))
    old = Path.cwd()
    os.chdir(world.clone)
    try:
        pulled = CliRunner().invoke(cli, ["state", "pull"], env={"NO_COLOR": "1"})
        planned = CliRunner().invoke(cli, ["plan"], env={"NO_COLOR": "1"})
    finally:
        os.chdir(old)
    assert pulled.exit_code == 0, pulled.output
    assert (
        "Pulled .reconciler/state.json, .reconciler/audit.jsonl from origin/reconciler-state" in pulled.stdout
    )
    assert json.loads((world.clone / ".reconciler" / "state.json").read_text()) == saved
    assert planned.exit_code == 0 and planned.stdout.startswith("No changes."), planned.output


def test_a_runner_without_gh_is_told_to_install_it_before_anything_runs(world: World) -> None:
    """Self-hosted runners may lack the GitHub CLI, which comment, apply and drift use."""
    bare = world.root / "bin-without-gh"
    bare.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        for tool in Path(folder).glob("*") if Path(folder).is_dir() else []:
            if tool.name != "gh" and not (bare / tool.name).exists():
                (bare / tool.name).symlink_to(tool)
    world.runner.environment["PATH"] = str(bare)
    seed_applied(world)
    _pull, runs = world.open_pr(edit(world, SUPPORT, "Order status and returns", "No gh here"))
    assert only(runs, "reconciler plan").conclusion == "success", "plan needs no gh"
    comment = only(runs, "reconciler plan comment")
    assert comment.conclusion == "failure"
    assert any("needs the GitHub CLI (gh)" in error for error in comment.job().errors()), comment.job().log


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


FORGE = """
name: reconciler plan
on: pull_request
permissions: {}
jobs:
  forge:
    runs-on: ubuntu-latest
    permissions:
      pull-requests: write
    steps:
      - env:
          GH_TOKEN: ${{ github.token }}
          NUMBER: ${{ github.event.pull_request.number }}
        run: |
          printf '%s\\n' '<!-- kaleyra-reconciler-plan -->' '### Kaleyra profile plan' '' \\
            'No changes. 5 number(s) match the applied state.' \\
            '<!-- reconciler-checksum: CHECKSUM -->' > body.md
          gh api -X POST "repos/$GITHUB_REPOSITORY/issues/$NUMBER/comments" -F body=@body.md > /dev/null
"""


def test_a_plan_comment_forged_by_a_pull_requests_own_workflow_is_refused(world: World) -> None:
    """A same-repository pull request's own workflow runs as github-actions[bot] and can grant itself
    `pull-requests: write`: it posts "No changes" with the true checksum of the merged plan. Apply
    re-renders the plan with trusted code, finds a comment that is not that rendering, and sends nothing."""
    seed_applied(world)
    pull, _ = world.open_pr(edit(world, SUPPORT, "Order status and returns", "Hidden by a forgery"))
    genuine = plan_comment(world, pull["number"])
    merged = fresh_plan(world, pull["merge_sha"], world.saved_state())
    forge = FORGE.replace("CHECKSUM", merged["checksum"])
    runs = world.push_pr(pull, {".github/workflows/reconciler-plan.yml": forge})
    assert only(runs, "reconciler plan").conclusion == "success", only(runs, "reconciler plan").job().log
    forged = [c for c in world.bot_comments(pull["number"]) if c["id"] != genuine["id"]]
    assert len(forged) == 1 and "No changes." in forged[0]["body"]
    assert forged[0]["user"]["login"] == "github-actions[bot]"
    assert checksum_of(forged[0]["body"]) == checksum_of(plan_comment_by_id(world, genuine["id"]))
    puts = len(world.kaleyra_puts())
    world.merge(pull)
    apply_run = world.runner.runs[-1]
    job = apply_run.job()
    assert apply_run.workflow == "reconciler apply" and apply_run.conclusion == "failure", job.log
    assert any("2 plan comments" in error for error in job.errors()), job.errors()
    assert world.kaleyra_puts()[puts:] == []
    assert world.kaleyra_numbers()["+914846000102"]["description"] != "Hidden by a forgery"


def plan_comment_by_id(world: World, comment_id: int) -> str:
    return str(world.hub.comments[comment_id]["body"])


def test_an_edited_bot_comment_is_refused_and_nothing_is_sent(world: World) -> None:
    """People with write access can edit any comment, the bot's included: apply compares the comment's
    plan section with its own rendering, byte for byte, and refuses the edited one."""
    seed_applied(world)
    pull, _ = world.open_pr(edit(world, SUPPORT, "Order status and returns", "Edited away"))
    comment = plan_comment(world, pull["number"])
    assert "Edited away" in comment["body"]
    world.hub.comments[comment["id"]]["body"] = comment["body"].replace("Edited away", "Harmless")
    puts = len(world.kaleyra_puts())
    world.merge(pull)
    apply_run = world.runner.runs[-1]
    job = apply_run.job()
    assert apply_run.workflow == "reconciler apply" and apply_run.conclusion == "failure", job.log
    assert any("edited or forged" in error for error in job.errors()), job.errors()
    assert world.kaleyra_puts()[puts:] == []


def test_rerunning_a_finished_apply_is_green_and_sends_and_saves_nothing(world: World) -> None:
    seed_applied(world)
    pull, _ = world.open_pr(edit(world, SUPPORT, "Order status and returns", "Applied once"))
    world.merge(pull)
    first = world.runner.runs[-1]
    assert first.workflow == "reconciler apply" and first.conclusion == "success", first.job().log
    puts, pushes = len(world.kaleyra_puts()), list(world.hub.token_pushes)
    state_tip = world.sha("refs/heads/reconciler-state")
    again = world.runner.rerun(first)
    assert again.attempt == 2 and again.conclusion == "success", again.job().log
    assert f"already applied at commit {first.sha[:12]}, in run {first.id} / at" in again.job().log
    assert world.kaleyra_puts()[puts:] == []
    assert world.sha("refs/heads/reconciler-state") == state_tip and world.hub.token_pushes == pushes


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


def onboarding_files(count: int) -> dict[str, str]:
    return {
        f"profiles/acme-in/{number}.yaml": yaml.safe_dump(
            {"phone_number": number, "account": "acme-in", "about": "Now on WhatsApp"}
        )
        for number in ONBOARDING[:count]
    }


def test_onboarding_300_numbers_in_one_reviewed_pull_request(world: World) -> None:
    """Over safety.max_changes, the plan says so in its first lines before merge, with how to go on;
    raising max_changes in the same pull request makes its merge apply all 300."""
    seed_applied(world)
    pull, runs = world.open_pr(onboarding_files(300), branch="onboarding")
    summary = only(runs, "reconciler plan").job().summary
    body = plan_comment(world, pull["number"])["body"]
    for text in (summary, body):
        top = "\n".join(text[text.index("### Kaleyra profile plan") :].splitlines()[:4])
        assert "Over the safety limit: this plan changes 300 numbers" in top, text[:1500]
        assert "raise safety.max_changes to at least 300" in top and "force" in top
    runs = world.push_pr(pull, edit(world, "reconciler.yaml", "max_changes: 50", "max_changes: 300"))
    body = plan_comment(world, pull["number"])["body"]
    assert "safety limit" not in body and "| 300 |" in body
    puts = len(world.kaleyra_puts())
    world.merge(pull)
    apply_run = world.runner.runs[-1]
    assert apply_run.workflow == "reconciler apply" and apply_run.conclusion == "success", apply_run.job().log
    assert len(world.kaleyra_puts()) - puts == 300
    assert len(world.saved_state()["numbers"]) == 5 + 300


def test_a_merged_plan_over_the_limit_is_applied_by_hand_with_force(world: World) -> None:
    seed_applied(world)
    pull, _ = world.open_pr(onboarding_files(60), branch="onboarding")
    reviewed = checksum_of(plan_comment(world, pull["number"])["body"])
    puts = len(world.kaleyra_puts())
    world.merge(pull)
    refused = world.runner.runs[-1]
    assert refused.workflow == "reconciler apply" and refused.conclusion == "failure"
    assert "safety.max_changes" in refused.job().log and world.kaleyra_puts()[puts:] == []
    forced = only(
        world.dispatch("reconciler-apply.yml", {"checksum": reviewed, "force": True}), "reconciler apply"
    )
    assert forced.conclusion == "success", forced.job().log
    assert len(world.kaleyra_puts()) - puts == 60
    # force without a checksum (a merge, or a dispatch without review) is refused before anything.
    again = only(world.dispatch("reconciler-apply.yml", {"checksum": "", "force": True}), "reconciler apply")
    assert again.conclusion == "failure" and any("force" in e for e in again.job().errors()), again.job().log


def test_a_comment_still_verifies_after_another_merge_added_numbers(world: World) -> None:
    """Two pull requests planned against the same state; the first adds a number. When the second
    merges, the new number counts as unchanged, so its summary row differs from the comment's in that
    count only: its changes are byte-equal, and it applies."""
    seed_applied(world)
    new_number = EXTRA_NUMBERS[0]
    adds = {
        f"profiles/acme-in/{new_number}.yaml": yaml.safe_dump(
            {"phone_number": new_number, "account": "acme-in", "about": "New"}
        )
    }
    first, _ = world.open_pr(adds, branch="one")
    second, _ = world.open_pr(edit(world, SALON, "Book a slot in seconds", "Second merge"), branch="two")
    world.merge(first)
    world.merge(second)
    applies = [run for run in world.runner.runs if run.workflow == "reconciler apply"]
    assert [run.conclusion for run in applies] == ["success", "success"], applies[-1].job().log
    assert world.kaleyra_numbers()["+919980000103"]["about"] == "Second merge"


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
    # The run keeps the fleet report, which shows the pending change, though the job failed on drift.
    page = world.runner.artifacts[(run.id, "reconciler-report")]["index.html"].decode()
    assert "Drifted once" in page and '<span class="s s-pending">pending</span>' in page

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


def test_reassert_on_corrects_a_console_edit_saves_the_state_then_drift_runs(world: World) -> None:
    """Kaleyra offers no read of profile fields: a console edit is corrected by re-sending, which the
    drift workflow's reassert job does when the repository variable RECONCILER_REASSERT is true."""
    state = seed_applied(world)
    for entry in state["numbers"].values():
        # Every number last sent, in full, long ago.
        entry["applied_at"] = entry["sent_in_full_at"] = "2020-01-01T00:00:00Z"
    audit = world.show("refs/heads/reconciler-state", ".reconciler/audit.jsonl") or ""
    world.put_state({".reconciler/state.json": json.dumps(state), ".reconciler/audit.jsonl": audit})
    config = world.show("refs/heads/main", "reconciler.yaml") or ""
    world.push_main(
        {"reconciler.yaml": config.rstrip("\n") + "\nreassert:\n  every_days: 30\n  max_per_run: 1\n"}
    )
    number = "+14155550100"  # the first of the oldest (all equally old: by number)
    desired = world.kaleyra_numbers()[number]["about"]
    edited = json.dumps({"about": "Edited in Kaleyra's console"}).encode()
    assert world.kaleyra.sandbox.console_edit(number, edited)[0] == 200

    # Off (the default): the reassert job is skipped, drift runs and cannot see the edit.
    run = only(world.schedule(), "reconciler drift")
    assert run.jobs["reassert"].conclusion == "skipped" and run.jobs["drift"].conclusion == "success"
    assert world.kaleyra_numbers()[number]["about"] == "Edited in Kaleyra's console"

    world.runner.vars["RECONCILER_REASSERT"] = "true"
    run = only(world.schedule(), "reconciler drift")
    assert run.jobs["reassert"].conclusion == "success", run.jobs["reassert"].log
    assert run.jobs["drift"].conclusion == "success", run.jobs["drift"].log
    assert run.jobs["reassert"].permissions.get("contents") == "write"
    assert run.jobs["drift"].permissions.get("contents") == "read", "the drift job itself stays read-only"
    assert world.kaleyra_numbers()[number]["about"] == desired
    saved = world.saved_state()
    assert saved is not None and saved["numbers"][number]["applied_at"] != "2020-01-01T00:00:00Z"
    others = [n for n in saved["numbers"] if n != number]
    assert all(saved["numbers"][n]["applied_at"] == "2020-01-01T00:00:00Z" for n in others)  # max_per_run
    records = [
        json.loads(line)
        for line in (world.show("refs/heads/reconciler-state", ".reconciler/audit.jsonl") or "").splitlines()
    ]
    assert records[-1]["phone_number"] == number and records[-1]["reassert"] is True
    assert drift_issues(world) == []


def test_defect_6_a_crashed_drift_check_fails_and_leaves_the_issue_alone(world: World) -> None:
    seed_applied(world)
    world.push_main(edit(world, SUPPORT, "Order status and returns", "Drifted"))
    only(world.schedule(), "reconciler drift")
    [issue] = drift_issues(world)
    body = issue["body"]
    # The drift check is killed (exit 137, as by the OOM killer).
    cli_source = (world.clone / "reconciler" / "cli" / "__init__.py").read_text()
    # The entry point every way of running the reconciler goes through; only `drift` is killed.
    crash = cli_source.replace(
        '        cli(prog_name="reconciler")\n',
        '        import os, sys\n\n        if "drift" in sys.argv:\n            os.kill(os.getpid(), 9)\n'
        '        cli(prog_name="reconciler")\n',
    )
    assert crash != cli_source
    world.push_main(
        {**edit(world, SUPPORT, "Drifted", "Order status and returns"), "reconciler/cli/__init__.py": crash}
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
    github_section = (PROJECT / "docs" / "how-to" / "github.md").read_text()
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


def test_the_repositorys_workflows_are_the_local_state_examples_derived() -> None:
    """One canonical set: users copy examples/github/; this repository runs the same files, with the
    action at `./` (tests/gha/examples.py), never a divergent copy."""
    for path, text in example_set("local-state").items():
        assert (PROJECT / path).read_text() == text, f"{path}: run python tests/gha/examples.py"
    for name in ("local-state", "s3"):
        files = sorted(p.name for p in (PROJECT / "examples" / "github" / name).glob("*.yml"))
        assert files == sorted(NAMES), name
        for file in files:
            workflow = yaml.safe_load((PROJECT / "examples" / "github" / name / file).read_text())
            assert all(job.get("timeout-minutes") for job in workflow["jobs"].values()), (name, file)
    docs = (
        "".join(p.read_text() for p in (PROJECT / "docs").rglob("*.md")) + (PROJECT / "README.md").read_text()
    )
    assert "```yaml\nname: reconciler" not in docs, "the docs link to the examples instead of copying them"
    assert "examples/github/local-state" in docs and "examples/github/s3" in docs
    ci = (PROJECT / ".ci" / "run").read_text()
    assert "examples/github/" in ci.split("actionlint", 1)[1] and "zizmor --offline" in ci


def test_every_action_is_pinned_by_commit_sha_with_its_version() -> None:
    texts = [p.read_text() for p in (PROJECT / ".github" / "workflows").glob("*.yml")]
    texts += [p.read_text() for p in (PROJECT / "examples" / "github").glob("*/*.yml")]
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
        if target.startswith("OWNER/kaleyra-reconciler@"):  # the examples: users pin their release
            assert re.fullmatch(r"OWNER/kaleyra-reconciler@[0-9a-f]{40} # vX\.Y\.Z: .*", target), line
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


# --- the state on S3 (issue 13) ---------------------------------------------------------------------

STATE_KEY = "kaleyra/state.json"
# The test's own credentials (an admin, outside CI), made at run time like KEYS: a leak is found.
ADMIN_ENV = {**AWS_ENV, "AWS_SECRET_ACCESS_KEY": f"aDmInSeCrEt{os.urandom(8).hex()}"}


def readme_s3_section() -> str:
    text = (PROJECT / "docs" / "how-to" / "remote-state-s3.md").read_text()
    start = text.index("## GitHub: OIDC roles, no stored AWS keys, nothing committed back")
    end = text.find("\n# ", start)
    return text[start : end if end >= 0 else len(text)]


def readme_trust() -> dict[str, list[str]]:
    """The trust policy the README gives both roles: the `sub` claims it allows."""
    [block] = re.findall(r"```json\n(.*?)```", readme_s3_section(), re.DOTALL)
    policy = json.loads(textwrap.dedent(block))
    subjects = []
    for statement in policy["Statement"]:
        assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
        for test in ("StringEquals", "StringLike"):
            value = statement["Condition"].get(test, {}).get("token.actions.githubusercontent.com:sub", [])
            subjects += [value] if isinstance(value, str) else value
    assert subjects
    return {READ_ROLE: subjects, APPLY_ROLE: subjects}


@pytest.fixture
def s3_world(tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> Iterator[World]:
    need_gh()
    story = World(tmp_path, S3Setup(s3_endpoint, s3_bucket, ADMIN_ENV, key=STATE_KEY, trust=readme_trust()))
    yield story
    story.close()


def sessions(world: World, workflow: str) -> list[AwsSession]:
    return [session for session in world.runner.aws_sessions if session.workflow == workflow]


def assert_no_secret_anywhere(world: World) -> None:
    """No Kaleyra key, no AWS secret or session token (the jobs' or the test's own) in any comment,
    issue, summary, log, artifact, repository blob or bucket object."""
    written = world.everything_written()
    secrets = [*KEYS.values(), ADMIN_ENV["AWS_SECRET_ACCESS_KEY"]]
    secrets += [value for session in world.runner.aws_sessions for value in (session.secret, session.token)]
    assert world.runner.aws_sessions, "no job assumed a role"
    for secret in secrets:
        assert secret not in written


def test_s3_a_pull_request_is_planned_against_the_bucket_by_the_comment_job_with_the_read_role(
    s3_world: World,
) -> None:
    world = s3_world
    seed_applied(world)
    objects = world.s3_objects()
    pull, runs = world.open_pr(edit(world, SUPPORT, "Order status and returns", "Order tracking"))
    plan = only(runs, "reconciler plan")
    assert plan.conclusion == "success", plan.job().log
    assert "Validated only" in plan.job().summary and "reconciler-checksum" not in plan.job().summary
    assert sessions(world, "reconciler plan") == [], "the pull request's own code holds no AWS role"

    comment = only(runs, "reconciler plan comment")
    assert comment.conclusion == "success", comment.job().log
    assert comment.job().permissions["id-token"] == "write"
    [session] = sessions(world, "reconciler plan comment")
    assert session.role == READ_ROLE and session.subject == "repo:acme/profiles:ref:refs/heads/main"
    body = plan_comment(world, pull["number"])["body"]
    assert "Order tracking" in body and "changes where the applied state is kept" not in body
    # The plan is the one against the bucket's state: one change (against no state, all five numbers
    # would be created).
    expected = fresh_plan(world, pull["merge_sha"], None, env=ADMIN_ENV)
    assert len(expected["changes"]) == 1 and checksum_of(body) == expected["checksum"]
    assert world.s3_objects() == objects, "reading the state wrote nothing to the bucket"
    assert_no_secret_anywhere(world)


def test_s3_a_merge_applies_with_the_write_role_and_commits_nothing_back(s3_world: World) -> None:
    world = s3_world
    seed_applied(world)
    world.hub.protect("main")
    pull, _ = world.open_pr(edit(world, SUPPORT, "Order status and returns", "Applied from the bucket"))
    assert "Applied from the bucket" in plan_comment(world, pull["number"])["body"]
    refs = git("for-each-ref", cwd=world.hub.bare)
    before, after = world.merge(pull, run=False)
    merged_refs = git("for-each-ref", cwd=world.hub.bare)
    # Meanwhile a run from another repository (or runner) holds the lock in the bucket, until apply has
    # said (in the log its step keeps) that it waits for it (--lock-timeout); then apply plans afresh.
    holding = threading.Event()

    def another_run() -> None:
        with locked(world.s3_store(), "apply (another repository)", 0, lambda _text: None):
            holding.set()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not any(
                "waiting up to" in log.read_text(errors="replace")
                for log in world.root.glob("runs/*-apply/temp/apply.log")
            ):
                time.sleep(0.1)

    other = threading.Thread(target=another_run)
    other.start()
    assert holding.wait(30)
    apply_run = only(world.push_event(before, after), "reconciler apply")
    other.join()
    job = apply_run.job()
    assert apply_run.conclusion == "success", job.log
    assert "waiting up to 600 s for the state lock, held by" in job.log, job.log
    assert job.log.index("apply (another repository)") < job.log.index("Checksum:"), "planned after the wait"
    [session] = sessions(world, "reconciler apply")
    assert session.role == APPLY_ROLE and session.subject == "repo:acme/profiles:ref:refs/heads/main"
    assert job.permissions == {"contents": "read", "pull-requests": "read", "id-token": "write"}

    assert world.kaleyra_numbers()["+914846000102"]["description"] == "Applied from the bucket"
    applied = world.s3_applied()
    assert len(applied) == 5 and applied["+914846000102"]["description"] == "Applied from the bucket"
    keys = set(world.s3_objects())
    assert STATE_KEY in keys and f"{STATE_KEY}.lock" not in keys
    assert not [key for key in keys if key.startswith(f"{STATE_KEY}.journal/")], "compacted at the end"
    audit = [key for key in keys if key.startswith(f"{STATE_KEY}.audit/")]
    assert len(audit) == 2, "the seed's audit object and this apply's"
    # Nothing committed back: no ref moved but the merge itself, no state branch, no state on main,
    # no artifact.
    assert merged_refs != refs and git("for-each-ref", cwd=world.hub.bare) == merged_refs
    assert "reconciler-state" not in merged_refs
    assert world.show("refs/heads/main", ".reconciler/state.json") is None
    assert not [name for (run_id, name) in world.runner.artifacts if run_id == apply_run.id]

    # The next merge sends only its own change: apply read the state it left in the bucket.
    puts = len(world.kaleyra_puts())
    pull, _ = world.open_pr(edit(world, SALON, "Book a slot in seconds", "Book in seconds"), branch="next")
    world.merge(pull)
    assert world.runner.runs[-1].workflow == "reconciler apply"
    assert world.runner.runs[-1].conclusion == "success", world.runner.runs[-1].job().log
    assert [body["phone_number"] for body in world.kaleyra_puts()[puts:]] == ["+919980000103"]
    assert world.s3_applied()["+919980000103"]["about"] == "Book in seconds"
    assert_no_secret_anywhere(world)


def test_s3_drift_reads_the_bucket_with_the_read_role(s3_world: World) -> None:
    world = s3_world
    seed_applied(world)
    world.runner.skip.add(".github/workflows/reconciler-apply.yml")  # pushes to main without a PR
    objects = world.s3_objects()
    # No drift: the state in the bucket matches (against no state, every number would have drifted).
    run = only(world.schedule(), "reconciler drift")
    assert run.conclusion == "success", run.job().log
    assert drift_issues(world) == []

    world.push_main(edit(world, SUPPORT, "Order status and returns", "Drifted on S3"))
    run = only(world.schedule(), "reconciler drift")
    assert run.conclusion == "failure"
    [issue] = drift_issues(world)
    assert "Drifted on S3" in issue["body"] and "+914846000102" in issue["body"]
    drift_sessions = sessions(world, "reconciler drift")
    assert [s.role for s in drift_sessions] == [READ_ROLE, READ_ROLE]
    assert world.s3_objects() == objects, "drift wrote nothing to the bucket"
    assert_no_secret_anywhere(world)


def test_s3_a_fork_pull_request_is_validated_without_credentials_and_planned_by_the_trusted_job(
    s3_world: World,
) -> None:
    world = s3_world
    seed_applied(world)
    fork, runs = world.open_pr(
        edit(world, SALON, "Book a slot in seconds", "From a fork"),
        branch="main",
        fork=True,
        author="mallory",
    )
    plan = only(runs, "reconciler plan")
    assert plan.conclusion == "success", plan.job().log
    assert "Validated only" in plan.job().summary
    assert sessions(world, "reconciler plan") == []
    body = plan_comment(world, fork["number"])["body"]
    assert "From a fork" in body
    expected = fresh_plan(world, fork["merge_sha"], None, env=ADMIN_ENV)
    assert len(expected["changes"]) == 1 and checksum_of(body) == expected["checksum"]
    assert [s.role for s in sessions(world, "reconciler plan comment")] == [READ_ROLE]

    # A fork's invalid file fails its plan job, with the error in the summary, still without AWS.
    invalid = (
        edit(world, SALON, "Book a slot in seconds", "Book a slot in seconds")[SALON] + "adress: nowhere\n"
    )
    _broken, runs = world.open_pr(
        {SALON: invalid},
        branch="broken",
        fork=True,
        author="mallory",
    )
    plan = only(runs, "reconciler plan")
    assert plan.conclusion == "failure" and "adress" in plan.job().summary
    assert "Validated only" not in plan.job().summary
    assert sessions(world, "reconciler plan") == []


@pytest.mark.parametrize("fork", [False, True], ids=["branch", "fork"])
def test_s3_pull_request_code_cannot_assume_either_role(s3_world: World, fork: bool) -> None:
    """A pull request that rewrites the plan workflow to assume the roles gets neither: a branch's job
    has the `sub` of a pull request, which the README's trust policy does not allow, and a fork's job
    gets no OIDC token at all."""
    world = s3_world
    steps = "".join(
        f"""
      - uses: aws-actions/configure-aws-credentials@e6de054238d6b7531b4efff3b6587d9aade6a06c # v6.2.3
        continue-on-error: true
        with:
          role-to-assume: {role}
          aws-region: us-east-1"""
        for role in (READ_ROLE, APPLY_ROLE)
    )
    grab = f"""
name: reconciler plan
on: pull_request
permissions:
  contents: read
  id-token: write
jobs:
  plan:
    runs-on: ubuntu-latest
    steps:{steps}
"""
    _pull, runs = world.open_pr(
        {
            **edit(world, SUPPORT, "Order status and returns", "Grab the roles"),
            ".github/workflows/reconciler-plan.yml": grab,
        },
        branch="grab",
        fork=fork,
        author="mallory",
    )
    job = only(runs, "reconciler plan").job()
    assert sessions(world, "reconciler plan") == []
    outcomes = [step.outcome for step in job.steps]
    assert outcomes == ["failure", "failure"], job.log
    reason = "`id-token` permission" if fork else "Not authorized to perform sts:AssumeRoleWithWebIdentity"
    assert all(reason in error for error in job.errors()) and len(job.errors()) == 2, job.errors()


def test_s3_a_job_without_id_token_write_gets_no_credentials_and_fails_closed(s3_world: World) -> None:
    world = s3_world
    seed_applied(world)
    workflow = (world.show("refs/heads/main", ".github/workflows/reconciler-drift.yml") or "") + "\n"
    without = re.sub(r"\n *id-token: write[^\n]*", "", workflow)
    assert without != workflow
    world.push_main(edit(world, SUPPORT, "Order status and returns", "Drifted"))
    only(world.schedule(), "reconciler drift")
    [issue] = drift_issues(world)
    world.push_main({".github/workflows/reconciler-drift.yml": without})
    requests = len(world.hub.requests)
    run = only(world.schedule(), "reconciler drift")
    assert run.conclusion == "failure"
    assert any("`id-token` permission" in error for error in run.jobs["drift"].errors()), run.jobs[
        "drift"
    ].errors()
    assert [s.workflow for s in world.runner.aws_sessions].count("reconciler drift") == 1, "only the first"
    assert world.hub.requests[requests:] == [], "no call to GitHub's API: the drift issue is left alone"
    assert drift_issues(world) == [issue]


def test_s3_a_pull_request_moving_the_state_is_flagged_and_planned_against_the_trusted_bucket(
    s3_world: World,
) -> None:
    world = s3_world
    state = seed_applied(world)
    assert world.s3 is not None
    # Elsewhere in the bucket, a state that claims the change was applied already.
    state["numbers"]["+914846000102"]["fields"]["description"] = "Hidden change"
    elsewhere = "kaleyra/elsewhere.json"
    world.s3_client().put_object(Bucket=world.s3.bucket, Key=elsewhere, Body=json.dumps(state).encode())
    config = (world.clone / "reconciler.yaml").read_text()
    moved = config.replace(f"key: {STATE_KEY}\n", f"key: {elsewhere}\n")
    assert moved != config
    pull, runs = world.open_pr(
        {
            **edit(world, SUPPORT, "Order status and returns", "Hidden change"),
            "reconciler.yaml": moved,
        }
    )
    assert only(runs, "reconciler plan comment").conclusion == "success"
    body = plan_comment(world, pull["number"])["body"]
    top = body[: body.index("###")]
    assert "changes where the applied state is kept" in top
    assert f"key: {STATE_KEY} → {elsewhere}" in top
    # Planned against the state where main keeps it, so the change shows; against the state the pull
    # request points at, there would be nothing to see.
    assert "Hidden change" in body[body.index("###") :]
    hidden = fresh_plan(world, pull["merge_sha"], None, env=ADMIN_ENV)
    assert hidden["changes"] == [] and checksum_of(body) != hidden["checksum"]

    # Merged, apply reads the state at the new key, where the change looks applied: its plan is not the
    # reviewed one, so it refuses and sends nothing.
    puts = len(world.kaleyra_puts())
    world.merge(pull)
    apply_run = world.runner.runs[-1]
    assert apply_run.workflow == "reconciler apply" and apply_run.conclusion == "failure"
    assert world.kaleyra_puts()[puts:] == []
    assert world.kaleyra_numbers()["+914846000102"]["description"] != "Hidden change"


def test_s3_a_role_given_to_the_plan_job_is_refused_before_anything_runs(s3_world: World) -> None:
    """A repository that passes a role to the plan command (which runs the pull request's code) is told
    to remove it; no role is assumed and nothing is planned."""
    world = s3_world
    workflow = (world.show("refs/heads/main", ".github/workflows/reconciler-plan.yml") or "") + "\n"
    misconfigured = workflow.replace(
        "          command: plan\n",
        "          command: plan\n"
        "          aws-role-to-assume: ${{ vars.RECONCILER_AWS_READ_ROLE }}\n"
        "          aws-region: ${{ vars.RECONCILER_AWS_REGION }}\n",
    ).replace("      contents: read\n", "      contents: read\n      id-token: write\n")
    assert misconfigured.count("RECONCILER_AWS") == 2 and "id-token: write" in misconfigured
    world.push_main({".github/workflows/reconciler-plan.yml": misconfigured})
    _pull, runs = world.open_pr(edit(world, SUPPORT, "Order status and returns", "Planned with a role?"))
    job = only(runs, "reconciler plan").job()
    assert only(runs, "reconciler plan").conclusion == "failure"
    assert any("must not hold an AWS role" in error for error in job.errors()), job.errors()
    assert sessions(world, "reconciler plan") == []
    outcomes = {step.name: step.outcome for step in job.steps}
    assert outcomes["Assume the AWS role for the remote state"] == "skipped"
    assert outcomes["Validate and plan"] == "skipped"


def test_the_action_runs_python_isolated_from_the_checked_out_tree() -> None:
    """A merged pull request could add `pip/__main__.py` or `html.py`: with the workspace on sys.path,
    it would run in a job holding the Kaleyra keys. Every Python the action runs is isolated (-I)."""
    text = (PROJECT / "action.yml").read_text()
    calls = re.findall(r"\bpython3? (?!-I\b)[-\w]", text)
    assert calls == [], calls
    assert '-c "$ACTION_PATH/constraints.txt"' in text  # and dependencies at the versions CI tested
