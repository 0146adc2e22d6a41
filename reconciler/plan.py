"""The plan: what would change, number by number and field by field. Computed without I/O.

Actions: `create` (no state entry yet: send every declared field), `update` (send exactly the changed
fields), `replace` (`--replace`, re-assertion: send every declared field whatever the state says, since
Kaleyra offers no read of what it holds), `unmanage` (fields left the YAML: drop them from the state,
send nothing), `forget` (the profile is gone: drop the number from the state, send nothing), `no-op`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ReconcilerError
from .profiles import Profile, profile_digest
from .selection import Replacement, Selection
from .state import audit
from .state.model import Entry, State
from .targets import Destination

# 1.1: each change that sends has a `destination`, which the checksum covers; the `replace` action,
# `unverified`, and drift's `compares` and `note`.
FORMAT_VERSION = "1.1"
ACTIONS = ("create", "update", "replace", "unmanage", "forget", "no-op")
SENDING_ACTIONS = ("create", "update", "replace")


@dataclass(frozen=True)
class FieldChange:
    """A field's applied value (`before`) and desired value (`after`); None means "not managed"."""

    before: str | None
    after: str | None


@dataclass(frozen=True)
class Change:
    phone_number: str
    account: str
    action: str
    fields: dict[str, FieldChange]
    # What the state will hold afterwards (not part of the checksum).
    target: str = ""
    digest: str = ""
    moved_from: str | None = None
    # Where a create or update is sent; the checksum covers it (None: nothing is sent).
    destination: Destination | None = None
    # A replace planned by scheduled re-assertion rather than asked for (`--replace`): the audit says so.
    reassert: bool = False

    @property
    def sends(self) -> dict[str, str]:
        """The fields the PUT carries: every field with a desired value."""
        if self.action not in SENDING_ACTIONS:
            return {}
        return {name: change.after for name, change in self.fields.items() if change.after is not None}

    @property
    def needs_put(self) -> bool:
        return bool(self.sends)

    def applied_fields(self, before: dict[str, str]) -> dict[str, str]:
        """The state's field values once this change is applied on top of `before`."""
        if self.action == "create":
            return dict(sorted(self.sends.items()))
        result = dict(before)
        for name, change in self.fields.items():
            if change.after is None:
                result.pop(name, None)
            else:
                result[name] = change.after
        return dict(sorted(result.items()))

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "phone_number": self.phone_number,
            "account": self.account,
            "action": self.action,
            "fields": {
                name: {"before": change.before, "after": change.after} for name, change in self.fields.items()
            },
        }
        if self.moved_from:
            data["moved_from"] = self.moved_from
        if self.destination is not None:
            data["destination"] = self.destination.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Change:
        return cls(
            phone_number=data["phone_number"],
            account=data["account"],
            action=data["action"],
            fields={
                name: FieldChange(value["before"], value["after"]) for name, value in data["fields"].items()
            },
            target=data.get("target", ""),
            digest=data.get("digest", ""),
            moved_from=data.get("moved_from"),
            destination=_destination(data.get("destination")),
        )


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    unchanged: int = 0
    # How many of the numbers it covers the state manages (what a forget-everything check counts).
    managed: int = 0
    lineage: str | None = None
    serial: int = 0
    profiles_digest: str = ""
    # The --target and --exclude selectors it covers, as a saved plan records them.
    targets: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    replaces: tuple[str, ...] = ()
    # Numbers it covers whose state entry was recorded (`import`) but never sent in full, and stays so
    # after it.
    unverified: tuple[str, ...] = ()

    @functools.cached_property
    def checksum(self) -> str:
        """sha256 of the canonical JSON of the changes (no no-ops, timestamps, lineage or serial), each
        with where it is sent: a plan reviewed for one destination is never sent to another.
        Computed once: a plan is a value, and 1,000 changes take 10 ms to encode."""
        named = ("phone_number", "account", "action", "fields", "destination")
        entries = [
            {key: data[key] for key in named if key in data} for data in map(Change.to_json, self.changes)
        ]
        canonical = json.dumps(entries, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def puts(self) -> list[Change]:
        return [change for change in self.changes if change.needs_put]

    def count(self, action: str) -> int:
        return sum(1 for change in self.changes if change.action == action)

    def to_json(self) -> dict[str, Any]:
        """The stable, documented document of `plan --format json`."""
        return {
            "format_version": FORMAT_VERSION,
            "checksum": self.checksum,
            "summary": {action: self.count(action) for action in ACTIONS if action != "no-op"}
            | {"no-op": self.unchanged, "puts": len(self.puts)},
            "changes": [change.to_json() for change in self.changes],
            "unverified": list(self.unverified),
        }

    def to_saved(self) -> dict[str, Any]:
        """What `plan --out` writes: the document plus what `apply` needs to detect a stale plan."""
        document = self.to_json()
        document["kind"] = "saved-plan"
        document["lineage"] = self.lineage
        document["serial"] = self.serial
        document["profiles_digest"] = self.profiles_digest
        document["targets"] = list(self.targets)
        document["excludes"] = list(self.excludes)
        document["replaces"] = list(self.replaces)
        for entry, change in zip(document["changes"], self.changes, strict=True):
            entry["target"] = change.target
            entry["digest"] = change.digest
        return document

    @classmethod
    def from_saved(cls, data: Any) -> Plan:
        """A plan read back from `plan --out`; of the wrong shape or version, a ReconcilerError.

        Its checksum is checked against its changes, which catches accidents only: anyone can
        recompute a sha256. What makes a saved plan safe to apply is `differences` with a fresh plan.
        """
        if not isinstance(data, dict) or data.get("kind") != "saved-plan":
            raise ReconcilerError(
                "not a saved plan (expected the JSON object `reconciler plan --out` writes)"
            )
        major = str(data.get("format_version", "")).split(".")[0]
        if major != FORMAT_VERSION.split(".")[0]:
            raise ReconcilerError(
                f"saved plan format {data.get('format_version')!r} is not {FORMAT_VERSION}; "
                "make the plan again with this reconciler"
            )
        try:
            plan = cls(
                changes=tuple(Change.from_json(entry) for entry in data["changes"]),
                unchanged=int((data.get("summary") or {}).get("no-op", 0)),
                lineage=data.get("lineage"),
                serial=int(data["serial"]),
                profiles_digest=str(data["profiles_digest"]),
                targets=tuple(str(target) for target in data.get("targets", ())),
                excludes=tuple(str(exclude) for exclude in data.get("excludes", ())),
                replaces=tuple(str(replace) for replace in data.get("replaces", ())),
                unverified=tuple(str(number) for number in data.get("unverified", ())),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ReconcilerError(f"not a readable saved plan ({type(error).__name__}: {error})") from None
        if plan.checksum != data.get("checksum"):
            raise ReconcilerError("the saved plan was edited: its changes no longer match its checksum")
        return plan


def _destination(data: Any) -> Destination | None:
    if data is None:
        return None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(key), str) for key in ("url", "api_version")
    ):
        raise ReconcilerError("a change's destination must hold its url and api_version")
    return Destination(url=data["url"], api_version=data["api_version"])


