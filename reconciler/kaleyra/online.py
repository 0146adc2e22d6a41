"""Checks against Kaleyra what can be checked: the callback profiles that profiles name exist and are active.

`validate --online` checks every callback profile id any profile names; `plan --online` only those a
change would send. Each (account, id) is fetched once per run, in parallel, with the client's retries,
pacing and timeouts; an unknown or inactive id is a Problem at the value's file:line:column.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..config import Config, resolve_keys
from ..errors import Problem, ValidationFailed
from ..plan import Plan
from ..profiles import Profile
from ..yamlfile import Document, load_mapping
from .client import CallbackProfile, KaleyraClient, KaleyraError
from .codes import PROFILE_NOT_FOUND

CALLBACK_FIELDS = ("callback_profile_id", "outgoing_callback_profile_id")
PARALLELISM = 8


@dataclass(frozen=True)
class Reference:
    """One profile naming one callback profile id in one field."""

    profile: Profile
    account: str
    field: str
    profile_id: str


def in_profiles(profiles: dict[str, Profile]) -> list[Reference]:
    """Every callback profile id every profile names (what `validate --online` checks)."""
    return [
        Reference(profile, profile.account, name, profile.fields[name])
        for profile in profiles.values()
        for name in CALLBACK_FIELDS
        if profile.fields.get(name)
    ]


def in_plan(plan: Plan, profiles: dict[str, Profile]) -> list[Reference]:
    """The callback profile ids the plan's changes would send (what `plan --online` checks)."""
    return [
        Reference(profiles[change.phone_number], change.account, name, change.sends[name])
        for change in plan.changes
        for name in CALLBACK_FIELDS
        if change.sends.get(name) and change.phone_number in profiles
    ]


def check(
    config: Config,
    references: Iterable[Reference],
    log: Callable[[str], None] | None = None,
    client: KaleyraClient | None = None,
) -> int:
    """Fetch each referenced (account, id) once; raise ValidationFailed listing every unknown or
    inactive one (or any that could not be checked). Returns how many distinct ids were checked."""
    references = list(references)
    wanted = sorted({(reference.account, reference.profile_id) for reference in references})
    if not wanted:
        return 0
    keys = resolve_keys(config, {account for account, _ in wanted})  # all missing ones at once
    owned = client is None
    client = client or KaleyraClient(config.retry, max_connections=PARALLELISM, log=log)

    def fetch(wanted_id: tuple[str, str]) -> CallbackProfile | KaleyraError:
        account, profile_id = wanted_id
        try:
            return client.callback_profile(config.accounts[account].target(), keys[account], profile_id)
        except KaleyraError as error:
            return error

    try:
        with ThreadPoolExecutor(max_workers=min(PARALLELISM, len(wanted)), thread_name_prefix="get") as pool:
            found = dict(zip(wanted, pool.map(fetch, wanted), strict=True))
    except KeyboardInterrupt:
        client.stop.set()  # the GETs still running give up their waits and retries at once
        raise
    finally:
        if owned:
            client.close()
    problems = _problems(config, references, found)
    if problems:
        raise ValidationFailed(problems)
    return len(wanted)


def _problems(
    config: Config, references: list[Reference], found: dict[tuple[str, str], CallbackProfile | KaleyraError]
) -> list[Problem]:
    problems: list[Problem] = []
    documents: dict[str, Document | None] = {}
    for reference in references:
        result = found[(reference.account, reference.profile_id)]
        message = _message(reference, result)
        if message is not None:
            problems.append(_at_value(config, reference, message, documents))
    return problems


def _message(reference: Reference, result: CallbackProfile | KaleyraError) -> str | None:
    where = f"account '{reference.account}'"
    name, profile_id = reference.field, reference.profile_id
    if isinstance(result, CallbackProfile):
        if result.active:
            return None
        return (
            f"{name}: callback profile '{profile_id}' is {result.status_name} on Kaleyra ({where}); "
            "enable it there or name an active one"
        )
    if result.code == PROFILE_NOT_FOUND:
        return f"{name}: no callback profile '{profile_id}' exists on Kaleyra ({where}); check the id"
    return f"{name}: callback profile '{profile_id}' could not be checked ({where}): {result.describe()}"


def _at_value(
    config: Config, reference: Reference, message: str, documents: dict[str, Document | None]
) -> Problem:
    """The problem at the value's line and column: in the profile, or in reconciler.yaml's defaults.

    Positions are looked up only here, for the few values with a problem, by reading the file again
    with the one YAML loader; loading profiles for `plan` keeps no positions and pays nothing.
    """
    source = reference.profile.source
    if source not in documents:
        try:
            documents[source] = load_mapping(source, source)
        except ValidationFailed:  # changed since it was loaded: name the file without a line
            documents[source] = None
    document = documents[source]
    if document is not None and reference.field in document.data:
        return document.problem((reference.field,), message)
    if config.document is not None and reference.field in config.defaults:
        return config.document.problem(("defaults", reference.field), message)
    return Problem(source, 0, 0, message)
