"""Selection: --target and --exclude take phone numbers, account names and globs."""

from __future__ import annotations

import pytest

from reconciler.errors import ReconcilerError
from reconciler.selection import Selection, Selector

ACCOUNTS = {"acme-in", "acme-us"}
NUMBERS = ["+14155550100", "+14155550101", "+919980000103", "+919980000104", "+914846000101"]
OWNERS = {
    "+14155550100": {"acme-us"},
    "+14155550101": {"acme-us"},
    "+919980000103": {"acme-in"},
    "+919980000104": {"acme-in", "acme-us"},  # moving between accounts: both
    "+914846000101": {"acme-in"},
}


def chosen(targets=(), excludes=()):
    return Selection.parse(targets, excludes, ACCOUNTS).choose(NUMBERS, OWNERS.__getitem__)


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("acme-in", "account", "acme-in"),
        ("+1 415-555-0100", "number", "+14155550100"),
        ("(1) 415.555.0100", "number", "+14155550100"),
        ("'+9199*'".strip("'"), "glob", "+9199*"),
        ("9199*", "glob", "+9199*"),
        ("*0101", "glob", "*0101"),
        ("+91[89]*", "glob", "+91[89]*"),
    ],
)
def test_a_selector_is_read_as_an_account_a_number_or_a_glob(text, kind, value):
    assert Selector.parse(text, ACCOUNTS, "--target") == Selector(kind, value)


def test_no_selection_is_every_number():
    assert chosen() == NUMBERS


def test_targets_are_a_union_and_excludes_win():
    assert chosen(["acme-us"]) == ["+14155550100", "+14155550101", "+919980000104"]
    assert chosen(["+9199*", "+14155550100"]) == ["+14155550100", "+919980000103", "+919980000104"]
    assert chosen(["acme-in"], ["+9199*"]) == ["+914846000101"]
    assert chosen(excludes=["acme-us"]) == ["+919980000103", "+914846000101"]


@pytest.mark.parametrize("target", ["+19999999999", "+44*"])
def test_a_number_or_glob_target_matching_nothing_is_an_error(target):
    with pytest.raises(ReconcilerError, match="no profile or state entry has that"):
        chosen([target])


def test_something_that_is_no_selector_at_all_names_the_configured_accounts():
    with pytest.raises(ReconcilerError, match=r"configured: acme-in, acme-us"):
        chosen(["acme-uk"])
