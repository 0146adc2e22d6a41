"""Rendering plans, apply reports, state and history as text, JSON or markdown. Read-only views."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from .apply import APPLIED, FAILED, NOT_ATTEMPTED, RECORDED, ApplyReport, Outcome
from .escape import escape, escape_all, json_line, json_text, quote, revealing
from .kaleyra.client import throttling_summary
from .plan import FORMAT_VERSION, Change, Plan
from .secrets import redact
from .state.model import Entry, State

# In UTF-8 bytes: GitHub refuses comments over 65,536 characters, and a byte budget under that holds
# for every script (a Hindi plan has three bytes per character), leaving room for a flag and errors.
MARKDOWN_LIMIT = 60_000
SYMBOLS = {
    "create": ("+", "green"),
    "update": ("~", "yellow"),
    "replace": ("!", "magenta"),
    "unmanage": ("-", "cyan"),
    "forget": ("-", "red"),
}


# What drift compares, said wherever it reports (Kaleyra documents no read of profile fields).
DRIFT_COMPARES = "desired vs recorded"
DRIFT_NOTE = (
    "Kaleyra offers no read of profile fields; edits made in Kaleyra's console are found by re-assertion"
)
DRIFT_LINE = f"Compares {DRIFT_COMPARES} ({DRIFT_NOTE})."


def summary_line(plan: Plan) -> str:
    actions = ("create", "update", "replace", "unmanage", "forget") if plan.count("replace") else _ACTIONS
    parts = [f"{plan.count(action)} to {action}" for action in actions]
    return f"{', '.join(parts)}, {plan.unchanged} unchanged; {len(plan.puts)} PUT(s) to send."


_ACTIONS = ("create", "update", "unmanage", "forget")  # replace is named only when a plan has one


def unverified_line(plan: Plan) -> str:
    """The numbers the state holds as recorded by import but never sent in full: drift cannot vouch for
    them."""
    return (
        f"{len(plan.unverified)} number(s) unverified: recorded by import, never sent in full; "
        "`reconciler apply --replace unverified` sends them."
    )


# --- plan ----------------------------------------------------------------------------------------


def over_limit(plan: Plan, max_changes: int | None) -> str:
    """'' or, for a plan with more changes than safety.max_changes, what that means and how to go on:
    said first, before merge, so a reviewed plan is not refused only once it is merged."""
    changed = len(plan.changes)
    if max_changes is None or changed <= max_changes:
        return ""
    return (
        f"Over the safety limit: this plan changes {changed} numbers, more than safety.max_changes "
        f"({max_changes}), so apply refuses it. To go ahead, either raise safety.max_changes to at least "
        f"{changed} in reconciler.yaml in this same change (the merge then applies it), or, once merged, "
        f"apply it by hand with --force and its checksum (in GitHub: run the apply workflow with the "
        f"checksum and force)."
    )


def plan_text(plan: Plan, title: str = "Plan", max_changes: int | None = None) -> str:
    unverified = [unverified_line(plan)] if plan.unverified else []
    if not plan.changes:
        return (
            "\n".join([f"No changes. {plan.unchanged} number(s) match the applied state.", *unverified])
            + "\n"
        )
    warning = over_limit(plan, max_changes)
    lines = [f"{title}: {summary_line(plan)}", *([warning] if warning else []), ""]
    for change in plan.changes:
        lines.extend(_change_text(change))
    lines += ["", *unverified, f"Checksum: {plan.checksum}"]
    return "\n".join(lines) + "\n"


def _change_text(change: Change) -> list[str]:
    symbol, colour = SYMBOLS[change.action]
    head = f"{symbol} {change.phone_number}  {change.action}  ({change.account})"
    if change.moved_from:
        head += f"  moved from {change.moved_from}: sent in full"
    if change.action == "forget":
        head += "  dropped from the state; nothing is sent"
    if change.action == "replace":
        head += "  every managed field is sent, whatever the state says"
    # A hand-edited state can put anything in a number, an account or a field name: escape it all.
    lines = [click.style(escape(head), fg=colour, bold=True)]
    width = max((len(escape(name)) for name in change.fields), default=0)
    for name, field_change in change.fields.items():
        label = f"{escape(name)}:".ljust(width + 1)
        if change.action == "create":
            lines.append(f"    {label} {quote(field_change.after)}")
        elif change.action == "forget":
            lines.append(f"    {label} {quote(field_change.before)}")
        elif field_change.after is None:
            lines.append(f"    {label} {quote(field_change.before)}  (no longer managed; nothing sent)")
        elif change.action == "replace" and field_change.before == field_change.after:
            lines.append(f"    {label} {quote(field_change.after)}  (as recorded; sent again)")
        else:
            reveal = revealing(field_change.before, field_change.after)
            before, after = quote(field_change.before, reveal), quote(field_change.after, reveal)
            lines.append(f"    {label} {before} -> {after}")
    return lines


def plan_json(plan: Plan, drift: bool = False) -> str:
    document = plan.to_json()
    if drift:
        document |= {"compares": DRIFT_COMPARES, "note": DRIFT_NOTE}
    return json_text(document, indent=2) + "\n"


# Every character that could end a table cell, start markup or code, or @-mention someone.
_MARKDOWN_ENTITIES = str.maketrans({char: f"&#{ord(char)};" for char in "&<>\"'|`@*_[]\\~#!"})


def md(text: str | None, reveal: bool = False) -> str:
    """Escape a value for a markdown table cell: profile text can never break out of it, and control
    and bidi characters show as visible escapes (an HTML entity would still reorder the text)."""
    if text is None:
        return "_(not managed)_"
    if text == "":
        return '`""` (cleared)'
    # Redacted before escaping: an escaped key (`_` becomes `&#95;`) would no longer be found later.
    return (escape_all if reveal else escape)(redact(text)).translate(_MARKDOWN_ENTITIES)


def plan_markdown(
    plan: Plan,
    title: str = "Kaleyra profile plan",
    limit: int = MARKDOWN_LIMIT,
    max_changes: int | None = None,
    drift: bool = False,
) -> str:
    head = [f"### {title}", ""]
    if drift:
        head += [f"Compares **{DRIFT_COMPARES}** ({DRIFT_NOTE}).", ""]
    warning = over_limit(plan, max_changes)
    if warning:
        head += [f"> [!CAUTION]\n> **{warning}**", ""]
    marker = f"<!-- reconciler-checksum: {plan.checksum} -->"  # lets CI apply exactly what was reviewed
    if not plan.changes:
        unverified = [unverified_line(plan)] if plan.unverified else []
        return "\n".join(
            [
                *head,
                f"No changes. {plan.unchanged} number(s) match the applied state.",
                *unverified,
                marker,
                "",
            ]
        )
    fields_changed = sum(len(change.fields) for change in plan.changes)
    actions = ("create", "update", "replace", "unmanage", "forget") if plan.count("replace") else _ACTIONS
    head += [
        "| " + " | ".join(actions) + " | unchanged | fields | PUTs |",
        "|" + "---:|" * (len(actions) + 3),
        "| " + " | ".join(str(plan.count(action)) for action in actions) + " | "
        f"{plan.unchanged} | {fields_changed} | {len(plan.puts)} |",
        "",
    ]
    unverified = ["", unverified_line(plan)] if plan.unverified else []
    tail = [*unverified, "", f"Checksum: `{plan.checksum}`", marker, ""]
    budget = limit - len("\n".join(head + tail).encode()) - 400  # bytes; room for the truncation note
    sections: list[str] = []
    shown = 0
    for change in plan.changes:
        section = _change_markdown(change, fold=len(plan.changes) > 10 or len(change.fields) > 5)
        cost = len(section.encode())
        if budget - cost < 0:
            break
        budget -= cost + 1
        sections.append(section)
        shown += 1
    if shown < len(plan.changes):
        sections.append(
            f"> **{len(plan.changes) - shown} more number(s) not shown**: this comment is limited to "
            f"{limit:,} bytes. Run `reconciler plan` for the full plan."
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
    elif change.action == "replace":
        title += ": every managed field is sent, whatever the state says"
    rows = ["| field | before | after |", "|---|---|---|"]
    for name, c in change.fields.items():
        reveal = revealing(c.before, c.after)
        rows.append(f"| {md(name)} | {md(c.before, reveal)} | {md(c.after, reveal)} |")
    body = "\n".join(rows) if change.fields else "_no fields_"
    if fold:
        return f"<details><summary>{title}</summary>\n\n{body}\n\n</details>\n"
    return f"#### {title}\n\n{body}\n"


# --- apply ----------------------------------------------------------------------------------------

REPORT_STATUSES = (APPLIED, RECORDED, FAILED, NOT_ATTEMPTED)


class ApplyProgress:
    """What apply prints while it runs, so CI logs move: a line per number as its result is recorded
    (text), one JSON event per number (jsonl), and a progress line at most every PROGRESS_EVERY_S."""

    PROGRESS_EVERY_S = 10.0

    def __init__(
        self,
        total: int,
        output: str,
        write: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total, self.output, self.write, self.clock = total, output, write, clock
        self.started = self.last_line = clock()
        self.counts = dict.fromkeys(REPORT_STATUSES, 0)

    def __call__(self, outcome: Outcome | None) -> None:
        if outcome is not None:
            self.counts[outcome.status] += 1
            if self.output == "text":
                self.write(outcome_line(outcome) + "\n")
            elif self.output == "jsonl":
                self.write(json_line({"event": "result", **_result(outcome)}))
        now = self.clock()
        done = sum(self.counts.values())
        if self.output == "text" and done < self.total and now - self.last_line >= self.PROGRESS_EVERY_S:
            counted = ", ".join(f"{n} {status}" for status, n in self.counts.items() if n)
            elapsed = now - self.started
            self.write(f"... {done} of {self.total} done ({counted or 'none yet'}) after {elapsed:.0f} s\n")
            self.last_line = now


def outcome_line(outcome: Outcome) -> str:
    change = outcome.change
    line = f"  {outcome.status:<13}  {change.phone_number}  {change.action} ({change.account})"
    if outcome.status in (FAILED, NOT_ATTEMPTED):
        line += f": {_coded(outcome)}"
    return escape(line)


def _coded(outcome: Outcome) -> str:
    return outcome.message if outcome.code in ("", "-") else f"{outcome.code}: {outcome.message}"


def failures_text(report: ApplyReport) -> str:
    """One line per failed number, sorted, with Kaleyra's code and message: these go to stderr."""
    lines = [
        click.style(escape(f"FAILED {o.change.phone_number} ({o.change.account}): {_coded(o)}"), fg="red")
        for o in report.having(FAILED)
    ]
    return "".join(line + "\n" for line in lines)


