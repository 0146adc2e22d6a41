"""The journal's records: one line per recorded batch, replayed over the state on load."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import StateCorrupt
from ..escape import json_line
from .model import Entry, State, _is_serial, _kind


def journal_records(data: bytes, where: str, torn_tail_allowed: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each journal record in `data` with where it is (`name:line`). A record torn by a crash
    mid-write is the last line of a local journal and was never reported as applied, so it is
    skipped; a remote segment is written whole, so nothing in it may be torn."""
    lines = data.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        at = f"{where}:{number}"
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            if torn_tail_allowed and number == len(lines):
                return
            raise StateCorrupt(f"{at}: unreadable journal record") from None
        problem = _journal_problem(record)
        if problem:
            raise StateCorrupt(f"{at}: not a journal record ({problem})")
        yield at, record


def replay(state: State, records: Iterable[tuple[str, dict[str, Any]]]) -> None:
    """Apply journal records on top of `state`, skipping those already compacted into it."""
    for where, record in records:
        if state.lineage is None:
            state.lineage = record["lineage"]
        if record["lineage"] != state.lineage:
            raise StateCorrupt(
                f"{where}: belongs to another state (lineage {record['lineage']}); "
                "move the journal away if the state was replaced on purpose"
            )
        if record["serial"] <= state.serial:
            continue  # already compacted into the state before a crash
        state.serial = record["serial"]
        if record["entry"] is None:
            state.entries.pop(record["phone_number"], None)
        else:
            state.entries[record["phone_number"]] = Entry.from_json(record["entry"], where)


def journal_lines(state: State, changes: list[tuple[str, Entry | None]]) -> tuple[bytes, int]:
    """The journal records of a batch, numbered on from `state.serial`, and the last serial."""
    serial = state.serial
    lines = []
    for phone_number, entry in changes:
        serial += 1
        record = {
            "lineage": state.lineage,
            "serial": serial,
            "phone_number": phone_number,
            "entry": None if entry is None else entry.to_json(),
        }
        lines.append(json_line(record))
    return "".join(lines).encode(), serial


def remember_batch(state: State, changes: list[tuple[str, Entry | None]], serial: int) -> None:
    """Apply a batch that is now durable to the in-memory state."""
    state.serial = serial
    for phone_number, entry in changes:
        if entry is None:
            state.entries.pop(phone_number, None)
        else:
            state.entries[phone_number] = entry


def _journal_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return f"it holds {_kind(record)}, not an object"
    missing = [key for key in ("lineage", "serial", "phone_number", "entry") if key not in record]
    if missing:
        return f"no '{missing[0]}'"
    if not isinstance(record["lineage"], str):
        return "'lineage' must be text"
    if not _is_serial(record["serial"]):
        return f"'serial' must be a whole number, not {_kind(record['serial'])}"
    if not isinstance(record["phone_number"], str):
        return "'phone_number' must be text"
    return None
