"""The `reconciler` command line: thin click commands that parse flags and call the rest.

Exit codes, for every command: 0 success and nothing to do; 1 any error (usage errors included);
2 success with changes present. Errors are mapped to messages and codes in `ReconcilerGroup.main`.
"""

from __future__ import annotations

import json
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from . import audit, render, schema
from .apply import ApplyReport, api_keys, apply_plan, check_safety, entry_after
from .config import Config, load_config
from .errors import ReconcilerError, StalePlan
from .kaleyra import KaleyraClient
from .plan import Plan, compute_plan
from .profiles import Profile, load_profiles
from .secrets import redact
from .state import StateStore, atomic_write, locked, unlock

FORMATS = click.Choice(["text", "json", "markdown"])


class PhoneNumber(click.ParamType):
    """A phone number as people type it (`14155550100`, `+1 415-555-0100`), made E.164."""

    name = "PHONE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        number = re.sub(r"[\s().-]", "", str(value))
        number = number if number.startswith("+") else f"+{number}"
        if not re.fullmatch(schema.E164, number):
            self.fail(
                f"'{value}' is not a phone number: write + then 7 to 15 digits (+14155550100)", param, ctx
            )
        return number


PHONE = PhoneNumber()


class ReconcilerGroup(click.Group):
    """Maps every error a user can cause to one clear message and exit code 1, with secrets redacted."""

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> NoReturn:  # type: ignore[override]
        extra.pop("standalone_mode", None)
        try:
            code = super().main(args, prog_name, standalone_mode=False, **extra)
        except ReconcilerError as error:
            for line in error.lines():
                click.echo(redact(f"error: {line}" if len(error.lines()) == 1 else line), err=True)
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
            click.echo(redact(f"error: {where}{error.strerror or error}"), err=True)
            sys.exit(1)
        except Exception as error:  # a bug: one line (secrets redacted), the traceback only on request
            if os.environ.get("RECONCILER_DEBUG"):
                click.echo(redact(traceback.format_exc()), err=True)
            click.echo(
                redact(
                    f"internal error: {type(error).__name__}: {error}. This is a bug in the reconciler; "
                    "please report it (RECONCILER_DEBUG=1 shows the traceback)."
                ),
                err=True,
            )
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def echo(text: str, err: bool = False) -> None:
    click.echo(redact(text), err=err, nl=False, color=False if os.environ.get("NO_COLOR") else None)


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


def _log(ctx: click.Context) -> Callable[[str], None] | None:
    return (lambda line: echo(line + "\n", err=True)) if ctx.obj.get("verbose") else None


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
@click.option("--target", "targets", multiple=True, type=PHONE, help="Only this number (repeatable).")
@click.option("--format", "output", type=FORMATS, default="text", show_default=True)
@click.option("--detailed-exitcode", is_flag=True, help="Exit 2 when there are changes, 0 when none.")
@click.option("--online", is_flag=True, help=ONLINE_HELP.format("the changes send"))
@verbose_option
@click.pass_context
def plan(
    ctx: click.Context,
    out_file: str | None,
    targets: tuple[str, ...],
    output: str,
    detailed_exitcode: bool,
    online: bool,
) -> int:
    """Show what apply would change, field by field. Reads files only (no credentials) unless --online.

    \b
    Examples:
      reconciler plan
      reconciler plan --target +14155550100 --format json
      reconciler plan --out plan.json && reconciler apply plan.json
      reconciler plan --online       # also check the callback profile ids it sends, on Kaleyra
    """
    config, profiles = _load(ctx)
    state = StateStore(config.state_path).load()
    the_plan = compute_plan(profiles, state, targets, config.waba_keys())
    if online:
        from . import online as checks

        checks.check(config, checks.in_plan(the_plan, profiles), _log(ctx))
    _show_plan(the_plan, output)
    if out_file:
        atomic_write(Path(out_file), (json.dumps(the_plan.to_saved(), indent=2) + "\n").encode())
        echo(f"Saved the plan to {out_file} (checksum {the_plan.checksum}).\n", err=True)
    return 2 if detailed_exitcode and the_plan.changes else 0


