"""Scheduled re-assertion: which numbers to re-send in full, since Kaleyra offers no read of profile
fields and an edit made in its console can only be corrected by sending the desired values again.

A number is due when its last full send (its state entry's `sent_in_full_at`: an update sends only
the fields that changed, so it does not count) is more than `every_days` old, or when it was never
sent in full (import's unverified entries, which come first); then the oldest first, at most
`max_per_run` of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .config import Reassert
from .plan import Plan, compute_plan
from .profiles import Profile
from .selection import Replacement, Selection, Selector
from .state.model import Entry, State
from .targets import Destination

NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Reassertion:
    """The plan of one re-assertion run, and how many numbers were due in all (some may wait)."""

    plan: Plan
    due: int
    chosen: tuple[str, ...]


def last_sent(entry: Entry) -> datetime:
    """When every field of the entry was last sent; an entry written before `sent_in_full_at` existed
    was last sent at its `applied_at`; one with no readable time counts as never sent."""
    try:
        return datetime.strptime(entry.sent_in_full_at or entry.applied_at, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=UTC
        )
    except ValueError:
        return NEVER


def due_numbers(
    desired: dict[str, Profile],
    state: State,
    settings: Reassert,
    account_targets: dict[str, str],
    now: datetime,
) -> list[str]:
    """Every number due for re-assertion, in the order they are taken: unverified first, then oldest.

    Only numbers the state records as applied to the account and WABA their profile names: a number
    with no profile is forgotten by apply, and one that moved is sent in full by apply anyway.
    """
    cutoff = now - timedelta(days=settings.every_days)
    due = []
    for number, entry in state.entries.items():
        profile = desired.get(number)
        if profile is None or profile.account != entry.account:
            continue
        if account_targets.get(profile.account, entry.target) != entry.target:
            continue
        sent = last_sent(entry)
        if entry.unverified or sent < cutoff:
            due.append((not entry.unverified, sent, number))
    return [number for _, _, number in sorted(due)]


def plan_reassertion(
    desired: dict[str, Profile],
    state: State,
    settings: Reassert,
    account_targets: dict[str, str],
    now: datetime | None = None,
    destinations: Mapping[str, Destination] | None = None,
) -> Reassertion:
    """The full re-send of at most `max_per_run` due numbers, as a plan of `replace` changes."""
    due = due_numbers(desired, state, settings, account_targets, now or datetime.now(UTC))
    chosen = tuple(due[: settings.max_per_run])
    if not chosen:
        # An empty selection means "every number": a run with nothing due plans nothing at all.
        empty = Plan(changes=(), lineage=state.lineage, serial=state.serial)
        return Reassertion(empty, 0, ())
    selection = Selection(targets=tuple(Selector("number", number) for number in chosen))
    plan = compute_plan(
        desired,
        state,
        selection,
        account_targets,
        destinations=destinations,
        replace=Replacement.of_numbers(chosen),
        reassert=True,
    )
    return Reassertion(plan, len(due), chosen)
