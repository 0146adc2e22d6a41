"""Which numbers a command covers: `--target` and `--exclude`, each a phone number (as people type
it), an account name, or a glob over phone numbers (`'+9199*'`)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from .errors import ReconcilerError
from .schema import E164

GLOB_CHARACTERS = frozenset("*?[")


def normalise_phone(text: str) -> str | None:
    """`+1 415-555-0100`, `(1) 415.555.0100` and `14155550100` all mean `+14155550100`; None if `text`
    is not a phone number at all."""
    number = re.sub(r"[\s().-]", "", text)
    number = number if number.startswith("+") else f"+{number}"
    return number if re.fullmatch(E164, number) else None


@dataclass(frozen=True)
class Selector:
    kind: str  # "number", "account" or "glob"
    value: str

    def matches(self, number: str, accounts: Collection[str]) -> bool:
        if self.kind == "number":
            return number == self.value
        if self.kind == "account":
            return self.value in accounts
        return fnmatch.fnmatchcase(number, self.value)

    @classmethod
    def parse(cls, text: str, account_names: Collection[str], option: str) -> Selector:
        """An account name wins over the other readings (names are what people configured)."""
        text = text.strip()
        if text in account_names:
            return cls("account", text)
        if GLOB_CHARACTERS & set(text):
            # Written like a number ('+1 415-555-010*'): drop the same separators, except inside [...].
            pattern = re.sub(r"\[[^\]]*\]|[\s().-]", lambda m: m.group() if m.group()[0] == "[" else "", text)
            return cls("glob", pattern if pattern[:1] in ("+", "*") else f"+{pattern}")
        number = normalise_phone(text)
        if number is None:
            known = ", ".join(sorted(account_names)) or "none"
            raise ReconcilerError(
                f"{option} {text!r} is not a phone number, an account name (configured: {known}) "
                "or a glob over phone numbers ('+9199*')"
            )
        return cls("number", number)


@dataclass(frozen=True)
class Selection:
    """`--target` (any of them) minus `--exclude` (any of them); no targets means every number."""

    targets: tuple[Selector, ...] = ()
    excludes: tuple[Selector, ...] = ()

    @classmethod
    def parse(
        cls, targets: Iterable[str], excludes: Iterable[str], account_names: Collection[str]
    ) -> Selection:
        return cls(
            tuple(Selector.parse(text, account_names, "--target") for text in targets),
            tuple(Selector.parse(text, account_names, "--exclude") for text in excludes),
        )

    def __bool__(self) -> bool:
        return bool(self.targets or self.excludes)

    def texts(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """What a saved plan records, to select the same numbers again when it is applied."""
        return tuple(s.value for s in self.targets), tuple(s.value for s in self.excludes)

    def choose(self, numbers: Iterable[str], accounts_of: Callable[[str], Collection[str]]) -> list[str]:
        """The selected numbers, in order. A phone number or glob that matches none of them is an
        error, for --target (a typo must not quietly plan nothing) and for --exclude (nor quietly send
        what was meant to be left out); an account with nothing to do is not."""
        numbers = list(numbers)
        for option, selectors in (("--target", self.targets), ("--exclude", self.excludes)):
            for selector in selectors:
                if selector.kind != "account" and not any(
                    selector.matches(number, accounts_of(number)) for number in numbers
                ):
                    what = "phone number" if selector.kind == "number" else "glob"
                    raise ReconcilerError(
                        f"{option} {selector.value}: no profile or state entry has that {what}"
                    )
        chosen = []
        for number in numbers:
            accounts = accounts_of(number)
            if self.targets and not any(target.matches(number, accounts) for target in self.targets):
                continue
            if any(exclude.matches(number, accounts) for exclude in self.excludes):
                continue
            chosen.append(number)
        return chosen


UNVERIFIED = "unverified"


@dataclass(frozen=True)
class Replacement:
    """`--replace`: the numbers whose every managed field is re-sent whatever the state says. Each
    selector is a number, an account, a glob (as `--target`) or the word `unverified` (the numbers the
    state holds as recorded but never sent in full)."""

    selectors: tuple[Selector, ...] = ()
    unverified: bool = False

    @classmethod
    def parse(cls, texts: Iterable[str], account_names: Collection[str]) -> Replacement:
        texts = [text.strip() for text in texts]
        selectors = []
        for text in texts:
            if text == UNVERIFIED:
                continue
            try:
                selectors.append(Selector.parse(text, account_names, "--replace"))
            except ReconcilerError as error:
                raise ReconcilerError(f"{error}, or the word '{UNVERIFIED}'") from None
        return cls(tuple(selectors), UNVERIFIED in texts)

    @classmethod
    def of_numbers(cls, numbers: Iterable[str]) -> Replacement:
        return cls(tuple(Selector("number", number) for number in numbers))

    def __bool__(self) -> bool:
        return bool(self.selectors or self.unverified)

    def texts(self) -> tuple[str, ...]:
        """What a saved plan records, to replace the same numbers again when it is applied."""
        return tuple(s.value for s in self.selectors) + ((UNVERIFIED,) if self.unverified else ())

    def choose(
        self,
        numbers: Iterable[str],
        accounts_of: Callable[[str], Collection[str]],
        has_profile: Callable[[str], bool],
        is_unverified: Callable[[str], bool],
    ) -> set[str]:
        """The numbers to re-send, among `numbers` (those the plan covers). A phone number without a
        profile is an error (there is nothing to send; its state entry plans as a forget), as is a
        phone number or glob that matches none of the numbers covered."""
        numbers = list(numbers)
        for selector in self.selectors:
            if selector.kind == "account":
                continue
            matched = [n for n in numbers if selector.matches(n, accounts_of(n))]
            if not matched:
                what = "phone number" if selector.kind == "number" else "glob"
                raise ReconcilerError(
                    f"--replace {selector.value}: no profile or state entry the plan covers has that {what}"
                )
            if selector.kind == "number" and not has_profile(selector.value):
                raise ReconcilerError(
                    f"--replace {selector.value}: no profile declares this number, so there is nothing to "
                    "send (its state entry is forgotten by apply); nothing was sent"
                )
        return {
            number
            for number in numbers
            if has_profile(number)
            and (
                (self.unverified and is_unverified(number))
                or any(selector.matches(number, accounts_of(number)) for selector in self.selectors)
            )
        }
