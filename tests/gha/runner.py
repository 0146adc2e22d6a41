"""An emulated GitHub Actions runner for the workflow tests.

It reads `.github/workflows/*.yml` at the commit GitHub would use for each event, picks the workflows
the event triggers (branches, paths, workflow_run), evaluates `if:` and `${{ }}`, and runs each job's
steps: `run:` with bash as GitHub does (`bash -e {0}` when no shell is named, `bash --noprofile
--norc -eo pipefail {0}` for `shell: bash`), composite actions (`uses: ./`), and emulations of the
few actions the workflows use (checkout, setup-python, cache, upload-artifact, download-artifact,
configure-aws-credentials). Each job gets a token holding exactly its `permissions:` (read-only for
pull requests from forks, which also get no secrets and no OIDC token). A finished run triggers the
`workflow_run` workflows of the default branch. GitHub itself is `FakeGitHub`; Kaleyra is `reconciler
sandbox`; AWS, when a test sets up roles, is STS as `aws_roles` describes and moto's S3 server.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import os
import re
import secrets as random_secrets
import shutil
import subprocess
import sys
import sysconfig
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .expressions import Evaluator, condition, interpolate, to_string
from .fakegithub import API_HOST, GIT_HOST, FakeGitHub, git

STEP_TIMEOUT_S = 300
READ_ONLY_FORK = {"contents": "read", "pull-requests": "read", "issues": "read", "actions": "read"}
SCOPES = ("actions", "checks", "contents", "deployments", "issues", "packages", "pull-requests", "statuses")
COMMAND = re.compile(r"^::(error|warning|notice)(?: [^:]*)?::(.*)$")


@dataclass
class StepResult:
    name: str
    outcome: str  # success | failure | skipped
    output: str = ""


@dataclass
class JobResult:
    job_id: str
    conclusion: str  # success | failure | skipped
    steps: list[StepResult] = field(default_factory=list)
    summary: str = ""
    annotations: list[tuple[str, str]] = field(default_factory=list)
    permissions: dict[str, str] = field(default_factory=dict)

    @property
    def log(self) -> str:
        return "\n".join(step.output for step in self.steps)

    def errors(self) -> list[str]:
        return [text for kind, text in self.annotations if kind == "error"]


@dataclass
class Run:
    id: int
    workflow: str
    path: str
    event_name: str
    event: dict[str, Any]
    sha: str
    ref: str
    inputs: dict[str, Any]
    attempt: int = 1
    jobs: dict[str, JobResult] = field(default_factory=dict)
    concurrency: str | None = None

    @property
    def conclusion(self) -> str:
        results = [job.conclusion for job in self.jobs.values()]
        if "failure" in results:
            return "failure"
        return "success" if "success" in results else "skipped"

    def job(self, job_id: str | None = None) -> JobResult:
        return self.jobs[job_id] if job_id else next(iter(self.jobs.values()))


@dataclass
class AwsSession:
    """Credentials the emulated configure-aws-credentials handed a job: who, which role, for which
    OIDC subject. Tests search everything written for `secret` and `token`."""

    run_id: int
    job_id: str
    workflow: str
    role: str
    subject: str
    access_key_id: str
    secret: str
    token: str


class StepFailed(Exception):
    pass


def workflow_triggers(document: dict[str, Any]) -> dict[str, Any]:
    on = document.get("on", document.get(True))  # YAML 1.1 reads a bare `on` as true
    if isinstance(on, str):
        return {on: {}}
    if isinstance(on, list):
        return {name: {} for name in on}
    return {name: (spec or {}) for name, spec in (on or {}).items()}


def glob_match(path: str, pattern: str) -> bool:
    """GitHub's filter globs: `*` stays within a path segment, `**` crosses them."""
    regex = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**", index):
            regex += ".*"
            index += 2
        elif pattern[index] == "*":
            regex += "[^/]*"
            index += 1
        elif pattern[index] == "?":
            regex += "[^/]"
            index += 1
        else:
            regex += re.escape(pattern[index])
            index += 1
    return re.fullmatch(regex, path) is not None


def filters_pass(values: list[str], include: list[str] | None, exclude: list[str] | None) -> bool:
    if include is not None:
        matched = False
        for pattern in include:
            negate = pattern.startswith("!")
            if any(glob_match(value, pattern.lstrip("!")) for value in values):
                matched = not negate
        return matched
    if exclude is not None:
        return not all(any(glob_match(v, p) for p in exclude) for v in values)
    return True


