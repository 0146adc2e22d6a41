"""Outside text (profile values, Kaleyra's messages, hand-edited files) made safe to show and to store.

Such text is data. No control character (ESC, CR, BEL, ...) and no bidi override may reach a terminal,
a log, a markdown comment or a JSON file raw: on a terminal they could clear the screen or forge a
summary line, and in a review they could make text read differently from what is sent.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .secrets import redact

# C0 and C1 controls, DEL, the Unicode line and paragraph separators, and the bidi controls
# (ALM, LRM, RLM, the embeddings and overrides LRE..RLO, and the isolates LRI..PDI).
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# json.dumps already escapes C0; these are what it lets through raw.
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    return _SHORT.get(char) or f"\\u{ord(char):04x}"


def escape(text: str) -> str:
    """`text` with every unsafe character shown as a visible escape (`\\u202e`, `\\n`)."""
    return UNSAFE.sub(_visible, text)


def quote(text: str | None) -> str:
    """A value for a terminal: in double quotes with escapes visible, so "" and trailing spaces show."""
    if text is None:
        return "(not managed)"
    return _UNSAFE_IN_JSON.sub(_visible, json.dumps(text, ensure_ascii=False))


def json_text(document: Any, *, indent: int | None = None, sort_keys: bool = False) -> str:
    """The one JSON encoder for everything we print or write: readable non-ASCII, unsafe characters as
    \\u escapes, and every API key read for the run cut out."""
    text = json.dumps(document, ensure_ascii=False, indent=indent, sort_keys=sort_keys)
    return redact(_UNSAFE_IN_JSON.sub(_visible, text))


def json_line(document: Any) -> str:
    """One compact, sorted JSON Lines record (journal, audit log, jsonl events)."""
    text = json.dumps(document, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return redact(_UNSAFE_IN_JSON.sub(_visible, text)) + "\n"
