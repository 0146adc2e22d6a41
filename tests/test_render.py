"""Renderers: markdown that profile text cannot break, truncation, and readable text."""

from __future__ import annotations

import json

import click
from hypothesis import given
from hypothesis import strategies as st

from reconciler.plan import Change, FieldChange, Plan
from reconciler.render import md, plan_markdown, plan_text


def plan_of(*changes: Change) -> Plan:
    return Plan(tuple(changes))


def update(phone: str, before: str, after: str) -> Change:
    return Change(phone, "main", "update", {"about": FieldChange(before, after)})


def test_markdown_escapes_pipes_backticks_html_and_mentions():
    hostile = "a | b `code` <script>alert(1)</script> @everyone **bold** [x](y)\nsecond line"
    cell = md(hostile)
    assert "&#92;nsecond line" in cell  # the newline shows as a visible escape
    for raw in ("|", "`", "<", ">", "@", "*", "[", "]", "\n"):
        assert raw not in cell
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


TERMINAL_TRICKS = [
    "\x1b[2J\x1b[HApplied 22, failed 0.",  # clear the screen, forge a summary
    "ok\rApplied 22",  # carriage return overwrites the line
    "bell\x07",
    "\u202eevil\u202c reversed",  # a bidi override makes text read backwards
    "\u2066isolate\u2069",
    "c1 \x9b31m control",
    "line\u2028separator",
]


def test_control_and_bidi_characters_never_reach_any_human_output_raw():
    from reconciler.escape import UNSAFE, json_text, quote

    for hostile in TERMINAL_TRICKS:
        plan = plan_of(update("+1", "old", hostile))
        for rendered in (plan_text(plan), plan_markdown(plan), md(hostile), quote(hostile)):
            # Our own colours are the only escape sequences allowed (click.unstyle removes them).
            assert not UNSAFE.search(click.unstyle(rendered).replace("\n", "")), (hostile, rendered)
        # JSON carries them as \u escapes and still round-trips to the same value.
        import json

        encoded = json_text({"about": hostile})
        assert not UNSAFE.search(encoded) and json.loads(encoded) == {"about": hostile}


def test_history_escapes_every_recorded_part():
    from reconciler.escape import UNSAFE
    from reconciler.render import history_text

    record = {
        "time": "T\x1b[2J",
        "phone_number": "+1",
        "account": "main\u202e",
        "action": "update",
        "result": "WA400",
        "message": "\x1b[31mforged\rApplied 9",
        "by": {"actor": "eve\x07"},
        "fields": {"about": {"old": "a\x1b", "new": 5}},
    }
    text = history_text([record])
    assert not UNSAFE.search(text.replace("\n", "")), text
    assert "WA400: \\u001b[31mforged\\rApplied 9" in text


def test_markdown_cuts_a_key_before_escaping_it():
    from reconciler import secrets

    key = "md_key_with_under_scores_991"
    secrets.remember(key)
    cell = md(f"server said {key}")
    assert "under" not in cell and "[redacted]" in cell.replace("&#91;", "[").replace("&#93;", "]")


def test_joiners_that_scripts_and_emoji_need_stay_readable_and_stray_ones_show():
    from reconciler.escape import escape, quote

    family = "👨\u200d👩\u200d👧"
    malayalam = "ന്\u200dറെ"  # a chillu form, written with a zero-width joiner
    assert escape(family) == family and escape(malayalam) == malayalam
    assert escape("Body\u200dcare") == "Body\\u200dcare" and quote("care\u200c") == '"care\\u200c"'


@given(st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=40) | st.text(max_size=40))
def test_the_fast_ascii_paths_of_escape_and_quote_change_nothing(text):
    """escape and quote skip their regexes for plain ASCII: the result must be what the general
    definitions give (every unsafe character escaped, stray joiners shown, JSON quoting)."""
    from reconciler.escape import _STRAY_JOINER, _UNSAFE_IN_JSON, UNSAFE, _visible, escape, quote

    assert escape(text) == _STRAY_JOINER.sub(_visible, UNSAFE.sub(_visible, text))
    quoted = _UNSAFE_IN_JSON.sub(_visible, json.dumps(text, ensure_ascii=False))
    assert quote(text) == _STRAY_JOINER.sub(_visible, quoted)
