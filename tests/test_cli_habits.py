"""What a Terraform or octoDNS user reaches for: `show`, `validate --format json`, `--no-color`,
completion, `history --since/--limit`, single-dash habits, help with no arguments, `--verbose` only
where requests are sent, and errors that list what is allowed."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import cli
from reconciler.schema import CATEGORIES

from conftest import NUMBERS, assert_clean_failure

ROOT = Path(__file__).resolve().parent.parent
A, B = NUMBERS[0], NUMBERS[1]


def reconciler(*args: str, cwd: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from reconciler.cli import main; main()", *args],
        cwd=cwd,
        env={**os.environ, **(extra_env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


# --- help, usage habits, --verbose -----------------------------------------------------------------


@pytest.mark.parametrize("args", [[], ["state"]])
def test_a_group_with_no_arguments_prints_its_help_and_exits_0(tmp_path, args):
    result = reconciler(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(" ".join(["Usage: reconciler", *args, "[OPTIONS] COMMAND"]))
    assert "Commands:" in result.stdout and result.stderr == ""


@pytest.mark.parametrize(
    ("args", "meant"),
    [
        (["plan", "-o", "plan.out"], "--out"),
        (["plan", "-out=plan.out"], "--out"),
        (["plan", "-target=+14155550100"], "--target"),
        (["plan", "--format", "json", "-exclude", "+1415*"], "--exclude"),
        (["apply", "-auto-approve"], "--auto-approve"),
    ],
)
def test_single_dash_habits_get_one_clear_did_you_mean(project, args, meant):
    result = project.run(*args)
    assert_clean_failure(result)
    assert f"did you mean {meant}?" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (project.root / "plan.out").exists()


def test_a_single_dash_word_that_is_no_option_keeps_clicks_own_error(project):
    result = project.run("apply", "-o", "plan.out")  # apply has no --out
    assert_clean_failure(result)
    assert "No such option" in result.stderr and "did you mean" not in result.stderr


@pytest.mark.parametrize("command", ["validate", "plan", "apply", "sandbox"])
def test_verbose_is_offered_where_requests_are_sent(command):
    assert "--verbose" in CliRunner().invoke(cli, [command, "--help"]).stdout


@pytest.mark.parametrize(
    "command", [["drift"], ["import"], ["history"], ["state", "list"], ["show", "x"], ["fmt"], ["init"]]
)
def test_verbose_is_refused_where_nothing_is_sent(project, command):
    assert "--verbose" not in CliRunner().invoke(cli, [*command, "--help"]).stdout
    after = project.run(*command, "--verbose")
    assert_clean_failure(after)
    assert "--verbose" in after.stderr
    before = project.run("--verbose", *command)
    assert_clean_failure(before)
    assert "sends none" in before.stderr


def test_verbose_before_the_command_still_logs_requests(project, sandbox):
    project.write_profile(A, about="hello")
    result = project.run("--verbose", "apply", "--auto-approve")
    assert result.exit_code == 0, result.output
    assert "PUT http" in result.stderr


# --- colour ----------------------------------------------------------------------------------------


def coloured_plan(project, *args: str, no_color_env: str | None = None) -> str:
    old = Path.cwd()
    os.chdir(project.root)
    try:
        env = {**project.env, "NO_COLOR": no_color_env}
        result = CliRunner().invoke(cli, list(args), env=env, color=True)  # as on a terminal
    finally:
        os.chdir(old)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_no_color_anywhere_on_the_line_or_NO_COLOR_turns_colour_off(project):
    project.write_profile(A, about="hello")
    assert "\x1b[" in coloured_plan(project, "plan")  # a terminal gets colour
    assert "\x1b[" not in coloured_plan(project, "--no-color", "plan")
    assert "\x1b[" not in coloured_plan(project, "plan", "--no-color")
    assert "\x1b[" not in coloured_plan(project, "plan", no_color_env="1")


# --- errors that say what is allowed ---------------------------------------------------------------


def test_an_unknown_category_lists_the_17_valid_ones(project):
    project.write_profile(A, category="BEAUTY")
    result = project.run("validate")
    assert_clean_failure(result)
    line = next(line for line in result.stderr.splitlines() if "category" in line)
    assert len(CATEGORIES) == 17
    assert line.endswith(": " + ", ".join(CATEGORIES)), line


@pytest.mark.parametrize("written", ["1", '"1"', "2.0", "[v1]"])
def test_an_api_version_that_is_not_v1_or_v2_is_one_error_saying_so(project, written):
    config = (project.root / "reconciler.yaml").read_text()
    (project.root / "reconciler.yaml").write_text(
        config.replace("api_version: v2", f"api_version: {written}")
    )
    result = project.run("validate")
    assert_clean_failure(result)
    errors = [line for line in result.stderr.splitlines() if "api_version" in line]
    assert len(errors) == 1, result.stderr
    assert re.fullmatch(
        r"reconciler\.yaml:\d+:\d+: api_version: .+ is not an API version; write v1 or v2", errors[0]
    )


# --- show ------------------------------------------------------------------------------------------


def test_show_renders_a_saved_plan_as_plan_did(project):
    project.write_profile(A, about="hello")
    project.write_profile(B, about="bye")
    planned = project.run("plan", "--out", "plan.json")
    assert planned.exit_code == 0
    (project.root / "profiles" / f"{B}.yaml").unlink()  # show reads only the file, plans nothing
    shown = project.run("show", "plan.json")
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == planned.stdout
    document = json.loads(project.run("show", "plan.json", "--format", "json").stdout)
    assert document["format_version"] == "1.1"
    assert [change["phone_number"] for change in document["changes"]] == [A, B]
    assert document["summary"]["create"] == 2
    markdown = project.run("show", "plan.json", "--format", "markdown").stdout
    assert B in markdown and document["checksum"] in markdown


@pytest.mark.parametrize(
    ("name", "content", "said"),
    [
        ("reconciler.yaml", None, "not a saved plan: not JSON"),
        ("state.json", '{"lineage": "x", "serial": 1, "numbers": {}}', "not a saved plan"),
        ("plan.json", "[1, 2]", "not a saved plan"),
    ],
)
def test_show_refuses_a_file_that_is_not_a_plan_clearly(project, name, content, said):
    if content is not None:
        (project.root / name).write_text(content)
    result = project.run("show", name)
    assert_clean_failure(result)
    assert result.stderr.startswith(f"error: {name}: {said}"), result.stderr
    assert result.stdout == ""


def test_show_refuses_an_edited_plan(project):
    project.write_profile(A, about="hello")
    project.run("plan", "--out", "plan.json")
    edited = (project.root / "plan.json").read_text().replace('"hello"', '"HELLO"')
    (project.root / "plan.json").write_text(edited)
    result = project.run("show", "plan.json")
    assert_clean_failure(result)
    assert "edited" in result.stderr


# --- validate --format json ------------------------------------------------------------------------


def test_validate_json_of_a_valid_project(project):
    project.write_profile(A, about="hello")
    result = project.run("validate", "--format", "json")
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document == {"format_version": "1.0", "valid": True, "errors": [], "accounts": 2, "profiles": 1}


def test_validate_json_lists_each_problem_with_file_and_line_and_exits_1(project):
    project.write_profile(A, about="hello", email="not-an-email")
    project.write_raw("bad.yaml", "phone_number: '+14155550199'\ncolour: red\n")
    result = project.run("validate", "--format", "json")
    assert result.exit_code == 1
    assert result.stderr == ""
    document = json.loads(result.stdout)  # stdout is the one document, nothing else
    assert document["format_version"] == "1.0" and document["valid"] is False
    by_file = {(error["file"], error["line"]): error["message"] for error in document["errors"]}
    assert by_file[(f"profiles/{A}.yaml", 4)].startswith("email: 'not-an-email' is not a valid email")
    assert "colour" in by_file[("profiles/bad.yaml", 2)]
    assert all(set(error) >= {"file", "line", "message"} for error in document["errors"])


def test_validate_json_without_a_config_is_still_one_document(tmp_path):
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        result = CliRunner().invoke(cli, ["validate", "--format", "json"])
    finally:
        os.chdir(old)
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["valid"] is False
    assert (
        document["errors"][0]["file"] is None
        and "no such configuration file" in document["errors"][0]["message"]
    )


# --- history --since / --limit ---------------------------------------------------------------------


def write_history(project, ages_in_hours: list[float]) -> list[str]:
    now = datetime.now(UTC)
    times = [(now - timedelta(hours=age)).strftime("%Y-%m-%dT%H:%M:%SZ") for age in ages_in_hours]
    log = project.root / ".reconciler" / "audit.jsonl"
    log.parent.mkdir(exist_ok=True)
    records = [
        {"time": time, "phone_number": A, "account": "main", "action": "update", "result": "WA200",
         "message": f"record {index}", "fields": {"about": {"old": None, "new": str(index)}}, "by": {"actor": "me"}}
        for index, time in enumerate(times)
    ]  # fmt: skip
    log.write_text("".join(json.dumps(record) + "\n" for record in records))
    return times


def history_messages(project, *args: str) -> list[str]:
    result = project.run("history", "--format", "json", *args)
    assert result.exit_code == 0, result.output
    return [record["message"] for record in json.loads(result.stdout)]


def test_history_since_a_duration_or_a_date_and_limit_keep_the_newest(project):
    times = write_history(project, [24 * 40, 24 * 3, 5, 1])
    assert history_messages(project) == ["record 0", "record 1", "record 2", "record 3"]
    assert history_messages(project, "--since", "7d") == ["record 1", "record 2", "record 3"]
    assert history_messages(project, "--since", "6h") == ["record 2", "record 3"]
    assert history_messages(project, "--since", "90m") == ["record 3"]
    assert history_messages(project, "--since", times[1]) == ["record 1", "record 2", "record 3"]
    since_date = (datetime.now(UTC) - timedelta(days=10)).strftime("%Y-%m-%d")
    assert history_messages(project, "--since", since_date) == ["record 1", "record 2", "record 3"]
    assert history_messages(project, "--limit", "2") == ["record 2", "record 3"]
    assert history_messages(project, "--since", "7d", "--limit", "1") == ["record 3"]
    text = project.run("history", "--limit", "1")
    assert "record 3" in text.stdout and "record 2" not in text.stdout


def test_history_since_after_every_record_says_so_not_that_there_is_none(project):
    write_history(project, [24 * 3, 1])
    result = project.run("history", "--since", "2030-01-01")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "No history since 2030-01-01 00:00:00 UTC; 2 earlier records "
        "(`reconciler history` without --since shows them).\n"
    )
    other = project.run("history", NUMBERS[5])
    assert other.stdout == f"No history for {NUMBERS[5]} yet.\n"
    (project.root / ".reconciler" / "audit.jsonl").unlink()
    assert project.run("history", "--since", "2030-01-01").stdout == "No history yet.\n"


@pytest.mark.parametrize("since", ["99999999d", "999999w", "1" + "0" * 40 + "m"])
def test_history_since_a_duration_before_the_calendar_begins_means_from_the_start(project, since):
    write_history(project, [24 * 40, 1])
    assert history_messages(project, "--since", since) == ["record 0", "record 1"]


@pytest.mark.parametrize(
    ("args", "said"), [(["--since", "yesterday"], "neither a date"), (["--limit", "0"], "--limit")]
)
def test_history_refuses_a_bad_since_or_limit(project, args, said):
    result = project.run("history", *args)
    assert_clean_failure(result)
    assert said in result.stderr


# --- completion ------------------------------------------------------------------------------------


def complete(project, words: str, extra_env: dict[str, str] | None = None) -> list[str]:
    env = {
        "_RECONCILER_COMPLETE": "bash_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split(" ")) - 1),
    }
    result = reconciler(cwd=project.root, extra_env={**env, **(extra_env or {})})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return [line.split(",", 1)[1] for line in result.stdout.splitlines() if line]


def test_completion_offers_account_names_and_phone_numbers(project):
    project.write_profile(A, about="hello")
    project.write_profile(B, account="legacy", about="hello")
    assert complete(project, "reconciler plan --target ") == ["legacy", "main", A, B]
    assert complete(project, "reconciler apply --exclude le") == ["legacy"]
    assert complete(project, f"reconciler state show {A[:-1]}") == [A, B]
    assert complete(project, f"reconciler history {A[1:]}") == [A]  # typed without the +


def test_completion_is_quiet_when_the_project_does_not_load(project):
    project.write_profile(A, about="hello")
    project.write_raw("broken.yaml", "phone_number: [\n")
    assert complete(project, "reconciler plan --target ") == ["legacy", "main", A]  # file names still help
    (project.root / "reconciler.yaml").write_text("accounts: [\n")
    assert complete(project, "reconciler plan --target ") == []


# --- the sandbox -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_sandbox_help_example_works_as_written(tmp_path):
    """The example in `reconciler sandbox --help`, run in the shipped example (only the port differs,
    as 8080 may be taken on the machine running the tests)."""
    shutil.copy(ROOT / "reconciler.yaml", tmp_path)
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    help_text = CliRunner().invoke(cli, ["sandbox", "--help"]).stdout
    lines = help_text.split("Example", 1)[1].splitlines()[1:]
    example = [line.strip() for line in lines[: next(i for i, line in enumerate(lines) if not line.strip())]]
    assert example[0].startswith("reconciler sandbox") and example[-1].startswith("reconciler apply")
    port = str(free_port())
    script = "\n".join(line.replace("8080", port) for line in example)
    bin_dir = Path(sys.executable).parent  # the `reconciler` of the environment running the tests
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KALEYRA_", "RECONCILER_"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        ["bash", "-c", f"trap 'kill $(jobs -p) 2>/dev/null' EXIT\nset -e\n{script}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 applied" in result.stdout or "Applied 5" in result.stdout, result.stdout
    assert "provisioned 2 account(s) and 5 number(s)" in result.stderr


def test_the_sandbox_says_what_it_provisioned_when_it_starts(project):
    project.write_profile(A, about="hello")
    project.write_profile(B, account="legacy", about="hello")
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "sandbox", "--port", "0"],
        cwd=project.root,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stderr.readline()
    finally:
        process.terminate()
        process.wait()
    assert line.startswith("Kaleyra sandbox: provisioned 2 account(s) and 2 number(s) from reconciler.yaml")
    assert "listening on http://127.0.0.1:" in line