def report_text(report: ApplyReport) -> str:
    """The outcome in a few lines (the failures themselves are in `failures_text`)."""
    counts = report.counts()
    lines = []
    if report.interrupted:
        lines.append("Interrupted: requests in flight were finished and recorded; nothing else was sent.")
    if report.recording_failure:
        lines.append("Recording failed: sending stopped at once (see the errors above).")
    elif report.output_failure:
        lines.append("Output failed: sending stopped at once (see the errors above).")
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


def recording_failure_text(report: ApplyReport) -> str:
    """Every number sent but not recorded, with its values: what a person must know to recover."""
    lines = [
        f"error: recording failed: {report.recording_failure}. Sending stopped; the requests in flight "
        "were finished."
        if report.recording_failure
        else f"error: {report.output_failure}. Sending stopped; the requests in flight were finished."
    ]
    if report.unrecorded:
        lines.append(
            "These numbers were accepted by Kaleyra but are NOT in the state (the next plan shows them "
            "again; sending them again is harmless):"
        )
        lines += [
            f"  {o.change.phone_number} ({o.change.account}): {json_text(o.change.sends)}"
            for o in sorted(report.unrecorded, key=_by_number)
        ]
    if report.unaudited:
        lines.append("These results are in the state but NOT in the audit log:")
        lines += [
            f"  {o.change.phone_number} ({o.change.account}): {json_text(o.change.sends)}"
            for o in sorted(report.unaudited, key=_by_number)
        ]
    return "".join(escape(line) + "\n" for line in lines)