@cli.command()
@click.option("--format", "output", type=FORMATS, default="text", show_default=True)
@verbose_option
@click.pass_context
def drift(ctx: click.Context, output: str) -> int:
    """Report where the profiles and the applied state differ: exit 2 when they do, 0 when not.

    \b
    Example (a scheduled audit):
      reconciler drift --format markdown >> "$GITHUB_STEP_SUMMARY"
    """
    config, profiles = _load(ctx)
    state = StateStore(config.state_path).load()
    the_plan = compute_plan(profiles, state, (), config.waba_keys())
    if output == "text" and not the_plan.changes:
        echo(f"No drift: all {the_plan.unchanged} number(s) match the applied state.\n")
    else:
        _show_plan(the_plan, output, "Drift")
    return 2 if the_plan.changes else 0


# --- apply and import -----------------------------------------------------------------------------


@cli.command()
@click.argument("plan_file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--auto-approve", is_flag=True, help="Do not ask for confirmation.")
@click.option("--target", "targets", multiple=True, type=PHONE, help="Only this number (repeatable).")
@click.option("--parallelism", type=click.IntRange(1, 256), default=8, show_default=True)
@click.option("--max-rps", type=click.FloatRange(min=0, min_open=True), help="Cap on requests per second.")
@click.option("--checksum", metavar="SHA", help="Refuse unless the fresh plan has this checksum.")
@click.option("--force", is_flag=True, help="Apply even beyond safety.max_changes.")
@click.option("--format", "output", type=FORMATS, default="text", show_default=True)
@verbose_option
@click.pass_context
def apply(
    ctx: click.Context,
    plan_file: str | None,
    auto_approve: bool,
    targets: tuple[str, ...],
    parallelism: int,
    max_rps: float | None,
    checksum: str | None,
    force: bool,
    output: str,
) -> int:
    """Send the changes to Kaleyra and record each success in the state.

    \b
    Examples:
      reconciler apply                          # plan, show, ask, send
      reconciler apply plan.json                # exactly a saved plan
      reconciler apply --checksum 3fa9... --auto-approve   # exactly what reviewers saw
    """
    if plan_file and targets:
        raise click.UsageError(
            "--target cannot be combined with a saved plan (the plan already has its targets)"
        )
    config, profiles = _load(ctx)
    store = StateStore(config.state_path)
    with locked(store, "apply"):
        state = store.load()
        if plan_file:
            the_plan = _saved_plan(plan_file, profiles, state, config)
        else:
            the_plan = compute_plan(profiles, state, targets, config.waba_keys())
        if checksum and the_plan.checksum != checksum.strip().lower():
            raise StalePlan(
                f"stale plan: the plan is now {the_plan.checksum}, not the reviewed {checksum}; "
                "the state or the profiles changed since. Review the new plan"
            )
        if not the_plan.changes:
            _show_report(ApplyReport(), the_plan, output)
            return 0
        check_safety(the_plan, config.max_changes, force)
        keys = api_keys(the_plan, config)
        if output == "text":
            echo(render.plan_text(the_plan))
        if not (plan_file or checksum or auto_approve):
            _confirm("Apply these changes?")
        audit_log = audit.AuditLog(config.audit_path)
        client = KaleyraClient(config.retry, max_connections=parallelism, max_rps=max_rps, log=_log(ctx))
        try:
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
                    progress=_progress_bar(len(the_plan.puts)),
                )
        finally:
            audit_log.close()
    _show_report(report, the_plan, output)
    return 0 if report.ok else 1


def _show_report(report: ApplyReport, plan: Plan, output: str) -> None:
    if output == "json":
        echo(render.report_json(report, plan))
    elif output == "markdown":
        echo(render.report_markdown(report, plan))
    elif plan.changes:
        echo(render.failures_text(report), err=True)  # errors go to stderr, the summary to stdout
        echo(render.report_text(report))
    else:
        echo(render.plan_text(plan))  # nothing to do: "No changes."


