"""What the commands share: parameter types, options, the root group's error mapping, loading helpers.

Exit codes, for every command: 0 success and nothing to do; 1 any error (usage errors included);
2 success with changes present. Errors are mapped to messages and codes in `ReconcilerGroup.main`.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from .. import render, secrets
from ..config import Config, load_config
from ..errors import ReconcilerError
from ..escape import escape
from ..plan import EVERY_NUMBER, Plan, compute_plan, unknown_accounts
from ..profiles import Profile, load_profiles, profile_files
from ..secrets import redact
from ..selection import Replacement, Selection, normalise_phone
from ..state.backends import open_store
from ..state.model import State
from ..state.store import StateStore

FORMATS = click.Choice(["text", "json", "markdown"])
APPLY_FORMATS = click.Choice(["text", "json", "jsonl", "markdown"])


class PhoneNumber(click.ParamType):
    """A phone number as people type it (`14155550100`, `+1 415-555-0100`), made E.164."""

    name = "PHONE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        number = normalise_phone(str(value))
        if number is None:
            self.fail(
                f"{escape(repr(str(value)))} is not a phone number: + then 7 to 15 digits (+14155550100)",
                param,
                ctx,
            )
        return number

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        from click.shell_completion import CompletionItem

        return [CompletionItem(number) for number in complete_phone(ctx, param, incomplete)]


def _known_to_this_repository(ctx: click.Context) -> tuple[list[str], list[str]]:
    """Account names and phone numbers for shell completion, read quietly: a config or profile that
    does not load gives fewer candidates, never an error on the user's prompt."""
    try:
        config = load_config(ctx.find_root().params.get("config_file"))
    except Exception:
        return [], []
    numbers: set[str] = set()
    try:
        numbers.update(load_profiles(config))
    except Exception:  # an invalid profile: fall back to the numbers the files are named for
        numbers.update(
            number
            for file in profile_files(config.profiles_dir, [])
            if (number := normalise_phone(os.path.basename(file).rsplit(".", 1)[0]))
        )
    if config.state_backend == "local":  # never a network call from a shell's prompt
        with contextlib.suppress(Exception):
            numbers.update(open_store(config).load().entries)
    return sorted(config.accounts), sorted(numbers)


