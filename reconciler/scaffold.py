"""`reconciler init`: the files a new repository starts with, each written only where none exists.

The caller workflows are the templates in `reconciler/templates/github/`, kept equal to the repository's
own callers (a test compares them) except for two things only a user's repository knows: the action's
reference (`@ACTION@`) and one secret line per API-key variable (`@KALEYRA_API_KEYS@`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path

from . import schema
from .config import load_config
from .errors import Problem, ReconcilerError, ValidationFailed
from .yamlfile import parse_mapping

CONFIG_FILE = "reconciler.yaml"
PROFILES_DIR = "profiles"
WORKFLOWS = (
    "reconciler-plan.yml",
    "reconciler-plan-comment.yml",
    "reconciler-apply.yml",
    "reconciler-drift.yml",
)
ACTION_REPOSITORY = "kaleyra-reconciler/kaleyra-reconciler"
# A well-formed pin that resolves to nothing: the workflows lint clean, and the first run says that the
# action is not found rather than silently running whatever a moving tag points at today.
PLACEHOLDER_ACTION = f"{ACTION_REPOSITORY}@{'0' * 40}"
ACTION_REF = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(/[A-Za-z0-9_./-]+)?@[0-9a-f]{40}")
GITIGNORE_ENTRIES = (
    ".reconciler/*.lock",
    ".reconciler/*.journal",
    ".reconciler/.*.tmp",
    ".venv/",
)
ACCOUNT_FORM = "NAME:SID:WABA_ID:POD[:API_VERSION]"


@dataclass(frozen=True)
class NewAccount:
    """One account for reconciler.yaml; its key lives in KALEYRA_API_KEY_<NAME> (a GitHub secret in CI)."""

    name: str
    sid: str
    waba_id: str
    pod: str
    api_version: str = "v2"

    @property
    def api_key_env(self) -> str:
        return "KALEYRA_API_KEY_" + re.sub(r"[^A-Z0-9]", "_", self.name.upper())


EXAMPLE_ACCOUNT = NewAccount(name="example", sid="HXEXAMPLE0000000", waba_id="000000000000000", pod="in")


# The allowed form of each part of an account, checked before anything is templated into YAML: the
# same patterns as the config schema, with the words a user needs to fix a value.
ACCOUNT_PARTS = (
    ("name", "name", re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*"), "letters, digits, '.', '_' or '-', "
     "starting with a letter or digit (e.g. acme-in)"),
    ("sid", "SID", re.compile(r"[A-Za-z0-9]+"), "letters and digits only (e.g. HXAP16XXXXXX97IN)"),
    ("waba_id", "WABA id", re.compile(r"[0-9]+"), "digits only (e.g. 766000000000001)"),
)  # fmt: skip


def parse_account(text: str) -> NewAccount:
    """`NAME:SID:WABA_ID:POD[:API_VERSION]`, as `--account` takes it; checked by `check_accounts`."""
    parts = text.split(":")
    if len(parts) not in (4, 5) or not all(parts):
        raise ReconcilerError(
            f"--account {text!r}: write {ACCOUNT_FORM}, e.g. acme-in:HXAP16XXXXXX97IN:766000000000001:in:v2"
        )
    return NewAccount(*parts)


def part_problem(part: str, value: str) -> str | None:
    """What is wrong with one part of an account ("name", "sid", "waba_id", "pod", "api_version")."""
    for key, label, pattern, form in ACCOUNT_PARTS:
        if key == part and not pattern.fullmatch(value):
            return f"{label} {value!r} must be {form}"
    if part == "pod" and value not in schema.PODS:
        return f"pod {value!r} must be one of {', '.join(schema.PODS)}"
    if part == "api_version" and value not in schema.API_VERSIONS:
        return f"API version {value!r} must be one of {', '.join(schema.API_VERSIONS)}"
    return None


def account_problems(account: NewAccount) -> list[str]:
    parts = ("name", "sid", "waba_id", "pod", "api_version")
    return [problem for part in parts if (problem := part_problem(part, getattr(account, part)))]


def check_accounts(accounts: list[NewAccount], *, from_flags: bool = True) -> None:
    """Refuse accounts that reconciler.yaml would not accept. Each part is checked on its own first, so
    a message names the value and its allowed form, never a line of a document the user did not write.
    `from_flags` False words the messages for answers typed at the terminal (no --account there)."""
    source = "--account" if from_flags else "accounts"
    problems: list[Problem] = []
    names = [account.name for account in accounts]
    for name in sorted({name for name in names if names.count(name) > 1}):
        problems.append(Problem(source, 0, 0, f"account '{name}' is given twice"))
    variables: dict[str, str] = {}
    for account in accounts:
        other = variables.setdefault(account.api_key_env, account.name)
        if other != account.name:
            problems.append(
                Problem(
                    source,
                    0,
                    0,
                    f"accounts '{other}' and '{account.name}' would share the key variable "
                    f"{account.api_key_env}; rename one",
                )
            )
    for account in accounts:
        shown = account.name if part_problem("name", account.name) is None else repr(account.name)
        where = f"--account {shown}" if from_flags else f"account {shown}"
        own = account_problems(account)
        problems += [Problem(where, 0, 0, message) for message in own]
        if not own:  # a safety net: the parts are valid, so the templated document should be too
            document = parse_mapping(config_text([account], example=False), where)
            problems += [
                Problem(where, 0, 0, problem.message) for problem in schema.check("config", document)
            ]
    if problems:
        raise ValidationFailed(problems)


def account_yaml(account: NewAccount, indent: str = "  ") -> list[str]:
    """The lines of one account under `accounts:` in reconciler.yaml."""
    return [
        f"{indent}{account.name}:",
        f"{indent}  sid: {account.sid}",
        f'{indent}  waba_id: "{account.waba_id}"',
        f"{indent}  pod: {account.pod}",
        f"{indent}  api_version: {account.api_version}",
        f"{indent}  api_key_env: {account.api_key_env}",
    ]


def config_text(accounts: list[NewAccount], *, example: bool) -> str:
    lines = [
        "# The reconciler's configuration: accounts, state and safety settings. No API keys here, ever:",
        "# each account names the environment variable that holds its key (in GitHub, a secret of the",
        "# same name that the apply workflow passes on). Reference: the docs' reconciler.yaml page.",
        f"profiles_dir: {PROFILES_DIR}",
        "state:",
        "  path: .reconciler/state.json",
        "safety:",
        "  max_changes: 50 # apply refuses a plan with more changes than this without --force",
        "accounts:",
    ]
    if example:
        lines += [
            "  # An example to fill in: your account's SID, WABA id (in quotes) and pod (in, ap, eu, na).",
            "  # Rename the account as you like, and its key variable with it.",
        ]
    for account in accounts:
        lines += account_yaml(account)
    return "\n".join(lines) + "\n"


def workflow_text(name: str, action: str, key_variables: list[str]) -> str:
    template = resources.files("reconciler").joinpath("templates", "github", name).read_text("utf-8")
    match = re.search(r"^( *)@KALEYRA_API_KEYS@\n", template, re.MULTILINE)
    if match:
        indent = match.group(1)
        secrets = "".join(f"{indent}{var}: ${{{{ secrets.{var} }}}}\n" for var in key_variables)
        template = template[: match.start()] + secrets + template[match.end() :]
    return template.replace("@ACTION@", action)


def pre_commit_text() -> str:
    return (
        "# pre-commit (https://pre-commit.com): after `pre-commit install`, each commit that touches YAML\n"
        "# runs `reconciler validate` and `reconciler fmt` first.\n"
        "repos:\n"
        f"  - repo: https://github.com/{ACTION_REPOSITORY}\n"
        f"    rev: v{package_version()}\n"
        "    hooks:\n"
        "      - id: reconciler-validate\n"
        "      - id: reconciler-fmt\n"
    )


def package_version() -> str:
    try:
        return metadata.version("kaleyra-reconciler")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0.0.0"


@dataclass
class Scaffold:
    """What `init` wrote, what it found already there (and left alone), and what the user does next."""

    written: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Accounts given to init that the existing reconciler.yaml does not have (or has otherwise): init
    # never edits that file, so the user adds them by hand.
    not_added: list[tuple[NewAccount, str]] = field(default_factory=list)


def accounts_not_in(root: Path, accounts: list[NewAccount]) -> list[tuple[NewAccount, str]]:
    """The accounts an existing reconciler.yaml does not have as given, each with why: "missing",
    "different" (held with other values), or "unreadable" (the file does not load)."""
    try:
        config = load_config(str(root / CONFIG_FILE))
    except ReconcilerError:
        return [(account, "unreadable") for account in accounts]
    found = []
    parts = ("sid", "waba_id", "pod", "api_version", "api_key_env")
    for account in accounts:
        held = config.accounts.get(account.name)
        if held is None:
            found.append((account, "missing"))
        elif any(getattr(held, part) != getattr(account, part) for part in parts):
            found.append((account, "different"))
    return found


def existing_key_variables(root: Path) -> list[str] | None:
    """The key variables of an existing reconciler.yaml, or None when it does not load."""
    try:
        config = load_config(str(root / CONFIG_FILE))
    except ReconcilerError:
        return None
    return sorted({account.api_key_env for account in config.accounts.values()})


def scaffold(root: Path, accounts: list[NewAccount] | None, action: str | None) -> Scaffold:
    """Write the files of a new repository under `root`, never over an existing one.

    `accounts` None means nobody gave any: reconciler.yaml gets one example account to fill in.
    """
    _refuse_blocked_paths(root)
    done = Scaffold()
    example = accounts is None
    accounts = [EXAMPLE_ACCOUNT] if accounts is None else accounts
    key_variables = sorted({account.api_key_env for account in accounts})

    config = root / CONFIG_FILE
    if config.exists() or config.is_symlink():
        done.existing.append(CONFIG_FILE)
        found = existing_key_variables(root)
        if found is None:
            done.notes.append(
                f"{CONFIG_FILE} exists but does not validate (`reconciler validate` says why); the apply "
                "workflow's secret lines are for the accounts given here, check them against it"
            )
        else:
            key_variables = found
        if not example:
            done.not_added = accounts_not_in(root, accounts)
    else:
        _write(done, root, CONFIG_FILE, config_text(accounts, example=example))
        if example:
            done.notes.append(f"{CONFIG_FILE} has an example account: fill in your SID, WABA id and pod")

    profiles = root / PROFILES_DIR
    if profiles.exists():
        done.existing.append(PROFILES_DIR + "/")
    else:
        _write(done, root, f"{PROFILES_DIR}/.gitkeep", "")

    _add_gitignore_entries(done, root)
    _write_new(done, root, ".pre-commit-config.yaml", pre_commit_text())
    for name in WORKFLOWS:
        text = workflow_text(name, action or PLACEHOLDER_ACTION, key_variables)
        _write_new(done, root, f".github/workflows/{name}", text)
    if action is None and any(path.startswith(".github/") for path in done.written):
        done.notes.append(
            f"the workflows use {PLACEHOLDER_ACTION}, a placeholder: put the commit of the release you "
            f"use in each `uses:` line (or run init with --action {ACTION_REPOSITORY}@<commit sha>)"
        )
    if any(path.startswith(".github/") for path in done.written):
        secrets = ", ".join(key_variables)
        done.notes.append(
            f"in GitHub, add the secret(s) {secrets}, then set the variable RECONCILER_LIVE=true"
        )
    return done


def _refuse_blocked_paths(root: Path) -> None:
    """A file where init needs a folder (or the reverse) stops it before anything is written."""
    for folder in (PROFILES_DIR, ".github", ".github/workflows"):
        path = root / folder
        if (path.exists() or path.is_symlink()) and not path.is_dir():
            raise ReconcilerError(f"{path}: exists and is not a folder; nothing was written")
    for file in (CONFIG_FILE, ".gitignore", ".pre-commit-config.yaml"):
        if (root / file).is_dir():
            raise ReconcilerError(f"{root / file}: is a folder, not a file; nothing was written")


def _write_new(done: Scaffold, root: Path, relative: str, text: str) -> None:
    if (root / relative).exists() or (root / relative).is_symlink():
        done.existing.append(relative)
    else:
        _write(done, root, relative, text)


def _write(done: Scaffold, root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "x", encoding="utf-8", newline="\n") as file:  # "x": never over a file
        file.write(text)
    done.written.append(relative)


def _add_gitignore_entries(done: Scaffold, root: Path) -> None:
    path = root / ".gitignore"
    if not path.exists():
        _write(done, root, ".gitignore", _gitignore_block(GITIGNORE_ENTRIES))
        return
    text = path.read_text(encoding="utf-8", errors="replace")
    present = {line.strip() for line in text.splitlines()}
    missing = [entry for entry in GITIGNORE_ENTRIES if entry not in present]
    if not missing:
        done.existing.append(".gitignore (has the reconciler's entries)")
        return
    with open(path, "a", encoding="utf-8", newline="\n") as file:  # appended to, never rewritten
        file.write(("\n" if text and not text.endswith("\n") else "") + _gitignore_block(missing))
    done.written.append(f".gitignore (added {', '.join(missing)})")


def _gitignore_block(entries: tuple[str, ...] | list[str]) -> str:
    return "# The reconciler's lock, journal and temporary files; a virtual environment\n" + "".join(
        f"{entry}\n" for entry in entries
    )
