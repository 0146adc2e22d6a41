"""profiles: the shortcuts taken for speed give exactly what the plain functions give."""

from __future__ import annotations

import os

import pytest

from reconciler.config import display_path
from reconciler.profiles import _display_below, _number_in_file_name, profile_files
from reconciler.yamlfile import MAX_FILE_BYTES, read_source


@pytest.mark.parametrize("where", ["inside", "itself", "outside", "above"])
def test_file_names_are_shown_as_display_path_shows_them(tmp_path, monkeypatch, where):
    root = tmp_path / "repo" / "profiles"
    (root / "team" / "deep").mkdir(parents=True)
    for name in ("a.yaml", "team/b.yaml", "team/deep/+14155550100.yml"):
        (root / name).write_text("x: y\n")
    cwd = {
        "inside": tmp_path / "repo",
        "itself": root,
        "outside": tmp_path,
        "above": root / "team",
    }[where]
    monkeypatch.chdir(cwd)
    files = profile_files(root, [])
    assert len(files) == 3
    assert [_display_below(root)(file) for file in files] == [display_path(file) for file in files]


@pytest.mark.parametrize(
    ("path", "number"),
    [
        ("profiles/+14155550100.yaml", "+14155550100"),
        ("profiles/14155550100.yml", "+14155550100"),
        ("profiles/support-line.yaml", None),
        ("profiles/+1415.yaml", None),
        ("profiles/+14155550100\n.yaml", None),  # `$` before a final newline must not make it a number
    ],
)
def test_a_file_is_named_for_a_number_only_when_its_whole_stem_is_one(path, number):
    assert _number_in_file_name(path) == number


def test_reading_stops_just_past_the_size_limit_and_reports_the_real_size(tmp_path):
    small, big = tmp_path / "small.yaml", tmp_path / "big.yaml"
    small.write_bytes(b"\xef\xbb\xbfabout: x\n")
    big.write_bytes(b"#" * (3 * MAX_FILE_BYTES))
    assert read_source(small, "small.yaml") == (b"\xef\xbb\xbfabout: x\n", "about: x\n")
    with pytest.raises(Exception, match=f"is {3 * MAX_FILE_BYTES:,} bytes"):
        read_source(big, "big.yaml")
    assert os.path.getsize(big) == 3 * MAX_FILE_BYTES