def differences(reviewed: Plan, fresh: Plan) -> list[str]:
    """How a fresh plan differs from a reviewed one, one line per difference; [] when they are equal.

    A comparison of two nested documents, so DeepDiff does it. `threshold_to_diff_deeper=0` makes it
    name the field that differs instead of reporting a whole mapping as replaced when two numbers
    share few keys. Imported here only: it is never on the path of a plain `plan`.
    """
    if reviewed.checksum == fresh.checksum:
        return []  # the checksum covers every change's number, account, action and fields, in order
    from deepdiff import DeepDiff

    def keyed(plan: Plan) -> dict[str, Any]:
        return {change.phone_number: change.to_json() for change in plan.changes}

    # ignore_private_variables=False: a key such as "__+1415..." is data here, not a private attribute.
    found = DeepDiff(
        keyed(reviewed),
        keyed(fresh),
        threshold_to_diff_deeper=0,
        ignore_private_variables=False,
        view="tree",
    )
    lines = [
        f"{number}: appears {count} times in the reviewed plan"
        for number, count in sorted(Counter(c.phone_number for c in reviewed.changes).items())
        if count > 1
    ]
    for kind, items in sorted(found.items()):
        for item in items:
            where = item.path(output_format="list")
            number, rest = where[0], ".".join(map(str, where[1:])) or "the whole change"
            if kind == "dictionary_item_added":
                lines.append(f"{number} {rest}: not in the reviewed plan, now {_shown(item.t2)}")
            elif kind == "dictionary_item_removed":
                lines.append(f"{number} {rest}: {_shown(item.t1)} in the reviewed plan, not any more")
            else:
                lines.append(f"{number} {rest}: {_shown(item.t1)} reviewed, {_shown(item.t2)} now")
    return sorted(lines) or ["the changes are the same but in another order"]


