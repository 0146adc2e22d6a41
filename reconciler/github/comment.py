"""GitHub glue for the composite action (action.yml): comment bodies, the reviewed checksum, the state flag.

Run as `python -I -m reconciler.github COMMAND` (`-I`: never import from the working directory, which
in the comment job is a pull request's tree). Everything here is pure text processing: the action's
bash steps make the `gh` calls and pass their JSON in, so each rule lives in one tested place:

- a comment or issue body fits GitHub's limit (65,536 characters) by a budget in UTF-8 bytes, and the
  `<!-- reconciler-checksum: ... -->` marker always survives the cut;
- errors of `validate` and `plan` are shown escaped, never as markup;
- only the workflow bot's own comment (login and type Bot) is the plan comment, and apply trusts it
  only when its plan section is byte-equal to what trusted code renders for the merged commit;
- a pull request that edits the state file is flagged with the numbers whose entries it changes;
- a pull request that changes where the state is kept (the `state:` section of reconciler.yaml) is
  flagged, and its plan is made against the default branch's state location, not the new one.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..render import md

PLAN_MARKER = "<!-- kaleyra-reconciler-plan -->"
DRIFT_MARKER = "<!-- kaleyra-reconciler-drift -->"
DEFAULT_AUTHOR = "github-actions[bot]"
# GitHub refuses bodies over 65,536 characters. A character is at most 4 UTF-8 bytes and at least 1,
# so a budget in bytes under that limit is safe whatever the script; 64,000 leaves room to spare.
BODY_BYTES = 64_000
FLAG_BYTES = 4_000
CHECKSUM = re.compile(r"<!-- reconciler-checksum: ([0-9a-f]{64}) -->")
# The plan section of a comment: what apply re-renders with trusted code and compares byte for byte.
# `budget` is the size the section was cut to (fit_plan), so apply can cut its rendering the same way.
PLAN_BEGIN = "<!-- reconciler-plan-begin budget={budget} -->"
PLAN_END = "<!-- reconciler-plan-end -->"
PLAN_SECTION = re.compile(
    r"<!-- reconciler-plan-begin budget=(\d{1,7}) -->\n(.*?)<!-- reconciler-plan-end -->", re.DOTALL
)
# The smallest budget a genuine comment gives its plan section: BODY_BYTES less the largest flag,
# error section and footer. A section cut to less is not one the comment job writes.
MIN_PLAN_BUDGET = 40_000
CUT_NOTE = (
    "\n> **Cut to fit GitHub's comment limit.** Run `reconciler plan` for the whole plan; "
    "the checksum below covers all of it.\n"
)


def size(text: str) -> int:
    return len(text.encode("utf-8"))


def cut(text: str, budget: int) -> str:
    """The longest prefix of whole lines within `budget` UTF-8 bytes."""
    if size(text) <= budget:
        return text
    prefix = text.encode("utf-8")[: max(budget, 0)].decode("utf-8", "ignore")
    return prefix[: prefix.rfind("\n") + 1] if "\n" in prefix else ""


def fit_plan(plan: str, budget: int) -> str:
    """Cut a plan's markdown to `budget` bytes, keeping its tail: the checksum line and the marker."""
    if size(plan) <= budget:
        return plan
    match = CHECKSUM.search(plan)
    tail_start = plan.rfind("\nChecksum:", 0, match.start()) + 1 if match else len(plan)
    tail = plan[tail_start:] if match else ""
    head = cut(plan[:tail_start], budget - size(tail) - size(CUT_NOTE) - 64)
    unclosed = head.count("<details>") - head.count("</details>")
    return head + "\n</details>\n" * max(unclosed, 0) + CUT_NOTE + "\n" + tail


