"""`reconciler fmt` end to end: check mode, rewrites, paths, refusals, and values that never change."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from click.testing import CliRunner

from reconciler.cli import cli

from conftest import NUMBERS, assert_clean_failure

A, B, C = NUMBERS[0], NUMBERS[1], NUMBERS[2]
MESSY = f"about: 'Body care'   # shown on the profile\nphone_number: \"{A}\"\naccount: main\n"
CANONICAL = f'phone_number: "{A}"\naccount: main\nabout: Body care  # shown on the profile\n'
TIDY = f'phone_number: "{B}"\naccount: main\nabout: Orders\n'


def test_check_lists_the_files_that_would_change_exits_1_and_rewrites_nothing(project):
    messy = project.write_raw(f"{A}.yaml", MESSY)
    tidy = project.write_raw(f"{B}.yaml", TIDY)
    result = project.run("fmt", "--check")
    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines() == [
        f"would reformat profiles/{A}.yaml",
        "1 file(s) would be reformatted, 1 already canonical.",
    ]
    assert messy.read_text() == MESSY and tidy.read_text() == TIDY


def test_fmt_rewrites_in_canonical_form_then_check_passes(project):
    messy = project.write_raw(f"{A}.yaml", MESSY)
    result = project.run("fmt")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"reformatted profiles/{A}.yaml",
        "1 file(s) reformatted, 0 already canonical.",
    ]
    assert messy.read_text() == CANONICAL
    assert project.run("fmt", "--check").exit_code == 0
    assert sorted(os.listdir(messy.parent)) == [f"{A}.yaml"]  # no temporary file left behind


def test_a_file_that_does_not_load_is_named_with_line_and_column_and_left_alone(project):
    broken_text = f'phone_number: "{A}"\nabout: one\nabout: two\n'
    broken = project.write_raw(f"{A}.yaml", broken_text)
    messy = project.write_raw(f"{B}.yaml", MESSY.replace(A, B))
    result = project.run("fmt")
    assert_clean_failure(result)
    assert result.stderr.splitlines() == [
        f"profiles/{A}.yaml:3:1: duplicate key 'about' (first set on line 2)",
        "1 file(s) could not be formatted; they were left as they were.",
    ]
    assert broken.read_text() == broken_text
    assert messy.read_text() == CANONICAL.replace(A, B)  # the other files are still formatted


def test_a_multi_line_value_is_refused_rather_than_reformatted(project):
    text = f'phone_number: "{A}"\nemail: |\n  ops@example.org\n'
    path = project.write_raw(f"{A}.yaml", text)
    result = project.run("fmt", "--check")
    assert_clean_failure(result)
    assert f"profiles/{A}.yaml:2:8: email: ends with a line break (U+000A)" in result.stderr
    assert path.read_text() == text


def test_paths_name_files_and_folders_searched_recursively_and_nothing_else(project):
    named = project.write_raw(f"{A}.yaml", MESSY)
    nested = project.write_raw(f"team/deep/{B}.yaml", MESSY.replace(A, B))
    untouched = project.write_raw(f"other/{C}.yaml", MESSY.replace(A, C))
    result = project.run("fmt", f"profiles/{A}.yaml", "profiles/team")
    assert result.exit_code == 0, result.output
    assert named.read_text() == CANONICAL
    assert nested.read_text() == CANONICAL.replace(A, B)
    assert untouched.read_text() == MESSY.replace(A, C)


def test_a_path_that_does_not_exist_is_an_error(project):
    result = project.run("fmt", "profiles/missing.yaml")
    assert_clean_failure(result)
    assert "profiles/missing.yaml: no such file or folder" in result.stderr


def test_paths_need_no_reconciler_yaml(tmp_path):
    profile = tmp_path / "p.yaml"
    profile.write_text(MESSY)
    result = CliRunner().invoke(cli, ["fmt", str(profile)])
    assert result.exit_code == 0, result.output
    assert profile.read_text() == CANONICAL


def test_a_symlinked_profile_stays_a_link_and_file_modes_are_kept(project):
    target = project.write_raw(f"real/{A}.yaml", MESSY)
    target.chmod(0o640)
    link = project.root / "profiles" / "link.yaml"
    os.symlink(target, link)
    result = project.run("fmt", "profiles/link.yaml")
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and target.read_text() == CANONICAL
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_formatting_never_changes_what_plan_sees(project, sandbox):
    project.write_raw(f"{A}.yaml", MESSY)
    project.write_raw(
        f"{B}.yaml", f"{{phone_number: '{B}', account: main, about: 'yes', address: \"  12:30 \"}}\n"
    )
    assert project.run("apply", "--auto-approve").exit_code == 0
    assert project.run("fmt").exit_code == 0
    result = project.run("plan", "--detailed-exitcode")
    assert result.exit_code == 0, result.output


def test_the_shipped_profiles_are_canonical():
    profiles = Path(__file__).resolve().parent.parent / "profiles"
    result = CliRunner().invoke(cli, ["fmt", "--check", str(profiles)])
    assert result.exit_code == 0, result.output


def test_diff_prints_a_patch_of_what_would_change_exits_1_and_rewrites_nothing(project):
    messy = project.write_raw(f"{A}.yaml", MESSY)
    project.write_raw(f"{B}.yaml", TIDY)
    result = project.run("fmt", "--diff")
    assert result.exit_code == 1, result.output
    assert result.stdout == (
        f"--- a/profiles/{A}.yaml\n+++ b/profiles/{A}.yaml\n@@ -1,3 +1,3 @@\n"
        "-about: 'Body care'   # shown on the profile\n"
        f' phone_number: "{A}"\n account: main\n'
        "+about: Body care  # shown on the profile\n"
    )
    assert "1 file(s) would be reformatted, 1 already canonical." in result.stderr
    assert messy.read_text() == MESSY
    subprocess.run(["git", "apply", "-p1"], input=result.stdout, text=True, cwd=project.root, check=True)
    assert messy.read_text() == CANONICAL  # the patch is exactly what fmt writes
    clean = project.run("fmt", "--diff")
    assert clean.exit_code == 0 and clean.stdout == ""


def test_the_documented_profile_example_is_what_fmt_writes():
    """docs/reference/configuration.md shows a profile as fmt writes it: modeline first, fields in
    fmt's order, quoted only where needed."""
    from reconciler.fmt import format_text

    page = (Path(__file__).resolve().parent.parent / "docs" / "reference" / "configuration.md").read_text()
    example = page.split("## Profiles", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    assert example.startswith("# yaml-language-server: $schema=")
    assert format_text(example, "configuration.md") == example


def test_the_readmes_profile_example_is_what_fmt_writes():
    """The README's profile example is canonical too, and valid."""
    from reconciler.fmt import format_text

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    example = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert example.startswith("# yaml-language-server: $schema=")
    assert format_text(example, "README.md") == example
