"""`reconciler apply` and `reconciler import`: the commands that change the state.

Thin click commands: they check, ask, then hand the plan to `apply.apply_plan` under the state lock;
every error becomes a message and exit code 1 in `cli.ReconcilerGroup.main`.
"""

from __future__ import annotations

import gc
import sys
import threading

import click

from .. import render
from ..apply import (
    ApplyReport,
    SignalGuard,
    api_keys,
    apply_plan,
    check_safety,
    entry_after,
    note_unaudited,
    refuse_key_leaks,
)
from ..config import Config
from ..errors import ReconcilerError, StalePlan
from ..escape import escape, quote
from ..kaleyra.client import KaleyraClient
from ..plan import Change, Plan, audit_record, differences, reviewed_targets, with_targets
from ..profiles import Profile
from ..selection import Replacement, Selection
from ..state import audit
from ..state.backends import open_store
from ..state.edits import record_locally
from ..state.lock import locked
from ..state.model import RecordingFailed, State
from ..state.store import StateStore
from .common import (
    APPLY_FORMATS,
    Checksum,
    Rate,
    echo,
    load_desired,
    load_state,
    lock_timeout_option,
    notify,
    plan_for,
    read_saved_plan,
    replace_option,
    replacement_of,
    request_log,
    running_as_program,
    selection_of,
    selection_options,
    verbose_option,
)