def errors_section(errors: str, budget: int) -> str:
    """Every line the reconciler printed on stderr, escaped inside <pre>, cut to `budget` bytes."""
    lines = [line for line in errors.splitlines() if line.strip()]
    if not lines:
        return ""
    head = "**The reconciler reported errors**; nothing can be applied until they are fixed:\n\n<pre>\n"
    foot = "</pre>\n\n"
    body, shown = "", 0
    for line in lines:
        escaped = html.escape(line).replace("@", "&#64;") + "\n"
        if size(head + body + escaped + foot) + 80 > budget:
            break
        body += escaped
        shown += 1
    if shown < len(lines):
        body += f"... and {len(lines) - shown} more line(s); the job's log has them all.\n"
    return head + body + foot


def assemble(
    marker: str,
    plan: str,
    errors: str = "",
    flag: str = "",
    footer: str = "",
    budget: int = BODY_BYTES,
) -> str:
    """A comment or issue body: marker, state-edit flag, errors, plan, footer, within `budget` bytes."""
    flag = cut(flag, FLAG_BYTES)
    footer = cut(footer, 1_000)
    fixed = size(marker) + 1 + size(flag) + size(footer) + 2
    error_text = errors_section(errors, min(16_000, budget - fixed - min(size(plan), 1_000)))
    plan_budget = budget - fixed - size(error_text)
    if marker == PLAN_MARKER and plan.strip():
        # Room for the markers (the begin marker's budget has at most 7 digits).
        plan_budget -= size(PLAN_BEGIN.format(budget=0)) + 7 + size(PLAN_END) + 2
        begin = PLAN_BEGIN.format(budget=plan_budget)
        plan_text = f"{begin}\n{fit_plan(plan, plan_budget)}{PLAN_END}\n"
    else:
        plan_text = fit_plan(plan, plan_budget)
    parts = [marker, flag, error_text, plan_text]
    if not plan.strip() and not error_text:
        parts.append("_The reconciler printed no plan._\n")
    body = "\n".join(part.rstrip("\n") + "\n" for part in parts if part)
    if footer:
        body += "\n" + footer.rstrip("\n") + "\n"
    return body


# --- the state-edit flag --------------------------------------------------------------------------


def _state_numbers(text: str | None) -> tuple[dict[str, Any], str | None]:
    if text is None or not text.strip():
        return {}, None
    try:
        numbers = json.loads(text).get("numbers", {})
        if not isinstance(numbers, dict):
            raise ValueError("'numbers' is not a mapping")
        return numbers, None
    except (ValueError, AttributeError) as error:
        return {}, f"it is not a readable state file ({type(error).__name__})"


def state_edit_flag(path: str, before: str | None, after: str | None, trusted_source: str) -> str:
    """Markdown for the top of the comment when a pull request edits the state file; '' when it does not."""
    if (before or "") == (after or ""):
        return ""
    if path.endswith((".journal", ".lock")):
        kind = "journal" if path.endswith(".journal") else "lock"
        return (
            "> [!WARNING]\n"
            f"> **This pull request commits the state's {kind}** (`{md(path)}`). A {kind} is never part of "
            "git, and it is removed before planning and applying: a committed journal would record as "
            "applied what was never sent, and a committed lock would stop every apply. Remove it from "
            "the pull request.\n"
        )
    old, _ = _state_numbers(before)
    new, problem = _state_numbers(after)
    touched = sorted(n for n in set(old) | set(new) if old.get(n) != new.get(n))
    if after is None:
        what = "deletes"
    elif before is None:
        what = "adds"
    else:
        what = "edits"
    lines = [
        "> [!WARNING]",
        f"> **This pull request {what} the applied state** (`{md(path)}`). The plan below ignores that: "
        f"it is made against {trusted_source}. An edited state can hide a change from the plan or "
        "blind the drift check, so review this file with care.",
    ]
    if problem:
        lines.append(f"> The pull request's copy: {problem}.")
    if touched:
        shown = ", ".join(f"`{md(number)}`" for number in touched[:50])
        more = f" and {len(touched) - 50} more" if len(touched) > 50 else ""
        lines.append(f"> Numbers whose state entries it changes ({len(touched)}): {shown}{more}.")
    return "\n".join(lines) + "\n"


