"""The API key never appears in any output or file, whatever happens during a run."""

from __future__ import annotations

from conftest import API_KEY, NUMBERS, put_bodies


def test_the_api_key_appears_in_no_output_and_no_file(project, sandbox, tmp_path):
    project.write_profile(NUMBERS[0], about="x")
    project.write_profile("+14155559999", about="unknown number: fails with E112")
    plan_file = project.root / "saved-plan.json"
    outputs = []
    for args in (
        ["validate"],
        ["plan", "--out", str(plan_file)],
        ["--verbose", "apply", str(plan_file)],
        ["plan", "--format", "json"],
        ["plan", "--format", "markdown"],
        ["apply", "--auto-approve", "--verbose", "--format", "json"],
        ["drift"],
        ["history"],
        ["state", "list", "--format", "json"],
        ["state", "show", NUMBERS[0]],
    ):
        result = project.run(*args)
        outputs.append(result.output + result.stderr)
    sandbox.sandbox.api_key = "another-key"  # now every request fails with RBC001
    project.write_profile(NUMBERS[0], about="y")
    failed = project.run("--verbose", "apply", "--auto-approve")
    assert failed.exit_code == 1 and "RBC001" in failed.output
    outputs.append(failed.output + failed.stderr)

    assert "PUT http" in "".join(outputs)  # --verbose really logged requests
    for text in outputs:
        assert API_KEY not in text
    written = [path for path in project.root.rglob("*") if path.is_file()]
    assert any(path.name == "audit.jsonl" for path in written) and any(
        path.name == "state.json" for path in written
    )
    for path in written:
        assert API_KEY.encode() not in path.read_bytes(), path


def test_a_key_embedded_in_an_error_message_is_redacted(project, monkeypatch):
    """Even if some library put the key into an exception text, what we print is redacted."""
    from reconciler.secrets import redact

    monkeypatch.setenv("KALEYRA_API_KEY", API_KEY)
    assert (
        redact(f"ConnectError: headers {{'api-key': '{API_KEY}'}}")
        == "ConnectError: headers {'api-key': '[redacted]'}"
    )


def test_an_unexpected_error_is_one_redacted_line_not_a_traceback(project, monkeypatch):
    import reconciler.cli.common

    def explode(*args, **kwargs):
        raise RuntimeError(f"boom with {API_KEY} inside")

    monkeypatch.setattr(reconciler.cli.common, "load_profiles", explode)
    result = project.run("plan")
    assert result.exit_code == 1
    assert "internal error: RuntimeError: boom with [redacted] inside" in result.stderr
    assert "Traceback" not in result.stderr and API_KEY not in result.stderr


def test_a_key_with_a_trailing_newline_is_refused_naming_the_variable_never_the_value(project, sandbox):
    project.write_profile(NUMBERS[0], about="x")
    project.write_profile(NUMBERS[1], account="legacy", about="y")
    result = project.run(
        "apply",
        "--auto-approve",
        env={"KALEYRA_API_KEY": API_KEY + "\n", "KALEYRA_API_KEY_OTHER": "bad key with spaces"},
    )
    assert result.exit_code == 1
    # Both problems at once, each naming its variable, neither quoting the value.
    assert "KALEYRA_API_KEY holds whitespace" in result.stderr
    assert "KALEYRA_API_KEY_OTHER holds whitespace" in result.stderr
    assert API_KEY not in result.output + result.stderr and "bad key" not in result.stderr
    assert put_bodies(sandbox) == [] and not project.state_path.exists()


def test_every_missing_key_is_reported_at_once(project, sandbox):
    project.write_profile(NUMBERS[0], about="x")
    project.write_profile(NUMBERS[1], account="legacy", about="y")
    result = project.run("apply", "--auto-approve", env={"KALEYRA_API_KEY": "", "KALEYRA_API_KEY_OTHER": ""})
    assert result.exit_code == 1
    assert "KALEYRA_API_KEY is not set" in result.stderr
    assert "KALEYRA_API_KEY_OTHER is not set" in result.stderr
    assert put_bodies(sandbox) == []


def test_a_key_is_redacted_by_value_whatever_its_variable_is_called(monkeypatch):
    from reconciler import secrets

    key = "Zq7-unusual-Credential-Value"
    secrets.remember(key)
    assert secrets.redact(f"server said: bad key {key}!") == "server said: bad key [redacted]!"
    # The JSON-escaped form of a key with a quote in it is cut too.
    secrets.remember('we"ird-key-123')
    assert "ird-key" not in secrets.redact('{"message": "we\\"ird-key-123"}')


def test_every_run_of_twelve_or_more_characters_of_a_key_is_cut_in_any_case():
    from reconciler import secrets

    key = "Qm4-fragment-Test-Key-8812"
    secrets.remember(key)
    assert secrets.redact(f"bad key {key[:-2]}!") == "bad key [redacted]!"
    assert secrets.redact(f"<{key[5:].upper()}>") == "<[redacted]>"  # cut whole, however long the run
    assert secrets.redact(f"{key[:12]}+{key[-12:].lower()}") == "[redacted]+[redacted]"
    assert secrets.redact(f"({key[3:14]})") == f"({key[3:14]})"  # 11 characters say little: kept
    assert secrets.holds_key(f"call us at {key[1:13].swapcase()}")
