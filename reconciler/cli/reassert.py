"""`reconciler reassert`: re-send in full the numbers last sent longest ago, so edits made in Kaleyra's
console (which no read API can show) are corrected within `reassert.every_days`.

The numbers are chosen in `reconciler.reassert`; the plan is sent exactly as apply sends one: under
the state lock, with the safety limit, journal and audit log (each record marked `"reassert": true`).
"""

from __future__ import annotations

import threading

import click

from ..apply import ApplyReport
from ..config import Reassert
from ..reassert import Reassertion, plan_reassertion
from ..state.backends import open_store
from ..state.lock import locked
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
    never sent) go first, then the oldest, at most reassert.max_per_run per run.

    \b
    Examples:
      reconciler reassert --dry-run             # what the next run would send
      reconciler reassert --auto-approve        # from a scheduled job
    """
    config, profiles = load_desired(ctx)
    settings = config.reassert
    if settings is None:
        echo(
            "Re-assertion is off: add `reassert: {every_days: N, max_per_run: M}` to "
            f"{config.path.name} to re-send every number at least every N days.\n",
            err=output != "text",
        )
        return 0
    if dry_run:
        run = plan_reassertion(
            profiles, load_state(config), settings, config.waba_keys(), destinations=config.destinations()
        )
        _announce(run, settings, output)
        if run.plan.changes or output != "text":  # text: "Nothing to re-assert" says it all
            show_plan(run.plan, "json" if output == "jsonl" else output, "Re-assert")
        return 0
    store = open_store(config)
    stop = threading.Event()
    with sending_guard(config, stop) as guard:
        with locked(store, "reassert", lock_timeout, notify):
            state = load_state(config, store)
            run = plan_reassertion(
                profiles, state, settings, config.waba_keys(), destinations=config.destinations()
            )
            _announce(run, settings, output)
            if not run.plan.changes:
                if output != "text":
                    show_report(ApplyReport(), run.plan, output)
                return 0
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


def _announce(run: Reassertion, settings: Reassert, output: str) -> None:
    """One line on what is due (on stderr when stdout carries a document)."""
    if not run.due:
        text = f"Nothing to re-assert: every number was sent in the last {settings.every_days} day(s).\n"
    else:
        waiting = run.due - len(run.chosen)
        later = (
            f"; {waiting} more wait for the next run (max_per_run {settings.max_per_run})" if waiting else ""
        )
        text = (
            f"Re-asserting {len(run.chosen)} number(s): unverified, or last sent more than "
            f"{settings.every_days} day(s) ago{later}.\n"
        )
    echo(text, err=output != "text")
