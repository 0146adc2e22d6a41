"""The fleet report: what it says about each number, and that outside text only ever shows as text."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

import pytest

from reconciler import secrets
from reconciler.plan import compute_plan
from reconciler.profiles import Profile
from reconciler.report import CSP, SCRIPT, build_report, html_page, is_reassertion, report_markdown
from reconciler.state.model import Entry, State

from conftest import API_KEY, NUMBERS, assert_clean_failure

A, B, C, D = NUMBERS[0], NUMBERS[1], NUMBERS[2], NUMBERS[3]
HOSTILE = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "</script><script>alert(2)</script>",
    "' onmouseover='alert(3)",
    "<!-- <svg onload=alert(4)>",
]


@dataclass(frozen=True)
class UnverifiedEntry(Entry):
    """An entry as the state will hold it once `import` marks entries it adopted without sending."""

    unverified: bool = True


def profile(number: str, account: str = "main", **fields: str) -> Profile:
    return Profile(number, account, fields, f"profiles/{number}.yaml", digest=repr(sorted(fields.items())))


def entry_of(p: Profile, cls: type[Entry] = Entry) -> Entry:
    return cls(p.account, "HX/766", dict(p.fields), "2026-11-01T00:00:00Z", p.digest)


def record(number: str, action: str, result: str, time: str, **extra: Any) -> dict[str, Any]:
    by = extra.pop("by", {"actor": "octocat", "commit": "c0ffee1234567890"})
    return {
        "time": time,
        "phone_number": number,
        "account": "main",
        "action": action,
        "fields": {},
        "result": result,
        "message": "",
        "by": by,
        **extra,
    }


def report_of(desired: dict[str, Profile], entries: dict[str, Entry], records: list[dict[str, Any]]):
    state = State("lineage-1", 3, entries)
    return build_report(desired, state, compute_plan(desired, state), records, "2026-12-04T10:00:00Z")


class Tags(HTMLParser):
    """The elements and attributes a page is made of, and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, tuple[str, ...]]] = []
        self.text: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, tuple(name for name, _ in attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        (self.scripts if self._in_script else self.text).append(data)


def parsed(page: str) -> Tags:
    tags = Tags()
    tags.feed(page)
    tags.close()
    return tags


def page_with(value: str, **by: str) -> str:
    desired = {A: profile(A, about=value, address="1 Market St")}
    records = [record(A, "create", "WA200", "2026-11-01T00:00:00Z", by=by or {"actor": "octocat"})]
    return html_page(report_of(desired, {}, records))


# --- what each row says --------------------------------------------------------------------------


def test_each_number_shows_its_pending_change_last_send_failure_and_reassertion():
    desired = {
        A: profile(A, about="new text"),  # pending update
        B: profile(B, about="same"),  # in sync, re-asserted
        C: profile(C, about="same"),  # its last send failed
        D: profile(D, about="imported"),  # unverified
    }
    entries = {
        A: entry_of(profile(A, about="old text")),
        B: entry_of(desired[B]),
        C: entry_of(desired[C]),
        D: entry_of(desired[D], UnverifiedEntry),
    }
    records = [
        record(A, "create", "WA200", "2026-11-01T09:00:00Z", by={"actor": "first", "commit": "aaaa"}),
        record(A, "update", "WA200", "2026-11-03T09:00:00Z", by={"actor": "second", "commit": "bbbb"}),
        record(A, "update", "-", "2026-11-04T09:00:00Z"),  # not attempted: neither a send nor a failure
        record(B, "create", "WA200", "2026-11-01T09:00:00Z"),
        record(B, "replace", "WA200", "2026-11-20T09:00:00Z", reassert=True),
        record(C, "create", "WA200", "2026-11-01T09:00:00Z"),
        record(C, "update", "WA400", "2026-11-05T09:00:00Z"),
        record(D, "create", "IMPORTED", "2026-11-02T09:00:00Z"),
    ]
    report = report_of(desired, entries, records)
    rows = {row.phone_number: row for row in report.rows}

    assert rows[A].statuses == ("pending",)
    assert rows[A].pending is not None and rows[A].pending.action == "update"
    assert list(rows[A].pending.fields) == ["about"]
    assert rows[A].fields == {"about": "new text"}
    assert (rows[A].last_applied.time, rows[A].last_applied.actor, rows[A].last_applied.commit) == (
        "2026-11-03T09:00:00Z",
        "second",
        "bbbb",
    )
    assert rows[A].last_reasserted is None
    assert rows[B].statuses == ("in sync",)
    assert rows[B].last_reasserted.time == "2026-11-20T09:00:00Z"
    assert rows[C].statuses == ("failed",)
    assert rows[C].last_applied.time == "2026-11-01T09:00:00Z"
    assert rows[D].statuses == ("unverified",)
    assert rows[D].last_applied is None  # adopted, never sent

    counts = report.accounts[0]
    assert (counts.account, counts.numbers, counts.pending, counts.unverified, counts.failed) == (
        "main",
        4,
        1,
        1,
        1,
    )


def test_a_later_success_clears_failed_last_time():
    desired = {A: profile(A, about="x")}
    records = [
        record(A, "update", "WA500", "2026-11-01T00:00:00Z"),
        record(A, "update", "WA200", "2026-11-02T00:00:00Z"),
    ]
    assert report_of(desired, {A: entry_of(desired[A])}, records).rows[0].failed is False


def test_a_replace_counts_as_reassertion_unless_its_record_says_it_was_not_one():
    assert is_reassertion({"action": "replace", "result": "WA200"})  # no marker: counted
    assert is_reassertion({"action": "replace", "result": "WA200", "reassert": True})
    assert not is_reassertion({"action": "replace", "result": "WA200", "reassert": False})
    assert not is_reassertion({"action": "replace", "result": "WA400"})
    assert not is_reassertion({"action": "update", "result": "WA200"})


def test_numbers_only_in_the_state_are_shown_with_their_recorded_fields():
    gone = profile(B, "legacy", about="recorded")
    report = report_of({A: profile(A, about="x")}, {B: entry_of(gone)}, [])
    row = {row.phone_number: row for row in report.rows}[B]
    assert (row.account, row.fields, row.pending.action) == ("legacy", {"about": "recorded"}, "forget")
    assert [counts.account for counts in report.accounts] == ["legacy", "main"]


def test_changes_over_time_count_every_day_between_the_first_and_last_record():
    records = [
        record(A, "create", "WA200", "2026-11-01T10:00:00Z"),
        record(B, "create", "WA400", "2026-11-01T11:00:00Z"),
        record(A, "unmanage", "-", "2026-11-03T10:00:00Z"),
        record(C, "create", "-", "2026-11-03T10:00:00Z"),  # not attempted: no change at all
        record(C, "create", "WA200", "not a time"),
    ]
    report = report_of({}, {}, records)
    assert report.period_unit == "day"
    assert [(p.label, p.applied, p.failed, p.recorded) for p in report.periods] == [
        ("2026-11-01", 1, 1, 0),
        ("2026-11-02", 0, 0, 0),
        ("2026-11-03", 0, 0, 1),
    ]


def test_a_long_history_is_counted_per_month():
    records = [
        record(A, "create", "WA200", "2025-11-30T00:00:00Z"),
        record(A, "update", "WA200", "2026-02-01T00:00:00Z"),
        record(A, "update", "WA200", "2026-06-15T00:00:00Z"),
    ]
    report = report_of({}, {}, records)
    assert report.period_unit == "month"
    labels = [p.label for p in report.periods]
    assert labels[0] == "2025-11" and labels[-1] == "2026-06" and len(labels) == 8
    assert sum(p.applied for p in report.periods) == 3


def test_a_chart_of_months_ends_at_the_newest_record_and_holds_ten_years_at_most():
    records = [
        record(A, "create", "WA200", "0001-01-01T00:00:00Z"),  # hand-edited
        record(A, "update", "WA200", "2026-06-15T00:00:00Z"),
    ]
    report = report_of({}, {}, records)
    assert len(report.periods) == 120
    assert (report.periods[0].label, report.periods[-1].label) == ("2016-07", "2026-06")
    assert sum(p.applied for p in report.periods) == 1


# --- escaping ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_value_adds_no_element_or_attribute_and_shows_as_text(value):
    page = page_with(value, actor=value, commit=value)
    benign = page_with("harmless text", actor="harmless", commit="harmless")
    tags = parsed(page)
    assert tags.tags == parsed(benign).tags  # the same elements, with the same attributes
    assert value in "".join(tags.text)  # shown as text, exactly
    assert html.escape(value, quote=True) in page


def test_the_script_is_the_same_constant_whatever_the_data():
    for value in HOSTILE:
        tags = parsed(page_with(value))
        assert tags.scripts == [SCRIPT]
    page = page_with("</script><script>alert(2)</script>")
    assert page.count("<script") == 1 and page.count("</script>") == 1
    assert "</script><script>" not in page


def test_the_page_may_load_nothing_and_run_only_its_own_script_and_style():
    page = page_with("x")
    assert f'content="{CSP}"' in page
    assert "default-src 'none'" in CSP and "unsafe-inline" not in CSP
    assert not re.search(r"""(src|href)=|url\(|@import|https?://(?!www\.w3\.org/2000/svg)""", page)


def test_bidi_and_control_characters_show_as_visible_escapes():
    value = "safe\u202etxt.exe\x1b[2J\u2066end"
    page = page_with(value, actor="evil\u202eactor")
    assert not re.search("[\u202e\u2066\x1b]", page)
    assert "safe\\u202etxt.exe\\u001b[2J\\u2066end" in page
    assert "evil\\u202eactor" in page
    markdown = report_markdown(report_of({A: profile(A, about=value)}, {}, []))
    assert not re.search("[\u202e\u2066\x1b]", markdown) and "&#92;u202e" in markdown


def test_very_long_text_is_shown_whole_in_a_scrolling_cell():
    value = "long " * 4000
    page = page_with(value)
    assert f"<span class=v>{value}</span>" in page


def test_an_api_key_never_reaches_the_page_or_the_markdown():
    secrets.remember(API_KEY)
    desired = {A: profile(A, about="x")}
    records = [record(A, "create", "WA200", "2026-11-01T00:00:00Z", by={"actor": f"bot {API_KEY}"})]
    report = report_of(desired, {}, records)
    for output in (html_page(report), report_markdown(report)):
        assert API_KEY not in output and "redacted" in output


def test_markdown_cells_cannot_break_out_of_the_table():
    desired = {A: profile(A, about="a | b\n| forged | row |", email="<b>@everyone</b>")}
    markdown = report_markdown(report_of(desired, {}, []))
    row = next(line for line in markdown.splitlines() if line.startswith(f"| {A}"))
    assert row.count(" | ") == 7  # eight cells, none added by the value
    assert "<b>" not in markdown and "@everyone" not in markdown


# --- the command ---------------------------------------------------------------------------------


def test_report_writes_the_page_and_prints_markdown_from_state_and_audit_log(project):
    project.write_profile(A, about="Body care", address="1 Market St")
    project.write_profile(B, account="legacy", about="Hair")
    assert project.run("apply", "--auto-approve").exit_code == 0
    project.write_profile(A, about="Body care, now with lotions", address="1 Market St")

    result = project.run("report", "--html", "out/report", "--format", "markdown")
    assert result.exit_code == 0, result.output
    page = (project.root / "out" / "report" / "index.html").read_text()
    rows = re.findall(r'<tr data-number="([^"]+)" data-account="([^"]+)" data-status="([^"]+)"', page)
    assert rows == [(A, "main", "pending"), (B, "legacy", "in sync")]
    actor = project.audit()[0]["by"]["actor"]
    assert f"<br>{html.escape(actor)}" in page
    assert "<b>update</b>: about" in page
    assert f"| {A} | main | pending |" in result.stdout
    assert "| **all** | 2 | 1 | 0 | 0 |" in result.stdout
    assert "Wrote out/report/index.html: 2 number(s), 1 pending." in result.stderr
    assert API_KEY not in page + result.output


def test_report_refuses_a_file_as_its_folder_with_one_clear_error(project):
    project.write_profile(A, about="x")
    (project.root / "taken").write_text("not a folder")
    result = project.run("report", "--html", "taken")
    assert_clean_failure(result)
    assert "taken" in result.stderr and "is a file" in result.stderr
    result = project.run("report", "--html", "taken/report")
    assert_clean_failure(result)
    assert "taken" in result.stderr and "Not a directory" in result.stderr
    assert (project.root / "taken").read_text() == "not a folder"


def test_report_needs_an_output_and_a_valid_config(project):
    result = project.run("report")
    assert_clean_failure(result)
    assert "give --html DIR, --format markdown, or both" in result.stderr
    (project.root / "reconciler.yaml").write_text("accounts: [not, a, mapping]\n")
    result = project.run("report", "--format", "markdown")
    assert_clean_failure(result)
    assert "reconciler.yaml" in result.stderr
