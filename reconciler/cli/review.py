"""`reconciler validate`, `plan` and `drift`: the commands that read and compare, never send."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .. import render
from ..errors import ReconcilerError, ValidationFailed
from ..escape import json_text
from ..secrets import redact
from ..state.files import atomic_write
from .common import (
    FORMATS,
    echo,
    load_desired,
    load_state,
    plan_for,
    read_saved_plan,
    refuse_as_plan_file,
    replace_option,
    replacement_of,
    request_log,
    selection_of,
    selection_options,
    show_plan,
    verbose_option,
)

ONLINE_HELP = "Also check on Kaleyra that the callback profile ids {} exist and are active (needs API keys)."


VALIDATE_FORMAT_VERSION = "1.0"


@click.command()
@click.option("--online", is_flag=True, help=ONLINE_HELP.format("every profile names"))
@click.option(
    "--format",
    "output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one document on stdout, {format_version, valid, errors: [{file, line, column, message}]}.",
)
@verbose_option
@click.pass_context
def validate(ctx: click.Context, online: bool, output: str) -> int:
    """Check reconciler.yaml and every profile against the schemas and rules. No network, unless --online.

    \b
    Examples:
      reconciler validate && echo "all good"
      reconciler validate --online
      reconciler validate --format json | jq -r '.errors[] | "\\(.file):\\(.line): \\(.message)"'
    """
    if output == "json":
        return _validate_json(ctx, online)
    config, profiles = load_desired(ctx)
    if online:
        from ..kaleyra import online as checks

        checked = checks.check(config, checks.in_profiles(profiles), request_log(ctx))
    echo(
        f"Valid: {config.path.name} with {len(config.accounts)} account(s) and {len(profiles)} profile(s).\n"
    )
    if online:
        echo(f"Online: {checked} callback profile id(s) checked on Kaleyra; each exists and is active.\n")
    return 0


def _validate_json(ctx: click.Context, online: bool) -> int:
    """validate's result as one JSON document on stdout: the problems with their file and line."""
    document: dict[str, Any] = {"format_version": VALIDATE_FORMAT_VERSION, "valid": True, "errors": []}
    try:
        config, profiles = load_desired(ctx)
        if online:
            from ..kaleyra import online as checks

            checks.check(config, checks.in_profiles(profiles), request_log(ctx))
        document |= {"accounts": len(config.accounts), "profiles": len(profiles)}
    except ValidationFailed as failed:
        document["valid"] = False
        document["errors"] = [
            {
                "file": problem.path,
                "line": problem.line or None,
                "column": problem.column or None,
                "message": problem.message,
            }
            for problem in failed.problems
        ]
    except ReconcilerError as error:  # not about a place in a file: no config, a failed online check
        document["valid"] = False
        document["errors"] = [
            {"file": None, "line": None, "column": None, "message": line} for line in error.lines()
        ]
    echo(redact(json_text(document, indent=2)) + "\n")
    return 0 if document["valid"] else 1


@click.command()
@click.option("--out", "out_file", type=click.Path(dir_okay=False), help="Save the plan for `apply FILE`.")
@selection_options
@replace_option
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
    replaces: tuple[str, ...],
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
      reconciler plan --replace +14155550100   # re-send it in full (after an edit in Kaleyra's console)
    """
    config, profiles = load_desired(ctx)
    if out_file:
        refuse_as_plan_file(out_file, config)
    state = load_state(config)
    the_plan = plan_for(
        config, profiles, state, selection_of(config, targets, excludes), replacement_of(config, replaces)
    )
    if online:
        from ..kaleyra import online as checks

        checks.check(config, checks.in_plan(the_plan, profiles), request_log(ctx))
    show_plan(the_plan, output, max_changes=config.max_changes)
    if out_file:
        atomic_write(Path(out_file), (json_text(the_plan.to_saved(), indent=2) + "\n").encode())
        echo(f"Saved the plan to {out_file} (checksum {the_plan.checksum}).\n", err=True)
    return 2 if detailed_exitcode and the_plan.changes else 0


@click.command()
@selection_options
@click.option("--format", "output", type=FORMATS, default="text", show_default=True)
@click.pass_context
def drift(ctx: click.Context, targets: tuple[str, ...], excludes: tuple[str, ...], output: str) -> int:
    """Report where the profiles and the recorded state differ: exit 2 when they do, 0 when not.

    Kaleyra offers no read of profile fields, so drift compares the profiles with what the state
    records as sent; an edit made in Kaleyra's console is not seen here. `reconciler reassert` (on a
    schedule) or `apply --replace` corrects it.

    \b
    Example (a scheduled audit):
      reconciler drift --format markdown >> "$GITHUB_STEP_SUMMARY"
    """
    config, profiles = load_desired(ctx)
    state = load_state(config)
    the_plan = plan_for(config, profiles, state, selection_of(config, targets, excludes))
    if output == "text" and not the_plan.changes:
        unverified = render.unverified_line(the_plan) + "\n" if the_plan.unverified else ""
        echo(
            f"{render.DRIFT_LINE}\nNo drift: all {the_plan.unchanged} number(s) match the applied state.\n"
            + unverified
        )
    else:
        show_plan(the_plan, output, "Drift")
    return 2 if the_plan.changes else 0


@click.command()
@click.argument("plan_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "output", type=FORMATS, default="text", show_default=True)
def show(plan_file: str, output: str) -> int:
    """Show a plan saved by `plan --out`, as plan showed it: text, JSON or markdown. Reads only the file.

    \b
    Examples:
      reconciler show plan.json
      reconciler show plan.json --format markdown >> "$GITHUB_STEP_SUMMARY"
    """
    show_plan(read_saved_plan(plan_file), output)
    return 0
