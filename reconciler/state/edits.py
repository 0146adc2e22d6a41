"""Edits of the applied state by hand, `state rm` and `state mv`: nothing is sent to Kaleyra.

Each edit is worked out here without I/O, as the list of state entries to record; `record_locally`
records them (and `import`'s) through the journal and the audit log under the lock, like any apply.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any

from ..config import Config
from ..errors import ReconcilerError
from .model import Entry, RecordingFailed, State
from .store import StateStore


@dataclass(frozen=True)
class Edit:
    """One number's entry after the edit (None: dropped), and what the audit log says about it."""

    phone_number: str
    account: str
    entry: Entry | None
    fields: dict[str, tuple[str | None, str | None]]
    message: str


def remove(state: State, numbers: list[str]) -> list[Edit]:
    """Drop numbers from the state. Their profiles, if any, plan as creates afterwards."""
    missing = [number for number in numbers if number not in state.entries]
    if missing:
        raise ReconcilerError(f"{', '.join(missing)}: not in the state; nothing was changed")
    return [
        Edit(
            number,
            state.entries[number].account,
            None,
            {name: (value, None) for name, value in state.entries[number].fields.items()},
            "removed from the state by `state rm`; nothing sent",
        )
        for number in sorted(set(numbers))
    ]


def rename_account(state: State, old: str, new: str, config: Config) -> list[Edit]:
    """Give the numbers applied under account label `old` the label `new`, when `new` sends to the very
    WABA they were applied to (same sid and waba_id): a label renamed in reconciler.yaml. Refused
    otherwise, since then the numbers really must be sent to the new WABA."""
    if old == new:
        raise ReconcilerError(f"state mv: '{old}' and '{new}' are the same label; nothing was changed")
    account = config.accounts.get(new)
    if account is None:
        raise ReconcilerError(f"state mv: account '{new}' is not in {config.path.name}; add it there first")
    numbers = sorted(number for number, entry in state.entries.items() if entry.account == old)
    if not numbers:
        raise ReconcilerError(f"state mv: the state holds no number of account '{old}'; nothing was changed")
    elsewhere = [number for number in numbers if state.entries[number].target != account.waba_key]
    if elsewhere:
        example = elsewhere[0]
        raise ReconcilerError(
            f"state mv: {len(elsewhere)} number(s) of '{old}' were applied to another WABA than '{new}' "
            f"({account.waba_key}), e.g. {example} to {state.entries[example].target or 'an unknown one'}; "
            "a real move must be applied, not renamed. Nothing was changed"
        )
    return [
        Edit(
            number,
            new,
            dataclasses.replace(state.entries[number], account=new),
            {},
            f"account label '{old}' renamed to '{new}' by `state mv` (same WABA); nothing sent",
        )
        for number in numbers
    ]


def record_locally(
    store: StateStore,
    state: State,
    entries: list[tuple[str, Entry | None]],
    audit_records: list[dict[str, Any]],
) -> None:
    """Record changes that send nothing (import, state rm/mv): both files proven writable first, then
    the state, then the audit log. If only the audit log fails, say plainly that the state changed."""
    audit_log = store.audit_log()
    try:
        with store.writer(state) as journal:
            journal.open()
            audit_log.open()
            journal.record(entries)
            try:
                audit_log.append(audit_records)
            except RecordingFailed as failure:
                raise ReconcilerError(
                    f"the state WAS changed ({len(entries)} number(s)), but the audit log could not "
                    f"record it: {failure}"
                ) from None
    except BaseException:
        with contextlib.suppress(RecordingFailed):
            audit_log.close()
        raise
    audit_log.close()