# --- the state-location flag ------------------------------------------------------------------------

# What says where the applied state is kept. A change to any of them makes the plan read another state
# (or, with endpoint_url, ask another server), which could hide a change or blind the drift check.
STATE_LOCATION = ("backend", "path", "bucket", "key", "region", "endpoint_url")
STATE_DEFAULTS = {"backend": "local", "path": ".reconciler/state.json"}
VALUE_CHARS = 200


def state_location(section: Any) -> dict[str, str | None]:
    """The `state:` section of a reconciler.yaml, with the defaults a missing setting means."""
    section = section if isinstance(section, dict) else {}
    return {
        name: str(section[name]) if section.get(name) is not None else STATE_DEFAULTS.get(name)
        for name in STATE_LOCATION
    }


def _setting(value: str | None) -> str:
    if value is None:
        return "_(not set)_"
    return md(value if len(value) <= VALUE_CHARS else value[:VALUE_CHARS] + "…")


def state_location_flag(before: Any, after: Any, config_name: str = "reconciler.yaml") -> str:
    """Markdown for the top of the comment when a pull request changes where the state is kept ('' when
    it does not). `before` and `after` are the `state:` sections of the base's and the pull request's
    config (None: no such section, or no config)."""
    old, new = state_location(before), state_location(after)
    changed = [name for name in STATE_LOCATION if old[name] != new[name]]
    if not changed:
        return ""
    settings = "; ".join(f"{name}: {_setting(old[name])} → {_setting(new[name])}" for name in changed)
    return (
        "> [!WARNING]\n"
        f"> **This pull request changes where the applied state is kept** (`state:` in {md(config_name)}): "
        f"{settings}.\n"
        "> The plan below ignores that: it is made against the state where the default branch keeps it. "
        "Once merged, apply reads the state at the new place and refuses unless its plan there is exactly "
        "this one. A state kept elsewhere can hide a change from the plan or blind the drift check, so "
        "review this with care.\n"
    )


def _state_section(path: str | None) -> tuple[bool, Any]:
    """(loaded, its `state:` section) of a reconciler.yaml read as data; an absent file has none."""
    from ..errors import ReconcilerError
    from ..yamlfile import MAX_CONFIG_NODES, load_mapping

    if not path or not Path(path).is_file():
        return True, None
    try:
        return True, load_mapping(path, path, max_nodes=MAX_CONFIG_NODES).data.get("state")
    except ReconcilerError:
        return False, None


def pin_state_location(config: str, base_section: Any) -> bool:
    """Give the pull request's config (already validated) the base's `state:` section, so the plan is
    made against the state where the default branch keeps it. True if the file was rewritten."""
    import yaml

    from ..yamlfile import MAX_CONFIG_NODES, load_mapping

    data = dict(load_mapping(config, config, max_nodes=MAX_CONFIG_NODES).data)
    if state_location(data.get("state")) == state_location(base_section):
        return False
    if base_section is None:
        data.pop("state", None)
    else:
        data["state"] = base_section
    Path(config).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return True


# --- the bot's own comment --------------------------------------------------------------------------


def read_comments(stream: Any) -> list[dict[str, Any]]:
    """Comments as `gh api --paginate ... --jq '.[]'` prints them: one JSON object per line."""
    comments = []
    for line in stream:
        if line.strip():
            comments.append(json.loads(line))
    return comments


def plan_comment(comments: list[dict[str, Any]], author: str) -> dict[str, Any] | None:
    """The plan comment: the oldest one by the workflow's bot that starts with the marker.

    Anyone can write the marker into a comment; only the bot's (login *and* type Bot, which no
    person's account can have) counts, for updating in place and for the checksum apply uses.
    """
    for comment in sorted(comments, key=lambda c: (c.get("created_at", ""), c.get("id", 0))):
        user = comment.get("user") or {}
        if (
            user.get("login") == author
            and user.get("type") == "Bot"
            and str(comment.get("body", "")).startswith(PLAN_MARKER)
        ):
            return comment
    return None


