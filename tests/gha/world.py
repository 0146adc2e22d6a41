"""The story's world: a repository on the fake GitHub, people who push and merge, a runner, Kaleyra.

The repository starts as a copy of this project (its workflows, action.yml, package, profiles and
config), so the tests run exactly the files this commit ships. With `S3Setup`, its reconciler.yaml
keeps the state in a bucket of moto's S3 server instead, and the repository variables name the two
AWS roles the workflows assume, trusted as the README's "Remote state" section says.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.config import load_config
from reconciler.kaleyra.sandbox import Sandbox, SandboxAccount, provision, serve_in_thread
from reconciler.profiles import load_profiles

from .examples import example_set
from .fakegithub import FakeGitHub, git
from .runner import Run, Runner

PROJECT = Path(__file__).resolve().parents[2]
# Made at run time, so that a search of everything written (this project's own files included) for
# them finds only a leak.
KEYS = {name: f"kEy-{os.urandom(8).hex()}" for name in ("KALEYRA_API_KEY_ACME_IN", "KALEYRA_API_KEY_ACME_US")}
PEOPLE = {
    "alice": {"login": "alice", "id": 101, "type": "User"},
    "mallory": {"login": "mallory", "id": 666, "type": "User"},
}
MARKER = "<!-- kaleyra-reconciler-plan -->"
EXTRA_NUMBERS = [f"+9199800{index:05d}" for index in range(200, 260)]
ONBOARDING = [f"+9199811{index:05d}" for index in range(300)]  # a new team's fleet, live on Kaleyra
READ_ROLE = "arn:aws:iam::123456789012:role/reconciler-read"
APPLY_ROLE = "arn:aws:iam::123456789012:role/reconciler-apply"
LOCAL_STATE = "state:\n  path: .reconciler/state.json\n"


@dataclass
class S3Setup:
    """The state on S3: a bucket on moto's server, and the credentials the test itself uses (an admin,
    outside CI) to seed and inspect it."""

    endpoint: str
    bucket: str
    admin_env: dict[str, str]
    key: str = "kaleyra/state.json"
    region: str = "us-east-1"
    # Trust policies: the `sub` claims each role allows (ORG/REPO stands for the repository).
    trust: dict[str, list[str]] = field(default_factory=dict)

    def section(self, **changes: str) -> str:
        settings = {
            "backend": "s3",
            "bucket": self.bucket,
            "key": self.key,
            "region": self.region,
            "endpoint_url": self.endpoint,
            **changes,
        }
        return "state:\n" + "".join(f"  {name}: {value}\n" for name, value in settings.items())


def project_files() -> dict[str, bytes]:
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=PROJECT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    return {name: (PROJECT / name).read_bytes() for name in listed if name and (PROJECT / name).is_file()}


class World:
    def __init__(self, root: Path, s3: S3Setup | None = None):
        self.root = root
        self.s3 = s3
        self.hub = FakeGitHub(root)
        self.person_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
            "GIT_AUTHOR_NAME": "Alice",
            "GIT_AUTHOR_EMAIL": "alice@example.com",
            "GIT_COMMITTER_NAME": "Alice",
            "GIT_COMMITTER_EMAIL": "alice@example.com",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": str(root / "person.gitconfig"),
        }
        self.clone = root / "alice"
        self._git("clone", "-q", str(self.hub.bare), str(self.clone), cwd=root)
        for name, data in project_files().items():
            (self.clone / name).parent.mkdir(parents=True, exist_ok=True)
            (self.clone / name).write_bytes(data)
        # The caller workflows users copy (examples/github/), derived for the action at `./`: the
        # local-state set is the repository's own .github/workflows; a state on S3 gets the s3 set.
        for name, text in example_set("s3" if s3 is not None else "local-state").items():
            (self.clone / name).write_text(text)
        if s3 is not None:
            config = (self.clone / "reconciler.yaml").read_text()
            assert LOCAL_STATE in config, "the project's reconciler.yaml no longer has the state section"
            (self.clone / "reconciler.yaml").write_text(config.replace(LOCAL_STATE, s3.section()))
        self._git("add", "-A")
        self._git("commit", "-q", "-m", "The project, as this test run found it")
        self._git("push", "-q", "origin", "HEAD:refs/heads/main")
        config = load_config(str(self.clone / "reconciler.yaml"))
        accounts = provision(config, load_profiles(config))
        accounts = [
            SandboxAccount(a.sid, a.waba_id, {**a.numbers, **{n: {} for n in EXTRA_NUMBERS + ONBOARDING}})
            for a in accounts
        ]
        self.kaleyra = serve_in_thread(Sandbox(accounts, api_key=None))
        # No instance metadata service to ask for AWS credentials: a job has only what it assumes.
        self.runner = Runner(
            self.hub, root, {"KALEYRA_ENDPOINT": self.kaleyra.url, "AWS_EC2_METADATA_DISABLED": "true"}
        )
        self.runner.vars["RECONCILER_LIVE"] = "true"
        self.runner.secrets.update(KEYS)
        if s3 is not None:
            main = "repo:ORG/REPO:ref:refs/heads/main"
            self.runner.aws_roles = {
                role: [pattern.replace("ORG/REPO", self.hub.repository) for pattern in patterns]
                for role, patterns in (s3.trust or {READ_ROLE: [main], APPLY_ROLE: [main]}).items()
            }
            self.runner.vars.update(
                RECONCILER_AWS_REGION=s3.region,
                RECONCILER_AWS_READ_ROLE=READ_ROLE,
                RECONCILER_AWS_APPLY_ROLE=APPLY_ROLE,
            )

    def close(self) -> None:
        self.kaleyra.shutdown()
        self.kaleyra.server_close()
        self.hub.close()

    # --- people at work --------------------------------------------------------------------------

    def _git(self, *args: str, cwd: Path | None = None) -> str:
        return git(*args, cwd=cwd or self.clone, env=self.person_env)

    def sha(self, ref: str) -> str:
        return git("rev-parse", ref, cwd=self.hub.bare)

    def show(self, ref: str, path: str) -> str | None:
        try:
            return git("show", f"{ref}:{path}", cwd=self.hub.bare)
        except RuntimeError:
            return None

    def _commit(self, base: str, files: dict[str, str | bytes | None], message: str) -> str:
        self._git("fetch", "-q", "origin", "+refs/*:refs/remotes/origin/all/*")
        self._git("checkout", "-q", "--detach", base)
        for name, content in files.items():
            path = self.clone / name
            if content is None:
                path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content.encode() if isinstance(content, str) else content)
        self._git("add", "-A")
        # What a test names is committed even where .gitignore would leave it out (`git add -f`), as a
        # determined pull request can.
        named = [name for name, content in files.items() if content is not None]
        if named:
            self._git("add", "-f", "--", *named)
        self._git("commit", "-q", "--allow-empty", "-m", message)
        return self._git("rev-parse", "HEAD")

    def push_main(self, files: dict[str, str | bytes | None], message: str = "A change on main") -> list[Run]:
        before = self.sha("refs/heads/main")
        after = self._commit(before, files, message)
        self._git("push", "-q", "origin", "HEAD:refs/heads/main")
        return self._push_event(before, after)

    def _push_event(self, before: str, after: str) -> list[Run]:
        event = {
            "ref": "refs/heads/main",
            "before": before,
            "after": after,
            "repository": self.runner._repository_json(),
            "sender": PEOPLE["alice"],
        }
        return self.runner.trigger("push", event, after, "refs/heads/main")

    def _refresh_merge_ref(self, pull: dict[str, Any]) -> None:
        base = self.sha("refs/heads/main")
        self._git("checkout", "-q", "--detach", base)
        self._git("merge", "-q", "--no-ff", "-m", f"Merge {pull['head_sha']} into {base}", pull["head_sha"])
        merge = self._git("rev-parse", "HEAD")
        number = pull["number"]
        self._git(
            "push",
            "-q",
            "-f",
            "origin",
            f"{pull['head_sha']}:refs/pull/{number}/head",
            f"{merge}:refs/pull/{number}/merge",
        )
        pull["merge_sha"], pull["base_sha"] = merge, base

    def open_pr(
        self,
        files: dict[str, str | bytes | None],
        branch: str = "change",
        fork: bool = False,
        author: str = "alice",
        run: bool = True,
    ) -> tuple[dict[str, Any], list[Run]]:
        base = self.sha("refs/heads/main")
        head = self._commit(base, files, f"Change on {branch}")
        if not fork:
            self._git("push", "-q", "origin", f"HEAD:refs/heads/{branch}")
        owner = "mallory" if fork else self.hub.repository.split("/")[0]
        pull = self.hub.add_pull(
            head_repo=f"{owner}/profiles" if fork else self.hub.repository,
            head_ref=branch,
            head_sha=head,
            base_ref="main",
            user=PEOPLE[author],
        )
        self._refresh_merge_ref(pull)
        return pull, (self._pull_event(pull, "opened") if run else [])

    def push_pr(self, pull: dict[str, Any], files: dict[str, str | bytes | None]) -> list[Run]:
        head = self._commit(pull["head_sha"], files, "Another change")
        if pull["head_repo"] == self.hub.repository:
            self._git("push", "-q", "-f", "origin", f"HEAD:refs/heads/{pull['head_ref']}")
        pull["head_sha"] = head
        self._refresh_merge_ref(pull)
        return self._pull_event(pull, "synchronize")

    def _pull_event(self, pull: dict[str, Any], action: str) -> list[Run]:
        head_repo = pull["head_repo"]
        event = {
            "action": action,
            "number": pull["number"],
            "pull_request": {
                "number": pull["number"],
                "head": {
                    "sha": pull["head_sha"],
                    "ref": pull["head_ref"],
                    "repo": {"full_name": head_repo, "fork": head_repo != self.hub.repository},
                },
                "base": {"sha": pull["base_sha"], "ref": "main", "repo": {"full_name": self.hub.repository}},
            },
            "repository": self.runner._repository_json(),
            "sender": pull["user"],
        }
        return self.runner.trigger(
            "pull_request", event, pull["merge_sha"], f"refs/pull/{pull['number']}/merge"
        )

    def merge(self, pull: dict[str, Any], run: bool = True) -> tuple[str, str]:
        """Merge with a merge commit, as a person with the rights to; returns (before, after)."""
        before = self.sha("refs/heads/main")
        self._git("fetch", "-q", "origin", "+refs/*:refs/remotes/origin/all/*")
        self._git("checkout", "-q", "--detach", before)
        self._git("merge", "-q", "--no-ff", "-m", f"Merge pull request #{pull['number']}", pull["head_sha"])
        after = self._git("rev-parse", "HEAD")
        self._git("push", "-q", "origin", "HEAD:refs/heads/main")
        pull.update(state="closed", merged_at="2026-01-01T00:00:00Z", merge_commit_sha=after)
        self.hub.issues[pull["number"]]["state"] = "closed"
        if run:
            self._push_event(before, after)
        return before, after

    def push_event(self, before: str, after: str) -> list[Run]:
        return self._push_event(before, after)

    def schedule(self) -> list[Run]:
        tip = self.sha("refs/heads/main")
        return self.runner.trigger("schedule", {"schedule": "17 6 * * *"}, tip, "refs/heads/main")

    def dispatch(self, workflow: str, inputs: dict[str, Any] | None = None) -> list[Run]:
        tip = self.sha("refs/heads/main")
        event = {
            "inputs": inputs or {},
            "ref": "refs/heads/main",
            "repository": self.runner._repository_json(),
        }
        return self.runner.trigger(
            "workflow_dispatch", event, tip, "refs/heads/main", inputs or {}, only=workflow
        )

    # --- what the world looks like ---------------------------------------------------------------

    def kaleyra_numbers(self) -> dict[str, dict[str, str]]:
        with self.kaleyra.sandbox.lock:
            return {n: dict(f) for a in self.kaleyra.sandbox.accounts for n, f in a.numbers.items()}

    def kaleyra_puts(self) -> list[dict[str, Any]]:
        with self.kaleyra.sandbox.lock:
            return [dict(r["body"]) for r in self.kaleyra.sandbox.requests]

    def bot_comments(self, number: int) -> list[dict[str, Any]]:
        return [c for c in self.hub.comments_on(number) if c["user"]["type"] == "Bot"]

    def put_state(self, files: dict[str, str]) -> str:
        """A person writes the state where CI keeps it (a commit on the state branch, or on main)."""
        if not state_on_branch():
            return self.push_main(files, "Record the state") and self.sha("refs/heads/main")
        branch = "refs/heads/reconciler-state"
        try:
            base = self.sha(branch)
        except RuntimeError:
            base = None
        work = self.root / "state-person"
        shutil.rmtree(work, ignore_errors=True)
        self._git("init", "-q", str(work), cwd=self.root)
        if base:
            self._git("fetch", "-q", str(self.hub.bare), branch, cwd=work)
            self._git("checkout", "-q", "--detach", "FETCH_HEAD", cwd=work)
        for name, content in files.items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_text(content)
        self._git("add", "-A", cwd=work)
        self._git("commit", "-q", "-m", "A person edits the state", cwd=work)
        self._git("push", "-q", str(self.hub.bare), f"HEAD:{branch}", cwd=work)
        return self._git("rev-parse", "HEAD", cwd=work)

    def saved_state(self) -> dict[str, Any] | None:
        """The applied state as the repository keeps it: on the state branch, else on main."""
        for ref in ("refs/heads/reconciler-state", "refs/heads/main"):
            text = self.show(ref, ".reconciler/state.json")
            if text:
                return json.loads(text)
        return None

    # --- the state on S3 ---------------------------------------------------------------------------

    def s3_client(self) -> Any:
        import boto3

        assert self.s3 is not None
        env = self.s3.admin_env
        return boto3.client(
            "s3",
            endpoint_url=self.s3.endpoint,
            region_name=self.s3.region,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )

    def s3_objects(self) -> dict[str, tuple[str, bytes]]:
        """Every object in the bucket: key -> (ETag, bytes)."""
        assert self.s3 is not None
        client = self.s3_client()
        listed = client.list_objects_v2(Bucket=self.s3.bucket).get("Contents", [])
        found = {}
        for item in listed:
            answer = client.get_object(Bucket=self.s3.bucket, Key=item["Key"])
            found[item["Key"]] = (answer["ETag"], answer["Body"].read())
        return found

    def s3_store(self) -> Any:
        """The state on S3 as the reconciler reads it, with the test's own credentials."""
        from reconciler.config import S3Location
        from reconciler.state.s3 import S3StateStore
        from reconciler.state.s3objects import ObjectStore

        assert self.s3 is not None
        location = S3Location(self.s3.bucket, self.s3.key, self.s3.region, self.s3.endpoint)
        return S3StateStore(location, ObjectStore(location, self.s3_client()))

    def s3_applied(self) -> dict[str, dict[str, str]]:
        """The fields the state on S3 records per number (its journal replayed), as apply reads it."""
        state = self.s3_store().load()
        return {number: dict(entry.fields) for number, entry in state.entries.items()}

    def everything_written(self) -> str:
        """Every comment, issue, summary, log and artifact, every blob in the repository, and every
        object in the bucket (with the state on S3)."""
        parts = [c["body"] for c in self.hub.comments.values()]
        if self.s3 is not None:
            parts += [data.decode("utf-8", "replace") for _etag, data in self.s3_objects().values()]
        parts += [json.dumps(i) for i in self.hub.issues.values()]
        for run in self.runner.runs:
            for job in run.jobs.values():
                parts += [job.summary, job.log]
        for files in self.runner.artifacts.values():
            parts += [data.decode("utf-8", "replace") for data in files.values()]
        objects = subprocess.run(
            ["git", "cat-file", "--batch-all-objects", "--batch"],
            cwd=self.hub.bare,
            capture_output=True,
            check=True,
        ).stdout
        parts.append(objects.decode("utf-8", "replace"))
        return "\n".join(parts)


