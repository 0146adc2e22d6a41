"""The fleet report: every number at a glance (account, fields, pending change, last send, unverified,
last re-assertion), counts per account and changes over time, as one self-contained page or markdown.

The page makes no request of any kind (its Content-Security-Policy forbids them) and shows every row
without JavaScript; a small constant script sorts and filters. Outside text never enters the script:
it reads the table, so a profile value can only ever reach the page as escaped HTML text.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from .escape import escape
from .kaleyra.codes import NOT_SENT, SUCCESS
from .plan import Change, Plan
from .profiles import Profile
from .render import md
from .secrets import redact
from .state.model import State, now

# Actions whose audit records are a PUT's result (create, update, and replace: apply --replace, reassert).
SEND_ACTIONS = frozenset({"create", "update", "replace"})
# Results of a send that never left: not attempted ("-"), or stopped before its first attempt.
NOT_ATTEMPTED = frozenset({"-", NOT_SENT})
# The result `import` records: adopted as already live, never sent.
IMPORTED = "IMPORTED"
COLUMNS = (
    "number",
    "account",
    "status",
    "managed fields",
    "pending change",
    "last applied",
    "unverified",
    "last re-asserted",
)
STATUSES = ("pending", "unverified", "failed", "in sync")
SORT_KEYS = {
    "number": "number",
    "account": "account",
    "status": "status",
    "applied": "last applied",
    "reasserted": "last re-asserted",
}
# Beyond this many days, the chart counts per month: a bar per day would be thinner than a pixel.
MAX_DAYS = 180
# The chart's months end at the newest record: a hand-edited year 0001 must not make 24,000 bars.
MAX_MONTHS = 120
_DAY = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


@dataclass(frozen=True)
class Send:
    """A successful send as the audit log records it: when, by whom, from which commit."""

    time: str
    actor: str
    commit: str

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> Send:
        by = record.get("by") if isinstance(record.get("by"), dict) else {}
        return cls(str(record.get("time", "")), str(by.get("actor", "")), str(by.get("commit", "")))


@dataclass(frozen=True)
class NumberRow:
    phone_number: str
    account: str
    fields: Mapping[str, str]  # the managed fields: desired values, or the recorded ones once unmanaged
    pending: Change | None
    last_applied: Send | None
    last_reasserted: Send | None
    failed: bool  # the newest send of this number failed
    unverified: bool

    @property
    def statuses(self) -> tuple[str, ...]:
        found = (
            ("pending", self.pending is not None),
            ("unverified", self.unverified),
            ("failed", self.failed),
        )
        return tuple(name for name, on in found if on) or ("in sync",)


@dataclass(frozen=True)
class AccountCounts:
    account: str
    numbers: int = 0
    pending: int = 0
    unverified: int = 0
    failed: int = 0


@dataclass(frozen=True)
class Period:
    """The audit records of one day (or month): sends that succeeded, failed, and records kept
    without a send (imports, unmanaged fields, forgotten numbers, state edits)."""

    label: str
    applied: int = 0
    failed: int = 0
    recorded: int = 0

    @property
    def total(self) -> int:
        return self.applied + self.failed + self.recorded


@dataclass(frozen=True)
class FleetReport:
    generated_at: str
    rows: tuple[NumberRow, ...]
    accounts: tuple[AccountCounts, ...]
    periods: tuple[Period, ...]
    period_unit: str = "day"
    lineage: str | None = None
    serial: int = 0
    totals: AccountCounts = field(default_factory=lambda: AccountCounts("all"))


def is_reassertion(record: Mapping[str, Any]) -> bool:
    """A successful full re-send. A record that says whether it was a scheduled re-assertion
    (`"reassert": true/false`) is taken at its word; one that does not counts as one."""
    if record.get("action") != "replace" or record.get("result") != SUCCESS:
        return False
    return bool(record.get("reassert", True))


def build_report(
    desired: Mapping[str, Profile],
    state: State,
    plan: Plan,
    records: Iterable[Mapping[str, Any]],
    generated_at: str | None = None,
) -> FleetReport:
    """The report of every number the profiles or the state hold; `records` is the audit log, oldest
    first, and `plan` a fresh plan of every number."""
    last_applied: dict[str, Mapping[str, Any]] = {}
    last_reasserted: dict[str, Mapping[str, Any]] = {}
    last_send_ok: dict[str, bool] = {}
    per_day: dict[str, list[int]] = {}
    for record in records:
        number, action, result = record.get("phone_number"), record.get("action"), record.get("result")
        if not isinstance(number, str):
            continue
        if action in SEND_ACTIONS and result in NOT_ATTEMPTED:
            continue  # never left: not a change
        sent = action in SEND_ACTIONS and result != IMPORTED
        if sent:
            last_send_ok[number] = result == SUCCESS
            if result == SUCCESS:
                last_applied[number] = record
                if is_reassertion(record):
                    last_reasserted[number] = record
        day = _DAY.match(str(record.get("time", "")))
        if day:
            counts = per_day.setdefault(day.group(), [0, 0, 0])
            counts[0 if result == SUCCESS else 1 if sent else 2] += 1

    pending = {change.phone_number: change for change in plan.changes}
    rows = []
    for number in sorted(set(desired) | set(state.entries)):
        profile, entry = desired.get(number), state.entries.get(number)
        owner = profile or entry
        assert owner is not None
        applied, reasserted = last_applied.get(number), last_reasserted.get(number)
        rows.append(
            NumberRow(
                phone_number=number,
                account=owner.account,
                fields=owner.fields,
                pending=pending.get(number),
                last_applied=Send.of(applied) if applied else None,
                last_reasserted=Send.of(reasserted) if reasserted else None,
                failed=last_send_ok.get(number) is False,
                unverified=bool(getattr(entry, "unverified", False)),
            )
        )
    unit, periods = _periods(per_day)
    return FleetReport(
        generated_at=generated_at or now(),
        rows=tuple(rows),
        accounts=_counts(rows),
        periods=periods,
        period_unit=unit,
        lineage=state.lineage,
        serial=state.serial,
        totals=_count("all", rows),
    )


def _count(account: str, rows: Iterable[NumberRow]) -> AccountCounts:
    numbers = pending = unverified = failed = 0
    for row in rows:
        numbers += 1
        pending += row.pending is not None
        unverified += row.unverified
        failed += row.failed
    return AccountCounts(account, numbers, pending, unverified, failed)


def _counts(rows: list[NumberRow]) -> tuple[AccountCounts, ...]:
    by_account: dict[str, list[NumberRow]] = {}
    for row in rows:
        by_account.setdefault(row.account, []).append(row)
    return tuple(_count(account, members) for account, members in sorted(by_account.items()))


def _periods(per_day: dict[str, list[int]]) -> tuple[str, tuple[Period, ...]]:
    """Every day from the first record's to the last's (empty days included), or every month when
    that is more than MAX_DAYS (the last MAX_MONTHS at most)."""
    days = {}
    for text, counts in per_day.items():
        try:
            days[date.fromisoformat(text)] = counts
        except ValueError:  # a hand-edited time such as 2026-13-45
            continue
    if not days:
        return "day", ()
    first, last = min(days), max(days)
    if (last - first).days < MAX_DAYS:
        labels = [(first + timedelta(days=offset)).isoformat() for offset in range((last - first).days + 1)]
        unit, key = "day", date.isoformat
    else:
        end = last.year * 12 + last.month - 1
        start = max(first.year * 12 + first.month - 1, end - MAX_MONTHS + 1)
        labels = [f"{month // 12:04d}-{month % 12 + 1:02d}" for month in range(start, end + 1)]
        unit, key = "month", lambda day: day.isoformat()[:7]
    totals = {label: [0, 0, 0] for label in labels}
    for day, counts in days.items():
        period = totals.get(key(day))
        if period is not None:
            for index, count in enumerate(counts):
                period[index] += count
    return unit, tuple(Period(label, *counts) for label, counts in totals.items())


# --- HTML ----------------------------------------------------------------------------------------


def h(text: str) -> str:
    """Outside text for HTML, as text or in a quoted attribute: keys redacted, control and bidi
    characters shown as visible escapes (an entity would still reorder the text), markup escaped."""
    return html.escape(escape(redact(text)), quote=True)


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1b1f24}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em}
table{border-collapse:collapse}
th,td{border:1px solid #d0d7de;padding:.3em .5em;vertical-align:top;text-align:left}
th{background:#f6f8fa}td.n{text-align:right}
#numbers td{overflow-wrap:anywhere;max-width:32em}
#numbers td:first-child{white-space:nowrap}
.v{display:inline-block;max-height:8em;overflow:auto;white-space:pre-wrap;vertical-align:top}
.k{font-weight:600}.k::after{content:":"}.none{color:#6e7781}
.s{display:inline-block;border-radius:1em;padding:0 .5em;margin:0 .2em .2em 0;font-size:.85em}
.s{background:#eaeef2;white-space:nowrap}
.s-pending{background:#fff1c2}.s-unverified{background:#ddf4ff}
.s-failed{background:#ffd8d3}.s-in-sync{background:#dafbe1}
.note{color:#57606a}
form{margin:.5em 0}form label{margin-right:1em}
svg{max-width:100%;height:auto}.applied{fill:#2da44e}.failedbar{fill:#cf222e}.recorded{fill:#8c959f}
.axis{font-size:11px;fill:#57606a}
""".strip()