def reviewed_checksum(comment: dict[str, Any] | None) -> str | None:
    if comment is None:
        return None
    found = set(CHECKSUM.findall(str(comment.get("body", ""))))
    return found.pop() if len(found) == 1 else None


class NotReviewed(Exception):
    """The pull request's comments do not show the plan that would be applied."""


def plan_comments(comments: list[dict[str, Any]], author: str) -> list[dict[str, Any]]:
    """Every comment by the workflow's bot (login and type Bot) that starts with the plan marker."""
    return [
        comment
        for comment in comments
        if (comment.get("user") or {}).get("login") == author
        and (comment.get("user") or {}).get("type") == "Bot"
        and str(comment.get("body", "")).startswith(PLAN_MARKER)
    ]


# The plan's summary row: | create | update | unmanage | forget | unchanged | fields | PUTs |
SUMMARY_ROW = re.compile(r"^(\| \d+ \| \d+ \| \d+ \| \d+ \| )\d+( \| \d+ \| \d+ \|)$", re.MULTILINE)


def _unchanged_count_aside(section: str) -> str:
    """The plan section with its count of unchanged numbers blanked: another pull request merged
    meanwhile moves that count (its new numbers are unchanged now) but not one byte of the changes."""
    return SUMMARY_ROW.sub(r"\1…\2", section, count=1)


def verify_comment(comments: list[dict[str, Any]], author: str, rendered: str) -> tuple[str, bool]:
    """Check the pull request's plan comment against `rendered`, the merged commit's plan as trusted
    code renders it now (`reconciler plan --format markdown`). Returns (checksum, verified):

    - (the plan's checksum, True): the comment's plan section is byte-equal to the rendering (cut to
      the same budget; the count of unchanged numbers aside, which other merges move) and carries
      the same checksum, so reviewers read exactly the changes that would be applied;
    - (the comment's checksum, False): the comment is of another plan (a later push was not commented,
      the state moved on, or this very plan was applied already): `apply --checksum` then refuses as a
      stale plan, or says it was applied already, and sends nothing either way.

    Raises NotReviewed when there is no such comment, more than one (the comment job keeps one,
    updated in place: another one was posted by something else with the same identity), or when the
    comment carries the checksum of the rendering but not its text (forged or edited).
    """
    found = plan_comments(comments, author)
    if not found:
        raise NotReviewed(f"the pull request has no plan comment by {author}, so nothing was reviewed")
    if len(found) > 1:
        ids = ", ".join(str(comment.get("id")) for comment in found)
        raise NotReviewed(
            f"the pull request has {len(found)} plan comments by {author} (ids {ids}); the comment job "
            "keeps exactly one, so the others were posted by something else with its identity (a pull "
            "request's own workflow can be): reviewers may have read a forged plan"
        )
    [comment] = found
    body = str(comment.get("body", ""))
    checksums = set(CHECKSUM.findall(body))
    ours = CHECKSUM.findall(rendered)
    if len(checksums) != 1 or len(ours) != 1:
        raise NotReviewed(f"the plan comment ({comment.get('id')}) carries no single plan checksum")
    [claimed] = checksums
    sections = PLAN_SECTION.findall(body)
    if claimed != ours[0]:
        return claimed, False
    if len(sections) != 1:
        raise NotReviewed(
            f"the plan comment ({comment.get('id')}) carries this plan's checksum but no plan section "
            "rendered by the comment job: it was forged or edited"
        )
    budget, section = int(sections[0][0]), sections[0][1]
    if budget < MIN_PLAN_BUDGET or _unchanged_count_aside(section) != _unchanged_count_aside(
        fit_plan(rendered, budget)
    ):
        raise NotReviewed(
            f"the plan comment ({comment.get('id')}) carries this plan's checksum, but its text is not "
            "the plan trusted code renders for the merged commit: it was edited or forged, so "
            "reviewers may have read something else than what would be applied"
        )
    return claimed, True


