"""The state branch: where CI keeps the applied state when `main` is protected.

`main` can require pull requests; the workflow token then cannot push to it, and a state committed
there is lost. So the action keeps `state.json` and `audit.jsonl` on their own unprotected branch
(default `reconciler-state`), at the paths reconciler.yaml gives them. `fetch` puts that branch's
copy over the working tree's before a plan, drift check or apply (the working tree's copy, if any,
only seeds a branch that does not exist yet); `save` commits what apply changed back to it, retrying
on races, or fails loudly and leaves the files for an artifact. A remote backend (issue 13) keeps no
state in git: `state_files` then lists nothing and both commands do nothing.

Run as `python -I -m reconciler.github.statebranch fetch|save` inside the action, and as
`... statebranch git ARGS...` for the action's other git calls that reach GitHub. Git is authenticated
with GH_TOKEN through GIT_CONFIG_* variables (so the token is in neither argv nor .git/config), which
replace whatever the environment held: every request carries exactly one Authorization header.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .comment import state_backend, state_files, stray_state_files

BOT_NAME = "github-actions[bot]"
BOT_EMAIL = "41898282+github-actions[bot]@users.noreply.github.com"
PUSH_ATTEMPTS = 5
# Variables through which a caller's git settings would reach our git calls after ours.
_REPLACED = ("GIT_CONFIG_COUNT", "GIT_CONFIG_PARAMETERS")


class StateBranchError(Exception):
    pass


def _temp() -> Path:
    return Path(os.environ.get("RUNNER_TEMP") or "/tmp")


def clone_dir() -> Path:
    return _temp() / "reconciler-state-branch"


def snapshot_file() -> Path:
    return _temp() / "reconciler-state-snapshot.json"


def unsaved_dir() -> Path:
    return _temp() / "reconciler-unsaved-state"


def remote_url() -> str:
    server = os.environ.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    return f"{server}/{os.environ['GITHUB_REPOSITORY']}"


def _git_env() -> dict[str, str]:
    """The environment of every git call: exactly one Authorization header, GH_TOKEN's.

    github.com answers a request with two Authorization headers with `400 Duplicate header`, and git
    sends one per `http.extraheader` it finds: in the repository's config (actions/checkout writes one
    for `<server>/`), in the global config, in GIT_CONFIG_* or GIT_CONFIG_PARAMETERS variables a caller
    exported. So the caller's GIT_CONFIG_* variables are replaced, never appended to, and the header is
    set for the repository's own URL (more specific than any `<server>/` entry, so git's URL matching
    lets it win) after an empty value, which makes git drop every header collected before it.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not (name.startswith(("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_")) or name in _REPLACED)
    }
    token = os.environ.get("GH_TOKEN", "")
    settings: list[tuple[str, str]] = []
    if token:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        key = f"http.{remote_url()}.extraheader"
        settings = [(key, ""), (key, f"AUTHORIZATION: basic {basic}")]
    for index, (key, value) in enumerate(settings):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    env["GIT_CONFIG_COUNT"] = str(len(settings))
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_AUTHOR_NAME=BOT_NAME,
        GIT_AUTHOR_EMAIL=BOT_EMAIL,
        GIT_COMMITTER_NAME=BOT_NAME,
        GIT_COMMITTER_EMAIL=BOT_EMAIL,
    )
    return env


