"""Our exception types: each carries where the problem is (file and line, or number and field).

The CLI turns every `ReconcilerError` into its message on stderr and exit code 1, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with one input file, at a line and column when known (both 1-based)."""

    path: str
    line: int = 0
    column: int = 0
    message: str = ""

    def __str__(self) -> str:
        where = self.path
        if self.line:
            where += f":{self.line}"
            if self.column:
                where += f":{self.column}"
        return f"{where}: {self.message}"


class ReconcilerError(Exception):
    """An error a user can cause or fix; printed as one sentence, never as a traceback."""

    def lines(self) -> list[str]:
        return [str(self)]


class ValidationFailed(ReconcilerError):
    """The configuration or profiles are invalid; every problem found is listed."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(set(problems))  # one line per problem, however many files share its cause
        super().__init__("\n".join(map(str, self.problems)))

    def lines(self) -> list[str]:
        count = len(self.problems)
        return [
            *map(str, self.problems),
            f"{count} error{'s' if count != 1 else ''} found; nothing was changed.",
        ]


class LockHeld(ReconcilerError):
    """Another run holds the state lock."""


class StalePlan(ReconcilerError):
    """A saved plan (or --checksum) no longer matches the state or the profiles."""

    def __init__(self, message: str, details: list[str] | None = None):
        self.details = details or []
        super().__init__(message)

    def lines(self) -> list[str]:
        if not self.details:
            return [str(self)]
        return [f"error: {self}", *(f"  {line}" for line in self.details)]


class AccountsNotAdded(ReconcilerError):
    """`init --account` named accounts that the existing reconciler.yaml lacks; init never edits it."""

    def __init__(self, message: str, block: list[str]):
        self.block = block
        super().__init__(message)

    def lines(self) -> list[str]:
        return [f"error: {self}", *self.block]


class MissingApiKey(ReconcilerError):
    """Accounts with changes lack a usable API key in the environment; every one is listed at once."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))

    def lines(self) -> list[str]:
        return [*self.problems, "Export each key in its variable; nothing was sent."]


class StateCorrupt(ReconcilerError):
    """The state file exists but cannot be read as a state."""