def _by_number(outcome: Outcome) -> str:
    return outcome.change.phone_number


def _result(outcome: Outcome) -> dict[str, Any]:
    return {
        "phone_number": outcome.change.phone_number,
        "account": outcome.change.account,
        "action": outcome.change.action,
        "status": outcome.status,
        "code": outcome.code,
        "message": outcome.message,
    }


def _report_document(report: ApplyReport, plan: Plan) -> dict[str, Any]:
    document: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "checksum": plan.checksum,
        "interrupted": report.interrupted,
        "summary": report.counts(),
        "throttling": throttling_json(report),
    }
    if report.recording_failure:
        document["recording_failure"] = report.recording_failure
        document["unrecorded"] = [
            {"phone_number": o.change.phone_number, "account": o.change.account, "fields": o.change.sends}
            for o in sorted(report.unrecorded, key=_by_number)
        ]
    return document


def report_json(report: ApplyReport, plan: Plan) -> str:
    document = _report_document(report, plan)
    document["results"] = [_result(outcome) for outcome in sorted(report.outcomes, key=_by_number)]
    return json_text(document, indent=2) + "\n"


def report_jsonl_summary(report: ApplyReport, plan: Plan) -> str:
    """The last event of `apply --format jsonl` (each number's event was streamed as it completed)."""
    return json_line({"event": "summary", **_report_document(report, plan)})


