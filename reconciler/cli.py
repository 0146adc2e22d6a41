"""The `reconciler` command line: thin click commands that parse flags and call the rest.

Exit codes, for every command: 0 success and nothing to do; 1 any error (usage errors included);
2 success with changes present. Errors are mapped to messages and codes in `ReconcilerGroup.main`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from . import audit, render, schema, stateedit
from .apply import (
    ApplyReport,
    SignalGuard,
    api_keys,
    apply_plan,
    check_safety,
    entry_after,
    refuse_key_leaks,
)
from .config import Config, load_config
from .errors import ReconcilerError, StalePlan
from .escape import escape, json_text
from .kaleyra import KaleyraClient
from .plan import Change, Plan, compute_plan, differences, unknown_accounts
from .profiles import Profile, load_profiles
from .secrets import redact
from .selection import Selection, normalise_phone
from .state import Entry, RecordingFailed, State, Store, atomic_write, locked, open_store, unlock

FORMATS = click.Choice(["text", "json", "markdown"])
APPLY_FORMATS = click.Choice(["text", "json", "jsonl", "markdown"])


class PhoneNumber(click.ParamType):
    """A phone number as people type it (`14155550100`, `+1 415-555-0100`), made E.164."""

    name = "PHONE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        number = normalise_phone(str(value))
        if number is None:
            self.fail(
                f"'{value}' is not a phone number: write + then 7 to 15 digits (+14155550100)", param, ctx
            )
        return number


PHONE = PhoneNumber()


class Checksum(click.ParamType):
    """A plan checksum: exactly 64 hex characters. Anything else, the empty string included, is a
    usage error: an empty --checksum must never mean "apply without review"."""

    name = "SHA"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
            self.fail(f"{escape(repr(value))} is not a plan checksum (64 hex characters)", param, ctx)
        return text.lower()


class Rate(click.ParamType):
    """Requests per second: a finite number from MIN_RPS to MAX_RPS (nan and inf are not rates)."""

    name = "R"
    MIN_RPS = 0.01  # one request per 100 s; anything slower is a typo, not a rate limit
    MAX_RPS = 10_000.0

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            rate = float(value)
        except (TypeError, ValueError):
            self.fail(f"{escape(repr(value))} is not a number", param, ctx)
        if not (math.isfinite(rate) and self.MIN_RPS <= rate <= self.MAX_RPS):
            bounds = f"from {self.MIN_RPS} to {self.MAX_RPS:,.0f}"
            self.fail(f"{escape(repr(value))}: give a rate {bounds}", param, ctx)
        return rate


class Duration(click.ParamType):
    """How long to wait: `30s`, `5m`, `1h`, or a bare number of seconds; at most a day."""

    name = "D"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smh]?)\s*", str(value))
        seconds = (
            float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)] if match else -1.0
        )
        if not 0 <= seconds <= 86_400:
            self.fail(
                f"{escape(repr(value))} is not a duration: write 30s, 5m, 1h or a number of seconds",
                param,
                ctx,
            )
        return seconds


lock_timeout_option = click.option(
    "--lock-timeout",
    "lock_timeout",
    type=Duration(),
    default=0.0,
    help="Wait up to D (30s, 5m, or seconds) for a held state lock, then plan afresh. Default: fail at once.",
)


class ReconcilerGroup(click.Group):
    """Maps every error a user can cause to one clear message and exit code 1, with secrets redacted."""

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> NoReturn:  # type: ignore[override]
        extra.pop("standalone_mode", None)
        try:
            code = super().main(args, prog_name, standalone_mode=False, **extra)
        except ReconcilerError as error:
            lines = error.lines()
            for line in lines:
                click.echo(redact(escape(f"error: {line}" if len(lines) == 1 else line)), err=True)
            sys.exit(1)
        except click.exceptions.Abort:
            click.echo("Aborted: nothing was changed.", err=True)
            sys.exit(1)
        except click.ClickException as error:
            error.show()
            sys.exit(1)  # usage errors are 1, not click's 2: 2 always means "changes present"
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(1)
        except OSError as error:  # a file we cannot read or write: disk full, permissions
            where = f"{error.filename}: " if error.filename else ""
            click.echo(redact(escape(f"error: {where}{error.strerror or error}")), err=True)
            sys.exit(1)
        except Exception as error:  # a bug: one line (secrets redacted), the traceback only on request
            if os.environ.get("RECONCILER_DEBUG"):
                click.echo(redact(traceback.format_exc()), err=True)
            click.echo(
                redact(
                    escape(
                        f"internal error: {type(error).__name__}: {error}. This is a bug in the "
                        "reconciler; please report it (RECONCILER_DEBUG=1 shows the traceback)."
                    )
                ),
                err=True,
            )
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def echo(text: str, err: bool = False) -> None:
    click.echo(redact(text), err=err, nl=False, color=False if os.environ.get("NO_COLOR") else None)


def selection_options(function: Any) -> Any:
    """--target and --exclude: a phone number, an account name, or a glob over phone numbers."""
    function = click.option(
        "--exclude",
        "excludes",
        multiple=True,
        metavar="SEL",
        help="Leave out this number, account or glob (repeatable).",
    )(function)
    return click.option(
        "--target",
        "targets",
        multiple=True,
        metavar="SEL",
        help="Only this number, account name or glob like '+9199*' (repeatable).",
    )(function)


def _selection(config: Config, targets: tuple[str, ...], excludes: tuple[str, ...]) -> Selection:
    return Selection.parse(targets, excludes, config.accounts)


def verbose_option(function: Any) -> Any:
    """--verbose is accepted before or after the command name."""

    def remember(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            ctx.ensure_object(dict)["verbose"] = True

    return click.option(
        "--verbose",
        is_flag=True,
        expose_value=False,
        callback=remember,
        is_eager=True,
        help="Log each request (method, URL, status, code, duration, attempt) on stderr; keys redacted.",
    )(function)


@click.group(cls=ReconcilerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config", "config_file", metavar="PATH", help="reconciler.yaml to use (or RECONCILER_CONFIG)."
)
@verbose_option
@click.version_option(package_name="kaleyra-reconciler")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None) -> None:
    """Config-as-code for Kaleyra WhatsApp Business phone-number profiles.

    \b
    Typical flow:
      reconciler validate            # check reconciler.yaml and every profile
      reconciler plan                # what would change, field by field
      reconciler apply               # send exactly that, record each success
      reconciler drift               # where desired and applied state differ (exit 2)
    """
    ctx.ensure_object(dict)["config_file"] = config_file


def _config(ctx: click.Context) -> Config:
    return load_config(ctx.obj.get("config_file"))


def _load(ctx: click.Context) -> tuple[Config, dict[str, Profile]]:
    config = _config(ctx)
    return config, load_profiles(config)


def _load_state(config: Config, store: Store | None = None) -> State:
    """The applied state; entries for accounts reconciler.yaml no longer has are named in a warning."""
    state = (store or open_store(config)).load()
    for account, numbers in sorted(unknown_accounts(state, config.accounts).items()):
        shown = ", ".join(numbers[:5]) + (f" and {len(numbers) - 5} more" if len(numbers) > 5 else "")
        echo(
            escape(
                f"warning: the state holds {len(numbers)} number(s) of account '{account}', which "
                f"{config.path.name} does not have: {shown}. Renamed? `reconciler state mv {account} NEW`"
            )
            + "\n",
            err=True,
        )
    return state


def _notify(text: str) -> None:
    echo(escape(text) + "\n", err=True)


def _log(ctx: click.Context) -> Callable[[str], None] | None:
    return (lambda line: echo(escape(line) + "\n", err=True)) if ctx.obj.get("verbose") else None


def _show_plan(plan: Plan, output: str, title: str = "Plan") -> None:
    if output == "json":
        echo(render.plan_json(plan))
    elif output == "markdown":
        echo(render.plan_markdown(plan, title=f"Kaleyra profile {title.lower()}"))
    else:
        echo(render.plan_text(plan, title))


# --- validate, plan, drift ------------------------------------------------------------------------


ONLINE_HELP = "Also check on Kaleyra that the callback profile ids {} exist and are active (needs API keys)."


@cli.command()
@click.option("--online", is_flag=True, help=ONLINE_HELP.format("every profile names"))
@verbose_option
@click.pass_context
def validate(ctx: click.Context, online: bool) -> int:
    """Check reconciler.yaml and every profile against the schemas and rules. No network, unless --online.

    \b
    Examples:
      reconciler validate && echo "all good"
      reconciler validate --online
    """
    config, profiles = _load(ctx)
    if online:
        from . import online as checks

        checked = checks.check(config, checks.in_profiles(profiles), _log(ctx))
    echo(
        f"Valid: {config.path.name} with {len(config.accounts)} account(s) and {len(profiles)} profile(s).\n"
    )
    if online:
        echo(f"Online: {checked} callback profile id(s) checked on Kaleyra; each exists and is active.\n")
    return 0


@cli.command()
@click.option("--out", "out_file", type=click.Path(dir_okay=False), help="Save the plan for `apply FILE`.")
@selection_options
@click.option("--format", "output", type=FORMATS, default="text", show_default=True)
@click.option("--detailed-exitcode", is_flag=True, help="Exit 2 when there are changes, 0 when none.")
@click.option("--online", is_flag=True, help=ONLINE_HELP.format("the changes send"))
@verbose_option
@click.pass_context
def plan(
    ctx: click.Context,
    out_file: str | None,
    targets: tuple[str, ...],
    excludes: tuple[str, ...],
    output: str,
    detailed_exitcode: bool,
    online: bool,
) -> int:
    """Show what apply would change, field by field. Reads files only (no credentials) unless --online.

    \b
    Examples:
      reconciler plan
      reconciler plan --target +14155550100 --format json
      reconciler plan --target acme-in --exclude '+9199*'
      reconciler plan --out plan.json && reconciler apply plan.json
      reconciler plan --online       # also check the callback profile ids it sends, on Kaleyra
    """
    config, profiles = _load(ctx)
    state = _load_state(config)
    the_plan = compute_plan(profiles, state, _selection(config, targets, excludes), config.waba_keys())
    if online:
        from . import online as checks

        checks.check(config, checks.in_plan(the_plan, profiles), _log(ctx))
    _show_plan(the_plan, output)
    if out_file:
        atomic_write(Path(out_file), (json_text(the_plan.to_saved(), indent=2) + "\n").encode())
        echo(f"Saved the plan to {out_file} (checksum {the_plan.checksum}).\n", err=True)
    return 2 if detailed_exitcode and the_plan.changes else 0


@cli.command()
@selection_options
@click.option("--format", "output", type=FORMATS, default="text", show_default=True)
@verbose_option
@click.pass_context
def drift(ctx: click.Context, targets: tuple[str, ...], excludes: tuple[str, ...], output: str) -> int:
    """Report where the profiles and the applied state differ: exit 2 when they do, 0 when not.

    \b
    Example (a scheduled audit):
      reconciler drift --format markdown >> "$GITHUB_STEP_SUMMARY"
    """
    config, profiles = _load(ctx)
    state = _load_state(config)
    the_plan = compute_plan(profiles, state, _selection(config, targets, excludes), config.waba_keys())
    if output == "text" and not the_plan.changes:
        echo(f"No drift: all {the_plan.unchanged} number(s) match the applied state.\n")
    else:
        _show_plan(the_plan, output, "Drift")
    return 2 if the_plan.changes else 0


# --- apply and import -----------------------------------------------------------------------------


@cli.command()
@click.argument("plan_file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--auto-approve", is_flag=True, help="Do not ask for confirmation.")
@selection_options
@click.option("--parallelism", type=click.IntRange(1, 256), default=8, show_default=True)
@click.option("--max-rps", type=Rate(), help="Hard cap on requests per second (0.01 to 10,000).")
@click.option("--checksum", type=Checksum(), help="Refuse unless the fresh plan has this checksum.")
@click.option(
    "--force", is_flag=True, help="Apply beyond safety.max_changes, or a plan dropping every number."
)
@click.option("--format", "output", type=APPLY_FORMATS, default="text", show_default=True)
@lock_timeout_option
@verbose_option
@click.pass_context
def apply(
    ctx: click.Context,
    plan_file: str | None,
    auto_approve: bool,
    targets: tuple[str, ...],
    excludes: tuple[str, ...],
    parallelism: int,
    max_rps: float | None,
    checksum: str | None,
    force: bool,
    output: str,
    lock_timeout: float,
) -> int:
    """Send the changes to Kaleyra and record each success in the state.

    \b
    Examples:
      reconciler apply                          # plan, show, ask, send
      reconciler apply plan.json                # exactly a saved plan
      reconciler apply --checksum 3fa9... --auto-approve   # exactly what reviewers saw
    """
    if plan_file and (targets or excludes):
        raise click.UsageError(
            "--target and --exclude cannot be combined with a saved plan (it records its own selection)"
        )
    config, profiles = _load(ctx)
    store = open_store(config)
    stop = threading.Event()
    in_flight = (
        f"finishing the requests in flight (each within {config.retry.timeout_s:g} s) and recording them"
    )
    # Signals are deferred from the first PUT until the report is printed and the lock released.
    with SignalGuard(stop, in_flight, ignore_after=_standalone) as guard:
        # The plan is computed only once the lock is held: after a wait, it is a fresh plan.
        with locked(store, "apply", lock_timeout, _notify):
            state = _load_state(config, store)
            if plan_file:
                the_plan = _reviewed_plan(plan_file, profiles, state, config)
            else:
                selection = _selection(config, targets, excludes)
                the_plan = compute_plan(profiles, state, selection, config.waba_keys())
            if checksum and the_plan.checksum != checksum:
                raise StalePlan(
                    f"stale plan: the plan is now {the_plan.checksum}, not the reviewed {checksum}; "
                    "the state or the profiles changed since. Review the new plan"
                )
            if not the_plan.changes:
                _show_report(ApplyReport(), the_plan, output)
                return 0
            check_safety(the_plan, state, config.max_changes, force)
            keys = api_keys(the_plan, config)
            if output == "text":
                echo(render.plan_text(the_plan))
            if not (plan_file or checksum or auto_approve):
                if output != "text":  # nobody approves a plan they were not shown
                    echo(render.plan_text(the_plan), err=True)
                _confirm("Apply these changes?")
            guard.activate()
            report = _send(ctx, the_plan, config, store, state, keys, parallelism, max_rps, output, stop)
        _show_report(report, the_plan, output)
    return 0 if report.ok else 1


def _send(
    ctx: click.Context,
    the_plan: Plan,
    config: Config,
    store: Store,
    state: State,
    keys: dict[str, str],
    parallelism: int,
    max_rps: float | None,
    output: str,
    stop: threading.Event,
) -> ApplyReport:
    """Run the plan; every result Kaleyra accepted is recorded, or printed as unrecorded."""
    audit_log = audit.open_audit(config)
    progress = render.ApplyProgress(len(the_plan.changes), output, echo)
    report: ApplyReport | None = None
    try:
        # One stop event: a signal also ends the client's retries, backoff sleeps and pace waits at once.
        client = KaleyraClient(
            config.retry, max_connections=parallelism, max_rps=max_rps, log=_log(ctx), stop=stop
        )
        with client, store.writer(state) as journal:
            report = apply_plan(
                the_plan,
                config,
                state,
                journal,
                audit_log,
                client,
                keys,
                parallelism=parallelism,
                stop=stop,
                progress=progress,
            )
    except (RecordingFailed, OSError) as failure:
        if report is None:
            raise  # before the first PUT: nothing was sent
        # Compaction failed: every success is still in the journal, which the next command replays.
        report.recording_failure = report.recording_failure or (
            f"the state could not be rewritten ({failure}); its journal {store.journal_where()} "
            "keeps every success and the next command replays it"
        )
    finally:
        try:
            audit_log.close()
        except RecordingFailed as failure:
            if report is None:
                raise
            report.recording_failure = report.recording_failure or str(failure)
    return report


def _show_report(report: ApplyReport, plan: Plan, output: str) -> None:
    if report.recording_failure or report.output_failure:  # on stderr whatever the format
        echo(render.recording_failure_text(report), err=True)
    if output == "json":
        echo(render.report_json(report, plan))
    elif output == "jsonl":
        echo(render.report_jsonl_summary(report, plan))
    elif output == "markdown":
        echo(render.report_markdown(report, plan))
    elif plan.changes:
        echo(render.failures_text(report), err=True)  # errors go to stderr, the summary to stdout
        echo(render.report_text(report))
    else:
        echo(render.plan_text(plan))  # nothing to do: "No changes."


def _reviewed_plan(plan_file: str, profiles: dict[str, Profile], state: State, config: Config) -> Plan:
    """The plan to apply for a saved plan file: a FRESH plan, and only if it equals the saved one.

    The file's own checksum proves nothing (anyone can recompute a sha256), so the file is only a
    statement of what was reviewed; what is sent is computed now, and must match it exactly.
    """
    try:
        document = json.loads(Path(plan_file).read_bytes())
    except (OSError, ValueError, RecursionError) as error:
        raise ReconcilerError(f"{plan_file}: not a readable saved plan ({error})") from None
    try:
        saved = Plan.from_saved(document)
    except ReconcilerError as error:
        raise ReconcilerError(f"{plan_file}: {error}") from None
    if (saved.lineage, saved.serial) != (state.lineage, state.serial):
        raise StalePlan(
            f"stale plan: {plan_file} was made against state serial {saved.serial} "
            f"(lineage {saved.lineage}), the state is now serial {state.serial} (lineage {state.lineage}); "
            "run `reconciler plan` again"
        )
    selection = _selection(config, saved.targets, saved.excludes)
    fresh = compute_plan(profiles, state, selection, config.waba_keys())
    if fresh.profiles_digest != saved.profiles_digest:
        raise StalePlan(
            f"stale plan: the profiles changed since {plan_file} was made; run `reconciler plan` again"
        )
    found = differences(saved, fresh)
    if found:
        raise StalePlan(
            f"stale plan: {plan_file} does not match a fresh plan of the same state and profiles "
            "(was it edited?); nothing was sent. What differs:",
            found,
        )
    return fresh


def _interactive() -> bool:
    return sys.stdin.isatty()


def _confirm(question: str) -> None:
    if not _interactive():
        raise ReconcilerError(
            "no terminal to ask for confirmation; pass --auto-approve (nothing was changed)"
        )
    if not click.confirm(question, default=False, err=True):
        raise click.exceptions.Abort()


@cli.command(name="import")
@selection_options
@click.option("--auto-approve", is_flag=True, help="Do not ask for confirmation.")
@lock_timeout_option
@verbose_option
@click.pass_context
def import_(
    ctx: click.Context,
    targets: tuple[str, ...],
    excludes: tuple[str, ...],
    auto_approve: bool,
    lock_timeout: float,
) -> int:
    """Adopt numbers with no state entry whose YAML is already live: record it as applied, send nothing.

    Numbers the state already manages are listed and skipped: an edit of one is applied with `apply`.

    \b
    Example (numbers set up by hand before the reconciler):
      reconciler import --target +14155550100 --auto-approve
    """
    config, profiles = _load(ctx)
    store = open_store(config)
    with locked(store, "import", lock_timeout, _notify):
        state = _load_state(config, store)
        the_plan = compute_plan(profiles, state, _selection(config, targets, excludes), config.waba_keys())
        adopted = [
            c for c in the_plan.changes if c.action == "create" and c.phone_number not in state.entries
        ]
        for change in the_plan.changes:
            if change not in adopted:
                echo(escape(f"  skip   {change.phone_number} ({change.account}): {_why_skipped(change)}\n"))
        if not adopted:
            echo("Nothing to import: every profile already has a state entry.\n")
            return 0
        refuse_key_leaks(adopted)
        for change in adopted:
            echo(f"  import {change.phone_number} ({change.account}): {len(change.fields)} field(s)\n")
        if not auto_approve:
            _confirm(f"Record these {len(adopted)} number(s) as applied without sending anything?")
        actor = audit.who(config.path.parent)
        message = "imported: recorded as applied, nothing sent"
        _record_locally(
            config,
            store,
            state,
            [(change.phone_number, entry_after(change, state)) for change in adopted],
            [audit.record(change, "IMPORTED", message, actor) for change in adopted],
        )
    echo(f"Imported {len(adopted)} number(s); nothing was sent.\n")
    return 0


def _record_locally(
    config: Config,
    store: Store,
    state: State,
    entries: list[tuple[str, Entry | None]],
    audit_records: list[dict[str, Any]],
) -> None:
    """Record changes that send nothing (import, state rm/mv): both files proven writable first, then
    the state, then the audit log. If only the audit log fails, say plainly that the state changed."""
    audit_log = audit.open_audit(config)
    try:
        with store.writer(state) as journal:
            journal.open()
            audit_log.open()
            journal.record(entries)
            try:
                audit_log.append(audit_records)
            except RecordingFailed as failure:
                raise ReconcilerError(
                    f"the state WAS changed ({len(entries)} number(s)), but the audit log could not "
                    f"record it: {failure}"
                ) from None
    except BaseException:
        with contextlib.suppress(RecordingFailed):
            audit_log.close()
        raise
    audit_log.close()


def _why_skipped(change: Change) -> str:
    if change.action == "forget":
        return "in the state with no profile; `reconciler apply` forgets it"
    if change.moved_from:
        return f"managed under {change.moved_from}; `reconciler apply` sends it to its new account"
    return f"already managed, {change.action} pending; `reconciler apply` applies it"


# --- state, history, schema -----------------------------------------------------------------------


@cli.group()
def state() -> None:
    """Inspect and maintain the applied state: list, show, rm, mv, unlock.

    \b
    Examples:
      reconciler state list
      reconciler state show +14155550100
      reconciler state rm +14155550100
      reconciler state mv old-label new-label
      reconciler state unlock --force
    """


@state.command(name="list")
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@verbose_option
@click.pass_context
def state_list(ctx: click.Context, output: str) -> int:
    """List every number in the applied state.

    \b
    Example:
      reconciler state list --format json | jq '.numbers | keys'
    """
    current = open_store(_config(ctx)).load()
    echo(
        json_text(current.to_json(), indent=2) + "\n" if output == "json" else render.state_list_text(current)
    )
    return 0


@state.command(name="show")
@click.argument("phone_number", type=PHONE)
@verbose_option
@click.pass_context
def state_show(ctx: click.Context, phone_number: str) -> int:
    """Show what was applied to one number.

    \b
    Example:
      reconciler state show +14155550100
    """
    current = open_store(_config(ctx)).load()
    entry = current.entries.get(phone_number)
    if entry is None:
        raise ReconcilerError(f"{phone_number}: not in the state (nothing applied or imported yet)")
    echo(render.entry_text(phone_number, entry))
    return 0


@state.command(name="rm")
@click.argument("phone_numbers", nargs=-1, required=True, type=PHONE)
@verbose_option
@click.pass_context
def state_rm(ctx: click.Context, phone_numbers: tuple[str, ...]) -> int:
    """Stop managing numbers without touching their profiles or sending anything.

    Their profiles, if they still exist, plan as creates afterwards.

    \b
    Example:
      reconciler state rm +14155550100 +14155550101
    """
    return _edit_state(ctx, "state rm", lambda state, config: stateedit.remove(state, list(phone_numbers)))


@state.command(name="mv")
@click.argument("old")
@click.argument("new")
@verbose_option
@click.pass_context
def state_mv(ctx: click.Context, old: str, new: str) -> int:
    """Rename account label OLD to NEW in the state, after renaming it in reconciler.yaml.

    Refused unless NEW has the sid and waba_id the numbers were applied to, so a real move to another
    WABA is still sent in full. Nothing is sent.

    \b
    Example (acme-in was renamed acme-india in reconciler.yaml):
      reconciler state mv acme-in acme-india
    """
    return _edit_state(
        ctx, "state mv", lambda state, config: stateedit.rename_account(state, old, new, config)
    )


def _edit_state(
    ctx: click.Context, command: str, work_out: Callable[[State, Config], list[stateedit.Edit]]
) -> int:
    """Record a hand edit of the state like an apply: under the lock, journaled, audited."""
    config = _config(ctx)
    store = open_store(config)
    with locked(store, command):
        state = store.load()
        edits = work_out(state, config)
        actor = audit.who(config.path.parent)
        _record_locally(
            config,
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
@verbose_option
@click.pass_context
def state_unlock(ctx: click.Context, force: bool) -> int:
    """Clear a stale lock left by a run that died (--force: any lock; be sure no run is active).

    \b
    Example:
      reconciler state unlock
    """
    echo(escape(unlock(open_store(_config(ctx)), force)) + "\n")
    return 0


@state.command(name="migrate")
@click.option(
    "--to", "to", type=click.Choice(["s3", "local"]), required=True, help="Where to copy the state."
)
@lock_timeout_option
@verbose_option
@click.pass_context
def state_migrate(ctx: click.Context, to: str, lock_timeout: float) -> int:
    """Copy the state and its audit log between state.path and the S3 object state describes.

    Both locks are held while copying; a target holding another state (lineage) is never overwritten.

    \b
    Example (moving to S3; then set `state.backend: s3`):
      reconciler state migrate --to s3
    """
    from .migrate import migrate

    echo(migrate(_config(ctx), to, lock_timeout, _notify) + "\n")
    return 0


@cli.command()
@click.argument("phone_number", required=False, type=PHONE)
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@verbose_option
@click.pass_context
def history(ctx: click.Context, phone_number: str | None, output: str) -> int:
    """The audit log: who changed what, when, with which result (newest last).

    \b
    Examples:
      reconciler history
      reconciler history +14155550100
    """
    records = list(audit.open_audit(_config(ctx)).read(phone_number))
    echo(json_text(records, indent=2) + "\n" if output == "json" else render.history_text(records))
    return 0


@cli.command(name="schema")
@click.argument("kind", type=click.Choice(sorted(schema.SCHEMAS)), default="profile")
def schema_command(kind: str) -> int:
    """Print a JSON Schema (profile or config).

    \b
    Example:
      reconciler schema config > schemas/config.schema.json
    """
    echo(json.dumps(schema.SCHEMAS[kind](), indent=2) + "\n")
    return 0


@cli.command(name="fmt")
@click.option(
    "--check", is_flag=True, help="Rewrite nothing; list the files that would change, exit 1 if any."
)
@click.argument("paths", nargs=-1, type=click.Path())
@click.pass_context
def fmt_command(ctx: click.Context, check: bool, paths: tuple[str, ...]) -> int:
    """Rewrite profiles in canonical form (key order, quoting), values and comments unchanged.

    Without PATHs, every profile under profiles_dir; with PATHs, those files and folders.

    \b
    Examples:
      reconciler fmt
      reconciler fmt --check profiles/acme-in
    """
    from . import fmt

    report = fmt.run(paths, None if paths else _config(ctx).profiles_dir, check=check)
    for line in report.summary(check):
        echo(line + "\n")
    for line in report.errors():
        echo(line + "\n", err=True)
    return report.exit_code(check)


# --- sandbox --------------------------------------------------------------------------------------


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="0 picks a free port."
)
@click.option("--latency-ms", type=click.FloatRange(min=0), default=0, show_default=True)
@click.option(
    "--fail-rate", type=click.FloatRange(0, 1), default=0, show_default=True, help="Share of failures."
)
@click.option(
    "--faults",
    default="wa500",
    show_default=True,
    metavar="LIST",
    help="How failures look, comma-separated: wa500, 429 (with Retry-After), drop (connection closed).",
)
@click.option(
    "--retry-after",
    default="1",
    show_default=True,
    metavar="SECONDS|none",
    help="Retry-After header of every 429 (whole seconds); 'none' sends 429s without it.",
)
@click.option(
    "--rate-limit",
    type=click.FloatRange(min=0, min_open=True, max=100_000),
    metavar="RPS",
    help="Requests per second per account (sid), a token bucket; beyond it, 429.",
)
@click.option(
    "--burst", type=click.IntRange(1, 100_000), help="Requests the bucket allows at once [default: RPS]."
)
@click.option(
    "--data", "data_file", type=click.Path(dir_okay=False), help="Provision from / persist to this JSON."
)
@click.option(
    "--callback-profiles",
    "callback_file",
    type=click.Path(dir_okay=False, exists=True),
    help="JSON of more callback profiles, with their status (1 active, 2 auto-disabled, 3 disabled).",
)
@click.option(
    "--api-key", "api_key", metavar="KEY", help="Require this key (default: accept any non-empty key)."
)
@click.option("--seed", type=int, help="Seed the fault dice, for repeatable runs.")
@verbose_option
@click.pass_context
def sandbox(
    ctx: click.Context,
    host: str,
    port: int,
    latency_ms: float,
    fail_rate: float,
    faults: str,
    retry_after: str,
    rate_limit: float | None,
    burst: int | None,
    data_file: str | None,
    callback_file: str | None,
    api_key: str | None,
    seed: int | None,
) -> int:
    """Serve a local Kaleyra emulator, provisioned from reconciler.yaml and the profiles.

    \b
    Example:
      reconciler sandbox --port 8080 &
      KALEYRA_ENDPOINT=http://127.0.0.1:8080 KALEYRA_API_KEY=demo-key-123 reconciler apply --auto-approve
    """
    from . import sandbox as emulator

    kinds = tuple(kind.strip() for kind in faults.split(",") if kind.strip())
    unknown = [kind for kind in kinds if kind not in emulator.FAULTS]
    if unknown or not kinds:
        raise click.BadParameter(
            f"unknown fault {unknown[0] if unknown else '(none)'}; use {', '.join(emulator.FAULTS)}"
        )
    if rate_limit is not None and not rate_limit < float("inf"):  # FloatRange lets nan through
        raise click.BadParameter(f"{rate_limit} is not a number of requests", param_hint="--rate-limit")
    if not emulator.RETRY_AFTER.fullmatch(retry_after):
        raise click.BadParameter(f"'{retry_after}': give whole seconds or none", param_hint="--retry-after")
    options = {
        "api_key": api_key or None,
        "latency_ms": latency_ms,
        "fail_rate": fail_rate,
        "faults": kinds,
        "retry_after_s": None if retry_after == "none" else int(retry_after),
        "seed": seed,
        "rate_limit": rate_limit,
        "burst": burst,
    }
    if data_file:
        held = emulator.Sandbox.from_file(Path(data_file), **options)
    else:
        config, profiles = _load(ctx)
        held = emulator.Sandbox(emulator.provision(config, profiles), **options)
        held.callback_profiles = emulator.provision_callback_profiles(config, profiles, held.accounts)
    if callback_file:
        emulator.load_callback_profiles(Path(callback_file), held.callback_profiles)
    try:
        server = emulator.make_server(held, host, port, verbose=bool(ctx.obj.get("verbose")))
    except OSError as error:
        raise ReconcilerError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    numbers = sum(len(account.numbers) for account in held.accounts)
    echo(
        f"Kaleyra sandbox listening on {server.url} ({len(held.accounts)} account(s), {numbers} number(s))\n",
        err=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


# True when running as the `reconciler` program (not driven in-process, as tests do).
_standalone = False


def main() -> None:
    global _standalone
    _standalone = True
    cli(prog_name="reconciler")
