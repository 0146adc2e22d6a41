"""`reconciler init`: scaffold a repository (config, profiles/, .gitignore, pre-commit, workflows)."""

from __future__ import annotations

import sys
from collections.abc import Collection
from pathlib import Path

import click

from .. import scaffold
from ..errors import AccountsNotAdded, ReconcilerError
from ..escape import escape
from ..schema import API_VERSIONS, PODS
from .common import echo


@click.command()
@click.option(
    "--account",
    "account_specs",
    multiple=True,
    metavar=scaffold.ACCOUNT_FORM,
    help="An account for reconciler.yaml (repeatable); API_VERSION defaults to v2.",
)
@click.option(
    "--action",
    metavar="OWNER/REPO@SHA",
    help="The reconciler action the workflows use, pinned by full commit SHA (default: a placeholder).",
)
@click.argument("directory", required=False, default=".", type=click.Path(file_okay=False))
def init(account_specs: tuple[str, ...], action: str | None, directory: str) -> int:
    """Scaffold a repository: reconciler.yaml, profiles/, .gitignore entries, pre-commit, workflows.

    Never overwrites: a file that exists is left as it is and listed. Accounts come from --account;
    without it, init asks on a terminal, and otherwise writes one example account to fill in. The
    apply workflow passes one secret per account, KALEYRA_API_KEY_<NAME>. An --account that an
    existing reconciler.yaml lacks is not added: init prints its YAML to add by hand and exits 1.

    \b
    Examples:
      reconciler init
      reconciler init --account acme-in:HXAP16XXXXXX97IN:766000000000001:in \\
                      --account acme-us:HXUS22XXXXXX41NA:766000000000002:na:v1
      reconciler init --action kaleyra-reconciler/kaleyra-reconciler@<commit sha> new-repo/
    """
    if action is not None and not scaffold.ACTION_REF.fullmatch(action):
        raise click.BadParameter(
            f"{action!r}: write OWNER/REPO@<full 40-character commit sha>", param_hint="--action"
        )
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise ReconcilerError(f"{directory}: not a folder")
    accounts: list[scaffold.NewAccount] | None = None
    if account_specs:
        accounts = [scaffold.parse_account(spec) for spec in account_specs]
    elif _interactive() and not (root / scaffold.CONFIG_FILE).exists():
        accounts = _ask_accounts()
    if accounts is not None:
        scaffold.check_accounts(accounts)  # before anything is written
    root.mkdir(parents=True, exist_ok=True)
    done = scaffold.scaffold(root, accounts, action)
    for path in done.existing:
        echo(escape(f"  exists  {path}") + "\n")
    for path in done.written:
        echo(escape(f"  wrote   {path}") + "\n")
    echo(f"{len(done.written)} written; {len(done.existing)} already there, left as they were.\n")
    if done.notes:
        echo("Next:\n" + "".join(escape(f"  - {note}") + "\n" for note in done.notes))
    if done.not_added:
        _refuse_unadded(done.not_added)
    echo("Then write a profile per number under profiles/ and run `reconciler validate`.\n")
    return 0


def _refuse_unadded(not_added: list[tuple[scaffold.NewAccount, str]]) -> None:
    """init never edits an existing reconciler.yaml: an account given with --account that it does not
    have as given is not added, and that is an error (exit 1), so a script cannot go on as if it were."""
    config = scaffold.CONFIG_FILE
    why = {
        "missing": "has no account",
        "different": "has, with other values, the account",
        "unreadable": "does not load (`reconciler validate` says why), so it was not checked for",
    }
    reasons = []
    for reason, text in why.items():
        names = [repr(account.name) for account, given in not_added if given == reason]
        if names:
            reasons.append(f"it {text} {', '.join(names)}")
    raise AccountsNotAdded(
        f"{config} exists and init never edits it: {'; '.join(reasons)} as given with --account, so "
        f"{'that account was' if len(not_added) == 1 else 'those accounts were'} not added (the other "
        "files are as listed above).",
        [
            f"Add (or correct) this under `accounts:` in {config} by hand, then run `reconciler validate`:",
            *(line for account, _ in not_added for line in scaffold.account_yaml(account)),
        ],
    )


def _interactive() -> bool:
    return sys.stdin.isatty()


def _ask_accounts() -> list[scaffold.NewAccount]:
    """Ask for accounts on the terminal; each answer is checked before the next question."""
    accounts: list[scaffold.NewAccount] = []
    while True:
        taken = {account.name for account in accounts}
        name = _ask("Account name (letters, digits, . _ -)", "name", taken)
        sid = _ask("  SID", "sid")
        waba_id = _ask("  WABA id (digits)", "waba_id")
        pod = click.prompt("  Pod", type=click.Choice(PODS), default="in", err=True)
        api_version = click.prompt("  API version", type=click.Choice(API_VERSIONS), default="v2", err=True)
        account = scaffold.NewAccount(name, sid, waba_id, pod, api_version)
        try:
            scaffold.check_accounts([*accounts, account], from_flags=False)
        except ReconcilerError as error:
            for line in error.lines():
                echo(escape(line) + "\n", err=True)
            echo("That account was not added; try again.\n", err=True)
            continue
        accounts.append(account)
        if not click.confirm("Add another account?", default=False, err=True):
            return accounts


def _ask(question: str, part: str, taken: Collection[str] = ()) -> str:
    """Ask until the answer has the allowed form: a bad value is refused at once, not after the rest."""
    while True:
        answer = click.prompt(question, err=True).strip()
        problem = scaffold.part_problem(part, answer)
        if problem is None and answer in taken:
            problem = f"account {answer!r} is already given"
        if problem is None:
            return answer
        echo(escape(problem) + "; try again.\n", err=True)