SCRIPT = """
"use strict";
(() => {
  const form = document.getElementById("controls");
  const body = document.getElementById("numbers").tBodies[0];
  const shown = document.getElementById("shown");
  const rows = Array.from(body.rows);
  const order = (x, y) => (x < y ? -1 : x > y ? 1 : 0);
  const read = new URLSearchParams(location.hash.slice(1));
  for (const name of ["account", "status", "sort"]) {
    const wanted = read.get(name);
    if (wanted !== null && Array.from(form.elements[name].options).some((o) => o.value === wanted)) {
      form.elements[name].value = wanted;
    }
  }
  form.elements.desc.checked = read.get("desc") === "1";
  const update = () => {
    const account = form.elements.account.value;
    const status = form.elements.status.value;
    const key = form.elements.sort.value;
    const desc = form.elements.desc.checked;
    const sorted = rows.slice().sort((a, b) => {
      const first = order(a.dataset[key] || "", b.dataset[key] || "");
      return first * (desc ? -1 : 1) || order(a.dataset.number, b.dataset.number);
    });
    let count = 0;
    const fragment = document.createDocumentFragment();
    for (const row of sorted) {
      const visible = (!account || row.dataset.account === account) &&
        (!status || row.dataset.status.split(" ").includes(status));
      row.hidden = !visible;
      count += visible;
      fragment.appendChild(row);
    }
    body.appendChild(fragment);
    shown.textContent = `${count} of ${rows.length} number(s) shown`;
    const state = new URLSearchParams({account, status, sort: key, desc: desc ? "1" : "0"});
    history.replaceState(null, "", `#${state}`);
  };
  form.addEventListener("change", update);
  form.hidden = false;
  update();
})();
""".strip()


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# Nothing may load or connect: only this page's own style and script run (by hash).
CSP = (
    f"default-src 'none'; script-src {_csp_hash(SCRIPT)}; style-src {_csp_hash(STYLE)}; "
    "base-uri 'none'; form-action 'none'"
)