# --- where the state lives --------------------------------------------------------------------------


def state_backend(config_file: str | None) -> str:
    """`local` or `s3`: what state.backend in reconciler.yaml says (`local` when it does not load;
    validate then says why)."""
    from ..config import load_config
    from ..errors import ReconcilerError

    try:
        return load_config(config_file).state_backend
    except ReconcilerError:
        return "local"


def stray_state_files(config_file: str | None) -> list[str]:
    """The state's journal and lock, relative to the working directory. Neither is ever part of git:
    a committed journal would be replayed on load (recording as applied what never was sent, which
    hides a change from the plan and from drift) and a committed lock would stop every apply."""
    kept = state_files(config_file, quiet=True)
    if not kept:
        return []
    state = Path(kept[0])
    return [(state.parent / f"{state.name}{suffix}").as_posix() for suffix in (".journal", ".lock")]


def state_files(config_file: str | None, quiet: bool = False) -> list[str]:
    """The files that hold the applied state, relative to the working directory.

    Hook for remote state (issue 13): a config whose state is not a local file lists nothing, so the
    action neither fetches nor commits anything.
    """
    from ..config import load_config
    from ..errors import ReconcilerError

    try:
        config = load_config(config_file)
    except ReconcilerError as error:
        if not quiet:
            print(f"note: using the default state path; the config did not load: {error}", file=sys.stderr)
        return [".reconciler/state.json", ".reconciler/audit.jsonl"]
    if config.state_backend != "local":
        return []
    root = Path.cwd().resolve()
    paths = []
    for path in (config.state_path, config.audit_path):
        try:
            paths.append(path.resolve().relative_to(root).as_posix())
        except ValueError:
            if not quiet:
                print(f"note: {path} is outside the working directory; it is not kept", file=sys.stderr)
    return paths


# --- command line -----------------------------------------------------------------------------------


def _read(path: str | None) -> str:
    if not path:
        return ""
    file = Path(path)
    return file.read_text(encoding="utf-8", errors="replace") if file.exists() else ""


def _optional(path: str | None) -> str | None:
    return Path(path).read_text(encoding="utf-8", errors="replace") if path and Path(path).exists() else None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reconciler.github", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    body = commands.add_parser("body", help="assemble a plan comment or drift issue body")
    body.add_argument("--marker", choices=["plan", "drift"], default="plan")
    body.add_argument("--plan", help="markdown from `reconciler plan|drift --format markdown`")
    body.add_argument("--errors", help="what the reconciler printed on stderr")
    body.add_argument("--flag", help="markdown from `state-flag`, shown first")
    body.add_argument("--footer", default="")
    body.add_argument("--max-bytes", type=int, default=BODY_BYTES)
    body.add_argument("--json", action="store_true", help='print {"body": ...} for `gh api --input`')
    body.add_argument("--title", help="with --json: an issue title")
    body.add_argument("--label", help="with --json: an issue label")

    flag = commands.add_parser("state-flag", help="flag a pull request's edit of the state file")
    flag.add_argument("--path", required=True)
    flag.add_argument("--before", help="the base branch's copy (absent: none)")
    flag.add_argument("--after", help="the pull request's copy (absent: none)")
    flag.add_argument("--trusted-source", default="the state the last apply saved")

    verify = commands.add_parser(
        "verify-comment", help="check the plan comment (JSON lines on stdin) against a trusted rendering"
    )
    verify.add_argument("--author", default=DEFAULT_AUTHOR)
    verify.add_argument("--plan", required=True, help="`reconciler plan --format markdown` of the merge")

    for name in ("pick-comment", "reviewed-checksum"):
        pick = commands.add_parser(name, help="read comments (JSON lines) on stdin")
        pick.add_argument("--author", default=DEFAULT_AUTHOR)

    files = commands.add_parser("state-files", help="print the state's files, one per line")
    files.add_argument("--config")
    stray = commands.add_parser("stray-files", help="print the state's journal and lock (never in git)")
    stray.add_argument("--config")

    backend = commands.add_parser("state-backend", help="print state.backend: local or s3")
    backend.add_argument("--config")

    location = commands.add_parser("state-location", help="flag a pull request's move of the state")
    location.add_argument("--base", help="the base branch's reconciler.yaml (absent: none)")
    location.add_argument("--config", required=True, help="the pull request's reconciler.yaml")
    location.add_argument(
        "--pin", action="store_true", help="instead, give --config the base's state section"
    )

    return parser


