"""The fleet report in a real browser: Chromium from the distribution's packages, headless.

Chromium loads the page from file:// and prints the DOM once its scripts have run (--dump-dom), and
every console message (script errors, Content-Security-Policy violations) on stderr
(--enable-logging=stderr). No driver, no protocol client: nothing to install beyond Chromium. An
alert() would block --dump-dom, so a page that raised one would fail here by timing out.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from reconciler.plan import compute_plan
from reconciler.profiles import Profile
from reconciler.report import build_report, html_page
from reconciler.state.model import Entry, State

ACCOUNTS = ["acct-a", "acct-b", "acct-c", "acct-d"]
COUNT = 1000
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)></script>\u202egnp.exe'
LONG = "a very long value " * 1000
# Headless without first-run, sync, component updates or background networking: the machine has no
# outside network, and without these Chromium keeps trying to reach Google's hosts.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


def chromium() -> str:
    found = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
    if found is None:
        message = "the browser test needs Chromium: apt-get install chromium (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


class Dom(HTMLParser):
    """The rows of the numbers table as the browser left them, every element, and the text."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str | None]] = []
        self.tags: list[str] = []
        self.attributes: list[str] = []
        self.text: list[str] = []
        self.by_id: dict[str, dict[str, str | None]] = {}
        self._shown = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.tags.append(tag)
        self.attributes += [name for name, _ in attrs]
        if tag == "tr" and "data-number" in found:
            self.rows.append(found)
        if "id" in found:
            self.by_id[str(found["id"])] = found
        self._shown = found.get("id") == "shown"

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._shown:
            self.by_id["shown"]["text"] = data
            self._shown = False


def fleet_page(folder: Path) -> Path:
    """1,000 numbers over four accounts; one holds a hostile value and one a very long one. Every
    tenth is pending, every fiftieth failed on its last send."""
    desired, entries, records = {}, {}, []
    for index in range(COUNT):
        number = f"+1415{index:07d}"
        account = ACCOUNTS[index % len(ACCOUNTS)]
        about = HOSTILE if index == 7 else LONG if index == 8 else f"Customer care {index}"
        profile = Profile(number, account, {"about": about, "email": f"c{index}@x.example"}, "", f"d{index}")
        desired[number] = profile
        recorded = dict(profile.fields, about="older") if index % 10 == 0 else dict(profile.fields)
        entries[number] = Entry(account, "HX/766", recorded, "2026-11-01T00:00:00Z", f"d{index}")
        result = "WA400" if index % 50 == 1 else "WA200"
        records.append(
            {
                "time": f"2026-11-{1 + index % 28:02d}T08:00:00Z",
                "phone_number": number,
                "account": account,
                "action": "create",
                "fields": {},
                "result": result,
                "message": "",
                "by": {"actor": HOSTILE if index == 7 else "octocat", "commit": "c0ffee"},
            }
        )
    state = State("lineage", 1, entries)
    report = build_report(desired, state, compute_plan(desired, state), records)
    page = folder / "index.html"
    page.write_text(html_page(report))
    return page


def load(page: Path, fragment: str, profile_dir: Path) -> Dom:
    """The DOM after the page's scripts ran; fails on any console message."""
    try:
        done = subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile_dir}", "--dump-dom", page.as_uri() + fragment],
            capture_output=True,
            text=True,
            timeout=180,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("Chromium did not finish: a dialog (alert?) is waiting, or the page never loaded")
    assert done.returncode == 0, done.stderr[-3000:]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == [], "\n".join(console)  # no script error, no blocked request, no log at all
    dom = Dom()
    dom.feed(done.stdout)
    dom.close()
    return dom


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chromium()
    return fleet_page(tmp_path_factory.mktemp("report"))


def test_1000_numbers_render_with_no_script_error_and_every_row(page, tmp_path):
    dom = load(page, "", tmp_path / "chromium")
    assert len(dom.rows) == COUNT
    assert not any("hidden" in row for row in dom.rows)
    assert dom.by_id["shown"]["text"] == f"{COUNT} of {COUNT} number(s) shown"  # the script ran
    assert "hidden" not in dom.by_id["controls"]  # and showed its controls


def test_a_hostile_value_renders_as_text_and_injects_nothing(page, tmp_path):
    dom = load(page, "", tmp_path / "chromium")
    text = "".join(dom.text)
    shown = HOSTILE.replace("\u202e", "\\u202e")  # the bidi override made visible, not obeyed
    assert text.count(shown) == 2  # the value and the actor who sent it
    assert "\u202e" not in text
    assert LONG in text
    assert dom.tags.count("script") == 1 and "img" not in dom.tags
    assert not [name for name in dom.attributes if name.startswith("on")]


def test_filters_from_the_address_show_only_matching_rows(page, tmp_path):
    dom = load(page, "#account=acct-b&status=failed&sort=number&desc=1", tmp_path / "chromium")
    visible = [row for row in dom.rows if "hidden" not in row]
    # acct-b holds the numbers whose index is 1 mod 4; failed ones are 1 mod 50: 1 mod 100, 10 of them.
    assert len(visible) == 10
    assert {row["data-account"] for row in visible} == {"acct-b"}
    numbers = [str(row["data-number"]) for row in visible]
    assert numbers == sorted(numbers, reverse=True)
    assert re.fullmatch(rf"10 of {COUNT} number\(s\) shown", str(dom.by_id["shown"]["text"]))
