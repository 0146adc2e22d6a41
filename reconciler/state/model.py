"""The applied state as values: each number's entry, the whole state, and its JSON form."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..errors import ReconcilerError, StateCorrupt
from ..escape import json_text

STATE_FORMAT = 1


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Entry:
    """What was applied to one number: its account and target, field values, when, and the digest."""

    account: str
    target: str
    fields: dict[str, str]
    applied_at: str
    digest: str
    # Recorded without being sent (by `import`): Kaleyra may hold other values until a replace sends them.
    unverified: bool = False
    # When every managed field was last sent (a create or replace); "" when unknown. An update sends only
    # what changed, so `applied_at` alone cannot tell re-assertion when a console edit was last overwritten.
    sent_in_full_at: str = ""

    def to_json(self) -> dict[str, Any]:
        # By hand: dataclasses.asdict deep-copies, and this runs for every number of every apply.
        data: dict[str, Any] = {
            "account": self.account,
            "target": self.target,
            "fields": self.fields,
            "applied_at": self.applied_at,
            "digest": self.digest,
        }
        if self.unverified:  # only when true: states written before it existed load unchanged
            data["unverified"] = True
        if self.sent_in_full_at:  # likewise only when known
            data["sent_in_full_at"] = self.sent_in_full_at
        return data

    @classmethod
    def from_json(cls, data: Any, where: str) -> Entry:
        """An entry read from a file; anything of the wrong shape is a StateCorrupt naming `where`."""
        if not isinstance(data, dict):
            raise StateCorrupt(f"{where}: an entry must be an object, not {_kind(data)}")
        for name in ("account", "fields"):
            if name not in data:
                raise StateCorrupt(f"{where}: the entry has no '{name}'")
        for name in ("account", "target", "applied_at", "digest", "sent_in_full_at"):
            if not isinstance(data.get(name, ""), str):
                raise StateCorrupt(f"{where}: '{name}' must be text, not {_kind(data[name])}")
        fields = data["fields"]
        if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
            raise StateCorrupt(f"{where}: 'fields' must map field names to text")
        unverified = data.get("unverified", False)
        if not isinstance(unverified, bool):
            raise StateCorrupt(f"{where}: 'unverified' must be true or false, not {_kind(unverified)}")
        return cls(
            account=data["account"],
            target=data.get("target", ""),
            fields=dict(fields),
            applied_at=data.get("applied_at", ""),
            digest=data.get("digest", ""),
            unverified=unverified,
            sent_in_full_at=data.get("sent_in_full_at", ""),
        )


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


@dataclass
class State:
    lineage: str | None = None
    serial: int = 0
    entries: dict[str, Entry] = field(default_factory=dict)
    # Set on the copy `state migrate` moved away from: the live state is now at that place.
    moved_to: str | None = None

    def to_json(self) -> dict[str, Any]:
        document = {
            "format_version": STATE_FORMAT,
            "lineage": self.lineage,
            "serial": self.serial,
            "numbers": {phone: entry.to_json() for phone, entry in sorted(self.entries.items())},
        }
        if self.moved_to:
            document["moved_to"] = self.moved_to
        return document

    def refuse_if_moved(self, where: str) -> None:
        """A state `state migrate` moved away from is kept only as a marker: using it would let two
        copies go on diverging, and one of them would lose a success when migrated over the other."""
        if self.moved_to:
            raise ReconcilerError(
                f"{where}: this state was moved to {self.moved_to} by `state migrate`; set state.backend "
                "to use it there (or migrate it back)"
            )


def state_bytes(state: State, pretty: bool = True) -> bytes:
    """The state as it is stored: sorted, and pretty-printed so it diffs well in git (a remote state
    is written compact: json's C encoder only runs without indentation)."""
    return (json_text(state.to_json(), indent=2 if pretty else None, sort_keys=True) + "\n").encode()


def parse_state(raw: bytes, where: str, advice: str) -> State:
    """A stored state; anything of the wrong shape is a StateCorrupt naming `where`."""
    try:
        text = raw.decode("utf-8-sig")  # json.loads would name a codec, not the file, for bad bytes
    except UnicodeDecodeError as error:
        raise StateCorrupt(
            f"{where}: is not a valid state file (not UTF-8 text: byte 0x{raw[error.start]:02x} at offset "
            f"{error.start} is not valid UTF-8); {advice}"
        ) from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise StateCorrupt(f"{where}: is not a valid state file (not JSON: {error}); {advice}") from None
    if not isinstance(data, dict):
        raise StateCorrupt(f"{where}: is not a valid state file (it holds {_kind(data)}, not an object)")
    if data.get("format_version") != STATE_FORMAT:
        raise StateCorrupt(
            f"{where}: state format {data.get('format_version')!r} is not {STATE_FORMAT}; "
            "use the reconciler version that wrote it"
        )
    lineage, serial, numbers = data.get("lineage"), data.get("serial"), data.get("numbers")
    if lineage is not None and not isinstance(lineage, str):
        raise StateCorrupt(f"{where}: 'lineage' must be text, not {_kind(lineage)}")
    if not _is_serial(serial):
        raise StateCorrupt(f"{where}: 'serial' must be a whole number >= 0, not {_kind(serial)}")
    if not isinstance(numbers, dict):
        raise StateCorrupt(f"{where}: 'numbers' must be an object of phone number -> entry")
    entries = {phone: Entry.from_json(entry, f"{where}: numbers.{phone}") for phone, entry in numbers.items()}
    moved_to = data.get("moved_to")
    if moved_to is not None and not isinstance(moved_to, str):
        raise StateCorrupt(f"{where}: 'moved_to' must be text, not {_kind(moved_to)}")
    return State(lineage=lineage, serial=serial, entries=entries, moved_to=moved_to)


class RecordingFailed(ReconcilerError):
    """A success could not be made durable (a full disk, a vanished folder): the run must stop sending."""


def _is_serial(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