def _body(args: argparse.Namespace) -> int:
    marker = PLAN_MARKER if args.marker == "plan" else DRIFT_MARKER
    text = assemble(
        marker, _read(args.plan), _read(args.errors), _read(args.flag), args.footer, args.max_bytes
    )
    if args.json:
        document: dict[str, Any] = {"body": text}
        if args.title:
            document["title"] = args.title
        if args.label:
            document["labels"] = [args.label]
        text = json.dumps(document)
    sys.stdout.write(text)
    return 0


def _state_flag(args: argparse.Namespace) -> int:
    sys.stdout.write(
        state_edit_flag(args.path, _optional(args.before), _optional(args.after), args.trusted_source)
    )
    return 0


def _pick_comment(args: argparse.Namespace) -> int:
    comment = plan_comment(read_comments(sys.stdin), args.author)
    if comment:
        print(comment["id"])
    return 0


def _reviewed_checksum(args: argparse.Namespace) -> int:
    checksum = reviewed_checksum(plan_comment(read_comments(sys.stdin), args.author))
    if not checksum:
        print(
            f"error: no plan comment by {args.author} with one checksum marker; nothing was reviewed",
            file=sys.stderr,
        )
        return 1
    print(checksum)
    return 0


def _verify_comment(args: argparse.Namespace) -> int:
    try:
        checksum, verified = verify_comment(read_comments(sys.stdin), args.author, _read(args.plan))
    except NotReviewed as error:
        print(f"error: {error}; nothing was applied", file=sys.stderr)
        return 1
    if verified:
        print("The plan comment is byte-equal to the merged commit's plan.", file=sys.stderr)
    else:
        print(
            "The plan comment is not the merged commit's plan as it stands now; apply only checks "
            "whether it was applied already, and sends nothing otherwise.",
            file=sys.stderr,
        )
    print(checksum)
    return 0


def _print_lines(lines: Iterable[str]) -> int:
    for line in lines:
        print(line)
    return 0


def _state_location(args: argparse.Namespace) -> int:
    base_loaded, base = _state_section(args.base)
    loaded, section = _state_section(args.config)
    if not base_loaded:
        print(f"note: {args.base} does not load; trusting the default state location", file=sys.stderr)
    if not loaded or not Path(args.config).is_file():
        return 0  # validate says what is wrong with it, and there is no plan
    if not args.pin:
        sys.stdout.write(state_location_flag(base, section, Path(args.config).name))
    elif pin_state_location(args.config, base):
        print("note: the plan reads the state where the default branch keeps it", file=sys.stderr)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "body": _body,
    "state-flag": _state_flag,
    "pick-comment": _pick_comment,
    "reviewed-checksum": _reviewed_checksum,
    "verify-comment": _verify_comment,
    "state-files": lambda args: _print_lines(state_files(args.config)),
    "stray-files": lambda args: _print_lines(stray_state_files(args.config)),
    "state-backend": lambda args: _print_lines([state_backend(args.config)]),
    "state-location": _state_location,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
