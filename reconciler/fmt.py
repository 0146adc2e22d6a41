"""`reconciler fmt`: profiles rewritten in one canonical form, with their values and comments kept.

The canonical form: the schema modeline first, then the keys in the schema's order (phone_number,
account, then the fields as the API reference lists them), one `key: value` line each, a value quoted
only where YAML would read it as something other than the same text, no trailing whitespace and one
final newline. Full-line comments travel with the key they precede; inline comments stay on their
key's line; comments above the first key and apart from it (a blank line between) stay at the top.

PyYAML keeps no comments, and profiles are flat mappings of one-line strings, so the rewrite works
from the scanner's tokens: every character outside a token is whitespace or a comment. A file is only
rewritten when it passes the per-file checks of `validate` and its new text loads to the same data.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import schema
from .config import display_path
from .errors import Problem, ValidationFailed
from .profiles import profile_files
from .state.files import atomic_write
from .yamlfile import SafeLoader, parse_mapping, read_source

KEY_ORDER = ("phone_number", "account", *schema.FIELDS)
MODELINE = re.compile(r"#\s*yaml-language-server\s*:")
_STR = "tag:yaml.org,2002:str"
_RESOLVER = yaml.resolver.Resolver()
_EMITTER = yaml.emitter.Emitter(None, allow_unicode=True)  # only its analysis of a scalar is used
# YAML 1.1 line breaks, as the scanner counts lines (CRLF is one).
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
# What the YAML reader accepts raw inside a double-quoted scalar, less line breaks and the BOM; the
# rest is written as an escape (a valid value holds none of it but U+FEFF and noncharacters).
_RAW_IN_QUOTES = re.compile(
    "[\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)
# Plain scalars that YAML 1.2's core schema reads as null or a boolean.
_YAML_1_2_NOT_TEXT = re.compile(r"null|Null|NULL|~|true|True|TRUE|false|False|FALSE")
# Anything that starts like a number is quoted: YAML 1.2 readers differ on what is one (ruamel, which
# check-jsonschema uses, also reads `1_0e5`, `-_1` and `0o1_7` as numbers, and fails on `._`), and a
# quote too many never changes a value.
_STARTS_LIKE_A_NUMBER = re.compile(r"[-+]?\.?[0-9_]|[-+]?\.(?:inf|Inf|INF|nan|NaN|NAN)")


@dataclass(frozen=True)
class _Comment:
    line: int  # 0-based, as PyYAML marks count
    text: str
    inline: bool


@dataclass
class _Pair:
    key: str
    line: int
    leading: list[str] = field(default_factory=list)
    inline: list[str] = field(default_factory=list)


def format_text(text: str, display: str) -> str:
    """The canonical text of one profile; ValidationFailed (naming file:line:col) if it cannot load."""
    document = parse_mapping(text, display)
    problems = schema.check("profile", document)
    if problems:
        raise ValidationFailed(problems)
    values: dict[str, str] = document.data
    try:
        pairs, header, footer = _pairs_and_comments(text)
    except yaml.YAMLError as error:  # the scanner refusing what the composer accepted: never seen
        mark = getattr(error, "problem_mark", None)
        where = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        raise ValidationFailed([Problem(display, *where, f"cannot be formatted: {error}")]) from None
    # The schema modeline goes first wherever it was, as editors look for it at the top.
    modelines = [comment for comment in header if MODELINE.match(comment)]
    header = [comment for comment in header if not MODELINE.match(comment)]
    for pair in pairs:
        modelines += [comment for comment in pair.leading if MODELINE.match(comment)]
        pair.leading = [comment for comment in pair.leading if not MODELINE.match(comment)]
    lines = [*modelines, *header]
    if header:
        lines.append("")  # keeps the file's own comments apart from the first key's
    ordered = sorted(pairs, key=lambda pair: KEY_ORDER.index(pair.key))
    for index, pair in enumerate(ordered):
        if pair.leading and index > 0:
            lines.append("")
        lines.extend(pair.leading)
        line = f"{pair.key}: {_scalar(values[pair.key])}"
        if pair.inline:
            line += "  " + " ".join(pair.inline)
        lines.append(line)
    if footer:
        lines += ["", *footer]
    formatted = "\n".join(lines) + "\n"
    if parse_mapping(formatted, display).data != values:  # a guard: never write a changed value
        raise ValidationFailed([Problem(display, 0, 0, "fmt would change a value (a bug; please report it)")])
    return formatted


def _pairs_and_comments(text: str) -> tuple[list[_Pair], list[str], list[str]]:
    """The top-level pairs in file order with their comments, the header and the footer comments."""
    tokens = list(yaml.scan(text, Loader=SafeLoader))
    pairs: list[_Pair] = []
    owner: list[int | None] = []  # per token: the pair it belongs to (None before the first key, or closing)
    for position, token in enumerate(tokens):
        if isinstance(token, yaml.KeyToken):
            key = tokens[position + 1]
            pairs.append(_Pair(key=key.value, line=key.start_mark.line))
        closing = isinstance(token, _CLOSING)
        owner.append(None if closing or not pairs else len(pairs) - 1)
    first_key = next((position for position, pair in enumerate(owner) if pair is not None), len(tokens))
    header: list[_Comment] = []
    footer: list[str] = []
    for position in range(len(tokens) - 1):
        before, after = tokens[position], tokens[position + 1]
        for comment in _comments_between(text, before, after):
            # An inline comment belongs to the pair on its line; a full-line one to the pair it precedes.
            target = owner[position] if comment.inline else owner[position + 1]
            if target is not None:
                (pairs[target].inline if comment.inline else pairs[target].leading).append(comment.text)
            elif position >= first_key:
                footer.append(comment.text)
            else:
                header.append(comment)
    return pairs, _split_header(header, pairs), footer


_CLOSING = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.DocumentEndToken, yaml.StreamEndToken)


def _split_header(header: list[_Comment], pairs: list[_Pair]) -> list[str]:
    """Comments above the first key: the block touching it (no blank line between) is the key's."""
    if pairs and not pairs[0].leading:
        line = pairs[0].line
        while header and not header[-1].inline and header[-1].line == line - 1:
            line = header[-1].line
            pairs[0].leading.insert(0, header.pop().text)
    return [comment.text for comment in header]


