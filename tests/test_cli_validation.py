"""Bad input: one clear message naming the file and line (or field), exit 1, nothing sent or written."""

from __future__ import annotations

import contextlib
import os
import threading

import pytest
import yaml

from conftest import NUMBERS, assert_clean_failure, put_bodies

A, B = NUMBERS[0], NUMBERS[1]
FILE_A = f"profiles/{A}.yaml"


def profile(text: str, name: str = f"{A}.yaml"):
    """A case whose profile file holds `text` (after a valid phone_number line unless it has one)."""
    if "phone_number" not in text:
        text = f'phone_number: "{A}"\n' + text
    return lambda project: project.write_raw(name, text)


def config_change(**changes):
    def setup(project):
        config = yaml.safe_load((project.root / "reconciler.yaml").read_text())
        for path, value in changes.items():
            node = config
            *parents, last = path.split("__")
            for key in parents:
                node = node[key]
            node[last] = value
        (project.root / "reconciler.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        project.write_profile(A, about="x")

    return setup


def symlink_outside(project):
    outside = project.root / "elsewhere.yaml"
    outside.write_text(f'phone_number: "{A}"\n')
    os.symlink(outside, project.root / "profiles" / "link.yaml")


def duplicate_numbers(project):
    project.write_raw("a.yaml", f'phone_number: "{A}"\nabout: one\n')
    project.write_raw("b.yaml", f'phone_number: "{A}"\nabout: two\n')


LAUGHS = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(6)
)

CASES = [
    (
        "about too long",
        profile(f"about: {'x' * 140}\n"),
        f"{FILE_A}:2:8: about: 140 characters, the limit is 139",
    ),
    (
        "address too long",
        profile(f"address: {'x' * 257}\n"),
        f"{FILE_A}:2:10: address: 257 characters, the limit is 256",
    ),
    (
        "description too long",
        profile(f"description: {'x' * 257}\n"),
        f"{FILE_A}:2:14: description: 257 characters",
    ),
    ("bad category", profile("category: BEAUTY_SPA\n"), "did you mean 'BEAUTY_SPA_SALON'?"),
    (
        "bad email",
        profile("email: support@@example\n"),
        f"{FILE_A}:2:8: email: 'support@@example' is not a valid email",
    ),
    (
        "incoming_url not http",
        profile("incoming_url: ftp://x.example\n"),
        "incoming_url: 'ftp://x.example' is not an http(s) URL",
    ),
    (
        "incoming_url on a v2 account",
        profile("incoming_url: https://x.example/hook\n"),
        "only accounts with api_version v1",
    ),
    (
        "phone not E.164",
        profile('phone_number: "14155550100"\n'),
        f"{FILE_A}:1:15: phone_number: '14155550100' is not an E.164",
    ),
    ("phone starting with 0", profile('phone_number: "+0415555010"\n'), "is not an E.164 number"),
    (
        "unknown key",
        profile("adress: 1 Market St\n"),
        f"{FILE_A}:2:1: unknown key 'adress' (did you mean 'address'?)",
    ),
    ("api key in a profile", profile("api_key: AXXXX3\n"), "API keys never go in files"),
    ("api key in reconciler.yaml", config_change(accounts__main__api_key="AXXXX3"), "reconciler.yaml:"),
    ("yaml syntax error", profile("about: [unclosed\n"), f"{FILE_A}:3:1: YAML syntax error"),
    (
        "duplicate key",
        profile("about: one\nabout: two\n"),
        f"{FILE_A}:3:1: duplicate key 'about' (first set on line 2)",
    ),
    (
        "same number in two files",
        duplicate_numbers,
        f"profiles/b.yaml:1:15: phone number {A} is also declared in profiles/a.yaml:1",
    ),
    (
        "unknown account",
        profile("account: mian\n"),
        f"{FILE_A}:2:10: account: unknown account 'mian' (did you mean 'main'?)",
    ),
    (
        "account missing with two accounts",
        profile("about: x\n"),
        "missing 'account': several accounts are configured",
    ),
    (
        "boolean where text is expected",
        profile("about: yes\n"),
        'about: expected text, got a boolean; write it in quotes ("yes")',
    ),
    ("number where text is expected", profile("address: 42\n"), "address: expected text, got a number"),
    (
        "http endpoint to a remote host",
        config_change(accounts__main__endpoint="http://api.in.kaleyra.io"),
        "use https://",
    ),
    (
        "unknown pod",
        config_change(accounts__main__pod="india"),
        "pod: 'india' is not one of the allowed values",
    ),
    (
        "unquoted waba_id",
        config_change(accounts__main__waba_id=766000000000001),
        "waba_id: expected text, got a number",
    ),
    (
        "not UTF-8",
        lambda p: p.write_raw(f"{A}.yaml", b'phone_number: "+1"\nabout: caf\xe9\n'),
        f"{FILE_A}:2: is not UTF-8",
    ),
    ("empty file", lambda p: p.write_raw(f"{A}.yaml", "# nothing here\n"), f"{FILE_A}: is empty"),
    ("two documents", profile("about: x\n---\nabout: y\n"), "more than one YAML document"),
    ("a list, not a mapping", lambda p: p.write_raw(f"{A}.yaml", "- a\n- b\n"), "must be a mapping"),
    (
        "missing phone_number",
        lambda p: p.write_raw(f"{A}.yaml", "about: x\n"),
        "missing required key 'phone_number'",
    ),
    (
        "symlink outside profiles_dir",
        symlink_outside,
        "profiles/link.yaml: is a symlink leading outside profiles_dir",
    ),
    ("file over 64 KiB", profile("# " + "x" * 70_000 + "\nabout: x\n"), "the limit is 65,536"),
    ("control character", profile('about: "bell\\a"\n'), f"{FILE_A}:2:8: about: control character U+0007"),
    ("python tag", profile("about: !!python/object/apply:os.system [ls]\n"), "is not allowed"),
    ("alias bomb", profile(LAUGHS), "expands to more than"),
    (
        "file named for another number",
        profile(f'phone_number: "{B}"\n'),
        f"phone_number is {B} but the file is named for {A}",
    ),
    ("tab indentation", profile("address:\n\tstreet: x\n"), f"{FILE_A}:3:1: YAML syntax error"),
    ("tab indentation hint", profile("address:\n\tstreet: x\n"), "indent with spaces, not tabs"),
    ("deep nesting", profile("about: " + "[" * 30 + "]" * 30 + "\n"), "nests deeper than 20 levels"),
]


