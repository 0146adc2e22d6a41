"""The YAML loader: positions of keys and values, and what it refuses."""

from __future__ import annotations

import os
import threading

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.errors import ValidationFailed
from reconciler.yamlfile import MAX_FILE_BYTES, _Composer, load_mapping, parse_mapping, read_source


def problems(text: str) -> list[str]:
    with pytest.raises(ValidationFailed) as failed:
        parse_mapping(text, "f.yaml")
    return [str(problem) for problem in failed.value.problems]


def test_positions_of_keys_and_values_are_one_based_line_and_column():
    document = parse_mapping('# comment\nphone_number: "+1"\nnested:\n  about:   x\n', "f.yaml")
    assert document.position(("phone_number",)) == (2, 15)
    assert document.position(("nested", "about")) == (4, 12)
    assert document.position(("nested", "about"), of_key=True) == (4, 3)
    assert document.position(("nested", "missing")) == (4, 3)  # falls back to the enclosing value


def test_scalars_that_are_not_strings_keep_their_source_text():
    document = parse_mapping("about: yes\ncount: 0x1F\nname: 'yes'\n", "f.yaml")
    assert document.data == {"about": True, "count": 31, "name": "yes"}
    assert document.raw_text == {("about",): "yes", ("count",): "0x1F"}


def test_every_problem_in_a_file_is_reported_not_just_the_first():
    assert problems("a: 1\na: 2\nb: !!binary aGk=\n") == [
        "f.yaml:2:1: duplicate key 'a' (first set on line 1)",
        "f.yaml:3:4: the tag tag:yaml.org,2002:binary is not allowed; only plain YAML values",
    ]


def test_aliases_are_fine_within_the_budget_and_refused_beyond_it():
    assert parse_mapping("a: &x hello\nb: *x\n", "f.yaml").data == {"a": "hello", "b": "hello"}
    bomb = "a: &a [" + ",".join(["x"] * 50) + "]\nb: [" + ",".join(["*a"] * 50) + "]\n"
    assert "expands to more than" in problems(bomb)[0]


def test_a_byte_order_mark_is_stripped_and_other_encodings_refused(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_bytes(b"\xef\xbb\xbfabout: caf\xc3\xa9\n")
    assert load_mapping(good, "good.yaml").data == {"about": "café"}
    utf16 = tmp_path / "utf16.yaml"
    utf16.write_bytes("about: x\n".encode("utf-16"))
    with pytest.raises(ValidationFailed, match="is not UTF-8"):
        load_mapping(utf16, "utf16.yaml")


def test_the_size_limit_is_checked_before_parsing(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: " + b"x" * MAX_FILE_BYTES + b"\n")
    with pytest.raises(ValidationFailed, match="the limit is 65,536"):
        load_mapping(big, "big.yaml")


RESOLVER_SAMPLES = [
    "",
    "yes",
    "No",
    "on",
    "~",
    "null",
    "1",
    "-1_0",
    "0x1F",
    "0o17",
    "012",
    "1e3",
    "1.5e3",
    ".inf",
    "-.Inf",
    ".nan",
    "12:30:00",
    "2024-01-01",
    "2024-01-01 10:00:00Z",
    "<<",
    "=",
    "+14155550100",
    "text",
    "y",
    "n",
    "True",
    "FALSE",
    "0b101",
    "+.5",
    "._",
]


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(st.sampled_from(RESOLVER_SAMPLES), st.text(max_size=12)),
    implicit=st.tuples(st.booleans(), st.booleans()),
    kind=st.sampled_from([yaml.ScalarNode, yaml.SequenceNode, yaml.MappingNode]),
)
def test_the_composer_resolves_every_tag_as_pyyaml_does(value, implicit, kind):
    ours = _Composer("").resolve(kind, value, implicit)
    assert ours == yaml.resolver.Resolver().resolve(kind, value, implicit)


def test_read_source_refuses_a_fifo_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    # Should the read block, a writer that opens and closes the FIFO ends it, and the test fails.
    unblock = threading.Timer(10, lambda: os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)))
    unblock.start()
    try:
        with pytest.raises(ValidationFailed) as error:
            read_source(fifo, "pipe.yaml")
    finally:
        unblock.cancel()
    assert [str(problem) for problem in error.value.problems] == [
        "pipe.yaml: is a FIFO (named pipe), not a regular file; it is not read"
    ]