def seed_applied(world: World) -> dict[str, Any]:
    """Apply the repository's profiles once, outside CI, and keep the state where CI reads it: the
    state branch (or main, for workflows that keep it there), or the bucket. Returns the state."""
    from click.testing import CliRunner

    from reconciler.cli import cli

    old = Path.cwd()
    os.chdir(world.clone)
    try:
        world._git("checkout", "-q", "--detach", world.sha("refs/heads/main"))
        result = CliRunner().invoke(
            cli,
            ["apply", "--auto-approve"],
            env={
                **KEYS,
                "KALEYRA_ENDPOINT": world.kaleyra.url,
                "NO_COLOR": "1",
                **(world.s3.admin_env if world.s3 else {}),
            },
        )
        assert result.exit_code == 0, result.output
    finally:
        os.chdir(old)
    if world.s3 is not None:
        assert not (world.clone / ".reconciler").exists(), "with the state on S3, nothing is written here"
        _etag, data = world.s3_objects()[world.s3.key]
        return json.loads(data)
    state = (world.clone / ".reconciler" / "state.json").read_text()
    audit = (world.clone / ".reconciler" / "audit.jsonl").read_text()
    world.put_state({".reconciler/state.json": state, ".reconciler/audit.jsonl": audit})
    shutil.rmtree(world.clone / ".reconciler")
    return json.loads(state)


def state_on_branch() -> bool:
    """The shipped design keeps the state on its own branch; the workflows before it kept it on main."""
    return (PROJECT / "action.yml").exists()
