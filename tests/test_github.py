"""reconciler.github: comment bodies within GitHub's limit, escaped errors, the bot's own comment,
the flags for a pull request that edits the state or moves it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.config import load_config
from reconciler.github.comment import (
    BODY_BYTES,
    PLAN_MARKER,
    NotReviewed,
    assemble,
    main,
    plan_comment,
    reviewed_checksum,
    state_edit_flag,
    state_location_flag,
    verify_comment,
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
    assert body.rstrip().endswith(f"<!-- reconciler-checksum: {SHA} -->\n<!-- reconciler-plan-end -->")
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


S3_STATE = {"backend": "s3", "bucket": "acme-reconciler", "key": "kaleyra/state.json", "region": "eu-west-1"}


def test_the_state_location_flag_names_each_setting_a_pull_request_changes() -> None:
    assert state_location_flag(S3_STATE, dict(S3_STATE)) == ""
    # Defaults are what a missing setting means: writing them out is no move.
    assert state_location_flag(None, {"path": ".reconciler/state.json", "backend": "local"}) == ""
    flag = state_location_flag(S3_STATE, {**S3_STATE, "key": "kaleyra/other.json"})
    assert flag.startswith("> [!WARNING]") and "changes where the applied state is kept" in flag
    assert "key: kaleyra/other.json" not in flag, "each change shows both ends"
    assert "key: kaleyra/state.json → kaleyra/other.json" in flag
    assert "bucket" not in flag.split("):", 1)[1].split(".\n", 1)[0], "unchanged settings are not listed"
    assert "made against the state where the default branch keeps it" in flag
    moved = state_location_flag(S3_STATE, {**S3_STATE, "endpoint_url": "https://s3.example.net"})
    assert "endpoint&#95;url" not in moved and "endpoint_url: _(not set)_ → https://s3.example.net" in moved
    local = state_location_flag({"path": ".reconciler/state.json"}, {"path": "elsewhere/state.json"})
    assert "path: .reconciler/state.json → elsewhere/state.json" in local
    assert "backend: local → s3" in state_location_flag(None, S3_STATE)
    assert "backend: s3 → local" in state_location_flag(S3_STATE, None)


def test_the_state_location_flag_shows_a_pull_requests_values_as_escaped_text() -> None:
    hostile = {**S3_STATE, "key": "x`|<img src=x>@everyone\u202e" + "k" * 500}
    flag = state_location_flag(S3_STATE, hostile)
    line = flag.splitlines()[1]
    assert "<img" not in line and "@everyone" not in line and "\u202e" not in line and "|" not in line
    assert "`" not in line.split("):", 1)[1]
    assert len(line) < 1_000, "a long value is cut"


def config_text(state: str) -> str:
    return (
        "profiles_dir: profiles\n"
        f"{state}"
        "accounts:\n"
        "  acme-in:\n"
        "    sid: HXAP16XXXXXX97IN\n"
        '    waba_id: "766000000000001"\n'
        "    pod: in\n"
    )


@pytest.mark.parametrize(
    "base_state",
    [
        "state:\n  backend: s3\n  bucket: acme-reconciler\n  key: kaleyra/state.json\n",
        "state:\n  path: .reconciler/state.json\n",
        None,  # the base has no reconciler.yaml: the default location is the trusted one
    ],
    ids=["s3", "local", "no-base-config"],
)
def test_state_location_flags_a_move_and_pins_the_plan_to_the_base_location(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    base_state: str | None,
) -> None:
    base = tmp_path / "base.yaml"
    if base_state is not None:
        base.write_text(config_text(base_state))
    tree = tmp_path / "pull"
    tree.mkdir()
    config = tree / "reconciler.yaml"
    config.write_text(
        config_text(
            "state:\n  backend: s3\n  bucket: attacker\n  key: k\n  endpoint_url: https://evil.example\n"
        )
    )
    assert main(["state-location", "--base", str(base), "--config", str(config)]) == 0
    flag = capsys.readouterr().out
    assert "changes where the applied state is kept" in flag and "https://evil.example" in flag

    assert main(["state-location", "--base", str(base), "--config", str(config), "--pin"]) == 0
    assert capsys.readouterr().out == ""
    monkeypatch.chdir(tree)
    pinned = load_config(str(config))
    expected = load_config(str(base)) if base_state is not None else None
    if expected is None:
        assert pinned.state_backend == "local" and pinned.state_path == tree / ".reconciler" / "state.json"
    else:
        assert pinned.state_backend == expected.state_backend and pinned.s3 == expected.s3
        assert pinned.state_path.relative_to(tree) == expected.state_path.relative_to(tmp_path)
    assert pinned.accounts["acme-in"].waba_id == "766000000000001", "the rest of the config is unchanged"
    # Pinned, nothing moves any more: no flag, and pinning again leaves the file alone.
    assert main(["state-location", "--base", str(base), "--config", str(config)]) == 0
    assert capsys.readouterr().out == ""
    before = config.read_bytes()
    assert main(["state-location", "--base", str(base), "--config", str(config), "--pin"]) == 0
    assert config.read_bytes() == before


def test_state_location_leaves_a_config_that_does_not_load_to_validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(config_text("state:\n  path: .reconciler/state.json\n"))
    broken = tmp_path / "reconciler.yaml"
    broken.write_text("state: [unclosed\n")
    for extra in ([], ["--pin"]):
        assert main(["state-location", "--base", str(base), "--config", str(broken), *extra]) == 0
        assert capsys.readouterr().out == ""
    assert broken.read_text() == "state: [unclosed\n"


# --- apply checks the comment against a trusted rendering ---------------------------------------


def bot_comment(body: str, id: int = 7) -> dict:
    return {"id": id, "created_at": "2026-01-01T00:00:00Z", "user": BOT, "body": body}


def test_a_comment_byte_equal_to_the_trusted_rendering_is_verified_even_when_cut() -> None:
    for rendered in (long_plan(3, "short"), long_plan(400, "ग्राहक सेवा " * 20)):
        body = assemble(PLAN_MARKER, rendered, flag="> flagged\n", footer="_footer_")
        assert verify_comment([bot_comment(body)], BOT["login"], rendered) == (SHA, True)


def test_a_forged_or_edited_plan_with_the_right_checksum_is_refused() -> None:
    rendered = long_plan(3, "the real change")
    body = assemble(PLAN_MARKER, rendered)
    edited = body.replace("the real change", "nothing to see")
    with pytest.raises(NotReviewed, match="edited or forged"):
        verify_comment([bot_comment(edited)], BOT["login"], rendered)
    # Text without the comment job's section, or a section cut to almost nothing, is not a rendering.
    bare = f"{PLAN_MARKER}\nNo changes.\n<!-- reconciler-checksum: {SHA} -->\n"
    with pytest.raises(NotReviewed, match="no plan section"):
        verify_comment([bot_comment(bare)], BOT["login"], rendered)
    tiny = body.split("budget=")[0] + "budget=10 -->\n" + f"<!-- reconciler-checksum: {SHA} -->\n"
    tiny += "<!-- reconciler-plan-end -->\n"
    with pytest.raises(NotReviewed):
        verify_comment([bot_comment(tiny)], BOT["login"], rendered)


def test_a_second_bot_plan_comment_is_refused_whichever_is_older() -> None:
    rendered = long_plan(3, "the real change")
    genuine = bot_comment(assemble(PLAN_MARKER, rendered), id=8)
    forged = bot_comment(assemble(PLAN_MARKER, long_plan(1, "forged")), id=5)
    for comments in ([forged, genuine], [genuine, forged]):
        with pytest.raises(NotReviewed, match="2 plan comments"):
            verify_comment(comments, BOT["login"], rendered)
    with pytest.raises(NotReviewed, match="no plan comment"):
        verify_comment(
            [{**genuine, "user": {"login": "github-actions[bot]", "type": "User"}}], BOT["login"], rendered
        )


def test_a_comment_of_another_plan_is_handed_on_unverified() -> None:
    other = "cd" * 32
    body = assemble(PLAN_MARKER, long_plan(3, "old").replace(SHA, other))
    assert verify_comment([bot_comment(body)], BOT["login"], long_plan(3, "new")) == (other, False)


def test_only_the_count_of_unchanged_numbers_may_differ_from_the_rendering() -> None:
    """Another pull request merged meanwhile added numbers: they count as unchanged now, and not one
    byte of the changes differs. Any other difference in the summary row is refused."""
    row = "| create | update | unmanage | forget | unchanged | fields | PUTs |\n|---:|---:|---:|---:|---:|---:|---:|\n"
    reviewed = long_plan(3, "x").replace("\n\n", f"\n\n{row}| 0 | 3 | 0 | 0 | 4 | 3 | 3 |\n\n", 1)
    now = reviewed.replace("| 0 | 3 | 0 | 0 | 4 | 3 | 3 |", "| 0 | 3 | 0 | 0 | 5 | 3 | 3 |")
    body = assemble(PLAN_MARKER, reviewed)
    assert verify_comment([bot_comment(body)], BOT["login"], now) == (SHA, True)
    lying = reviewed.replace("| 0 | 3 | 0 | 0 | 4 | 3 | 3 |", "| 0 | 0 | 0 | 0 | 4 | 3 | 3 |")
    with pytest.raises(NotReviewed):
        verify_comment([bot_comment(assemble(PLAN_MARKER, lying))], BOT["login"], now)
