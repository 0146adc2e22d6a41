"""The plan: a pure diff of desired profiles against the applied state."""

from __future__ import annotations

import hashlib
import json

from reconciler.plan import Plan, compute_plan
from reconciler.profiles import Profile, profile_digest
from reconciler.state.model import Entry, State

TARGETS = {"main": "HX/1", "other": "HX/2"}


def profile(phone: str, account: str = "main", **fields: str) -> Profile:
    digest = profile_digest(phone, account, TARGETS[account], dict(sorted(fields.items())))
    return Profile(phone, account, dict(sorted(fields.items())), "f.yaml", digest)


def applied(*profiles: Profile) -> State:
    entries = {
        p.phone_number: Entry(p.account, TARGETS[p.account], dict(p.fields), "T", p.digest) for p in profiles
    }
    return State("lineage-1", 7, entries)


def test_actions_for_each_situation():
    state = applied(
        profile("+1", about="a"),
        profile("+2", about="a", email="e@x.io"),
        profile("+3", about="a"),
        profile("+4", about="gone"),
    )
    desired = {
        p.phone_number: p
        for p in [
            profile("+1", about="a"),  # no-op
            profile("+2", about="b"),  # update about, unmanage email
            profile("+3"),  # unmanage only
            profile("+5", address="new"),  # create
        ]
    }
    plan = compute_plan(desired, state, account_targets=TARGETS)
    actions = {change.phone_number: change.action for change in plan.changes}
    assert actions == {"+2": "update", "+3": "unmanage", "+4": "forget", "+5": "create"}
    assert plan.unchanged == 1
    update = plan.changes[0]
    assert update.sends == {"about": "b"}
    assert [change.phone_number for change in plan.puts] == ["+2", "+5"]


def test_a_waba_change_under_the_same_account_name_resends_in_full():
    state = applied(profile("+1", about="a"))
    moved = {"main": "HX/999"}
    desired = {
        "+1": Profile(
            "+1", "main", {"about": "a"}, "f", profile_digest("+1", "main", "HX/999", {"about": "a"})
        )
    }
    plan = compute_plan(desired, state, account_targets=moved)
    assert plan.changes[0].action == "create" and plan.changes[0].sends == {"about": "a"}
    assert plan.changes[0].moved_from == "main (HX/1)"


def test_checksum_is_sha256_of_canonical_changes_without_noops_or_lineage():
    state = applied(profile("+1", about="a"), profile("+2", about="same"))
    desired = {"+1": profile("+1", about="b"), "+2": profile("+2", about="same")}
    plan = compute_plan(desired, state, account_targets=TARGETS)
    canonical = json.dumps(
        [
            {
                "phone_number": "+1",
                "account": "main",
                "action": "update",
                "fields": {"about": {"before": "a", "after": "b"}},
            }
        ],
        sort_keys=True,
        separators=(",", ":"),
    )
    assert plan.checksum == hashlib.sha256(canonical.encode()).hexdigest()
    other_serial = State("another-lineage", 99, state.entries)
    assert compute_plan(desired, other_serial, account_targets=TARGETS).checksum == plan.checksum


def test_a_saved_plan_round_trips_and_detects_tampering():
    plan = compute_plan({"+1": profile("+1", about="b")}, applied(), account_targets=TARGETS)
    saved = plan.to_saved()
    assert Plan.from_saved(json.loads(json.dumps(saved))).checksum == plan.checksum
    saved["changes"][0]["fields"]["about"]["after"] = "evil"
    try:
        Plan.from_saved(saved)
    except Exception as error:
        assert "edited" in str(error)
    else:
        raise AssertionError("a tampered plan was accepted")


def test_json_document_has_format_version_and_one_entry_per_change():
    plan = compute_plan({"+1": profile("+1", about="b")}, applied(), account_targets=TARGETS)
    document = plan.to_json()
    assert document["format_version"] == "1.1"
    assert document["changes"] == [
        {
            "phone_number": "+1",
            "account": "main",
            "action": "create",
            "fields": {"about": {"before": None, "after": "b"}},
        }
    ]
    assert document["summary"]["create"] == 1 and document["summary"]["puts"] == 1


def test_a_change_sharing_no_field_with_the_state_is_not_a_noop():
    """Regression: a diff library reported {address} -> {description} as "root replaced", no fields."""
    state = applied(profile("+1", address=""))
    plan = compute_plan({"+1": profile("+1", description="")}, state, account_targets=TARGETS)
    assert len(plan.changes) == 1
    assert plan.changes[0].action == "update"
    assert plan.changes[0].sends == {"description": ""}
    assert plan.changes[0].applied_fields({"address": ""}) == {"description": ""}