@click.command()
@click.argument("plan_file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--auto-approve", is_flag=True, help="Do not ask for confirmation.")
@selection_options
@replace_option
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
    replaces: tuple[str, ...],
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
      reconciler apply --replace unverified     # send what import recorded without sending
    """
    if plan_file and (targets or excludes or replaces):
        raise click.UsageError(
            "--target, --exclude and --replace cannot be combined with a saved plan (it records its own "
            "selection)"
        )
    config, profiles = load_desired(ctx)
    store = open_store(config)
    stop = threading.Event()
    # Signals are deferred from the first PUT until the report is printed and the lock released.
    with sending_guard(config, stop) as guard:
        # The plan is computed only once the lock is held: after a wait, it is a fresh plan.
        with locked(store, "apply", lock_timeout, notify):
            state = load_state(config, store)
            if plan_file:
                the_plan = _reviewed_plan(plan_file, profiles, state, config)
            else:
                selection = selection_of(config, targets, excludes)
                replacement = replacement_of(config, replaces)
                the_plan = plan_for(config, profiles, state, selection, replacement)
            if checksum and the_plan.checksum != checksum:
                done = _applied_already(config, checksum, the_plan)
                if done:
                    echo(done, err=output != "text")
                    return 0
                raise StalePlan(
                    f"stale plan: the plan is now {the_plan.checksum}, not the reviewed {checksum}; "
                    "the state, the profiles or where an account sends (its sid, waba_id, pod, endpoint "
                    "or api_version in reconciler.yaml) changed since. Review the new plan"
                )
            if not the_plan.changes:
                show_report(ApplyReport(), the_plan, output)
                return 0
            approved = bool(plan_file or checksum or auto_approve)
            report = send_reviewed(
                ctx,
                the_plan,
                config,
                store,
                state,
                guard,
                stop,
                approved,
                force,
                output,
                parallelism,
                max_rps,
            )
        show_report(report, the_plan, output)
    return 0 if report.ok else 1


def sending_guard(config: Config, stop: threading.Event) -> SignalGuard:
    """The signal guard of a run that sends: a signal sets `stop`, and the requests in flight finish
    and are recorded before the process ends."""
    in_flight = (
        f"finishing the requests in flight (each within {config.retry.timeout_s:g} s) and recording them"
    )
    return SignalGuard(stop, in_flight, ignore_after=running_as_program())


def send_reviewed(
    ctx: click.Context,
    the_plan: Plan,
    config: Config,
    store: StateStore,
    state: State,
    guard: SignalGuard,
    stop: threading.Event,
    approved: bool,
    force: bool,
    output: str,
    parallelism: int = 8,
    max_rps: float | None = None,
    title: str = "Plan",
) -> ApplyReport:
    """Everything between a plan made under the lock and its report, for apply and reassert alike:
    the safety limit, the API keys, the plan shown and approved, then sent and recorded."""
    check_safety(the_plan, state, config.max_changes, force)
    keys = api_keys(the_plan, config)
    if output == "text":
        echo(render.plan_text(the_plan, title))
    if not approved:
        if output != "text":  # nobody approves a plan they were not shown
            echo(render.plan_text(the_plan, title), err=True)
        _confirm("Apply these changes?")
    guard.activate()
    # What is alive now (config, profiles, plan, state: often 100,000s of objects) lives until
    # the program ends: spare the collector walking it in a full collection mid-send (20 ms,
    # all workers stalled, at 1,000 numbers). Not when driven in-process, as by tests.
    if running_as_program():
        gc.freeze()
    return _send(ctx, the_plan, config, store, state, keys, parallelism, max_rps, output, stop)


def _applied_already(config: Config, checksum: str, the_plan: Plan) -> str:
    """'' unless the audit log shows the plan `checksum` applied in full at this very commit (a re-run
    of a finished apply); then what to say instead of refusing it as stale."""
    commit = audit.who(config.path.parent).get("commit", "")
    pending = {change.phone_number for change in the_plan.changes}
    record = audit.applied_already(open_store(config).audit_log().read(), checksum, commit, pending)
    if record is None:
        return ""
    by = record.get("by") or {}
    run = str(by.get("ci_run", "")).rstrip("/").rsplit("/", 1)[-1]
    where = f"in run {escape(run)}" if run.isdigit() else f"by {escape(str(by.get('actor', 'someone')))}"
    return (
        f"The reviewed plan {checksum[:12]} was already applied at commit {commit[:12]}, {where} / at "
        f"{escape(str(record.get('time', '?')))}: nothing sent, nothing saved."
    )


def _send(
    ctx: click.Context,
    the_plan: Plan,
    config: Config,
    store: StateStore,
    state: State,
    keys: dict[str, str],
    parallelism: int,
    max_rps: float | None,
    output: str,
    stop: threading.Event,
) -> ApplyReport:
    """Run the plan; every result Kaleyra accepted is recorded, or printed as unrecorded."""
    audit_log = store.audit_log()
    progress = render.ApplyProgress(len(the_plan.changes), output, echo)
    report: ApplyReport | None = None
    try:
        # One stop event: a signal also ends the client's retries, backoff sleeps and pace waits at once.
        client = KaleyraClient(
            config.retry, max_connections=parallelism, max_rps=max_rps, log=request_log(ctx), stop=stop
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
            note_unaudited(report, audit_log.unwritten_numbers())
    return report


def show_report(report: ApplyReport, plan: Plan, output: str) -> None:
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
    saved = read_saved_plan(plan_file)
    if (saved.lineage, saved.serial) != (state.lineage, state.serial):
        raise StalePlan(
            f"stale plan: {plan_file} was made against state serial {saved.serial} "
            f"(lineage {saved.lineage}), the state is now serial {state.serial} (lineage {state.lineage}); "
            "run `reconciler plan` again"
        )
    selection = selection_of(config, saved.targets, saved.excludes)
    replacement = replacement_of(config, saved.replaces)
    fresh = plan_for(config, profiles, state, selection, replacement)
    if fresh.profiles_digest != saved.profiles_digest:
        raise _stale_inputs(plan_file, saved, profiles, state, config, selection, replacement)
    found = differences(saved, fresh)
    if found and all(" destination." in line for line in found):
        raise StalePlan(
            f"stale plan: where an account sends (its pod, endpoint or api_version in "
            f"{config.path.name}) changed since {plan_file} was made; nothing was sent. What differs:",
            found,
        )
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


@click.command(name="import")
@selection_options
@click.option("--auto-approve", is_flag=True, help="Do not ask for confirmation.")
@lock_timeout_option
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
    config, profiles = load_desired(ctx)
    store = open_store(config)
    # A signal unwinds (releasing the lock) rather than killing the process with the lock held.
    with SignalGuard(threading.Event()), locked(store, "import", lock_timeout, notify):
        state = load_state(config, store)
        the_plan = plan_for(config, profiles, state, selection_of(config, targets, excludes))
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
        # Every value it records, since none of them is checked against Kaleyra (which has no read).
        for change in adopted:
            echo(
                escape(f"  import {change.phone_number} ({change.account}): {len(change.fields)} field(s)")
                + "\n"
            )
            width = max((len(escape(name)) for name in change.fields), default=0)
            for name, field in change.fields.items():
                echo(f"      {escape(name).ljust(width)} = {quote(field.after)}\n")
        if not auto_approve:
            _confirm(f"Record these {len(adopted)} number(s) as applied without sending anything?")
        actor = audit.who(config.path.parent)
        message = "imported: recorded as applied, nothing sent (unverified)"
        record_locally(
            store,
            state,
            [(change.phone_number, entry_after(change, state, unverified=True)) for change in adopted],
            [audit_record(change, "IMPORTED", message, actor) for change in adopted],
        )
    echo(
        f"Imported {len(adopted)} number(s); nothing was sent. They are unverified: Kaleyra may hold other "
        "values; `reconciler apply --replace unverified` sends them.\n"
    )
    return 0


def _why_skipped(change: Change) -> str:
    if change.action == "forget":
        return "in the state with no profile; `reconciler apply` forgets it"
    if change.moved_from:
        return f"managed under {change.moved_from}; `reconciler apply` sends it to its new account"
    return f"already managed, {change.action} pending; `reconciler apply` applies it"


def _stale_inputs(
    plan_file: str,
    saved: Plan,
    profiles: dict[str, Profile],
    state: State,
    config: Config,
    selection: Selection,
    replacement: Replacement | None,
) -> StalePlan:
    """Why a saved plan no longer covers the same desired profiles: an account now sending to another
    WABA (its sid or waba_id edited in reconciler.yaml), the profiles themselves, or both."""
    reviewed = reviewed_targets(saved, profiles, state)
    now = config.waba_keys()
    moved = {name: target for name, target in reviewed.items() if name in now and now[name] != target}
    if not moved:
        return StalePlan(
            f"stale plan: the profiles changed since {plan_file} was made; run `reconciler plan` again"
        )
    as_reviewed = plan_for(config, with_targets(profiles, moved), state, selection, replacement)
    what = "the WABA" if len(moved) == 1 else "the WABAs"
    names = ", ".join(repr(name) for name in sorted(moved))
    also = "" if as_reviewed.profiles_digest == saved.profiles_digest else ", and the profiles changed too"
    return StalePlan(
        f"stale plan: {what} of account {names} changed in {config.path.name} since {plan_file} was "
        f"made{also}; nothing was sent. Run `reconciler plan` again and review where it sends:",
        [f"{name} sid/waba_id: {moved[name]} reviewed, {now[name]} now" for name in sorted(moved)],
    )
