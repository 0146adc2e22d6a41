"""`reconciler report`: the fleet at a glance, as a self-contained HTML page or markdown."""

from __future__ import annotations

from pathlib import Path

import click

from ..report import build_report, html_page, report_markdown
from ..state.backends import open_store
from ..state.files import atomic_write
from .common import echo, load_desired, load_state, notify, plan_for


@click.command()
@click.option(
    "--html",
    "html_dir",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Write the page to DIR/index.html (DIR is created if missing).",
)
@click.option("--format", "output", type=click.Choice(["markdown"]), help="Print the report to stdout.")
@click.pass_context
def report(ctx: click.Context, html_dir: str | None, output: str | None) -> int:
    """Every number with its account, managed fields, pending change, last send (when, who, commit),
    unverified flag and last re-assertion; counts per account; changes over time. Reads files only.

    The page is one file that works offline: no server, no CDN, no request of any kind.

    \b
    Examples:
      reconciler report --html report && xdg-open report/index.html
      reconciler report --format markdown >> "$GITHUB_STEP_SUMMARY"
    """
    if not html_dir and not output:
        raise click.UsageError("give --html DIR, --format markdown, or both")
    config, profiles = load_desired(ctx)
    store = open_store(config)
    state = load_state(config, store)
    the_plan = plan_for(config, profiles, state)
    fleet = build_report(profiles, state, the_plan, store.audit_log().read())
    if html_dir:
        page = Path(html_dir) / "index.html"
        atomic_write(page, html_page(fleet).encode())
        notify(f"Wrote {page}: {fleet.totals.numbers} number(s), {fleet.totals.pending} pending.")
    if output == "markdown":
        echo(report_markdown(fleet))
    return 0
