"""Which numbers scheduled re-assertion re-sends, and in which order: a pure choice over the state."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from reconciler.config import Reassert
from reconciler.reassert import due_numbers, plan_reassertion
from test_plan import TARGETS, applied, profile

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def state_sent(days_ago: dict[str, int | str], unverified: tuple[str, ...] = ()):
    profiles = {number: profile(number, about=number) for number in days_ago}
    state = applied(*profiles.values())
    for number, ago in days_ago.items():
        when = ago if isinstance(ago, str) else (NOW - timedelta(days=ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
        state.entries[number] = dataclasses.replace(
            state.entries[number], applied_at=when, unverified=number in unverified
        )
    return profiles, state


def test_unverified_first_then_oldest_and_an_unreadable_time_counts_as_never_sent():
    profiles, state = state_sent({"+1": 60, "+2": 90, "+3": 0, "+4": "garbled", "+5": 0}, unverified=("+5",))
    assert due_numbers(profiles, state, Reassert(30, 10), TARGETS, NOW) == ["+5", "+4", "+2", "+1"]


def test_numbers_apply_would_send_or_forget_anyway_are_not_due():
    profiles, state = state_sent({"+1": 90, "+2": 90, "+3": 90})
    del profiles["+1"]  # no profile: apply forgets it
    profiles["+2"] = profile("+2", account="other", about="+2")  # moved: apply sends it in full
    assert due_numbers(profiles, state, Reassert(30, 10), TARGETS, NOW) == ["+3"]


def test_the_plan_replaces_at_most_max_per_run_and_marks_them_as_reassertions():
    profiles, state = state_sent({"+1": 60, "+2": 90, "+3": 120})
    run = plan_reassertion(profiles, state, Reassert(30, 2), TARGETS, NOW)
    assert run.due == 3 and run.chosen == ("+3", "+2")
    assert [(c.phone_number, c.action, c.reassert) for c in run.plan.changes] == [
        ("+2", "replace", True),
        ("+3", "replace", True),
    ]
    assert run.plan.changes[0].sends == {"about": "+2"}


def test_nothing_due_plans_nothing_at_all():
    profiles, state = state_sent({"+1": 0})
    run = plan_reassertion(profiles, state, Reassert(30, 2), TARGETS, NOW)
    assert (run.due, run.chosen, run.plan.changes, run.plan.unchanged) == (0, (), (), 0)


def test_a_reassertions_checksum_covers_where_it_is_sent():
    """A re-assertion reviewed (by its checksum) for one destination is never sent to another."""
    from reconciler.targets import Destination

    profiles, state = state_sent({"+1": 60})
    account = profiles["+1"].account
    here = Destination("https://api.in.kaleyra.io/v2/HX1/whatsapp/1/number/update", "v2")
    there = Destination("https://api.eu.kaleyra.io/v2/HX1/whatsapp/1/number/update", "v2")
    first = plan_reassertion(profiles, state, Reassert(30, 5), TARGETS, NOW, destinations={account: here})
    second = plan_reassertion(profiles, state, Reassert(30, 5), TARGETS, NOW, destinations={account: there})
    assert [change.destination for change in first.plan.changes] == [here]
    assert first.plan.checksum != second.plan.checksum