def html_page(report: FleetReport) -> str:
    totals = report.totals
    accounts = [row.account for row in report.accounts]
    parts = [
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>",
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name=viewport content="width=device-width,initial-scale=1">',
        f"<title>Kaleyra fleet report {h(report.generated_at)}</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>Kaleyra fleet report</h1>",
        f"<p>Generated {h(report.generated_at)} from state {h(report.lineage or '(none)')} serial "
        f"{report.serial}: <b>{totals.numbers}</b> number(s) in {len(report.accounts)} account(s); "
        f"{totals.pending} pending, {totals.unverified} unverified, {totals.failed} failed last time.</p>",
        "<p class=note>Pending changes compare desired with <em>recorded</em> state: Kaleyra offers no "
        "read of profile fields, so edits made in Kaleyra's console show only once re-asserted.</p>",
        "<h2>Accounts</h2>",
        _accounts_html(report),
        f"<h2>Changes over time (per {report.period_unit})</h2>",
        _chart_svg(report),
        "<h2>Numbers</h2>",
        _controls_html(accounts),
        f"<p id=shown>{totals.numbers} number(s)</p>",
        _numbers_html(report.rows),
        f"<script>{SCRIPT}</script>",
        "</body></html>\n",
    ]
    return redact("\n".join(parts))