@pytest.mark.parametrize(("setup", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_clear_error_and_changes_nothing(project, sandbox, setup, expected):
    if "account:" not in expected and "several accounts" not in expected:
        # Cases about one profile use a single-account config so `account` may be left out.
        config = yaml.safe_load((project.root / "reconciler.yaml").read_text())
        config["defaults"] = {"account": "main"}
        (project.root / "reconciler.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    setup(project)
    for command in (["validate"], ["plan"], ["apply", "--auto-approve"], ["drift"]):
        result = project.run(*command)
        assert_clean_failure(result)
        assert expected in result.stderr, f"{command}: {result.stderr}"
    assert put_bodies(sandbox) == []
    assert not project.state_path.parent.exists()


def test_every_problem_in_every_file_is_reported_at_once_sorted_by_file(project):
    project.write_raw("b.yaml", f'phone_number: "{B}"\naccount: main\nabout: {"x" * 140}\n')
    project.write_raw("a.yaml", f'phone_number: "{A}"\naccount: main\ncategory: NOPE\nadress: x\n')
    result = project.run("validate")
    assert_clean_failure(result)
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("profiles/a.yaml:3:11: category:")
    assert lines[1].startswith("profiles/a.yaml:4:1: unknown key 'adress'")
    assert lines[2].startswith("profiles/b.yaml:3:8: about: 140 characters")
    assert lines[3] == "3 errors found; nothing was changed."


def test_insecure_kaleyra_endpoint_variable_is_refused(project, sandbox):
    project.write_profile(A, about="x")
    result = project.run("apply", "--auto-approve", env={"KALEYRA_ENDPOINT": "http://10.1.2.3:8080"})
    assert_clean_failure(result)
    assert "KALEYRA_ENDPOINT" in result.stderr and "use https://" in result.stderr
    assert put_bodies(sandbox) == []


def test_a_byte_order_mark_is_fine(project):
    project.write_raw(f"{A}.yaml", "\ufeff" + f'phone_number: "{A}"\naccount: main\nabout: x\n')
    result = project.run("validate")
    assert result.exit_code == 0, result.output


def test_a_missing_config_file_is_a_clear_error(tmp_path):
    from click.testing import CliRunner

    from reconciler.cli import cli

    result = CliRunner().invoke(cli, ["--config", str(tmp_path / "nope.yaml"), "validate"])
    assert_clean_failure(result)
    assert "no such configuration file" in result.stderr


def test_a_config_that_is_a_folder_or_not_a_regular_file_is_named_as_such(tmp_path):
    from click.testing import CliRunner

    from reconciler.cli import cli

    folder = CliRunner().invoke(cli, ["--config", str(tmp_path), "validate"])
    assert_clean_failure(folder)
    assert f"{tmp_path}: is a folder, not a regular file" in folder.stderr
    assert "no such configuration file" not in folder.stderr
    device = CliRunner().invoke(cli, ["--config", "/dev/null", "validate"])
    assert_clean_failure(device)
    assert "/dev/null: is a device, not a regular file" in device.stderr
    assert "no such configuration file" not in device.stderr


def test_a_missing_config_in_an_empty_folder_says_to_run_init(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from reconciler.cli import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RECONCILER_CONFIG", raising=False)
    result = CliRunner().invoke(cli, ["validate"])
    assert_clean_failure(result)
    assert "reconciler.yaml: no such configuration file" in result.stderr
    assert "run `reconciler init` to create one" in result.stderr


def test_a_fifo_named_yaml_under_profiles_is_an_error_naming_it_not_a_hang(project):
    project.write_profile(A, about="x")
    fifo = project.root / "profiles" / "pipe.yaml"
    os.mkfifo(fifo)
    result = run_beside_fifo(project, fifo, "validate")
    assert_clean_failure(result)
    assert "profiles/pipe.yaml: is a FIFO (named pipe), not a regular file" in result.stderr


def test_a_fifo_as_the_config_or_the_state_file_is_refused_before_it_is_read(project):
    project.write_profile(A, about="x")
    config = project.root / "reconciler.yaml"
    fifo_config = project.root / "other.yaml"
    os.mkfifo(fifo_config)
    result = project.run("--config", str(fifo_config), "validate")
    assert_clean_failure(result)
    assert "other.yaml: is a FIFO (named pipe), not a regular file" in result.stderr
    assert config.exists()
    project.state_path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(project.state_path)
    planned = project.run("plan")
    assert_clean_failure(planned)
    assert f"{project.state_path}: is a FIFO (named pipe), not a regular file" in planned.stderr


def _open_and_close_for_writing(fifo) -> None:
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def run_beside_fifo(project, fifo, *args):
    """Run the command; should it block reading `fifo`, a writer that opens and closes it after 10 s
    ends the read, so the test fails instead of hanging."""
    unblock = threading.Timer(10, _open_and_close_for_writing, [fifo])
    unblock.start()
    try:
        return project.run(*args)
    finally:
        unblock.cancel()


def test_a_fifo_as_the_audit_log_is_refused_by_history_and_apply_without_waiting(project):
    project.write_profile(A, about="x")
    audit = project.root / ".reconciler" / "audit.jsonl"
    audit.parent.mkdir()
    os.mkfifo(audit)
    history = run_beside_fifo(project, audit, "history")
    assert_clean_failure(history)
    assert f"{audit}: is a FIFO (named pipe), not a regular file; it is not read" in history.stderr
    applied = project.run("apply", "--auto-approve")
    assert_clean_failure(applied)
    assert "is a FIFO (named pipe), not a regular file; it is not written" in applied.stderr
    assert "nothing was sent" in applied.stderr
