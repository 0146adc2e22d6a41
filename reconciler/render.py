"""Rendering plans, apply reports, state and history as text, JSON or markdown. Read-only views."""

from __future__ import annotations

import json
from typing import Any

import click

from .apply import APPLIED, FAILED, NOT_ATTEMPTED, RECORDED, ApplyReport
from .kaleyra import throttling_summary
from .plan import FORMAT_VERSION, Change, Plan
from .state import Entry, State

MARKDOWN_LIMIT = 60_000
SYMBOLS = {
    "create": ("+", "green"),
    "update": ("~", "yellow"),
    "unmanage": ("-", "cyan"),
    "forget": ("-", "red"),
}


def value(text: str | None) -> str:
    """A field value for a terminal: quoted, escapes visible, so "" and trailing spaces show."""
    return "(not managed)" if text is None else json.dumps(text, ensure_ascii=False)


def summary_line(plan: Plan) -> str:
    parts = [f"{plan.count(action)} to {action}" for action in ("create", "update", "unmanage", "forget")]
    return f"{', '.join(parts)}, {plan.unchanged} unchanged; {len(plan.puts)} PUT(s) to send."


# --- plan ----------------------------------------------------------------------------------------


def plan_text(plan: Plan, title: str = "Plan") -> str:
    if not plan.changes:
        return f"No changes. {plan.unchanged} number(s) match the applied state.\n"
    lines = [f"{title}: {summary_line(plan)}", ""]
    for change in plan.changes:
        lines.extend(_change_text(change))
    lines += ["", f"Checksum: {plan.checksum}"]
    return "\n".join(lines) + "\n"


def _change_text(change: Change) -> list[str]:
    symbol, colour = SYMBOLS[change.action]
    head = f"{symbol} {change.phone_number}  {change.action}  ({change.account})"
    if change.moved_from:
        head += f"  moved from {change.moved_from}: sent in full"
    if change.action == "forget":
        head += "  dropped from the state; nothing is sent"
    lines = [click.style(head, fg=colour, bold=True)]
    width = max((len(name) for name in change.fields), default=0)
    for name, field_change in change.fields.items():
        label = f"{name}:".ljust(width + 1)
        if change.action == "create":
            lines.append(f"    {label} {value(field_change.after)}")
        elif change.action == "forget":
            lines.append(f"    {label} {value(field_change.before)}")
        elif field_change.after is None:
            lines.append(f"    {label} {value(field_change.before)}  (no longer managed; nothing sent)")
        else:
            lines.append(f"    {label} {value(field_change.before)} -> {value(field_change.after)}")
    return lines


def plan_json(plan: Plan) -> str:
    return json.dumps(plan.to_json(), indent=2, ensure_ascii=False) + "\n"


# Every character that could end a table cell, start markup or code, or @-mention someone.
_MARKDOWN_ENTITIES = str.maketrans({char: f"&#{ord(char)};" for char in "&<>\"'|`@*_[]\\~#!"})


def md(text: str | None) -> str:
    """Escape a value for a markdown table cell: profile text can never break out of it."""
    if text is None:
        return "_(not managed)_"
    if text == "":
        return '`""` (cleared)'
    return text.translate(_MARKDOWN_ENTITIES).replace("\r", "").replace("\n", "<br>")


def plan_markdown(plan: Plan, title: str = "Kaleyra profile plan", limit: int = MARKDOWN_LIMIT) -> str:
    head = [f"### {title}", ""]
    marker = f"<!-- reconciler-checksum: {plan.checksum} -->"  # lets CI apply exactly what was reviewed
    if not plan.changes:
        return "\n".join(
            [*head, f"No changes. {plan.unchanged} number(s) match the applied state.", marker, ""]
        )
    fields_changed = sum(len(change.fields) for change in plan.changes)
    head += [
        "| create | update | unmanage | forget | unchanged | fields | PUTs |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {plan.count('create')} | {plan.count('update')} | {plan.count('unmanage')} | "
        f"{plan.count('forget')} | {plan.unchanged} | {fields_changed} | {len(plan.puts)} |",
        "",
    ]
    tail = ["", f"Checksum: `{plan.checksum}`", marker, ""]
    budget = limit - len("\n".join(head + tail)) - 400  # room for the truncation note
    sections: list[str] = []
    shown = 0
    for change in plan.changes:
        section = _change_markdown(change, fold=len(plan.changes) > 10 or len(change.fields) > 5)
        if budget - len(section) < 0:
            break
        budget -= len(section) + 1
        sections.append(section)
        shown += 1
    if shown < len(plan.changes):
        sections.append(
            f"> **{len(plan.changes) - shown} more number(s) not shown**: this comment is limited to "
            f"{limit:,} characters. Run `reconciler plan` for the full plan."
        )
    return "\n".join(head + sections + tail)


def _change_markdown(change: Change, fold: bool) -> str:
    symbol = SYMBOLS[change.action][0]
    title = f"{symbol} <b>{md(change.phone_number)}</b> {change.action} ({md(change.account)})"
    if change.moved_from:
        title += f", moved from {md(change.moved_from)}: sent in full"
    elif change.action == "forget":
        title += ": dropped from the state, nothing is sent"
    elif change.action == "unmanage":
        title += ": these fields are no longer managed, nothing is sent"
    rows = ["| field | before | after |", "|---|---|---|"]
    rows += [f"| {md(name)} | {md(c.before)} | {md(c.after)} |" for name, c in change.fields.items()]
    body = "\n".join(rows) if change.fields else "_no fields_"
    if fold:
        return f"<details><summary>{title}</summary>\n\n{body}\n\n</details>\n"
    return f"#### {title}\n\n{body}\n"