class Runner:
    """Runs the workflows of the repository held by `hub` for the events tests send."""

    def __init__(self, hub: FakeGitHub, root: Path, environment: dict[str, str]):
        self.hub = hub
        self.root = root
        self.environment = environment  # the runner image's own variables (KALEYRA_ENDPOINT, ...)
        self.vars: dict[str, str] = {}
        self.secrets: dict[str, str] = {}
        self.artifacts: dict[tuple[int, str], dict[str, bytes]] = {}
        self.runs: list[Run] = []
        self.run_ids = itertools.count(9001)
        self.default_branch = "main"
        self.pending: list[tuple[str, dict[str, Any], str, str, dict[str, Any]]] = []
        self.site_packages = sysconfig.get_paths()["purelib"]
        # The project's own CI (ci.yml runs .ci/run, these tests included), its docs site and its
        # releases are not part of the story.
        self.skip: set[str] = {
            ".github/workflows/ci.yml",
            ".github/workflows/docs.yml",
            ".github/workflows/release.yml",
        }
        # AWS IAM as far as GitHub's OIDC meets it: role ARN -> the `sub` claims its trust policy
        # allows (patterns with `*`, as StringLike). A role not here cannot be assumed.
        self.aws_roles: dict[str, list[str]] = {}
        self.aws_sessions: list[AwsSession] = []

    # --- events ----------------------------------------------------------------------------------

    def trigger(
        self,
        event_name: str,
        event: dict[str, Any],
        sha: str,
        ref: str,
        inputs: dict[str, Any] | None = None,
        only: str | None = None,
    ) -> list[Run]:
        """Run every workflow (at `sha`) that this event triggers, then the workflow_runs they cause."""
        runs = []
        for path, document in self._workflows(sha):
            if (only and not path.endswith(only)) or path in self.skip:
                continue
            if not self._triggered(document, event_name, event):
                continue
            run = Run(
                id=next(self.run_ids),
                workflow=str(document.get("name") or path),
                path=path,
                event_name=event_name,
                event=event,
                sha=sha,
                ref=ref,
                inputs=inputs or {},
            )
            self._execute(run, document)
            runs.append(run)
            runs += self._cascade(run)
        return runs

    def rerun(self, run: Run) -> Run:
        """Re-run all jobs: the same run id, event and commit, the next attempt."""
        document = dict(self._workflows(run.sha))[run.path]
        again = Run(**{**run.__dict__, "attempt": run.attempt + 1, "jobs": {}})
        self._execute(again, document)
        self._cascade(again)
        return again

    def _cascade(self, finished: Run) -> list[Run]:
        tip = git("rev-parse", f"refs/heads/{self.default_branch}", cwd=self.hub.bare)
        head_repo = self.hub.repository
        head_branch = finished.ref.removeprefix("refs/heads/")
        head_sha = finished.sha
        pulls = []
        if finished.event_name == "pull_request":
            pull = finished.event["pull_request"]
            head_repo = pull["head"]["repo"]["full_name"]
            head_branch = pull["head"]["ref"]
            head_sha = pull["head"]["sha"]
            if head_repo == self.hub.repository:  # GitHub leaves this empty for forks
                pulls = [{"number": pull["number"], "head": {"sha": head_sha, "ref": head_branch}}]
        event = {
            "action": "completed",
            "workflow_run": {
                "id": finished.id,
                "name": finished.workflow,
                "event": finished.event_name,
                "status": "completed",
                "conclusion": finished.conclusion,
                "head_sha": head_sha,
                "head_branch": head_branch,
                "run_attempt": finished.attempt,
                "head_repository": {
                    "full_name": head_repo,
                    "owner": {"login": head_repo.split("/")[0]},
                    "fork": head_repo != self.hub.repository,
                },
                "pull_requests": pulls,
            },
            "repository": self._repository_json(),
        }
        return self.trigger("workflow_run", event, tip, f"refs/heads/{self.default_branch}")

    def _workflows(self, sha: str) -> list[tuple[str, dict[str, Any]]]:
        names = git("ls-tree", "--name-only", sha, ".github/workflows/", cwd=self.hub.bare).splitlines()
        found = []
        for name in sorted(names):
            if name.endswith((".yml", ".yaml")):
                text = git("show", f"{sha}:{name}", cwd=self.hub.bare)
                found.append((name, yaml.safe_load(text)))
        return found

    def _triggered(self, document: dict[str, Any], event_name: str, event: dict[str, Any]) -> bool:
        triggers = workflow_triggers(document)
        if event_name not in triggers:
            return False
        spec = triggers[event_name] or {}
        if event_name == "workflow_run":
            run = event["workflow_run"]
            return run["name"] in spec.get("workflows", []) and "completed" in spec.get(
                "types", ["completed"]
            )
        if event_name == "push":
            branch = event["ref"].removeprefix("refs/heads/")
            if not filters_pass([branch], spec.get("branches"), spec.get("branches-ignore")):
                return False
            changed = git(
                "diff", "--name-only", event["before"], event["after"], cwd=self.hub.bare
            ).splitlines()
            return filters_pass(changed, spec.get("paths"), spec.get("paths-ignore"))
        if event_name == "pull_request":
            pull = event["pull_request"]
            if not filters_pass([pull["base"]["ref"]], spec.get("branches"), spec.get("branches-ignore")):
                return False
            types = spec.get("types", ["opened", "synchronize", "reopened"])
            if event["action"] not in types:
                return False
            changed = git(
                "diff", "--name-only", f"{pull['base']['sha']}...{pull['head']['sha']}", cwd=self.hub.bare
            ).splitlines()
            return filters_pass(changed, spec.get("paths"), spec.get("paths-ignore"))
        return True

    def _repository_json(self) -> dict[str, Any]:
        owner, name = self.hub.repository.split("/")
        return {
            "full_name": self.hub.repository,
            "name": name,
            "owner": {"login": owner},
            "default_branch": self.default_branch,
        }

    # --- runs and jobs ---------------------------------------------------------------------------

    def _execute(self, run: Run, document: dict[str, Any]) -> None:
        self.runs.append(run)
        for job_id, job in (document.get("jobs") or {}).items():
            needs = job.get("needs") or []
            needs = [needs] if isinstance(needs, str) else list(needs)
            # Jobs run one after another here, in the file's order: a job may only need an earlier one
            # (stricter than GitHub, which orders them by `needs` itself).
            unknown = [name for name in needs if name not in run.jobs]
            if unknown:
                raise ValueError(f"{run.path}: job {job_id} needs {unknown}, which do not run before it")
            run.jobs[job_id] = self._job(run, document, job_id, job, {name: run.jobs[name] for name in needs})

    def _github_context(self, run: Run, job_id: str, token: str, workspace: Path) -> dict[str, Any]:
        event = run.event
        context = {
            "event_name": run.event_name,
            "event": event,
            "sha": run.sha,
            "ref": run.ref,
            "ref_name": run.ref.split("/", 2)[-1],
            "repository": self.hub.repository,
            "repository_owner": self.hub.repository.split("/")[0],
            "actor": event.get("sender", {}).get("login", "octocat"),
            "token": token,
            "run_id": str(run.id),
            "run_number": str(run.id - 9000),
            "run_attempt": str(run.attempt),
            "workflow": run.workflow,
            "job": job_id,
            "server_url": f"http://{GIT_HOST}",
            "api_url": f"http://{API_HOST}",
            "workspace": str(workspace),
            "head_ref": "",
            "base_ref": "",
        }
        if run.event_name == "pull_request":
            context["head_ref"] = event["pull_request"]["head"]["ref"]
            context["base_ref"] = event["pull_request"]["base"]["ref"]
        return context

    def _permissions(self, document: dict[str, Any], job: dict[str, Any]) -> dict[str, str]:
        declared = job.get("permissions", document.get("permissions"))
        if declared is None:
            return {"contents": "read", "packages": "read"}  # the restricted default
        if declared == "read-all":
            return dict.fromkeys(SCOPES, "read")
        if declared == "write-all":
            return dict.fromkeys(SCOPES, "write")
        return {scope: str(level) for scope, level in (declared or {}).items()}

    def _job(
        self,
        run: Run,
        document: dict[str, Any],
        job_id: str,
        job: dict[str, Any],
        needed: dict[str, JobResult] | None = None,
    ) -> JobResult:
        home = self.root / "runs" / f"{run.id}-{run.attempt}-{job_id}"
        workspace, temp = home / "work", home / "temp"
        for folder in (workspace, temp, home / "home", home / "toolcache"):
            folder.mkdir(parents=True, exist_ok=True)
        permissions = self._permissions(document, job)
        fork = run.event_name == "pull_request" and run.event["pull_request"]["head"]["repo"]["fork"]
        if fork:
            permissions = {
                s: min(level, "read", key=["none", "read", "write"].index) for s, level in permissions.items()
            }
            if "id-token" in permissions:
                permissions["id-token"] = "none"  # GitHub gives a fork's pull request no OIDC token
        token = self.hub.issue_token(permissions)
        github = self._github_context(run, job_id, token, workspace)
        secrets = {} if fork else {**self.secrets, "GITHUB_TOKEN": token}
        event_path = temp / "event.json"
        event_path.write_text(json.dumps(run.event))
        result = JobResult(job_id, "success", permissions=permissions)
        contexts: dict[str, Any] = {
            "github": github,
            "vars": self.vars,
            "secrets": secrets,
            "inputs": run.inputs,
            "needs": {
                name: {"result": done.conclusion, "outputs": {}} for name, done in (needed or {}).items()
            },
            "matrix": {},
            "strategy": {},
            "runner": {
                "os": "Linux",
                "arch": "X64",
                "temp": str(temp),
                "tool_cache": str(home / "toolcache"),
            },
            "job": {"status": "success"},
            "env": {},
            "steps": {},
        }
        # A job whose needed jobs did not all succeed is skipped, unless its `if:` asks for a status
        # (always(), failure(), ...): success() at job level means every needed job succeeded.
        results = [done.conclusion for done in (needed or {}).values()]
        statuses = {
            "success": all(result == "success" for result in results),
            "failure": "failure" in results,
            "cancelled": False,
            "always": True,
        }
        evaluator = Evaluator(contexts, status=statuses.__getitem__)
        if not condition(job.get("if"), evaluator):
            result.conclusion = "skipped"
            self.hub.revoke(token)
            return result
        concurrency = job.get("concurrency", document.get("concurrency"))
        if isinstance(concurrency, dict):
            run.concurrency = to_string(interpolate(concurrency.get("group"), evaluator))
        env = {
            **self.environment,
            "HOME": str(home / "home"),
            "PATH": self.environment.get("PATH") or os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKFLOW": run.workflow,
            "GITHUB_RUN_ID": str(run.id),
            "GITHUB_RUN_NUMBER": github["run_number"],
            "GITHUB_RUN_ATTEMPT": str(run.attempt),
            "GITHUB_JOB": job_id,
            "GITHUB_ACTOR": github["actor"],
            "GITHUB_REPOSITORY": self.hub.repository,
            "GITHUB_REPOSITORY_OWNER": github["repository_owner"],
            "GITHUB_EVENT_NAME": run.event_name,
            "GITHUB_EVENT_PATH": str(event_path),
            "GITHUB_WORKSPACE": str(workspace),
            "GITHUB_SHA": run.sha,
            "GITHUB_REF": run.ref,
            "GITHUB_REF_NAME": github["ref_name"],
            "GITHUB_HEAD_REF": github["head_ref"],
            "GITHUB_BASE_REF": github["base_ref"],
            "GITHUB_SERVER_URL": github["server_url"],
            "GITHUB_API_URL": github["api_url"],
            "RUNNER_OS": "Linux",
            "RUNNER_TEMP": str(temp),
            "RUNNER_TOOL_CACHE": str(home / "toolcache"),
            # How the real gh and git reach the fake GitHub (see fakegithub.py).
            "GH_HOST": GIT_HOST,
            "HTTP_PROXY": self.hub.proxy,
            "http_proxy": self.hub.proxy,
            "NO_PROXY": "127.0.0.1",
            "no_proxy": "127.0.0.1",
            "GH_PROMPT_DISABLED": "1",
            "GH_NO_UPDATE_NOTIFIER": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": str(home / "home" / ".gitconfig"),
        }
        for scope in (document.get("env") or {}, job.get("env") or {}):
            for name, value in scope.items():
                contexts["env"] = dict(contexts["env"])
                contexts["env"][name] = to_string(interpolate(value, evaluator))
        job_state = JobState(self, run, result, env, contexts, workspace, temp)
        deployment = job.get("environment")
        job_state.deployment = to_string(
            interpolate(deployment.get("name") if isinstance(deployment, dict) else deployment, evaluator)
        )
        try:
            job_state.run_steps(job.get("steps") or [], contexts, evaluator)
        finally:
            self.hub.revoke(token)  # GitHub's job token expires with the job
        return result