def _comments_between(text: str, before: yaml.Token, after: yaml.Token) -> list[_Comment]:
    """The comments in the text between two tokens, where there is nothing but space and comments."""
    start, end = before.end_mark.index, after.start_mark.index
    line = before.end_mark.line
    inline = not isinstance(before, yaml.StreamStartToken)
    comments = []
    for segment in _LINE_BREAK.split(text[start:end]):
        stripped = segment.strip(" \t")
        if stripped.startswith("#"):
            comments.append(_Comment(line, stripped.rstrip(), inline))
        inline = False
        line += 1
    return comments


def _scalar(value: str) -> str:
    """`value` as a YAML scalar: plain when YAML reads it back as the same text, else double-quoted.

    Plain needs all of: PyYAML's resolver reads it as text (YAML 1.1), so does YAML 1.2's core schema
    (editors and check-jsonschema read 1.2, where `1e3` is a number), PyYAML's emitter would write it
    plain, and no space at either end. Pure Python on purpose: libyaml's emitter quotes emoji, and the
    canonical form must not depend on whether PyYAML was built with libyaml.
    """
    if (
        value == value.strip()
        and _RESOLVER.resolve(yaml.ScalarNode, value, (True, False)) == _STR
        and not _YAML_1_2_NOT_TEXT.fullmatch(value)
        and not _STARTS_LIKE_A_NUMBER.match(value)
        and _EMITTER.analyze_scalar(value).allow_block_plain
    ):
        return value
    escaped = []
    for character in value:
        if character in '"\\':
            escaped.append("\\" + character)
        elif _RAW_IN_QUOTES.match(character):
            escaped.append(character)
        else:
            code = ord(character)
            escaped.append(
                f"\\x{code:02X}" if code <= 0xFF else f"\\u{code:04X}" if code <= 0xFFFF else f"\\U{code:08X}"
            )
    return '"' + "".join(escaped) + '"'


@dataclass
class Report:
    """What `fmt` did (or, with --check, would do)."""

    changed: list[str] = field(default_factory=list)
    unchanged: int = 0
    problems: list[Problem] = field(default_factory=list)
    diffs: list[str] = field(default_factory=list)  # with `diff`: a unified diff per changed file

    def summary(self, check: bool) -> list[str]:
        verb = "would reformat" if check else "reformatted"
        lines = [f"{verb} {path}" for path in self.changed]
        done = "would be reformatted" if check else "reformatted"
        lines.append(f"{len(self.changed)} file(s) {done}, {self.unchanged} already canonical.")
        return lines

    def errors(self) -> list[str]:
        if not self.problems:
            return []
        files = len({problem.path for problem in self.problems})
        return [
            *map(str, sorted(self.problems)),
            f"{files} file(s) could not be formatted; they were left as they were.",
        ]

    def exit_code(self, check: bool) -> int:
        return 1 if self.problems or (check and self.changed) else 0


def run(paths: Sequence[str], profiles_dir: Path | None, *, check: bool, diff: bool = False) -> Report:
    """Format the files and folders in `paths`, or, without any, every profile under `profiles_dir`.
    With `check` nothing is written; with `diff` (which implies it) each change is also a unified diff."""
    problems: list[Problem] = []
    if paths:
        files = files_to_format(paths, problems)
    else:
        files = profile_files(profiles_dir, problems) if profiles_dir is not None else []
    return format_files(files, check=check or diff, problems=problems, diff=diff)


def files_to_format(paths: Sequence[str], problems: list[Problem]) -> list[str]:
    """The named files, and every profile below the named folders (found as `validate` finds them)."""
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            files += profile_files(Path(path), problems)
        elif os.path.isfile(path):
            files.append(path)
        else:
            problems.append(Problem(display_path(path), 0, 0, "no such file or folder"))
    return list(dict.fromkeys(files))


def format_files(
    files: Sequence[str], *, check: bool, problems: Sequence[Problem] = (), diff: bool = False
) -> Report:
    """Rewrite each file in canonical form (with `check`, only find those that would change)."""
    report = Report(problems=list(problems))
    for file in files:
        display = display_path(file)
        try:
            raw, text = read_source(file, display)
            formatted = format_text(text, display).encode()
        except ValidationFailed as failed:
            report.problems.extend(failed.problems)
            continue
        if formatted == raw:
            report.unchanged += 1
            continue
        report.changed.append(display)
        if diff:
            lines = difflib.unified_diff(
                text.splitlines(keepends=True),
                formatted.decode().splitlines(keepends=True),
                fromfile=f"a/{display}",
                tofile=f"b/{display}",
            )
            report.diffs.append("".join(line if line.endswith("\n") else line + "\n" for line in lines))
        if not check:
            target = Path(os.path.realpath(file))  # a symlink stays a link; its target is rewritten
            mode = stat.S_IMODE(target.stat().st_mode)
            atomic_write(target, formatted)
            os.chmod(target, mode)
    return report
