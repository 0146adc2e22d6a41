"""Renderers: markdown that profile text cannot break, truncation, and readable text."""

from __future__ import annotations

from reconciler.plan import Change, FieldChange, Plan
from reconciler.render import md, plan_markdown, plan_text


def plan_of(*changes: Change) -> Plan:
    return Plan(tuple(changes))


def update(phone: str, before: str, after: str) -> Change:
    return Change(phone, "main", "update", {"about": FieldChange(before, after)})


def test_markdown_escapes_pipes_backticks_html_and_mentions():
    hostile = "a | b `code` <script>alert(1)</script> @everyone **bold** [x](y)\nsecond line"
    cell = md(hostile)
    assert cell.count("<br>") == 1  # the newline, and the only markup the cell holds
    for raw in ("|", "`", "<", ">", "@", "*", "[", "]", "\n"):
        assert raw not in cell.replace("<br>", "")
    rendered = plan_markdown(plan_of(update("+1", "old", hostile)))
    table_rows = [line for line in rendered.splitlines() if line.startswith("| about")]
    assert len(table_rows) == 1 and table_rows[0].count("|") == 4  # the row still has exactly 3 cells


def test_markdown_shows_cleared_and_unmanaged_values_distinctly():
    change = Change("+1", "main", "update", {"about": FieldChange("x", ""), "email": FieldChange("e", None)})
    rendered = plan_markdown(plan_of(change))
    assert '`""` (cleared)' in rendered and "_(not managed)_" in rendered


def test_markdown_stays_under_the_limit_and_says_what_was_cut():
    changes = [update(f"+1415555{index:04d}", "x" * 300, "y" * 300) for index in range(400)]
    rendered = plan_markdown(plan_of(*changes))
    assert len(rendered) <= 60_000
    assert "more number(s) not shown" in rendered
    assert "| 0 | 400 |" in rendered  # the summary still counts everything


def test_text_plan_quotes_values_so_empty_strings_and_spaces_show():
    text = plan_text(plan_of(update("+1", "trailing ", "")))
    assert 'about: "trailing " -> ""' in text


def test_markdown_carries_the_checksum_marker_ci_applies_by_even_with_no_changes():
    for plan in (plan_of(update("+1", "a", "b")), plan_of()):
        assert f"<!-- reconciler-checksum: {plan.checksum} -->" in plan_markdown(plan)
