"""Outside text (profile values, Kaleyra's messages, hand-edited files) made safe to show and to store.

Such text is data. No control character (ESC, CR, BEL, ...) and no bidi override may reach a terminal,
a log, a markdown comment or a JSON file raw: on a terminal they could clear the screen or forge a
summary line, and in a review they could make text read differently from what is sent.
"""

from __future__ import annotations

import json
import re
from json.encoder import encode_basestring  # json.dumps(str, ensure_ascii=False), without its set-up
from typing import Any

from .secrets import redact

# C0 and C1 controls, DEL, the Unicode line and paragraph separators, and every format character
# (Unicode category Cf: the bidi controls, zero-width spaces, word joiners, soft hyphens, the byte-order
# mark, tag characters): they reorder text or make it invisible. The zero-width (non-)joiners are left
# out: Indic scripts and emoji need them to read right. `reveal` escapes them as well, for a change
# made of nothing else, which would otherwise look like no change at all.
_FORMAT = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b\u200e\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U00013438\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)
UNSAFE = re.compile(f"[\x00-\x1f\x7f-\x9f\u2028\u2029{_FORMAT}]")
# json.dumps already escapes C0; these are what it lets through raw.
_UNSAFE_IN_JSON = re.compile(f"[\x7f-\x9f\u2028\u2029{_FORMAT}]")
_JOINERS = re.compile("[\u200c\u200d]")
# Most text is ASCII, where only C0 and DEL can be unsafe: a fast path for the hot ones (every line
# printed, every record written), since the full class (astral ranges included) costs 20 ns a character.
_ASCII_UNSAFE = re.compile("[\x00-\x1f\x7f]")
# A joiner next to ASCII or at either end joins nothing a script needs: it only hides something.
_STRAY_JOINER = re.compile("(?<![^\x00-\x7f])[\u200c\u200d]|[\u200c\u200d](?![^\x00-\x7f])")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    return _SHORT.get(char) or f"\\u{ord(char):04x}"


def escape(text: str) -> str:
    """`text` with every unsafe character shown as a visible escape (`\\u202e`, `\\n`)."""
    if text.isascii():
        # Printable ASCII (no C0, no DEL) is the common case and needs nothing.
        return text if text.isprintable() else _ASCII_UNSAFE.sub(_visible, text)
    return _STRAY_JOINER.sub(_visible, UNSAFE.sub(_visible, text))


def quote(text: str | None, reveal: bool = False) -> str:
    """A value for a terminal: in double quotes with escapes visible, so "" and trailing spaces show.
    `reveal` also shows the zero-width joiners (see `revealing`)."""
    if text is None:
        return "(not managed)"
    quoted = _json_safe(encode_basestring(text))
    if quoted.isascii():  # no joiner to show
        return quoted
    return (_JOINERS if reveal else _STRAY_JOINER).sub(_visible, quoted)


def revealing(before: str | None, after: str | None) -> bool:
    """True when two different values would look the same once escaped: only zero-width joiners tell
    them apart, so both must be shown with those escaped too."""
    return before != after and before is not None and after is not None and quote(before) == quote(after)


def escape_all(text: str) -> str:
    """`escape`, and the zero-width joiners as well."""
    return _JOINERS.sub(_visible, escape(text))


def json_text(document: Any, *, indent: int | None = None, sort_keys: bool = False) -> str:
    """The one JSON encoder for everything we print or write: readable non-ASCII, unsafe characters as
    \\u escapes, and every API key read for the run cut out."""
    text = json.dumps(document, ensure_ascii=False, indent=indent, sort_keys=sort_keys)
    return redact(_json_safe(text))


# What json.dumps(..., ensure_ascii=False, sort_keys=True, separators=(",", ":")) builds afresh on every
# call: one encoder for the records written per number (two per success).
_LINE_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def json_line(document: Any) -> str:
    """One compact, sorted JSON Lines record (journal, audit log, jsonl events)."""
    return redact(_json_safe(_LINE_ENCODER.encode(document))) + "\n"


def _json_safe(text: str) -> str:
    """JSON text with what json.dumps lets through raw (DEL, C1, separators, format characters) as
    \\u escapes; ASCII JSON can only hold DEL."""
    if text.isascii():
        return text.replace("\x7f", "\\u007f") if "\x7f" in text else text
    return _UNSAFE_IN_JSON.sub(_visible, text)