def _accounts_html(report: FleetReport) -> str:
    rows = [
        "<table><thead><tr><th>account</th><th>numbers</th><th>pending</th><th>unverified</th>"
        "<th>failed last time</th></tr></thead><tbody>"
    ]
    for counts in (*report.accounts, report.totals):
        name = h(counts.account) if counts is not report.totals else "<b>all</b>"
        rows.append(
            f"<tr><td>{name}</td><td class=n>{counts.numbers}</td><td class=n>{counts.pending}</td>"
            f"<td class=n>{counts.unverified}</td><td class=n>{counts.failed}</td></tr>"
        )
    rows.append("</tbody></table>")
    return "".join(rows)


def _chart_svg(report: FleetReport) -> str:
    """Stacked bars per period: applied (green), failed (red), recorded without sending (grey)."""
    periods = report.periods
    if not periods:
        return "<p class=none>The audit log holds no record yet.</p>"
    width, height, left, bottom, top = 800, 220, 40, 24, 10
    tallest = max(period.total for period in periods) or 1
    step = (width - left) / len(periods)
    bar = max(step * 0.8, 0.5)
    scale = (height - bottom - top) / tallest
    parts = [
        f'<svg role=img aria-label="changes per {report.period_unit}" viewBox="0 0 {width} {height}" '
        f'width={width} height={height} xmlns="http://www.w3.org/2000/svg">',
        f"<text class=axis x=0 y={top + 10}>{tallest}</text>",
        f"<text class=axis x=0 y={height - bottom}>0</text>",
        f'<line x1={left} y1={height - bottom} x2={width} y2={height - bottom} stroke="#8c959f"/>',
    ]
    for index, period in enumerate(periods):
        x, base = left + index * step, height - bottom
        label = (
            f"{period.label}: {period.applied} applied, {period.failed} failed, "
            f"{period.recorded} recorded without sending"
        )
        parts.append(f"<g><title>{h(label)}</title>")
        for count, css in (
            (period.applied, "applied"),
            (period.failed, "failedbar"),
            (period.recorded, "recorded"),
        ):
            if count:
                size = count * scale
                base -= size
                parts.append(
                    f'<rect class={css} x="{x:.2f}" y="{base:.2f}" width="{bar:.2f}" height="{size:.2f}"/>'
                )
        parts.append("</g>")
    for index in sorted({0, len(periods) // 2, len(periods) - 1}):
        anchor = "start" if index == 0 else "end" if index == len(periods) - 1 else "middle"
        x = left + index * step + (bar if anchor == "end" else 0)
        label = h(periods[index].label)
        parts.append(f'<text class=axis x="{x:.2f}" y={height - 6} text-anchor={anchor}>{label}</text>')
    parts.append("</svg>")
    parts.append(
        "<p class=note>Green: sent and accepted; red: sent and refused; grey: recorded without sending "
        "(imports, unmanaged fields, forgotten numbers, state edits).</p>"
    )
    return "".join(parts)


def _controls_html(accounts: list[str]) -> str:
    """Filter and sort controls: hidden until the script, which makes them work, shows them."""
    account_options = "".join(f'<option value="{h(name)}">{h(name)}</option>' for name in accounts)
    status_options = "".join(f'<option value="{name}">{name}</option>' for name in STATUSES)
    sort_options = "".join(f'<option value="{key}">{label}</option>' for key, label in SORT_KEYS.items())
    return (
        "<form id=controls hidden>"
        f'<label>account <select name=account><option value="">all</option>{account_options}</select></label>'
        f'<label>status <select name=status><option value="">all</option>{status_options}</select></label>'
        f"<label>sort by <select name=sort>{sort_options}</select></label>"
        "<label><input type=checkbox name=desc> descending</label></form>"
    )


def _numbers_html(rows: Iterable[NumberRow]) -> str:
    parts = [
        "<table id=numbers><thead><tr>"
        + "".join(f"<th>{name}</th>" for name in COLUMNS)
        + "</tr></thead><tbody>"
    ]
    for row in rows:
        statuses = row.statuses
        number, account = h(row.phone_number), h(row.account)
        applied = row.last_applied.time if row.last_applied else ""
        reasserted = row.last_reasserted.time if row.last_reasserted else ""
        parts.append(
            f'<tr data-number="{number}" data-account="{account}" data-status="{" ".join(statuses)}" '
            f'data-applied="{h(applied)}" data-reasserted="{h(reasserted)}">'
            f"<td>{number}</td><td>{account}</td><td>"
            + "".join(f'<span class="s s-{name.replace(" ", "-")}">{name}</span>' for name in statuses)
            + f"</td><td>{_fields_html(row.fields)}</td><td>{_pending_html(row.pending)}</td>"
            f"<td>{_send_html(row.last_applied)}</td><td>{'yes' if row.unverified else 'no'}</td>"
            f"<td>{_send_html(row.last_reasserted)}</td></tr>"
        )
    parts.append("</tbody></table>")
    return "".join(parts)


def _fields_html(fields: Mapping[str, str]) -> str:
    if not fields:
        return "<span class=none>none</span>"
    return "".join(
        f"<div><span class=k>{h(name)}</span> <span class=v>{h(value) if value else '(cleared)'}</span></div>"
        for name, value in fields.items()
    )


def _pending_html(change: Change | None) -> str:
    if change is None:
        return "<span class=none>none</span>"
    names = ", ".join(h(name) for name in change.fields)
    return f"<b>{h(change.action)}</b>" + (f": {names}" if names else "")


def _send_html(send: Send | None) -> str:
    if send is None:
        return "<span class=none>never</span>"
    by = h(send.actor or "?") + (
        f' @ <code title="{h(send.commit)}">{h(send.commit[:10])}</code>' if send.commit else ""
    )
    return f"{h(send.time)}<br>{by}"


# --- markdown ------------------------------------------------------------------------------------


def report_markdown(report: FleetReport) -> str:
    totals = report.totals
    lines = [
        "### Kaleyra fleet report",
        "",
        f"Generated {md(report.generated_at)}: {totals.numbers} number(s) in {len(report.accounts)} "
        f"account(s); {totals.pending} pending, {totals.unverified} unverified, {totals.failed} failed "
        "last time. Pending changes compare desired with recorded state (Kaleyra offers no read of "
        "profile fields; edits made in Kaleyra's console are found by re-assertion).",
        "",
        "| account | numbers | pending | unverified | failed last time |",
        "|---|---:|---:|---:|---:|",
    ]
    for counts in (*report.accounts, report.totals):
        name = md(counts.account) if counts is not report.totals else "**all**"
        lines.append(
            f"| {name} | {counts.numbers} | {counts.pending} | {counts.unverified} | {counts.failed} |"
        )
    lines += ["", f"#### Changes over time (per {report.period_unit})", ""]
    busy = [period for period in report.periods if period.total]
    if busy:
        lines += [
            f"| {report.period_unit} | applied | failed | recorded without sending |",
            "|---|---:|---:|---:|",
        ]
        lines += [f"| {md(p.label)} | {p.applied} | {p.failed} | {p.recorded} |" for p in busy]
    else:
        lines.append("The audit log holds no record yet.")
    lines += [
        "",
        "#### Numbers",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|---" * len(COLUMNS) + "|",
    ]
    for row in report.rows:
        fields = "<br>".join(f"{md(name)}: {md(value)}" for name, value in row.fields.items()) or "none"
        pending = (
            f"{row.pending.action}: {', '.join(md(name) for name in row.pending.fields)}"
            if row.pending
            else "none"
        )
        lines.append(
            f"| {md(row.phone_number)} | {md(row.account)} | {', '.join(row.statuses)} | {fields} | "
            f"{pending} | {_send_md(row.last_applied)} | {'yes' if row.unverified else 'no'} | "
            f"{_send_md(row.last_reasserted)} |"
        )
    return redact("\n".join(lines) + "\n")


def _send_md(send: Send | None) -> str:
    if send is None:
        return "never"
    return f"{md(send.time)} by {md(send.actor or '?')}" + (
        f" @ {md(send.commit[:10])}" if send.commit else ""
    )
