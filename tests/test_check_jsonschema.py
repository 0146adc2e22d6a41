"""The shipped schemas as a standard client reads them: check-jsonschema in its default mode (ECMA-262
regexes, unicode) loads them, accepts the shipped files, and rejects exactly what `validate` rejects.

Cases are written so that YAML 1.1 (PyYAML, ours) and YAML 1.2 (ruamel, check-jsonschema's) read them
alike: `about: yes` is a boolean to us and text to check-jsonschema, a difference of YAML, not schema.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from reconciler.cli import cli

from conftest import NUMBERS, Project

REPO = Path(__file__).resolve().parent.parent
PROFILE_SCHEMA = REPO / "schemas" / "profile.schema.json"
CONFIG_SCHEMA = REPO / "schemas" / "config.schema.json"

# (case, profile lines after phone_number, valid?). incoming_url cases use the v1 account, because
# incoming_url on a v2 account is a rule across files, which no schema can see.
PROFILE_CASES = [
    ("email block scalar", "email: |\n  ops@example.org\n", False),
    ("email folded block", "email: >\n  ops@example.org\n", False),
    ("about block without final newline but two lines", "about: |-\n  one\n  two\n", False),
    ("about LF inside", 'about: "one\\ntwo"\n', False),
    ("about CR", 'about: "one\\rtwo"\n', False),
    ("about CRLF at the end", 'about: "one\\r\\n"\n', False),
    ("about NEL", 'about: "one\\x85two"\n', False),
    ("address line separator", 'address: "1 Market St\\u2028SF"\n', False),
    ("description paragraph separator", 'description: "care\\u2029"\n', False),
    ("about vertical tab", 'about: "a\\x0bb"\n', False),
    ("about escape character", 'about: "a\\x1b[2Jb"\n', False),
    ("about tab", 'about: "a\\tb"\n', False),
    ("email with a space", 'email: "a b@example.org"\n', False),
    ("email with a no-break space", 'email: "a\\u00a0b@example.org"\n', False),
    ("email with a byte-order mark", 'email: "a\\ufeffb@example.org"\n', False),
    ("email with two at signs", "email: a@@example.org\n", False),
    ("email with a quote", "email: 'a\"b@example.org'\n", False),
    ("incoming_url ending in a newline", 'account: legacy\nincoming_url: "https://x.example/h\\n"\n', False),
    ("incoming_url with a space", 'account: legacy\nincoming_url: "https://x.example/a b"\n', False),
    ("incoming_url not http", "account: legacy\nincoming_url: ftp://x.example\n", False),
    ("callback id ending in a newline", 'callback_profile_id: "abc\\n"\n', False),
    ("callback id too long", f"callback_profile_id: {'a' * 65}\n", False),
    ("about too long", f"about: {'x' * 140}\n", False),
    ("category unknown", "category: SPA\n", False),
    ("unknown key", "adress: x\n", False),
    ("account name ending in a newline", 'account: "main\\n"\n', False),
    ("about with spaces of every kind", 'about: "a\\u00a0b\\u3000c\\ufeffd "\n', True),
    ("about with emoji and accents", 'about: "Caf\\u00e9 \\U0001F600"\n', True),
    ("address with a hash and a colon", 'address: "No. 5 # rear: door"\n', True),
    ("a plain scalar over two lines folds into one", "about: one\n  two\n", True),
    ("email cleared", 'email: ""\n', True),
    ("incoming_url with a query", "account: legacy\nincoming_url: https://x.example/h?a=1#f\n", True),
    ("everything valid", "email: ops@example.org\ncategory: OTHER\ncallback_profile_id: a-b_c\n", True),
]
PHONE_CASES = [
    ("phone ending in a newline", '"+447700900999\\n"', False),
    ("phone ending in CR", '"+447700900999\\r"', False),
    ("phone in a block scalar", "|\n  +447700900999", False),
    ("phone with a leading zero", '"+0447700900"', False),
    ("phone valid", '"+447700900999"', True),
]


def profile_texts() -> dict[str, tuple[str, bool]]:
    texts = {}
    for index, (case, lines, valid) in enumerate(PROFILE_CASES):
        texts[case] = (f'phone_number: "{NUMBERS[index % len(NUMBERS)][:-2]}{index:02d}"\n{lines}', valid)
    for case, number, valid in PHONE_CASES:
        texts[case] = (f"phone_number: {number}\n", valid)
    return texts


def good_config() -> dict:
    return {"profiles_dir": "profiles", "accounts": {"main": {"sid": "HX1", "waba_id": "7", "pod": "in"}}}


# (case, reconciler.yaml text, valid?)
CONFIG_CASES = [
    ("valid", yaml.safe_dump(good_config()), True),
    (
        "profiles_dir in a block scalar",
        "profiles_dir: |\n  profiles\naccounts: {main: {sid: HX1, waba_id: '7', pod: in}}\n",
        False,
    ),
    (
        "state path with a line separator",
        'state: {path: "s\\u2028.json"}\naccounts: {main: {sid: HX1, waba_id: "7", pod: in}}\n',
        False,
    ),
    ("sid ending in a newline", 'accounts: {main: {sid: "HX1\\n", waba_id: "7", pod: in}}\n', False),
    ("waba_id ending in a newline", 'accounts: {main: {sid: HX1, waba_id: "7\\n", pod: in}}\n', False),
    ("account name ending in a newline", 'accounts: {"main\\n": {sid: HX1, waba_id: "7", pod: in}}\n', False),
    (
        "api_key_env ending in a newline",
        'accounts: {main: {sid: HX1, waba_id: "7", pod: in, api_key_env: "K\\n"}}\n',
        False,
    ),
    (
        "endpoint ending in a newline",
        'accounts: {main: {sid: HX1, waba_id: "7", pod: in, endpoint: "https://x.example\\n"}}\n',
        False,
    ),
    ("pod ending in a newline", 'accounts: {main: {sid: HX1, waba_id: "7", pod: "in\\n"}}\n', False),
    (
        "defaults about with a newline",
        'defaults: {about: "a\\nb"}\naccounts: {main: {sid: HX1, waba_id: "7", pod: in}}\n',
        False,
    ),
    (
        "defaults email block",
        "defaults:\n  email: |\n    ops@example.org\naccounts: {main: {sid: HX1, waba_id: '7', pod: in}}\n",
        False,
    ),
]


def check_jsonschema(*args: str | Path) -> subprocess.CompletedProcess:
    """The check-jsonschema command line, as installed with the test extras, in its default mode."""
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", *map(str, args)], capture_output=True, text=True
    )


def check_jsonschema_failures(schema: Path, files: list[Path]) -> set[str]:
    """The names of the files check-jsonschema rejects."""
    result = check_jsonschema("--output-format", "json", "--schemafile", schema, *files)
    report = json.loads(result.stdout)
    assert not report.get("parse_errors"), report["parse_errors"]
    assert result.returncode == (1 if report["errors"] else 0), result.stderr
    return {Path(error["filename"]).name for error in report["errors"]}


@pytest.fixture(scope="module")
def profile_verdicts(tmp_path_factory) -> dict[str, tuple[bool, bool]]:
    """Per case: (check-jsonschema accepts it, `reconciler validate` accepts it)."""
    project = Project(tmp_path_factory.mktemp("agreement"), "http://127.0.0.1:9")
    project.write_config(defaults={"account": "main"})
    files = {}
    for index, (case, (text, _valid)) in enumerate(profile_texts().items()):
        files[case] = project.write_raw(f"case-{index:02d}.yaml", text)
    rejected_by_them = check_jsonschema_failures(PROFILE_SCHEMA, list(files.values()))
    result = project.run("validate")
    assert "Traceback" not in result.output + result.stderr
    return {
        case: (path.name not in rejected_by_them, f"profiles/{path.name}:" not in result.stderr)
        for case, path in files.items()
    }


@pytest.mark.parametrize(
    ("case", "valid"), [(case, valid) for case, (_text, valid) in profile_texts().items()]
)
def test_check_jsonschema_and_validate_agree_on_each_profile(profile_verdicts, case, valid):
    assert profile_verdicts[case] == (valid, valid)


@pytest.mark.parametrize(("case", "text", "valid"), CONFIG_CASES, ids=[case[0] for case in CONFIG_CASES])
def test_check_jsonschema_and_validate_agree_on_each_config(tmp_path, case, text, valid):
    (tmp_path / "profiles").mkdir()
    config = tmp_path / "reconciler.yaml"
    config.write_text(text)
    theirs = check_jsonschema_failures(CONFIG_SCHEMA, [config])
    ours = CliRunner().invoke(cli, ["--config", str(config), "validate"])
    assert "Traceback" not in ours.output + ours.stderr
    assert (not theirs, ours.exit_code == 0) == (valid, valid), ours.stderr
    if not valid:
        assert "reconciler.yaml:" in ours.stderr


def test_the_shipped_schemas_load_in_check_jsonschemas_default_mode():
    result = check_jsonschema("--check-metaschema", PROFILE_SCHEMA, CONFIG_SCHEMA)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_shipped_profiles_and_config_pass_check_jsonschema():
    profiles = sorted((REPO / "profiles").rglob("*.yaml"))
    assert len(profiles) >= 5
    assert check_jsonschema_failures(PROFILE_SCHEMA, profiles) == set()
    assert check_jsonschema_failures(CONFIG_SCHEMA, [REPO / "reconciler.yaml"]) == set()


def test_the_issues_examples_are_refused_naming_file_line_column_and_field(tmp_path):
    project = Project(tmp_path, "http://127.0.0.1:9")
    project.write_config(defaults={"account": "main"})
    project.write_raw("ops.yaml", f'phone_number: "{NUMBERS[0]}"\nemail: |\n  ops@example.org\n')
    project.write_raw("uk-1.yaml", 'phone_number: "+447700900999\\n"\n')
    project.write_raw("uk-2.yaml", 'phone_number: "+447700900999"\n')
    result = project.run("validate")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "profiles/ops.yaml:2:8: email: ends with a line break (U+000A); every value is a single line "
        "(a | or > block adds one: write the value on the key's line, quoted if needed)",
        "profiles/uk-1.yaml:1:15: phone_number: ends with a line break (U+000A); every value is a single "
        "line (a | or > block adds one: write the value on the key's line, quoted if needed)",
        "2 errors found; nothing was changed.",
    ]


NUMBER_LOOKALIKES = [
    "1_0e5",
    "0o1_7",
    "1_000.5e3",
    "._1",
    "-_1",
    "1.0_e5",
    "0o7_",
    "._",
    "+_",
    "0o_",
    "1e3",
    ".inf",
]


def test_fmt_output_reads_as_text_to_check_jsonschema_too(tmp_path):
    """fmt quotes whatever a YAML 1.2 reader might take for a number, including ruamel's underscores."""
    project = Project(tmp_path, "http://127.0.0.1:9")
    files = []
    for index, value in enumerate(NUMBER_LOOKALIKES):
        files.append(
            project.write_raw(f"p{index}.yaml", f"phone_number: '{NUMBERS[index]}'\nabout: '{value}'\n")
        )
    assert project.run("fmt").exit_code == 0
    for path, value in zip(files, NUMBER_LOOKALIKES, strict=True):
        assert yaml.safe_load(path.read_text())["about"] == value  # the value did not change
    assert check_jsonschema_failures(PROFILE_SCHEMA, files) == set()
