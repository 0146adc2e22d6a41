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

_lock = threading.Lock()
_known: set[str] = set()
_pattern: re.Pattern[str] | None = None


def remember(key: str) -> None:
    """Redact `key` (and the forms JSON gives it) from everything written from now on."""
    global _pattern
    forms = {key, key.strip(), json.dumps(key)[1:-1], json.dumps(key, ensure_ascii=False)[1:-1]}
    forms = {form for form in forms if len(form) >= MIN_KEY_LENGTH}
    with _lock:
        if forms <= _known:
            return
        _known.update(forms)
        # Longest first, so a key that contains another is cut whole.
        alternatives = sorted(_known, key=len, reverse=True)
        _pattern = re.compile("|".join(map(re.escape, alternatives)))


def redact(text: str) -> str:
    """`text` with every remembered key (and secret-looking variable's value) cut out. One compiled
    pattern: it runs on every line printed and every record written, so it must stay cheap."""
    pattern = _pattern
    return pattern.sub(REDACTED, text) if pattern is not None else text


def remember_named_secrets() -> None:
    """Remember the values of variables whose names say they are secret (long enough to be one)."""
    for name, value in os.environ.items():
        if len(value) >= MIN_NAMED_SECRET_LENGTH and _SECRET_NAME.search(name):
            remember(value)


def holds_key(text: str) -> bool:
    """True when `text` contains a key read for this run, or the value of a secret-named variable (a
    key pasted into a profile value). Such a value is refused rather than redacted: redacting it
    would make the state say something other than what Kaleyra holds."""
    pattern = _pattern
    return pattern is not None and pattern.search(text) is not None


def key_problem(value: str | None) -> str | None:
    """Why an environment value cannot be an API key, or None when it can. Never quotes the value."""
    if not value:
        return "is not set"
    if not _PRINTABLE_ASCII.fullmatch(value):
        return "holds whitespace, control or non-ASCII characters (a stray newline or space?)"
    if len(value) < MIN_KEY_LENGTH:
        return f"is shorter than {MIN_KEY_LENGTH} characters, so it cannot be an API key"
    return None
