"""`reconciler state ...` and `reconciler history`: inspect and maintain the applied state.

Hand edits (`state rm`, `state mv`) are worked out in `state.edits` and recorded like an apply: under
the lock, journaled and audited.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import click

from .. import render
from ..apply import SignalGuard
from ..config import Config
from ..errors import ReconcilerError
from ..escape import escape, json_text
from ..state import audit, edits
from ..state.backends import open_store
from ..state.edits import record_locally
from ..state.files import atomic_write
from ..state.lock import locked, unlock
from ..state.model import State, parse_state
from ..yamlfile import read_regular
from .common import PHONE, config_of, echo, lock_timeout_option, notify


@click.group()
def state() -> None:
    """Inspect and maintain the applied state: list, show, rm, mv, unlock.

    \b
    Examples:
      reconciler state list
      reconciler state show +14155550100
      reconciler state rm +14155550100
      reconciler state mv old-label new-label
      reconciler state unlock --force
      reconciler state pull
    """


@state.command(name="list")
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
def state_list(ctx: click.Context, output: str) -> int:
    """List every number in the applied state.

    \b
    Example:
      reconciler state list --format json | jq '.numbers | keys'
    """
    store = open_store(config_of(ctx))
    current = store.load()
    current.refuse_if_moved(store.where())
    echo(
        json_text(current.to_json(), indent=2) + "\n" if output == "json" else render.state_list_text(current)
    )
    return 0


@state.command(name="show")
@click.argument("phone_number", type=PHONE)
@click.pass_context
def state_show(ctx: click.Context, phone_number: str) -> int:
    """Show what was applied to one number.

    \b
    Example:
      reconciler state show +14155550100
    """
    store = open_store(config_of(ctx))
    current = store.load()
    current.refuse_if_moved(store.where())
    entry = current.entries.get(phone_number)
    if entry is None:
        raise ReconcilerError(f"{phone_number}: not in the state (nothing applied or imported yet)")
    echo(render.entry_text(phone_number, entry))
    return 0


@state.command(name="rm")
@click.argument("phone_numbers", nargs=-1, required=True, type=PHONE)
@click.pass_context
def state_rm(ctx: click.Context, phone_numbers: tuple[str, ...]) -> int:
    """Stop managing numbers without touching their profiles or sending anything.

    Their profiles, if they still exist, plan as creates afterwards.

    \b
    Example:
      reconciler state rm +14155550100 +14155550101
    """
    return _edit_state(ctx, "state rm", lambda state, config: edits.remove(state, list(phone_numbers)))


@state.command(name="mv")
@click.argument("old")
@click.argument("new")
@click.pass_context
def state_mv(ctx: click.Context, old: str, new: str) -> int:
    """Rename account label OLD to NEW in the state, after renaming it in reconciler.yaml.

    Refused unless NEW has the sid and waba_id the numbers were applied to, so a real move to another
    WABA is still sent in full. Nothing is sent.

    \b
    Example (acme-in was renamed acme-india in reconciler.yaml):
      reconciler state mv acme-in acme-india
    """
    return _edit_state(ctx, "state mv", lambda state, config: edits.rename_account(state, old, new, config))


def _edit_state(
    ctx: click.Context, command: str, work_out: Callable[[State, Config], list[edits.Edit]]
) -> int:
    """Record a hand edit of the state like an apply: under the lock, journaled, audited."""
    config = config_of(ctx)
    store = open_store(config)
    with SignalGuard(threading.Event()), locked(store, command):
        state = store.load()
        state.refuse_if_moved(store.where())
        edits = work_out(state, config)
        actor = audit.who(config.path.parent)
        record_locally(
            store,
            state,
            [(edit.phone_number, edit.entry) for edit in edits],
            [
                audit.entry(edit.phone_number, edit.account, command, edit.fields, "-", edit.message, actor)
                for edit in edits
            ],
        )
    for edit in edits:
        echo(escape(f"  {command[6:]}  {edit.phone_number}: {edit.message}") + "\n")
    echo(f"{len(edits)} number(s) changed in the state; nothing was sent.\n")
    return 0


@state.command(name="unlock")
@click.option("--force", is_flag=True, help="Remove the lock even if its holder may still be running.")
@click.pass_context
def state_unlock(ctx: click.Context, force: bool) -> int:
    """Clear a stale lock left by a run that died (--force: any lock; be sure no run is active).

    \b
    Example:
      reconciler state unlock
    """
    echo(escape(unlock(open_store(config_of(ctx)), force)) + "\n")
    return 0


@state.command(name="migrate")
@click.option(
    "--to", "to", type=click.Choice(["s3", "local"]), required=True, help="Where to copy the state."
)
@lock_timeout_option
@click.pass_context
def state_migrate(ctx: click.Context, to: str, lock_timeout: float) -> int:
    """Copy the state and its audit log between state.path and the S3 object state describes.

    Both locks are held while copying; a target holding another state (lineage) is never overwritten.

    \b
    Example (moving to S3; then set `state.backend: s3`):
      reconciler state migrate --to s3
    """
    from ..state.migrate import migrate

    with SignalGuard(threading.Event()):
        echo(migrate(config_of(ctx), to, lock_timeout, notify) + "\n")
    return 0


class Since(click.ParamType):
    """A point in time: a date (2026-12-01), a date and time (2026-12-01T09:30:00Z, UTC unless an
    offset is given), or a duration back from now (30m, 24h, 7d, 2w)."""

    name = "DATE|DURATION"
    UNITS: ClassVar[dict[str, int]] = {"m": 60, "h": 3600, "d": 86_400, "w": 604_800}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        match = re.fullmatch(r"([0-9]+)([mhdw])", text)
        if match:
            # Any number of units back: one from before the calendar begins means "from the start".
            now, digits = datetime.now(UTC), match.group(1).lstrip("0") or "0"
            earliest = datetime.min.replace(tzinfo=UTC)
            if (
                len(digits) > 15
                or int(digits) * self.UNITS[match.group(2)] >= (now - earliest).total_seconds()
            ):
                return earliest
            return now - timedelta(seconds=int(digits) * self.UNITS[match.group(2)])
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.fail(
                f"{escape(repr(text))} is neither a date (2026-12-01, 2026-12-01T09:30:00Z) nor a "
                "duration (30m, 24h, 7d, 2w)",
                param,
                ctx,
            )
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _recorded_at(record: dict[str, Any]) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(record.get("time")))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


BRANCH_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}")


@state.command(name="pull")
@click.option("--branch", default="reconciler-state", show_default=True, help="The state branch CI writes.")
@click.option("--remote", default="origin", show_default=True, help="The git remote that holds it.")
@click.option(
    "--force",
    is_flag=True,
    help="Replace a local state of another lineage or a higher serial (a backup is kept beside it).",
)
@click.pass_context
def state_pull(ctx: click.Context, branch: str, remote: str, force: bool) -> int:
    """Copy the applied state from the state branch CI keeps, to plan locally against the real state.

    Fetches BRANCH from REMOTE with your own git credentials and writes its state file and audit log
    over the local copies, at the paths reconciler.yaml gives them. Nothing else changes: your
    checkout, branch and index stay as they are. A state on S3 needs no pull: plan reads the bucket.
    A local state of another lineage, or with a higher serial, is not replaced without --force; with
    it, the local files are first copied to a backup beside them.

    \b
    Example:
      reconciler state pull && reconciler plan
    """
    config = config_of(ctx)
    if config.state_backend != "local":
        echo("The state is kept on S3 (state.backend s3): plan reads it there; nothing to pull.\n")
        return 0
    if not BRANCH_NAME.fullmatch(branch) or ".." in branch or not BRANCH_NAME.fullmatch(remote):
        raise click.UsageError("--branch and --remote take a git branch and remote name")
    root = config.path.parent
    journal = config.state_path.with_name(config.state_path.name + ".journal")
    if journal.exists() or config.state_path.with_name(config.state_path.name + ".lock").exists():
        raise ReconcilerError(
            f"{journal.parent}: a local run's journal or lock is there; finish or clear it "
            "(`reconciler state unlock`) before pulling the state over it"
        )
    top = _git(root, "rev-parse", "--show-toplevel").strip()
    fetched = subprocess.run(
        ["git", "-C", str(root), "fetch", "--quiet", "--no-tags", remote, f"refs/heads/{branch}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if fetched.returncode != 0:
        said = " ".join(line.strip() for line in fetched.stderr.splitlines() if line.strip())
        raise ReconcilerError(
            f"cannot fetch the branch {escape(branch)} from {escape(remote)} (git says: "
            f"{escape(said or 'nothing')}); if the remote is right and the branch does not exist yet, "
            "the first apply in CI creates it"
        )
    fetched_files: dict[Path, bytes] = {}
    for path in (config.state_path, config.audit_path):
        inside = path.resolve().relative_to(Path(top).resolve()).as_posix()
        shown = subprocess.run(
            ["git", "-C", str(root), "show", f"FETCH_HEAD:{inside}"], capture_output=True, check=False
        )
        if shown.returncode == 0:
            fetched_files[path] = shown.stdout
    if config.state_path not in fetched_files:
        raise ReconcilerError(f"the branch {escape(branch)} holds no state at {config.state_path.name}")
    where = f"{remote}/{branch}:{config.state_path.name}"
    pulled_state = parse_state(fetched_files[config.state_path], escape(where), "fix the state branch")
    backup = _refuse_or_back_up(config, pulled_state, force)
    pulled = []
    for path, content in fetched_files.items():
        atomic_write(path, content)
        pulled.append(path.resolve().relative_to(Path(top).resolve()).as_posix())
    echo(
        f"Pulled {', '.join(pulled)} from {escape(remote)}/{escape(branch)}: {len(pulled_state.entries)} "
        f"number(s), serial {pulled_state.serial}.\n"
    )
    if backup is not None:
        echo(f"The local state it replaced is kept in {escape(str(backup))}.\n")
    return 0


def _refuse_or_back_up(config: Config, pulled: State, force: bool) -> Path | None:
    """A pull must not silently drop records only the local state holds (an `import`, a local apply):
    another lineage or a higher serial is refused, or with --force copied aside first."""
    if not config.state_path.exists():
        return None
    local = open_store(config).load()
    if local.lineage in (None, pulled.lineage) and local.serial <= pulled.serial:
        return None
    if not force:
        why = (
            f"its lineage {local.lineage} is not the branch's {pulled.lineage or '(none)'}"
            if local.lineage not in (None, pulled.lineage)
            else f"its serial {local.serial} is newer than the branch's {pulled.serial}"
        )
        raise ReconcilerError(
            f"{config.state_path}: the local state may hold records the branch lacks ({escape(why)}), "
            "so it was not replaced and nothing was written; compare them (`reconciler state list`), "
            "or pass --force to replace it (a backup of it is kept)"
        )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    backup = config.state_path.with_name(f"{config.state_path.name}.before-pull-{stamp}")
    for attempt in range(2, 100):  # two forced pulls in one second each keep their own backup
        try:
            backup.mkdir()
            break
        except FileExistsError:
            backup = backup.with_name(f"{config.state_path.name}.before-pull-{stamp}-{attempt}")
    for path in (config.state_path, config.audit_path):
        if path.exists():
            atomic_write(backup / path.name, read_regular(path))
    return backup


def _git(root: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ReconcilerError(f"{root}: not a git checkout ({escape(result.stderr.strip())})")
    return result.stdout


@click.command()
@click.argument("phone_number", required=False, type=PHONE)
@click.option("--since", type=Since(), help="Only records from then on: 2026-12-01, or 24h, 7d back.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Only the N newest records.")
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
def history(
    ctx: click.Context, phone_number: str | None, since: datetime | None, limit: int | None, output: str
) -> int:
    """The audit log: who changed what, when, with which result (newest last).

    \b
    Examples:
      reconciler history
      reconciler history +14155550100
      reconciler history --since 7d --limit 20
      reconciler history --since 2026-12-01 --format json
    """
    logged = list(open_store(config_of(ctx)).audit_log().read(phone_number))
    records = logged
    if since is not None:
        records = [r for r in records if (at := _recorded_at(r)) is not None and at >= since]
    if limit is not None:
        records = records[-limit:]
    if output == "json":
        echo(json_text(records, indent=2) + "\n")
    else:
        echo(render.history_text(records, phone_number, since, earlier=len(logged) - len(records)))
    return 0
