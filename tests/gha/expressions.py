"""GitHub Actions expressions: `${{ ... }}` templates and `if:` conditions, as the runner evaluates them.

Covers what workflows use: literals, context lookups (`a.b`, `a['b']`, `a.*.b`), `!`, `==`, `!=`, `<`,
`<=`, `>`, `>=`, `&&`, `||`, parentheses, and the functions contains, startsWith, endsWith, format,
join, toJSON, fromJSON, hashFiles (unsupported: raises) and the status functions. Comparison follows
GitHub's loose rules: strings compare case-insensitively; mixed types compare as numbers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

TOKEN = re.compile(
    r"\s*(?:(?P<number>-?(?:0x[0-9a-fA-F]+|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?))"
    r"|(?P<string>'(?:[^']|'')*')"
    r"|(?P<op>==|!=|<=|>=|&&|\|\||[!<>()\[\].,*])"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*))"
)


class ExpressionError(Exception):
    pass


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    text = text.strip()
    while position < len(text):
        match = TOKEN.match(text, position)
        if not match or match.end() == position:
            raise ExpressionError(f"cannot parse expression at {text[position:]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
        while position < len(text) and text[position].isspace():
            position += 1
    return tokens


class Evaluator:
    def __init__(self, contexts: dict[str, Any], status: Callable[[str], bool] | None = None):
        self.contexts = {name.lower(): value for name, value in contexts.items()}
        self.status = status or (lambda name: name in ("success", "always"))

    def evaluate(self, text: str) -> Any:
        self.tokens = tokenize(text)
        self.index = 0
        value = self._or()
        if self.index != len(self.tokens):
            raise ExpressionError(f"unexpected {self.tokens[self.index][1]!r} in {text!r}")
        return value

    # --- recursive descent, lowest precedence first -----------------------------------------------

    def _peek(self) -> str | None:
        return self.tokens[self.index][1] if self.index < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> tuple[str, str]:
        if self.index >= len(self.tokens):
            raise ExpressionError("unexpected end of expression")
        token = self.tokens[self.index]
        if expected is not None and token[1] != expected:
            raise ExpressionError(f"expected {expected!r}, got {token[1]!r}")
        self.index += 1
        return token

    def _or(self) -> Any:
        left = self._and()
        while self._peek() == "||":
            self._take()
            right = self._and()
            left = left if truthy(left) else right
        return left

    def _and(self) -> Any:
        left = self._compare()
        while self._peek() == "&&":
            self._take()
            right = self._compare()
            left = right if truthy(left) else left
        return left

    def _compare(self) -> Any:
        left = self._unary()
        while self._peek() in ("==", "!=", "<", "<=", ">", ">="):
            op = self._take()[1]
            right = self._unary()
            left = compare(op, left, right)
        return left

    def _unary(self) -> Any:
        if self._peek() == "!":
            self._take()
            return not truthy(self._unary())
        return self._postfix()

    def _postfix(self) -> Any:
        value = self._primary()
        while self._peek() in (".", "["):
            if self._take()[1] == ".":
                _kind, name = self._take()
                if name == "*":
                    value = list(value.values()) if isinstance(value, dict) else list(value or [])
                    continue
                value = lookup(value, name)
            else:
                key = self._or()
                self._take("]")
                value = lookup(value, key)
        return value

    def _primary(self) -> Any:
        kind, text = self._take()
        if kind == "number":
            return float(int(text, 16)) if text.lower().startswith("0x") else float(text)
        if kind == "string":
            return text[1:-1].replace("''", "'")
        if text == "(":
            value = self._or()
            self._take(")")
            return value
        if kind == "name":
            if text in ("true", "false"):
                return text == "true"
            if text == "null":
                return None
            if self._peek() == "(":
                return self._call(text)
            return self.contexts.get(text.lower())
        raise ExpressionError(f"unexpected {text!r}")

    def _call(self, name: str) -> Any:
        self._take("(")
        args = []
        while self._peek() != ")":
            args.append(self._or())
            if self._peek() == ",":
                self._take()
        self._take(")")
        function = name.lower()
        if function in ("success", "failure", "cancelled", "always"):
            return self.status(function)
        if function == "contains":
            haystack, needle = args
            if isinstance(haystack, list):
                return any(compare("==", item, needle) for item in haystack)
            return to_string(needle).lower() in to_string(haystack).lower()
        if function == "startswith":
            return to_string(args[0]).lower().startswith(to_string(args[1]).lower())
        if function == "endswith":
            return to_string(args[0]).lower().endswith(to_string(args[1]).lower())
        if function == "format":
            template = to_string(args[0])
            return re.sub(r"\{(\d+)\}", lambda m: to_string(args[1 + int(m.group(1))]), template)
        if function == "join":
            separator = to_string(args[1]) if len(args) > 1 else ","
            items = args[0] if isinstance(args[0], list) else [args[0]]
            return separator.join(to_string(item) for item in items)
        if function == "tojson":
            return json.dumps(args[0], indent=2)
        if function == "fromjson":
            return json.loads(to_string(args[0]))
        raise ExpressionError(f"unsupported function {name}()")


def lookup(value: Any, key: Any) -> Any:
    if isinstance(value, dict):
        key = to_string(key).lower()
        for name, item in value.items():
            if name.lower() == key:
                return item
        return None
    if isinstance(value, list) and isinstance(key, float) and key.is_integer():
        return value[int(key)] if 0 <= key < len(value) else None
    return None


def truthy(value: Any) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, float):
        return value != 0 and not math.isnan(value)
    if isinstance(value, str):
        return value != ""
    return True


def to_number(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, float | int):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            return 0.0
        try:
            return float(int(text, 16)) if text.lower().startswith("0x") else float(text)
        except ValueError:
            return math.nan
    return math.nan


def compare(op: str, left: Any, right: Any) -> bool:
    if isinstance(left, str) and isinstance(right, str):
        a: Any = left.lower()
        b: Any = right.lower()
    elif isinstance(left, dict | list) or isinstance(right, dict | list):
        a, b = id(left), id(right)
        if op not in ("==", "!="):
            return False
    else:
        a, b = to_number(left), to_number(right)
        if math.isnan(a) or math.isnan(b):
            return op == "!="
    return {
        "==": a == b,
        "!=": a != b,
        "<": a < b,
        "<=": a <= b,
        ">": a > b,
        ">=": a >= b,
    }[op]


def to_string(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, dict | list):
        return json.dumps(value, indent=2)
    return str(value)


TEMPLATE = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)


def interpolate(text: Any, evaluator: Evaluator) -> Any:
    """Replace every `${{ expr }}` in a string; other values pass through unchanged."""
    if not isinstance(text, str):
        return text
    return TEMPLATE.sub(lambda match: to_string(evaluator.evaluate(match.group(1))), text)


def condition(text: Any, evaluator: Evaluator) -> bool:
    """An `if:`: a bare expression or one template; without a status function, success() is implied."""
    if text is None:
        return evaluator.status("success")
    if isinstance(text, bool):
        return text
    source = str(text).strip()
    whole = TEMPLATE.fullmatch(source)
    if whole:
        source = whole.group(1)
    elif "${{" in source:
        return truthy(interpolate(source, evaluator))
    if not re.search(r"\b(success|failure|cancelled|always)\s*\(", source):
        return evaluator.status("success") and truthy(evaluator.evaluate(source))
    return truthy(evaluator.evaluate(source))
