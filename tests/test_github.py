"""reconciler.github: comment bodies within GitHub's limit, escaped errors, the bot's own comment."""

from __future__ import annotations

import json

from reconciler.github import (
    BODY_BYTES,
    PLAN_MARKER,
    assemble,
    plan_comment,
    reviewed_checksum,
    state_edit_flag,
)

SHA = "ab" * 32
BOT = {"login": "github-actions[bot]", "type": "Bot"}


def long_plan(sections: int, text: str) -> str:
    body = "".join(
        f"<details><summary>{n}</summary>\n\n| about | {text} |\n\n</details>\n" for n in range(sections)
    )
    return f"### Kaleyra profile plan\n\n{body}\nChecksum: `{SHA}`\n<!-- reconciler-checksum: {SHA} -->\n"


def test_a_long_non_ascii_plan_is_cut_in_bytes_and_keeps_its_checksum_marker() -> None:
    plan = long_plan(400, "ग्राहक सेवा " * 20)  # ~3 bytes per character: far over the budget in bytes
    assert len(plan) < 65_536 * 4 and len(plan.encode()) > BODY_BYTES
    body = assemble(PLAN_MARKER, plan)
    assert len(body.encode()) <= BODY_BYTES
    assert body.startswith(PLAN_MARKER)
    assert body.rstrip().endswith(f"<!-- reconciler-checksum: {SHA} -->")
    assert body.count("<details>") == body.count("</details>"), "no section is left open"
    assert "Cut to fit" in body


def test_errors_are_escaped_and_the_plan_still_fits() -> None:
    errors = "profiles/a.yaml:1:1: unknown key '<script>' @everyone\n" * 5000
    body = assemble(PLAN_MARKER, long_plan(50, "x" * 300), errors)
    assert len(body.encode()) <= BODY_BYTES
    assert "<script>" not in body and "@everyone" not in body
    assert "&lt;script&gt;" in body and "more line(s)" in body
    assert f"<!-- reconciler-checksum: {SHA} -->" in body


def test_only_the_oldest_bot_comment_with_the_marker_counts() -> None:
    comments = [
        {
            "id": 1,
            "created_at": "2026-01-01T00:00:01Z",
            "user": {"login": "mallory", "type": "User"},
            "body": f"{PLAN_MARKER}\n<!-- reconciler-checksum: {'0' * 64} -->",
        },
        {
            "id": 2,
            "created_at": "2026-01-01T00:00:02Z",
            "user": {"login": "github-actions[bot]", "type": "User"},
            "body": f"{PLAN_MARKER}\n<!-- reconciler-checksum: {'1' * 64} -->",
        },
        {"id": 3, "created_at": "2026-01-01T00:00:03Z", "user": BOT, "body": "a bot's other comment"},
        {
            "id": 4,
            "created_at": "2026-01-01T00:00:04Z",
            "user": BOT,
            "body": f"{PLAN_MARKER}\n<!-- reconciler-checksum: {SHA} -->",
        },
        {
            "id": 5,
            "created_at": "2026-01-01T00:00:05Z",
            "user": BOT,
            "body": f"{PLAN_MARKER}\n<!-- reconciler-checksum: {'2' * 64} -->",
        },
    ]
    chosen = plan_comment(comments, "github-actions[bot]")
    assert chosen is not None and chosen["id"] == 4
    assert reviewed_checksum(chosen) == SHA


def test_a_comment_with_two_different_checksums_gives_none() -> None:
    body = f"{PLAN_MARKER}\n<!-- reconciler-checksum: {SHA} -->\n<!-- reconciler-checksum: {'2' * 64} -->"
    assert reviewed_checksum({"body": body}) is None


def test_a_profile_value_that_looks_like_a_marker_is_not_a_checksum() -> None:
    body = f"{PLAN_MARKER}\n| about | reconciler-checksum: {'3' * 64} |\n"
    assert reviewed_checksum({"body": body}) is None


def test_the_state_edit_flag_names_the_numbers_whose_entries_change() -> None:
    entry = {"account": "a", "fields": {"about": "x"}}
    before = json.dumps({"numbers": {"+1": entry, "+2": entry, "+3": entry}})
    after = json.dumps({"numbers": {"+1": entry, "+2": {**entry, "fields": {"about": "y"}}, "+4": entry}})
    flag = state_edit_flag(".reconciler/state.json", before, after, "the trusted state")
    assert "edits the applied state" in flag
    assert "(3): `+2`, `+3`, `+4`." in flag
    assert state_edit_flag("s.json", before, before, "t") == ""
    assert "not a readable state file" in state_edit_flag("s.json", before, "{oops", "t")
    assert "adds the applied state" in state_edit_flag("s.json", None, before, "t")