def _saved_plan(plan_file: str, profiles: dict[str, Profile], state: Any, config: Config) -> Plan:
    try:
        saved = Plan.from_saved(json.loads(Path(plan_file).read_text()))
    except (ValueError, KeyError, TypeError) as error:
        raise ReconcilerError(
            f"{plan_file}: not a readable saved plan ({type(error).__name__}: {error})"
        ) from None
    except ReconcilerError as error:
        raise ReconcilerError(f"{plan_file}: {error}") from None
    if (saved.lineage, saved.serial) != (state.lineage, state.serial):
        raise StalePlan(
            f"stale plan: {plan_file} was made against state serial {saved.serial} "
            f"(lineage {saved.lineage}), the state is now serial {state.serial} (lineage {state.lineage}); "
            "run `reconciler plan` again"
        )
    current = compute_plan(profiles, state, saved.targets, config.waba_keys())
    if current.profiles_digest != saved.profiles_digest:
        raise StalePlan(
            f"stale plan: the profiles changed since {plan_file} was made; run `reconciler plan` again"
        )
    return saved


def _interactive() -> bool:
    return sys.stdin.isatty()


def _confirm(question: str) -> None:
    if not _interactive():
        raise ReconcilerError(
            "no terminal to ask for confirmation; pass --auto-approve (nothing was changed)"
        )
    if not click.confirm(question, default=False, err=True):
        raise click.exceptions.Abort()


def _progress_bar(total: int) -> Callable[[int, int], None] | None:
    """A one-line progress bar on a terminal for more than a handful of numbers; nothing otherwise."""
    if total <= 5 or not sys.stderr.isatty():
        return None

    def show(done: int, of: int) -> None:
        width = 30
        filled = int(width * done / of) if of else width
        end = "\n" if done >= of else ""
        click.echo(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{of}{end}", err=True, nl=False)

    return show


@cli.command(name="import")
@click.option("--target", "targets", multiple=True, type=PHONE, help="Only this number (repeatable).")
@click.option("--auto-approve", is_flag=True, help="Do not ask for confirmation.")
@verbose_option
@click.pass_context
def import_(ctx: click.Context, targets: tuple[str, ...], auto_approve: bool) -> int:
    """Adopt numbers whose YAML is already live: record it as applied, send nothing.

    \b
    Example (numbers set up by hand before the reconciler):
      reconciler import --target +14155550100 --auto-approve
    """
    config, profiles = _load(ctx)
    store = StateStore(config.state_path)
    with locked(store, "import"):
        state = store.load()
        the_plan = compute_plan(profiles, state, targets, config.waba_keys())
        adopted = [change for change in the_plan.changes if change.action in ("create", "update")]
        if not adopted:
            echo("Nothing to import: every profile is already recorded in the state.\n")
            return 0
        for change in adopted:
            echo(f"  import {change.phone_number} ({change.account}): {len(change.fields)} field(s)\n")
        if not auto_approve:
            _confirm(f"Record these {len(adopted)} number(s) as applied without sending anything?")
        actor = audit.who(config.path.parent)
        audit_log = audit.AuditLog(config.audit_path)
        try:
            with store.writer(state) as journal:
                journal.record((change.phone_number, entry_after(change, state)) for change in adopted)
                message = "imported: recorded as applied, nothing sent"
                audit_log.append(audit.record(change, "IMPORTED", message, actor) for change in adopted)
        finally:
            audit_log.close()
    echo(f"Imported {len(adopted)} number(s); nothing was sent.\n")
    return 0


# --- state, history, schema -----------------------------------------------------------------------


@cli.group()
def state() -> None:
    """Inspect the applied state, or clear a stale lock.

    \b
    Examples:
      reconciler state list
      reconciler state show +14155550100
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
    current = StateStore(_config(ctx).state_path).load()
    echo(
        json.dumps(current.to_json(), indent=2) + "\n"
        if output == "json"
        else render.state_list_text(current)
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
    current = StateStore(_config(ctx).state_path).load()
    entry = current.entries.get(phone_number)
    if entry is None:
        raise ReconcilerError(f"{phone_number}: not in the state (nothing applied or imported yet)")
    echo(render.entry_text(phone_number, entry))
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
    echo(unlock(StateStore(_config(ctx).state_path), force) + "\n")
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
    records = list(audit.AuditLog(_config(ctx).audit_path).read(phone_number))
    echo(
        json.dumps(records, indent=2, ensure_ascii=False) + "\n"
        if output == "json"
        else render.history_text(records)
    )
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
      KALEYRA_ENDPOINT=http://127.0.0.1:8080 KALEYRA_API_KEY=demo reconciler apply --auto-approve
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


def main() -> None:
    cli(prog_name="reconciler")
