"""API keys: read from the environment, checked before any request, and redacted by value everywhere.

Keys only ever live in environment variables. Every key read for a run is remembered here, and every
sink (stdout, stderr, the state, the journal, the audit log, saved plans) passes its text through
`redact`, so a key cannot escape whatever its variable is called and whatever a server echoes back.
"""

from __future__ import annotations

import json
import os
import re
import threading

REDACTED = "[redacted]"
# A key travels in an HTTP header: printable ASCII without spaces. Anything else is a paste accident
# (a trailing newline from `echo > file`, a non-breaking space) and is refused before any request.
_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]+")
# No real key is shorter. A short one would collide with ordinary text (a date, "true", a digit run)
# and redacting it would garble every output and break JSON, so it is refused instead.
MIN_KEY_LENGTH = 8
# A second line of defence: values of variables whose names say they are secret (GITHUB_TOKEN,
# AWS_SECRET_ACCESS_KEY, ...) are cut too, though we never read them ourselves. Only long values:
# TOKENIZERS_PARALLELISM=false is not a secret, and cutting "false" would break every JSON document.
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)
MIN_NAMED_SECRET_LENGTH = 16

# Part of a key is a leak too (a server echoing it truncated, shifted or upper-cased): any run of this
# many consecutive characters of an API key, in any case, is cut. Shorter runs are left alone: 11
# characters of a random key say little, and cutting them would garble ordinary text.
FRAGMENT = 12
# A run of FRAGMENT characters always contains one of the key's GRAM-character slices that start at a
# multiple of GRAM (FRAGMENT >= 2 * GRAM - 1): testing those few slices with `in` is the cheap first
# look that lets almost every text skip the exact (slower) search.
GRAM = 6

_lock = threading.Lock()
_known: set[str] = set()
_pattern: re.Pattern[str] | None = None
# The fragments of API keys: the exact search, its cheap first look, and each window's place in its key.
_fragments: re.Pattern[str] | None = None
_grams: tuple[str, ...] = ()
_windows: dict[str, list[tuple[str, int]]] = {}


def remember(key: str, fragments: bool = True) -> None:
    """Redact `key` (and the forms JSON gives it) from everything written from now on; with
    `fragments`, also any run of FRAGMENT or more of its consecutive characters, in any case."""
    global _pattern
    forms = {key, key.strip(), json.dumps(key)[1:-1], json.dumps(key, ensure_ascii=False)[1:-1]}
    forms = {form for form in forms if len(form) >= MIN_KEY_LENGTH}
    with _lock:
        if fragments and len(key) >= FRAGMENT:
            _remember_fragments(key.lower())
        if forms <= _known:
            return
        _known.update(forms)
        # Longest first, so a key that contains another is cut whole.
        alternatives = sorted(_known, key=len, reverse=True)
        _pattern = re.compile("|".join(map(re.escape, alternatives)))


def _remember_fragments(key: str) -> None:
    global _fragments, _grams
    windows = {key[start : start + FRAGMENT]: start for start in range(len(key) - FRAGMENT + 1)}
    if all(window in _windows for window in windows):
        return
    for window, start in windows.items():
        _windows.setdefault(window, []).append((key, start))
    _grams = tuple(sorted({*_grams, *(key[at : at + GRAM] for at in range(0, len(key) - GRAM + 1, GRAM))}))
    # Each window is a literal; IGNORECASE makes "ABC" and "abc" the same run.
    _fragments = re.compile("|".join(map(re.escape, sorted(_windows))), re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with every remembered key (and secret-looking variable's value) cut out, and every run of
    FRAGMENT or more characters of an API key. It runs on every line printed and every record
    written, so it must stay cheap: one compiled pattern for whole keys, and for fragments a look for
    a few short slices (`in`, in C) before any exact search."""
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    if _fragments is not None and _may_hold_fragment(text):
        text = _cut_fragments(text)
    return text


def _may_hold_fragment(text: str) -> bool:
    lowered = text.lower()
    return any(gram in lowered for gram in _grams)


def _cut_fragments(text: str) -> str:
    """Cut every run of FRAGMENT or more consecutive characters of a key, each as long as it goes."""
    fragments = _fragments
    assert fragments is not None
    pieces, position = [], 0
    while (found := fragments.search(text, position)) is not None:
        start, end = found.span()
        for key, at in _windows.get(found.group().lower(), ()):
            length = FRAGMENT
            while (
                start + length < len(text)
                and at + length < len(key)
                and text[start + length].lower() == key[at + length]
            ):
                length += 1
            end = max(end, start + length)
        pieces += [text[position:start], REDACTED]
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def remember_named_secrets() -> None:
    """Remember the values of variables whose names say they are secret (long enough to be one)."""
    for name, value in os.environ.items():
        if len(value) >= MIN_NAMED_SECRET_LENGTH and _SECRET_NAME.search(name):
            # Whole values only: such a variable may hold a path or a name whose parts are everywhere.
            remember(value, fragments=False)


def holds_key(text: str) -> bool:
    """True when `text` contains a key read for this run, or the value of a secret-named variable (a
    key pasted into a profile value). Such a value is refused rather than redacted: redacting it
    would make the state say something other than what Kaleyra holds."""
    pattern = _pattern
    if pattern is not None and pattern.search(text) is not None:
        return True
    fragments = _fragments
    return fragments is not None and _may_hold_fragment(text) and fragments.search(text) is not None


def key_problem(value: str | None) -> str | None:
    """Why an environment value cannot be an API key, or None when it can. Never quotes the value."""
    if not value:
        return "is not set"
    if not _PRINTABLE_ASCII.fullmatch(value):
        return "holds whitespace, control or non-ASCII characters (a stray newline or space?)"
    if len(value) < MIN_KEY_LENGTH:
        return f"is shorter than {MIN_KEY_LENGTH} characters, so it cannot be an API key"
    return None