def git(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=_git_env(), capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        raise StateBranchError(f"git {args[0]} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def fetch(branch: str, config: str | None) -> str:
    """Put the state branch's files over the working tree's; return what was done, for the log."""
    files = state_files(config)
    removed = remove_stray_files(config)
    if not branch or not files:
        snapshot_file().write_text(json.dumps({name: _digest(Path(name)) for name in files}))
        if state_backend(config) != "local":
            return "The state is kept on S3 (state.backend s3), not in git: nothing to fetch."
        return removed + "The state is not kept in git here; nothing fetched."
    clone = clone_dir()
    shutil.rmtree(clone, ignore_errors=True)
    clone.mkdir(parents=True)
    git("init", "-q", cwd=clone)
    git("remote", "add", "origin", remote_url(), cwd=clone)
    listed = git("ls-remote", "--exit-code", "origin", f"refs/heads/{branch}", cwd=clone, check=False)
    if listed.returncode == 2:  # reachable, and the branch does not exist yet
        message = (
            f"The branch {branch} does not exist yet: planning against the state in this checkout "
            f"({', '.join(files)}, if any). The first apply creates the branch."
        )
    elif listed.returncode != 0:
        raise StateBranchError(
            f"cannot read the state branch {branch}: {listed.stderr.strip()}; refusing to go on "
            "with a state that may be stale"
        )
    else:
        git("fetch", "-q", "--depth=1", "origin", f"refs/heads/{branch}", cwd=clone)
        git("checkout", "-q", "--detach", "FETCH_HEAD", cwd=clone)
        _copy_over(files, clone, Path("."))
        head = git("rev-parse", "--short=12", "HEAD", cwd=clone).stdout.strip()
        message = f"The applied state comes from {branch} at {head}."
    snapshot_file().write_text(json.dumps({name: _digest(Path(name)) for name in files}))
    return removed + message


def _copy_over(names: list[str], source: Path, target: Path) -> None:
    """Make each named file in `target` what it is in `source`: a copy, or absent when it is."""
    for name in names:
        copy_from, copy_to = source / name, target / name
        copy_to.unlink(missing_ok=True)
        if copy_from.is_file():
            copy_to.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(copy_from, copy_to)


def remove_stray_files(config: str | None) -> str:
    """Delete a journal or lock that came with the checkout (they are never part of git); say so."""
    said = ""
    for name in stray_state_files(config):
        path = Path(name)
        if path.is_file() or path.is_symlink():
            path.unlink()
            said += (
                f"::warning::{name} was committed to git; removed it before running (a journal or lock "
                "is never part of the reviewed state).\n"
            )
    return said


def _keep_unsaved(files: list[str], config_dir: Path) -> None:
    """Copy the state, the audit log and any journal where the action's artifact step picks them up."""
    keep = unsaved_dir()
    keep.mkdir(parents=True, exist_ok=True)
    for name in files:
        for path in (Path(name), Path(name + ".journal")):
            if path.is_file():
                shutil.copyfile(path, keep / path.name)
    (keep / "PATHS.txt").write_text("".join(f"{name}\n" for name in files))
    _output("unsaved", "true")


def _output(name: str, value: str) -> None:
    if os.environ.get("GITHUB_OUTPUT"):
        with open(os.environ["GITHUB_OUTPUT"], "a") as file:
            file.write(f"{name}={value}\n")


def save(branch: str, config: str | None, message: str) -> str:
    """Commit the state files apply changed to the state branch; raise if they cannot be saved."""
    snapshot = json.loads(snapshot_file().read_text()) if snapshot_file().exists() else {}
    files = list(snapshot) or state_files(config)
    changed = [name for name in files if _digest(Path(name)) != snapshot.get(name)]
    if not changed:
        if not files and state_backend(config) != "local":
            return "The state is kept on S3 (state.backend s3), where apply wrote it: nothing to save in git."
        return "The state did not change; nothing to save."
    if not branch:
        _keep_unsaved(files, Path.cwd())
        raise StateBranchError(
            "apply wrote the state to this runner's disk, and no state branch is configured, so it "
            "would be lost; set the action's state-branch input (or use a remote state backend)"
        )
    clone = clone_dir()
    if not (clone / ".git").is_dir():
        raise StateBranchError("the state branch was never fetched in this job; run fetch first")
    _copy_over(files, Path("."), clone)
    git("add", "-A", "--", *files, cwd=clone)
    git("commit", "-q", "-m", message, cwd=clone)
    problem = ""
    for attempt in range(1, PUSH_ATTEMPTS + 1):
        pushed = git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=clone, check=False)
        if pushed.returncode == 0:
            return f"Saved the state to {branch} (attempt {attempt})."
        problem = pushed.stderr.strip()
        print(f"push attempt {attempt} failed: {problem}", file=sys.stderr)
        if "protected branch" in problem.lower() or "permission" in problem.lower():
            break  # a rule, not a race: retrying cannot help
        # Someone else moved the branch: replay our one commit on top of theirs. A rebase that stops
        # is aborted at once, so a conflict can never leave later attempts stuck mid-rebase.
        if git("fetch", "-q", "origin", f"refs/heads/{branch}", cwd=clone, check=False).returncode == 0:
            rebased = git("rebase", "-q", "FETCH_HEAD", cwd=clone, check=False)
            if rebased.returncode != 0:
                git("rebase", "--abort", cwd=clone, check=False)
                problem = f"the branch {branch} changed the same files meanwhile ({rebased.stdout.strip()})"
                break
        if attempt < PUSH_ATTEMPTS:
            time.sleep(attempt / 2)
    _keep_unsaved(files, Path.cwd())
    raise StateBranchError(f"could not push the state to {branch}: {problem}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["git"]:  # git ARGS...: one git call with the one credential path, its own output
        return subprocess.run(["git", *argv[1:]], env=_git_env(), check=False).returncode
    parser = argparse.ArgumentParser(
        prog="python -m reconciler.github.statebranch", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=["fetch", "save", "git"])
    parser.add_argument("--branch", default="reconciler-state", help="'' when the state is not kept in git")
    parser.add_argument("--config", help="reconciler.yaml (default: ./reconciler.yaml)")
    parser.add_argument("--message", default="reconciler: record an apply")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            print(fetch(args.branch, args.config))
        else:
            print(save(args.branch, args.config, args.message))
    except StateBranchError as error:
        print(f"::error::{error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