def throttling_json(report: ApplyReport) -> dict[str, Any]:
    """How Kaleyra slowed the run down (every account it throttled), for `apply --format json`."""
    return {
        "throttled": sum(account.throttled for account in report.throttling),
        "accounts": [account.to_json() for account in report.throttling],
    }


def report_markdown(report: ApplyReport, plan: Plan) -> str:
    """An apply's outcome for a CI job summary: counts, then every failure with Kaleyra's code."""
    counts = report.counts()
    lines = [
        "### Kaleyra profile apply",
        "",
        "| applied | recorded without sending | failed | not attempted |",
        "|---:|---:|---:|---:|",
        "| " + " | ".join(str(counts[status]) for status in REPORT_STATUSES) + " |",
        "",
    ]
    if report.interrupted:
        lines += [
            "**Interrupted**: requests in flight were finished and recorded; nothing else was sent.",
            "",
        ]
    if report.recording_failure:
        lines += [f"**Recording failed**: {md(report.recording_failure)}", ""]
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
        escape(
            f"{phone}  {entry.account}  {entry.applied_at}  {len(entry.fields)} field(s)"
            + ("  unverified (recorded by import, never sent in full)" if entry.unverified else "")
        )
        for phone, entry in sorted(state.entries.items())
    ]
    header = escape(f"lineage {state.lineage}, serial {state.serial}, {len(state.entries)} number(s)")
    unverified = sum(1 for entry in state.entries.values() if entry.unverified)
    if unverified:
        header += (
            f"; {unverified} unverified: recorded by import, never sent in full; "
            "`reconciler apply --replace unverified` sends them"
        )
    return "\n".join([header, *rows]) + "\n"


def entry_text(phone_number: str, entry: Entry) -> str:
    lines = [
        phone_number,
        escape(f"  account:    {entry.account} ({entry.target})"),
        escape(f"  applied at: {entry.applied_at}"),
    ]
    if entry.sent_in_full_at:  # an update sends only what changed; re-assertion counts from this one
        lines.append(escape(f"  sent in full at: {entry.sent_in_full_at}"))
    if entry.unverified:
        lines.append(
            "  unverified: recorded by import, never sent in full (`reconciler apply --replace unverified`)"
        )
    lines += [f"  {escape(name)}: {quote(text)}" for name, text in entry.fields.items()]
    return "\n".join(lines) + "\n"


def history_text(
    records: list[dict[str, Any]],
    phone_number: str | None = None,
    since: datetime | None = None,
    earlier: int = 0,
) -> str:
    """When, who, which number, the result, and each field's old and new value; newest last. Every
    part may have been written by hand or echoed by a server, so every part is escaped. With none to
    show, says which filter left none: `earlier` records are in the log but before `since`."""
    if not records:
        of = f" for {phone_number}" if phone_number else ""
        if since is not None and earlier:
            moment = since.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            return (
                f"No history{of} since {moment}; {earlier} earlier record{'s' if earlier != 1 else ''} "
                "(`reconciler history` without --since shows them).\n"
            )
        return f"No history{of} yet.\n"
    lines = []
    for entry in records:
        by = entry.get("by") if isinstance(entry.get("by"), dict) else {}
        who = str(by.get("actor", "?")) + (f"@{str(by['commit'])[:10]}" if by.get("commit") else "")
        result, message = str(entry.get("result", "")), str(entry.get("message", ""))
        # A message may start with its result already, in either case ("imported: ..." for IMPORTED).
        outcome = message if message.lower().startswith(f"{result.lower()}:") else f"{result}: {message}"
        lines.append(
            escape(
                f"{entry.get('time')}  {who}  {entry.get('phone_number')} ({entry.get('account')})  "
                f"{entry.get('action')}  {outcome}"
            )
        )
        for name, change in (entry.get("fields") or {}).items():
            lines.append(f"    {escape(str(name))}: {_any(change.get('old'))} -> {_any(change.get('new'))}")
    return "\n".join(lines) + "\n"


def _any(recorded: Any) -> str:
    return quote(recorded) if recorded is None or isinstance(recorded, str) else escape(str(recorded))
