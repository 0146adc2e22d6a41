"""`reconciler reassert`: re-send in full the numbers last sent longest ago, so edits made in Kaleyra's
console (which no read API can show) are corrected within `reassert.every_days`.

The numbers are chosen in `reconciler.reassert`; the plan is sent exactly as apply sends one: under
the state lock, with the safety limit, journal and audit log (each record marked `"reassert": true`).
"""

from __future__ import annotations

import threading

import click

from ..apply import ApplyReport
from ..config import Config, Reassert
from ..escape import json_line
from ..plan import Plan
from ..reassert import Reassertion, plan_reassertion
from ..state.backends import open_store
from ..state.lock import locked
from ..state.model import State
from .apply import send_reviewed, sending_guard, show_report
from .common import (
    APPLY_FORMATS,
    echo,
    load_desired,
    load_state,
    lock_timeout_option,
    notify,
    show_plan,
    verbose_option,
)


@click.command()
@click.option("--auto-approve", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Show what would be re-sent; send nothing, write nothing.")
@click.option("--format", "output", type=APPLY_FORMATS, default="text", show_default=True)
@lock_timeout_option
@verbose_option
@click.pass_context
def reassert(ctx: click.Context, auto_approve: bool, dry_run: bool, output: str, lock_timeout: float) -> int:
    """Re-send in full the numbers whose last send is older than reassert.every_days.

    Kaleyra offers no read of profile fields, so an edit made in its console is invisible to `drift`;
    re-sending the desired values on a schedule corrects it. Unverified numbers (recorded by import,
    never sent in full) go first, then the oldest, at most reassert.max_per_run per run.

    \b
    Examples:
      reconciler reassert --dry-run             # what the next run would send
      reconciler reassert --auto-approve        # from a scheduled job
    """
    config, profiles = load_desired(ctx)
    settings = config.reassert
    if settings is None:
        _show_nothing(_nothing(load_state(config)), None, config, output, None if dry_run else ApplyReport())
        return 0
    if dry_run:
        run = plan_reassertion(
            profiles, load_state(config), settings, config.waba_keys(), destinations=config.destinations()
        )
        if run.plan.changes:
            _show_dry_run(run, settings, output)
        else:
            _show_nothing(run, settings, config, output)
        return 0
    store = open_store(config)
    stop = threading.Event()
    with sending_guard(config, stop) as guard:
        with locked(store, "reassert", lock_timeout, notify):
            state = load_state(config, store)
            run = plan_reassertion(
                profiles, state, settings, config.waba_keys(), destinations=config.destinations()
            )
            if not run.plan.changes:
                _show_nothing(run, settings, config, output, ApplyReport())
                return 0
            echo(_announcement(run, settings), err=output != "text")
            report = send_reviewed(
                ctx,
                run.plan,
                config,
                store,
                state,
                guard,
                stop,
                auto_approve,
                False,
                output,
                title="Re-assert",
            )
        show_report(report, run.plan, output)
    return 0 if report.ok else 1


def _nothing(state: State) -> Reassertion:
    return Reassertion(Plan(changes=(), lineage=state.lineage, serial=state.serial), 0, ())


def _show_dry_run(run: Reassertion, settings: Reassert, output: str) -> None:
    """The plan of a dry run with something due: the sentence on stderr when stdout carries a document."""
    echo(_announcement(run, settings), err=output not in ("text", "markdown"))
    _show_planned(run.plan, output)


def _show_planned(plan: Plan, output: str) -> None:
    if output == "jsonl":  # one object per line: the whole plan is one event
        echo(json_line({"event": "plan", **plan.to_json()}))
    else:
        show_plan(plan, output, "Re-assert")


def _show_nothing(
    run: Reassertion,
    settings: Reassert | None,
    config: Config,
    output: str,
    report: ApplyReport | None = None,
) -> None:
    """Nothing to send (re-assertion is off, or nothing is due): the sentence that says why, and in json
    and jsonl the same empty document as a run or dry run that sent nothing, so stdout always parses.
    Never "No changes ... match the applied state": nothing was compared."""
    if settings is None:
        sentence = (
            "Re-assertion is off: add `reassert: {every_days: N, max_per_run: M}` to "
            f"{config.path.name} to re-send every number at least every N days.\n"
        )
    else:
        sentence = _announcement(run, settings)
    if output == "text":
        echo(sentence)
    elif output == "markdown":
        echo(f"### Kaleyra profile re-assert\n\n{sentence}")
    else:
        echo(sentence, err=True)
        if report is not None:
            show_report(report, run.plan, output)
        else:
            _show_planned(run.plan, output)


def _announcement(run: Reassertion, settings: Reassert) -> str:
    """One line on what is due."""
    if not run.due:
        return (
            f"Nothing to re-assert: every number was sent in full in the last {settings.every_days} day(s).\n"
        )
    waiting = run.due - len(run.chosen)
    later = f"; {waiting} more wait for the next run (max_per_run {settings.max_per_run})" if waiting else ""
    return (
        f"Re-asserting {len(run.chosen)} number(s): unverified, or last sent in full more than "
        f"{settings.every_days} day(s) ago{later}.\n"
    )