class JobState:
    """One job's environment as it evolves: GITHUB_ENV, GITHUB_PATH, the summary, the status."""

    def __init__(
        self,
        runner: Runner,
        run: Run,
        result: JobResult,
        env: dict[str, str],
        contexts: dict[str, Any],
        workspace: Path,
        temp: Path,
    ):
        self.runner = runner
        self.run = run
        self.result = result
        self.env = env
        self.contexts = contexts
        self.workspace = workspace
        self.temp = temp
        self.paths: list[str] = []
        self.failed = False
        self.deployment = ""  # the job's `environment:`, which decides its OIDC subject
        # What steps wrote to GITHUB_ENV: every later step sees it, inside a composite action too.
        self.exported: dict[str, str] = {}

    def status(self, name: str) -> bool:
        return {"success": not self.failed, "failure": self.failed, "always": True, "cancelled": False}[name]

    def run_steps(self, steps: list[dict[str, Any]], contexts: dict[str, Any], evaluator: Evaluator) -> bool:
        """Run steps in order; True if any failed (without continue-on-error)."""
        failed_here = False
        evaluator.status = self.status
        for index, step in enumerate(steps):
            step_id = step.get("id") or f"__step{index}"
            name = step.get("name") or step.get("uses") or (step.get("run") or "").strip().split("\n")[0]
            step_env = {**contexts["env"], **self.exported}
            for key, value in (step.get("env") or {}).items():
                step_env[key] = to_string(interpolate(value, evaluator))
            step_contexts = {**contexts, "env": step_env}
            step_evaluator = Evaluator(step_contexts, self.status)
            if not condition(step.get("if"), step_evaluator):
                contexts["steps"][step_id] = {"outputs": {}, "outcome": "skipped", "conclusion": "skipped"}
                self.result.steps.append(StepResult(name, "skipped"))
                continue
            outputs: dict[str, str] = {}
            try:
                if "run" in step:
                    output = self._run_script(step, step_env, step_evaluator, outputs)
                else:
                    output = self._uses(step, step_env, step_contexts, step_evaluator, outputs)
                outcome = "success"
            except StepFailed as failure:
                output, outcome = str(failure), "failure"
            continue_on_error = bool(step.get("continue-on-error"))
            contexts["steps"][step_id] = {
                "outputs": outputs,
                "outcome": outcome,
                "conclusion": "success" if continue_on_error else outcome,
            }
            self.result.steps.append(StepResult(name, outcome, output))
            if outcome == "failure" and not continue_on_error:
                self.failed = failed_here = True
                self.result.conclusion = "failure"
                self.contexts["job"]["status"] = "failure"
        return failed_here

    # --- run: ------------------------------------------------------------------------------------

    def _files(self) -> dict[str, Path]:
        files = {}
        for name in ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH", "GITHUB_STEP_SUMMARY"):
            path = self.temp / f"{name.lower()}_{uuid.uuid4().hex}"
            path.touch()
            files[name] = path
        return files

    def _process_env(self, step_env: dict[str, str], files: dict[str, Path]) -> dict[str, str]:
        env = {**self.env, **step_env, **{k: str(v) for k, v in files.items()}}
        env["PATH"] = os.pathsep.join([*reversed(self.paths), self.env["PATH"]])
        return env

    def _collect(self, files: dict[str, Path], outputs: dict[str, str]) -> None:
        outputs.update(parse_env_file(files["GITHUB_OUTPUT"].read_text()))
        for name, value in parse_env_file(files["GITHUB_ENV"].read_text()).items():
            self._export(name, value)
        self.paths += [line for line in files["GITHUB_PATH"].read_text().splitlines() if line.strip()]
        self.result.summary += files["GITHUB_STEP_SUMMARY"].read_text()

    def _run_script(
        self, step: dict[str, Any], step_env: dict[str, str], evaluator: Evaluator, outputs: dict[str, str]
    ) -> str:
        script = to_string(interpolate(step["run"], evaluator))
        shell = step.get("shell") or self.contexts.get("defaults_shell")
        path = self.temp / f"{uuid.uuid4().hex}.sh"
        path.write_text(script)
        if shell is None:
            command = ["bash", "-e", str(path)]
        elif shell == "bash":
            command = ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(path)]
        elif shell == "sh":
            command = ["sh", "-e", str(path)]
        elif shell == "python":
            command = ["python", str(path)]
        else:
            command = [part.replace("{0}", str(path)) for part in shell.split()]
        cwd = self.workspace / to_string(interpolate(step.get("working-directory", ""), evaluator))
        files = self._files()
        env = self._process_env(step_env, files)
        if command[0] == "python":
            command[0] = shutil.which("python", path=env["PATH"]) or sys.executable
        try:
            completed = subprocess.run(
                command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=STEP_TIMEOUT_S,
                check=False,
            )
            output = completed.stdout.decode("utf-8", "replace")
            code = completed.returncode
        except subprocess.TimeoutExpired as expired:
            output = (expired.stdout or b"").decode("utf-8", "replace") + "\n[step timed out]"
            code = 124
        self._annotations(output)
        self._collect(files, outputs)
        if code != 0:
            raise StepFailed(f"{output}\nProcess completed with exit code {code}.")
        return output

    def _export(self, name: str, value: str) -> None:
        self.exported[name] = value
        self.contexts["env"] = {**self.contexts["env"], name: value}

    def _annotations(self, output: str) -> None:
        for line in output.splitlines():
            match = COMMAND.match(line)
            if match:
                self.result.annotations.append((match.group(1), match.group(2)))

    # --- uses: -----------------------------------------------------------------------------------

    def _uses(
        self,
        step: dict[str, Any],
        step_env: dict[str, str],
        contexts: dict[str, Any],
        evaluator: Evaluator,
        outputs: dict[str, str],
    ) -> str:
        uses = str(step["uses"])
        inputs = {k: to_string(interpolate(v, evaluator)) for k, v in (step.get("with") or {}).items()}
        if uses.startswith("./"):
            return self._composite(self.workspace / uses, inputs, step_env, outputs)
        name, _, _ref = uses.partition("@")
        emulated = {
            "actions/checkout": self._checkout,
            "actions/setup-python": self._setup_python,
            "actions/cache": lambda inputs, env: "cache: emulated as a miss",
            "actions/upload-artifact": self._upload_artifact,
            "actions/download-artifact": self._download_artifact,
            "aws-actions/configure-aws-credentials": self._configure_aws_credentials,
        }
        if name not in emulated:
            raise StepFailed(f"the emulated runner does not know the action {uses}")
        return emulated[name](inputs, self._process_env(step_env, {}))

    def _composite(
        self, folder: Path, given: dict[str, str], step_env: dict[str, str], outputs: dict[str, str]
    ) -> str:
        manifest_path = next(
            (folder / n for n in ("action.yml", "action.yaml") if (folder / n).exists()), None
        )
        if manifest_path is None:
            raise StepFailed(f"no action.yml in {folder}")
        manifest = yaml.safe_load(manifest_path.read_text())
        if manifest.get("runs", {}).get("using") != "composite":
            raise StepFailed(f"{manifest_path}: only composite actions are emulated")
        github = {**self.contexts["github"], "action_path": str(folder)}
        base = {**self.contexts, "github": github, "env": step_env, "steps": {}, "inputs": {}}
        defaults_evaluator = Evaluator(base, self.status)
        inputs = {}
        for name, spec in (manifest.get("inputs") or {}).items():
            spec = spec or {}
            if name in given:
                inputs[name] = given[name]
            elif "default" in spec:
                inputs[name] = to_string(interpolate(spec["default"], defaults_evaluator))
            elif spec.get("required"):
                raise StepFailed(f"input required and not supplied: {name}")
            else:
                inputs[name] = ""
        unknown = set(given) - set(manifest.get("inputs") or {})
        if unknown:
            raise StepFailed(f"unexpected input(s) {sorted(unknown)}")
        inner = {**base, "inputs": inputs}
        saved_env = dict(self.env)
        self.env["GITHUB_ACTION_PATH"] = str(folder)
        evaluator = Evaluator(inner, self.status)
        steps = manifest["runs"]["steps"]
        for step in steps:
            if "run" in step and "shell" not in step:
                raise StepFailed(f"{manifest_path}: a composite run step needs `shell:`")
        before = len(self.result.steps)
        job_failed_before = self.failed
        failed = self.run_steps(steps, inner, evaluator)
        self.failed = job_failed_before or failed
        self.env = {**saved_env, **{k: v for k, v in self.env.items() if k != "GITHUB_ACTION_PATH"}}
        self.env.pop("GITHUB_ACTION_PATH", None)
        for name, spec in (manifest.get("outputs") or {}).items():
            outputs[name] = to_string(
                interpolate((spec or {}).get("value", ""), Evaluator(inner, self.status))
            )
        text = "\n".join(s.output for s in self.result.steps[before:])
        if failed:
            raise StepFailed(text)
        return text

    def _checkout(self, inputs: dict[str, str], env: dict[str, str]) -> str:
        repository = inputs.get("repository") or self.runner.hub.repository
        target = self.workspace / inputs.get("path", "")
        target.mkdir(parents=True, exist_ok=True)
        token = inputs.get("token") or self.contexts["github"]["token"]
        ref = inputs.get("ref") or (self.run.sha if self.run.event_name != "pull_request" else self.run.ref)
        url = f"http://{GIT_HOST}/{repository}"
        header = f"AUTHORIZATION: basic {_basic(token)}"
        depth = inputs.get("fetch-depth", "1")
        fetch = (
            ["fetch", "--no-tags", "-q"] + ([f"--depth={depth}"] if depth != "0" else []) + ["origin", ref]
        )
        try:
            git("init", "-q", str(target), env=env)
            git("remote", "add", "origin", url, cwd=target, env=env)
            git("-c", f"http.extraheader={header}", *fetch, cwd=target, env=env)
            git("checkout", "-q", "--detach", "FETCH_HEAD", cwd=target, env=env)
            if inputs.get("persist-credentials", "true") != "false":
                git("config", f"http.http://{GIT_HOST}/.extraheader", header, cwd=target, env=env)
        except RuntimeError as error:
            raise StepFailed(f"checkout of {repository}@{ref} failed: {error}") from None
        return f"checked out {repository}@{ref}"

    def _setup_python(self, inputs: dict[str, str], env: dict[str, str]) -> str:
        """A fresh interpreter per job with the test venv's dependencies importable, and an offline
        `pip` that installs local source trees (copy + console scripts): the real pip is exercised by
        .ci/run's own install, and these tests need no network."""
        version = inputs.get("python-version") or "3"
        folder = Path(env["RUNNER_TOOL_CACHE"]) / "Python" / version
        if not folder.exists():
            base = getattr(sys, "_base_executable", sys.executable)
            subprocess.run([base, "-m", "venv", "--without-pip", str(folder)], check=True)
            site = Path(
                subprocess.run(
                    [
                        str(folder / "bin" / "python"),
                        "-c",
                        "import sysconfig;print(sysconfig.get_paths()['purelib'])",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.strip()
            )
            (site / "dependencies.pth").write_text(self.runner.site_packages + "\n")
            shutil.copytree(Path(__file__).parent / "offline_pip", site / "pip")
            pip = folder / "bin" / "pip"
            pip.write_text(f"#!{folder / 'bin' / 'python'}\nfrom pip.__main__ import main\nmain()\n")
            pip.chmod(0o755)
        self.paths.append(str(folder / "bin"))
        self.env["pythonLocation"] = str(folder)
        return f"Python {version} (emulated) at {folder}"

    def oidc_subject(self) -> str:
        """The `sub` claim of this job's OIDC token, as GitHub forms it by default."""
        repository = self.runner.hub.repository
        if self.deployment:
            return f"repo:{repository}:environment:{self.deployment}"
        if self.run.event_name == "pull_request":
            return f"repo:{repository}:pull_request"
        return f"repo:{repository}:ref:{self.run.ref}"  # workflow_run and schedule: the default branch

    def _configure_aws_credentials(self, inputs: dict[str, str], env: dict[str, str]) -> str:
        """AssumeRoleWithWebIdentity with the job's OIDC token, then the credentials in GITHUB_ENV, as
        aws-actions/configure-aws-credentials does. GitHub hands a job an OIDC token only when its
        permissions hold `id-token: write`, and never to a fork's pull request."""

        def fail(message: str) -> StepFailed:
            self.result.annotations.append(("error", message))
            return StepFailed(f"::error::{message}")

        region, role = inputs.get("aws-region", ""), inputs.get("role-to-assume", "")
        if not region:
            raise fail("Input required and not supplied: aws-region")
        if not role:
            raise fail("Credentials could not be loaded, please check your action inputs")
        if self.result.permissions.get("id-token") != "write":
            raise fail(
                "It looks like you might be trying to authenticate with OIDC. Did you mean to set the "
                "`id-token` permission? Credentials could not be loaded, please check your action inputs: "
                "Could not load credentials from any providers"
            )
        subject = self.oidc_subject()
        trusted = self.runner.aws_roles.get(role, [])
        if not any(fnmatch.fnmatchcase(subject, pattern) for pattern in trusted):
            raise fail(
                f"Could not assume role with OIDC: Not authorized to perform sts:AssumeRoleWithWebIdentity "
                f"(role {role}, sub {subject})"
            )
        session = AwsSession(
            run_id=self.run.id,
            job_id=self.result.job_id,
            workflow=self.run.workflow,
            role=role,
            subject=subject,
            access_key_id="ASIA" + random_secrets.token_hex(8).upper(),
            secret="oIdCsEcReT" + random_secrets.token_hex(16),
            token="oIdCtOkEn" + random_secrets.token_hex(32),
        )
        self.runner.aws_sessions.append(session)
        for name, value in (
            ("AWS_ACCESS_KEY_ID", session.access_key_id),
            ("AWS_SECRET_ACCESS_KEY", session.secret),
            ("AWS_SESSION_TOKEN", session.token),
            ("AWS_REGION", region),
            ("AWS_DEFAULT_REGION", region),
        ):
            self._export(name, value)
        return f"Assumed {role} with OIDC (sub {subject}) in {region}"

    def _artifact_files(self, inputs: dict[str, str]) -> tuple[dict[str, bytes], list[str]]:
        hidden = inputs.get("include-hidden-files", "false") == "true"
        paths = [line.strip() for line in inputs.get("path", "").splitlines() if line.strip()]
        paths = [os.path.expanduser(p) for p in paths]
        found: list[Path] = []
        for entry in paths:
            for match in (
                sorted(self.workspace.glob(entry))
                if any(c in entry for c in "*?[")
                else [self.workspace / entry]
            ):
                if match.is_dir():
                    found += [p for p in sorted(match.rglob("*")) if p.is_file()]
                elif match.is_file():
                    found.append(match)
        roots = [Path(os.path.abspath(self.workspace / p.rstrip("/"))) for p in paths if "*" not in p]
        if len(roots) == 1 and roots[0].is_dir():
            root = roots[0]
        else:
            root = Path(os.path.commonpath([str(p.parent) for p in found])) if found else self.workspace
        files, skipped = {}, []
        for path in found:
            relative = path.relative_to(root).as_posix()
            if not hidden and any(part.startswith(".") for part in path.relative_to(root).parts):
                skipped.append(relative)
                continue
            files[relative] = path.read_bytes()
        return files, skipped

    def _upload_artifact(self, inputs: dict[str, str], env: dict[str, str]) -> str:
        name = inputs.get("name") or "artifact"
        files, skipped = self._artifact_files(inputs)
        if not files:
            rule = inputs.get("if-no-files-found", "warn")
            message = f"No files were found with the provided path: {inputs.get('path')}."
            if skipped:
                message += f" Hidden files were skipped: {skipped} (include-hidden-files is false)."
            if rule == "error":
                raise StepFailed(message)
            return message
        key = (self.run.id, name)
        if key in self.runner.artifacts and inputs.get("overwrite", "false") != "true":
            raise StepFailed(
                "Failed to CreateArtifact: Received non-retryable error: Failed request: (409) Conflict: "
                "an artifact with this name already exists on the workflow run"
            )
        self.runner.artifacts[key] = files
        return f"uploaded artifact {name}: {sorted(files)}"

    def _download_artifact(self, inputs: dict[str, str], env: dict[str, str]) -> str:
        run_id = int(inputs.get("run-id") or self.run.id)
        if inputs.get("run-id"):
            token = self.runner.hub.tokens.get(inputs.get("github-token") or "")
            if token is None or not token.may("actions", "read"):
                raise StepFailed("Unable to download artifact(s): Resource not accessible by integration")
        name = inputs.get("name")
        files = self.runner.artifacts.get((run_id, name or ""))
        if files is None:
            raise StepFailed(f"Unable to download artifact(s): Artifact not found for name: {name}")
        target = self.workspace / inputs.get("path", "")
        for relative, data in files.items():
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            (target / relative).write_bytes(data)
        return f"downloaded artifact {name}"


def _basic(token: str) -> str:
    import base64

    return base64.b64encode(f"x-access-token:{token}".encode()).decode()


def parse_env_file(text: str) -> dict[str, str]:
    """GITHUB_OUTPUT / GITHUB_ENV: `name=value` lines and `name<<DELIMITER` blocks."""
    values: dict[str, str] = {}
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            block = []
            while index < len(lines) and lines[index] != delimiter:
                block.append(lines[index])
                index += 1
            index += 1
            values[name] = "\n".join(block)
        elif "=" in line:
            name, value = line.split("=", 1)
            values[name] = value
    return values
