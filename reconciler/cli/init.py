"""`reconciler init`: scaffold a repository (config, profiles/, .gitignore, pre-commit, workflows)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .. import scaffold
from ..errors import ReconcilerError
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
    apply workflow passes one secret per account, KALEYRA_API_KEY_<NAME>.

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
    echo("Then write a profile per number under profiles/ and run `reconciler validate`.\n")
    return 0


def _interactive() -> bool:
    return sys.stdin.isatty()


def _ask_accounts() -> list[scaffold.NewAccount]:
    """Ask for accounts on the terminal; each answer is checked before the next question."""
    accounts: list[scaffold.NewAccount] = []
    while True:
        name = click.prompt("Account name (letters, digits, . _ -)", err=True)
        sid = click.prompt("  SID", err=True)
        waba_id = click.prompt("  WABA id (digits)", err=True)
        pod = click.prompt("  Pod", type=click.Choice(PODS), default="in", err=True)
        api_version = click.prompt("  API version", type=click.Choice(API_VERSIONS), default="v2", err=True)
        account = scaffold.NewAccount(name.strip(), sid.strip(), waba_id.strip(), pod, api_version)
        try:
            scaffold.check_accounts([*accounts, account])
        except ReconcilerError as error:
            for line in error.lines():
                echo(escape(line) + "\n", err=True)
            echo("That account was not added; try again.\n", err=True)
            continue
        accounts.append(account)
        if not click.confirm("Add another account?", default=False, err=True):
            return accounts
