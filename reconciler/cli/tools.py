"""`reconciler schema`, `reconciler fmt` and `reconciler sandbox`: tools around the main flow."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import click

from .. import schema
from ..errors import ReconcilerError
from ..escape import escape
from .common import Finite, config_of, echo, load_desired, verbose_option


@click.command(name="schema")
@click.argument("kind", type=click.Choice(sorted(schema.SCHEMAS)), default="profile")
def schema_command(kind: str) -> int:
    """Print a JSON Schema (profile or config).

    \b
    Example:
      reconciler schema config > schemas/config.schema.json
    """
    echo(json.dumps(schema.SCHEMAS[kind](), indent=2) + "\n")
    return 0


@click.command(name="fmt")
@click.option(
    "--check", is_flag=True, help="Rewrite nothing; list the files that would change, exit 1 if any."
)
@click.option(
    "--diff",
    is_flag=True,
    help="Rewrite nothing; print a unified diff of what would change, exit 1 if anything would.",
)
@click.argument("paths", nargs=-1, type=click.Path())
@click.pass_context
def fmt_command(ctx: click.Context, check: bool, diff: bool, paths: tuple[str, ...]) -> int:
    """Rewrite profiles in canonical form (key order, quoting), values and comments unchanged.

    Without PATHs, every profile under profiles_dir; with PATHs, those files and folders.

    \b
    Examples:
      reconciler fmt
      reconciler fmt --check profiles/acme-in
      reconciler fmt --diff            # what fmt would change, as a patch (git apply -p1)
    """
    from .. import fmt

    check = check or diff
    report = fmt.run(paths, None if paths else config_of(ctx).profiles_dir, check=check, diff=diff)
    for patch in report.diffs:
        echo(_escaped_lines(patch))
    for line in report.summary(check):
        echo(escape(line) + "\n", err=diff)  # with --diff, stdout is only the patch
    for line in report.errors():
        echo(escape(line) + "\n", err=True)
    return report.exit_code(check)


def _escaped_lines(text: str) -> str:
    return "".join(escape(line) + "\n" for line in text.splitlines())


# --- sandbox --------------------------------------------------------------------------------------


@click.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="A loopback address: the sandbox accepts any key."
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="0 picks a free port."
)
@click.option(
    "--latency-ms",
    type=Finite(min=0, max=600_000),
    default=0,
    show_default=True,
    help="Answer each API request this long after it arrives.",
)
@click.option("--fail-rate", type=Finite(0, 1), default=0, show_default=True, help="Share of failures.")
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
    type=Finite(min=0, min_open=True, max=100_000),
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

    It accepts any well-formed key; each account's key variable must still be set, as for Kaleyra.

    \b
    Example (with the example reconciler.yaml, accounts acme-in and acme-us):
      reconciler sandbox --port 8080 &
      sleep 1
      export KALEYRA_ENDPOINT=http://127.0.0.1:8080
      export KALEYRA_API_KEY_ACME_IN=demo-key-acme-in KALEYRA_API_KEY_ACME_US=demo-key-acme-us
      reconciler apply --auto-approve
    """
    from ..kaleyra import sandbox as emulator

    kinds = tuple(kind.strip() for kind in faults.split(",") if kind.strip())
    unknown = [kind for kind in kinds if kind not in emulator.FAULTS]
    if unknown or not kinds:
        raise click.BadParameter(
            f"unknown fault {unknown[0] if unknown else '(none)'}; use {', '.join(emulator.FAULTS)}"
        )
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
        config, profiles = load_desired(ctx)
        held = emulator.Sandbox(emulator.provision(config, profiles), **options)
        held.callback_profiles = emulator.provision_callback_profiles(config, profiles, held.accounts)
    if callback_file:
        emulator.load_callback_profiles(Path(callback_file), held.callback_profiles)
    try:
        if not _loopback(host):
            raise click.BadParameter(
                f"{host!r} is not a loopback address; the sandbox accepts any API key and stores what it is "
                "sent, so it only listens on 127.0.0.1, ::1 or localhost",
                param_hint="--host",
            )
        server = emulator.make_server(held, host, port, verbose=bool(ctx.obj.get("verbose")))
    except OSError as error:
        raise ReconcilerError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    numbers = sum(len(account.numbers) for account in held.accounts)
    source = data_file or "reconciler.yaml and its profiles"
    echo(
        escape(
            f"Kaleyra sandbox: provisioned {len(held.accounts)} account(s) and {numbers} number(s) "
            f"from {source}; listening on {server.url} (Ctrl-C stops it)"
        )
        + "\n",
        err=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