def _shown(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


EVERY_NUMBER = Selection()


def compute_plan(
    desired: dict[str, Profile],
    state: State,
    selection: Selection = EVERY_NUMBER,
    account_targets: dict[str, str] | None = None,
    destinations: Mapping[str, Destination] | None = None,
    replace: Replacement | None = None,
    reassert: bool = False,
) -> Plan:
    """Diff desired profiles against the applied state, for the numbers `selection` covers.

    `account_targets` maps account name -> "sid/waba_id" so a number whose account now points at
    another WABA is sent in full, like a number whose account changed. `destinations` (account name
    -> where its PUTs go) is recorded on each change that sends, so the checksum covers it. The
    numbers `replace` picks are planned as `replace` (every declared field sent), marked as
    re-assertions when `reassert`.
    """
    account_targets = account_targets or {}
    destinations = destinations or {}
    numbers = sorted(set(desired) | set(state.entries))
    if selection:

        def accounts_of(number: str) -> set[str]:
            profile, entry = desired.get(number), state.entries.get(number)
            return {owner.account for owner in (profile, entry) if owner is not None}

        numbers = selection.choose(numbers, accounts_of)
    replaced: set[str] = set()
    if replace:

        def owners(number: str) -> set[str]:
            profile, entry = desired.get(number), state.entries.get(number)
            return {owner.account for owner in (profile, entry) if owner is not None}

        def is_unverified(number: str) -> bool:
            entry = state.entries.get(number)
            return entry is not None and entry.unverified

        replaced = replace.choose(numbers, owners, desired.__contains__, is_unverified)
    changes: list[Change] = []
    unchanged = 0
    unverified: list[str] = []
    for number in numbers:
        profile, entry = desired.get(number), state.entries.get(number)
        change = _diff(profile, entry, number, account_targets, number in replaced, reassert)
        if change is None:
            unchanged += 1
        else:
            if change.needs_put:
                change = dataclasses.replace(change, destination=destinations.get(change.account))
            changes.append(change)
        if (
            entry is not None
            and entry.unverified
            and (change is None or change.action in ("update", "unmanage"))
        ):
            unverified.append(number)
    targets, excludes = selection.texts()
    return Plan(
        changes=tuple(changes),
        unchanged=unchanged,
        managed=sum(1 for number in numbers if number in state.entries),
        lineage=state.lineage,
        serial=state.serial,
        profiles_digest=profiles_digest(desired, numbers),
        targets=targets,
        excludes=excludes,
        replaces=replace.texts() if replace else (),
        unverified=tuple(unverified),
    )


def unknown_accounts(state: State, accounts: Mapping[str, object]) -> dict[str, list[str]]:
    """State entries whose account reconciler.yaml does not have: account -> its numbers."""
    found: dict[str, list[str]] = {}
    for number, entry in sorted(state.entries.items()):
        if entry.account not in accounts:
            found.setdefault(entry.account, []).append(number)
    return found


_UPDATE_URL = re.compile(r"/v2/(?P<sid>[^/]+)/whatsapp/(?P<waba_id>[^/]+)/number/update$")


def reviewed_targets(reviewed: Plan, desired: dict[str, Profile], state: State) -> dict[str, str]:
    """Account name -> the WABA ("sid/waba_id") its profiles were planned against when `reviewed` was
    made, as far as the plan and the state (unchanged since, or the plan is stale for that) tell: a
    change that sends names it in its URL, and a number without a change was at its state entry's."""
    targets: dict[str, str] = {}
    for change in reviewed.changes:
        found = _UPDATE_URL.search(change.destination.url) if change.destination else None
        if found:
            targets.setdefault(change.account, f"{found['sid']}/{found['waba_id']}")
    changed = {change.phone_number for change in reviewed.changes}
    for number, profile in sorted(desired.items()):
        entry = state.entries.get(number)
        if number not in changed and entry is not None and entry.account == profile.account:
            targets.setdefault(profile.account, entry.target)
    return targets


def with_targets(desired: dict[str, Profile], targets: Mapping[str, str]) -> dict[str, Profile]:
    """`desired` as if each account named in `targets` still pointed at that WABA: to tell whether a
    saved plan is stale for its profiles or only for where its accounts send."""
    return {
        number: dataclasses.replace(
            profile,
            digest=profile_digest(number, profile.account, targets[profile.account], profile.fields),
        )
        if profile.account in targets
        else profile
        for number, profile in desired.items()
    }


def profiles_digest(desired: dict[str, Profile], numbers: list[str]) -> str:
    """Identifies the desired profiles a plan covers, so a saved plan can tell they changed."""
    digest = hashlib.sha256()
    for number in numbers:
        profile = desired.get(number)
        digest.update(f"{number}={profile.digest if profile else '-'};".encode())
    return digest.hexdigest()


def _diff(
    profile: Profile | None,
    entry: Entry | None,
    number: str,
    account_targets: dict[str, str],
    replace: bool = False,
    reassert: bool = False,
) -> Change | None:
    if profile is None:
        assert entry is not None, "a number is in the plan because it has a profile or a state entry"
        fields = {name: FieldChange(value, None) for name, value in entry.fields.items()}
        return Change(number, entry.account, "forget", fields, target=entry.target)
    target = account_targets.get(profile.account, entry.target if entry else "")
    if entry is None or entry.account != profile.account or entry.target != target:
        fields = {name: FieldChange(None, value) for name, value in profile.fields.items()}
        moved_from = None if entry is None else entry.account
        if moved_from == profile.account:
            moved_from = f"{entry.account} ({entry.target})"
        return Change(number, profile.account, "create", fields, target, profile.digest, moved_from)
    if replace:
        # Every declared field, as the state has it before and the profile after (equal or not): what
        # Kaleyra holds is unknown. Fields that left the YAML are dropped from the state, as in an update.
        fields = {
            str(name): FieldChange(entry.fields.get(name), profile.fields.get(name))
            for name in sorted(entry.fields.keys() | profile.fields.keys())
        }
        return Change(number, profile.account, "replace", fields, target, profile.digest, reassert=reassert)
    if entry.fields == profile.fields:
        # The state's field values are the truth; its digest is only a cache and is never trusted over
        # them (a hand-edited value under an old digest must show as a change).
        return None
    fields = {
        str(name): FieldChange(entry.fields.get(name), profile.fields.get(name))
        for name in sorted(_changed_names(entry.fields, profile.fields))
    }
    if not fields:
        return None
    sends = any(change.after is not None for change in fields.values())
    return Change(number, profile.account, "update" if sends else "unmanage", fields, target, profile.digest)


def _changed_names(applied: dict[str, str], desired: dict[str, str]) -> set[str]:
    """Fields whose value differs, appeared or went. Exact, on flat maps of strings.

    (DeepDiff was used here once; when few keys are shared it reports the whole mapping as
    replaced and names no keys, which turned real changes into no-ops.)
    """
    return {name for name in applied.keys() | desired.keys() if applied.get(name) != desired.get(name)}


def audit_record(change: Change, result: str, message: str, actor: dict[str, str]) -> dict[str, Any]:
    """The audit record of one change's result."""
    fields = {name: (field.before, field.after) for name, field in change.fields.items()}
    record = audit.entry(change.phone_number, change.account, change.action, fields, result, message, actor)
    if change.action == "replace":
        record["reassert"] = change.reassert
    return record