def complete_phone(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    _accounts, numbers = _known_to_this_repository(ctx)
    return [number for number in numbers if number.lstrip("+").startswith(incomplete.lstrip("+"))]


def complete_selection(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    accounts, numbers = _known_to_this_repository(ctx)
    typed = incomplete.lstrip("+")
    return [name for name in accounts if name.startswith(incomplete)] + [
        number for number in numbers if number.lstrip("+").startswith(typed)
    ]


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


class Finite(click.FloatRange):
    """click's FloatRange, without nan and inf (which compare false to every bound, so pass it)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{escape(repr(value))} is not a finite number", param, ctx)
        return number


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
        secrets.remember_named_secrets()  # so even an error before the config loads is redacted
        args = _global_flags_first(list(sys.argv[1:] if args is None else args))
        try:
            code = super().main(args, prog_name, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as asked:  # `reconciler` (or `reconciler state`) alone: its help, exit 0
            click.echo(asked.ctx.get_help() if asked.ctx else "")
            sys.exit(0)
        except click.NoSuchOption as error:
            hint = _single_dash_hint(error, args)
            if hint is None:
                _show_usage_error(error)
            else:
                click.echo(redact(escape(hint)), err=True)
            sys.exit(1)
        except ReconcilerError as error:
            lines = error.lines()
            for line in lines:
                click.echo(redact(escape(f"error: {line}" if len(lines) == 1 else line)), err=True)
            sys.exit(1)
        except click.exceptions.Abort:
            click.echo("Aborted: nothing was changed.", err=True)
            sys.exit(1)
        except click.ClickException as error:
            _show_usage_error(error)
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


def _show_usage_error(error: click.ClickException) -> None:
    # Usage errors quote what was typed: shown escaped, like any text from outside.
    shown = io.StringIO()
    error.show(file=shown)
    lines = shown.getvalue().splitlines()
    click.echo(redact("".join(escape(line) + "\n" for line in lines)), err=True, nl=False)


_NO_ARGS_IS_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2
# Flags of the root group that people also type after the command (`reconciler plan --no-color`).
GLOBAL_FLAGS = ("--no-color",)


def _global_flags_first(args: list[str]) -> list[str]:
    end = args.index("--") if "--" in args else len(args)
    found = [arg for arg in args[:end] if arg in GLOBAL_FLAGS]
    if not found:
        return args
    rest = [arg for arg in args[:end] if arg not in GLOBAL_FLAGS]
    return list(dict.fromkeys(found)) + rest + args[end:]


def _single_dash_hint(error: click.NoSuchOption, args: list[str]) -> str | None:
    """Terraform's habits (`-out=plan.json`, `-target=+1415...`) and `-o`: say which option was meant.

    click reads `-target=x` as the short options -t, -a, ...; the word typed is found in `args`."""
    command = error.ctx.command if error.ctx else None
    if command is None:
        return None
    options = {name for param in command.params for name in getattr(param, "opts", ())}
    end = args.index("--") if "--" in args else len(args)
    for arg in args[:end]:
        word = arg.split("=", 1)[0]
        if not re.fullmatch(r"-[A-Za-z][A-Za-z-]*", word) or not word.startswith(error.option_name):
            continue
        meant = "--out" if word == "-o" else "-" + word
        if meant in options:
            return f"error: no such option {word}; did you mean {meant}? Options take two dashes."
    return None


def echo(text: str, err: bool = False) -> None:
    click.echo(redact(text), err=err, nl=False, color=False if colour_off() else None)


def colour_off() -> bool:
    """No colour with --no-color, or NO_COLOR set to anything (https://no-color.org); else only on a
    terminal (click strips the styles when the output is not one)."""
    if os.environ.get("NO_COLOR"):
        return True
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().params.get("no_color"))


def selection_options(function: Any) -> Any:
    """--target and --exclude: a phone number, an account name, or a glob over phone numbers."""
    function = click.option(
        "--exclude",
        "excludes",
        multiple=True,
        metavar="SEL",
        shell_complete=complete_selection,
        help="Leave out this number, account or glob (repeatable).",
    )(function)
    return click.option(
        "--target",
        "targets",
        multiple=True,
        metavar="SEL",
        shell_complete=complete_selection,
        help="Only this number, account name or glob like '+9199*' (repeatable).",
    )(function)


def selection_of(config: Config, targets: tuple[str, ...], excludes: tuple[str, ...]) -> Selection:
    return Selection.parse(targets, excludes, config.accounts)


def replace_option(function: Any) -> Any:
    """--replace: re-send every managed field of these numbers whatever the state says."""
    return click.option(
        "--replace",
        "replaces",
        multiple=True,
        metavar="SEL",
        shell_complete=complete_selection,
        help="Re-send every managed field of this number, account or glob, or of the `unverified` "
        "numbers, whatever the state says (repeatable).",
    )(function)


def replacement_of(config: Config, replaces: tuple[str, ...]) -> Replacement:
    return Replacement.parse(replaces, config.accounts)


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


def refuse_verbose_where_nothing_is_sent(ctx: click.Context) -> None:
    """`reconciler --verbose CMD` works for the commands that take --verbose (those that send or serve
    requests); for any other it is a usage error rather than a flag that silently does nothing."""
    name = ctx.invoked_subcommand
    if not (ctx.obj.get("verbose") and name) or ctx.resilient_parsing:
        return
    command = ctx.command.get_command(ctx, name) if isinstance(ctx.command, click.Group) else None
    if command is not None and not any(param.name == "verbose" for param in command.params):
        raise click.UsageError(
            f"--verbose logs requests, and `{ctx.info_name} {name}` sends none; it is for validate "
            "--online, plan --online, apply, reassert and sandbox"
        )


def config_of(ctx: click.Context) -> Config:
    return load_config(ctx.obj.get("config_file"))


def load_desired(ctx: click.Context) -> tuple[Config, dict[str, Profile]]:
    config = config_of(ctx)
    return config, load_profiles(config)


def load_state(config: Config, store: StateStore | None = None) -> State:
    """The applied state; entries for accounts reconciler.yaml no longer has are named in a warning."""
    store = store or open_store(config)
    state = store.load()
    state.refuse_if_moved(store.where())
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


def plan_for(
    config: Config,
    profiles: dict[str, Profile],
    state: State,
    selection: Selection = EVERY_NUMBER,
    replace: Replacement | None = None,
) -> Plan:
    """A fresh plan of `profiles` against `state` with this configuration's accounts: the WABA each
    number belongs to, and where each sending change goes (which the checksum covers)."""
    return compute_plan(
        profiles, state, selection, config.waba_keys(), config.destinations(), replace=replace
    )


def notify(text: str) -> None:
    echo(escape(text) + "\n", err=True)


def refuse_as_plan_file(out_file: str, config: Config) -> None:
    """`plan --out` writes only a plan: never over the config, a profile or the state's files, and
    never into a folder that does not exist (a typo must not create a tree)."""
    target = os.path.realpath(out_file)
    state = config.state_path
    kept = [config.path, state, config.audit_path]
    kept += [state.with_name(state.name + suffix) for suffix in (".journal", ".lock")]
    inside_profiles = target.startswith(os.path.join(os.path.realpath(config.profiles_dir), ""))
    if inside_profiles or target in {os.path.realpath(path) for path in kept}:
        raise click.BadParameter(
            f"{out_file} is one of the project's own files; save the plan elsewhere", param_hint="--out"
        )
    if not os.path.isdir(os.path.dirname(target)):
        raise click.BadParameter(f"the folder of {out_file} does not exist", param_hint="--out")


def request_log(ctx: click.Context) -> Callable[[str], None] | None:
    return (lambda line: echo(escape(line) + "\n", err=True)) if ctx.obj.get("verbose") else None


def read_saved_plan(plan_file: str) -> Plan:
    """The plan `plan --out` saved in `plan_file`; any other file is one clear error naming it."""
    try:
        document = json.loads(Path(plan_file).read_bytes())
    except (OSError, RecursionError) as error:
        raise ReconcilerError(f"{plan_file}: not a readable saved plan ({error})") from None
    except ValueError as error:  # not JSON at all (a profile, a binary file)
        raise ReconcilerError(
            f"{plan_file}: not a saved plan: not JSON ({error}); `reconciler plan --out FILE` writes one"
        ) from None
    try:
        return Plan.from_saved(document)
    except ReconcilerError as error:
        raise ReconcilerError(f"{plan_file}: {error}") from None


def show_plan(plan: Plan, output: str, title: str = "Plan", max_changes: int | None = None) -> None:
    """Print a plan; with `max_changes` (safety.max_changes), one over it says so first. Drift says
    what it compares: desired with recorded, not with what Kaleyra holds."""
    drift = title == "Drift"
    if output == "json":
        echo(render.plan_json(plan, drift))
    elif output == "markdown":
        title = f"Kaleyra profile {title.lower()}"
        echo(render.plan_markdown(plan, title=title, max_changes=max_changes, drift=drift))
    else:
        echo((render.DRIFT_LINE + "\n" if drift else "") + render.plan_text(plan, title, max_changes))


# True when running as the `reconciler` program (not driven in-process, as tests do).
_standalone = False


def running_as_program() -> bool:
    return _standalone


def mark_running_as_program() -> None:
    global _standalone
    _standalone = True