# --- apply ----------------------------------------------------------------------------------------


def failures_text(report: ApplyReport) -> str:
    """One line per failed number, with Kaleyra's code and message: these go to stderr."""
    lines = [
        click.style(f"FAILED {o.change.phone_number} ({o.change.account}): {o.message}", fg="red")
        for o in report.having(FAILED)
    ]
    return "".join(line + "\n" for line in lines)


def report_text(report: ApplyReport) -> str:
    """The outcome in a few lines (the failures themselves are in `failures_text`)."""
    counts = {status: len(report.having(status)) for status in (APPLIED, RECORDED, FAILED, NOT_ATTEMPTED)}
    lines = []
    if report.interrupted:
        lines.append("Interrupted: requests in flight were finished and recorded; nothing else was sent.")
    lines.append(
        f"Applied {counts[APPLIED]}, recorded without sending {counts[RECORDED]}, failed {counts[FAILED]}, "
        f"not attempted {counts[NOT_ATTEMPTED]}."
    )
    if counts[FAILED] or counts[NOT_ATTEMPTED]:
        lines.append(
            "The state records only what succeeded; run `reconciler plan` to see what is still pending."
        )
    slowed = throttling_summary(report.throttling)
    if slowed:
        lines.append(slowed)
    return "\n".join(lines) + "\n"


def report_json(report: ApplyReport, plan: Plan) -> str:
    document = {
        "format_version": FORMAT_VERSION,
        "checksum": plan.checksum,
        "interrupted": report.interrupted,
        "summary": {
            status: len(report.having(status)) for status in (APPLIED, RECORDED, FAILED, NOT_ATTEMPTED)
        },
        "results": [
            {
                "phone_number": outcome.change.phone_number,
                "account": outcome.change.account,
                "action": outcome.change.action,
                "status": outcome.status,
                "code": outcome.code,
                "message": outcome.message,
            }
            for outcome in report.outcomes
        ],
        "throttling": throttling_json(report),
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def throttling_json(report: ApplyReport) -> dict[str, Any]:
    """How Kaleyra slowed the run down (every account it throttled), for `apply --format json`."""
    return {
        "throttled": sum(account.throttled for account in report.throttling),
        "accounts": [account.to_json() for account in report.throttling],
    }


def report_markdown(report: ApplyReport, plan: Plan) -> str:
    """An apply's outcome for a CI job summary: counts, then every failure with Kaleyra's code."""
    counts = [len(report.having(status)) for status in (APPLIED, RECORDED, FAILED, NOT_ATTEMPTED)]
    lines = [
        "### Kaleyra profile apply",
        "",
        "| applied | recorded without sending | failed | not attempted |",
        "|---:|---:|---:|---:|",
        "| " + " | ".join(map(str, counts)) + " |",
        "",
    ]
    if report.interrupted:
        lines += [
            "**Interrupted**: requests in flight were finished and recorded; nothing else was sent.",
            "",
        ]
    failures = report.having(FAILED)
    if failures:
        lines += ["| number | account | code | message |", "|---|---|---|---|"]
        lines += [
            f"| {md(o.change.phone_number)} | {md(o.change.account)} | {md(o.code)} | {md(o.message)} |"
            for o in failures
        ]
        lines.append("")
    lines += [f"Plan checksum: `{plan.checksum}`", ""]
    return "\n".join(lines)


# --- state and history ---------------------------------------------------------------------------


def state_list_text(state: State) -> str:
    if not state.entries:
        return "The state is empty: nothing has been applied yet.\n"
    rows = [
        f"{phone}  {entry.account}  {entry.applied_at}  {len(entry.fields)} field(s)"
        for phone, entry in sorted(state.entries.items())
    ]
    header = f"lineage {state.lineage}, serial {state.serial}, {len(state.entries)} number(s)"
    return "\n".join([header, *rows]) + "\n"


def entry_text(phone_number: str, entry: Entry) -> str:
    lines = [
        f"{phone_number}",
        f"  account:    {entry.account} ({entry.target})",
        f"  applied at: {entry.applied_at}",
    ]
    lines += [f"  {name}: {value(text)}" for name, text in entry.fields.items()]
    return "\n".join(lines) + "\n"


def history_text(records: list[dict[str, Any]]) -> str:
    if not records:
        return "No history yet.\n"
    lines = []
    for entry in records:
        by = entry.get("by", {})
        who = by.get("actor", "?") + (f"@{by['commit'][:10]}" if by.get("commit") else "")
        lines.append(
            f"{entry.get('time')}  {who}  {entry.get('phone_number')} ({entry.get('account')})  "
            f"{entry.get('action')}  {entry.get('result')}: {entry.get('message')}"
        )
        for name, change in entry.get("fields", {}).items():
            lines.append(f"    {name}: {value(change.get('old'))} -> {value(change.get('new'))}")
    return "\n".join(lines) + "\n"
