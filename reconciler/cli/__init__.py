"""The `reconciler` command line: the root group, and the registration of every command.

Each command group lives in its own module (`review`, `apply`, `reassert`, `state`, `report`, `tools`)
and imports what it shares from `common`; this module only builds the root group and registers them.
"""

from __future__ import annotations

import gc

import click

from .. import __version__
from ..plan import FORMAT_VERSION as PLAN_FORMAT
from ..state.model import STATE_FORMAT
from . import apply, common, init, reassert, report, review, state, tools

# A workflow pins the package version; tools that read the state file or a saved plan (`--out`,
# `--format json`) need the format versions, which change only when those documents do.
VERSION_MESSAGE = f"%(prog)s %(version)s\nstate format {STATE_FORMAT}\nplan format {PLAN_FORMAT}"


@click.group(cls=common.ReconcilerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config", "config_file", metavar="PATH", help="reconciler.yaml to use (or RECONCILER_CONFIG)."
)
@common.verbose_option
@click.option("--no-color", is_flag=True, help="No colour in the output (also NO_COLOR); given anywhere.")
@click.version_option(__version__, "--version", message=VERSION_MESSAGE)
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, no_color: bool) -> None:
    """Config-as-code for Kaleyra WhatsApp Business phone-number profiles.

    \b
    Typical flow:
      reconciler validate            # check reconciler.yaml and every profile
      reconciler plan                # what would change, field by field
      reconciler apply               # send exactly that, record each success
      reconciler drift               # where desired and applied state differ (exit 2)
    """
    ctx.ensure_object(dict)["config_file"] = config_file
    common.refuse_verbose_where_nothing_is_sent(ctx)


for command in (
    init.init,
    review.validate,
    review.plan,
    review.show,
    review.drift,
    apply.apply,
    apply.import_,
    reassert.reassert,
    state.state,
    state.history,
    report.report,
    tools.schema_command,
    tools.fmt_command,
    tools.sandbox,
):
    cli.add_command(command)


def main() -> None:
    common.mark_running_as_program()
    try:
        cli(prog_name="reconciler")
    finally:
        # The process is ending and takes its memory with it: spare the interpreter's last garbage
        # collection a walk over every object still alive (30 ms after an apply of 1,000 numbers).
        gc.freeze()
