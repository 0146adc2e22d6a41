"""reconciler.yaml: loopback-only http, absolute paths, defaults."""

from __future__ import annotations

import os

import pytest

from reconciler.config import display_path, insecure_endpoint, load_config
from reconciler.errors import ValidationFailed


@pytest.mark.parametrize(
    ("url", "insecure"),
    [
        ("https://api.in.kaleyra.io", False),
        ("http://127.0.0.1:8080", False),
        ("http://127.8.9.10", False),
        ("http://localhost:9", False),
        ("http://[::1]:8080", False),
        ("http://10.0.0.5:8080", True),
        ("http://api.in.kaleyra.io", True),
        ("http://127.0.0.1.evil.example", True),
        ("http://localhost.evil.example", True),
    ],
)
def test_http_is_only_allowed_to_loopback_addresses(url, insecure):
    assert insecure_endpoint(url) is insecure


def test_paths_in_the_config_are_absolute_and_relative_to_its_folder(tmp_path, monkeypatch):
    project = tmp_path / "repo"
    project.mkdir()
    (project / "reconciler.yaml").write_text(
        "profiles_dir: p\nstate:\n  path: s/state.json\naccounts:\n  a: {sid: HX1, waba_id: '1', pod: in}\n"
    )
    monkeypatch.chdir(tmp_path)
    config = load_config("repo/reconciler.yaml")
    assert config.profiles_dir == project / "p" and config.profiles_dir.is_absolute()
    assert config.state_path == project / "s" / "state.json"
    assert config.audit_path == project / "s" / "audit.jsonl"
    monkeypatch.chdir(project)
    assert display_path(config.state_path) == os.path.join("s", "state.json")


def test_an_unknown_default_account_is_named_with_a_hint(tmp_path, monkeypatch):
    (tmp_path / "reconciler.yaml").write_text(
        "defaults: {account: mian}\naccounts:\n  main: {sid: HX1, waba_id: '1', pod: in}\n"
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationFailed) as failed:
        load_config()
    assert str(failed.value.problems[0]) == (
        "reconciler.yaml:1:21: unknown account 'mian' (did you mean 'main'?)"
    )


def test_a_config_with_hundreds_of_accounts_loads(tmp_path, monkeypatch):
    accounts = "".join(
        f"  a{index}: {{sid: HX{index}, waba_id: '{index}', pod: in}}\n" for index in range(600)
    )
    (tmp_path / "reconciler.yaml").write_text("accounts:\n" + accounts)
    monkeypatch.chdir(tmp_path)
    assert len(load_config().accounts) == 600


def test_text_where_a_number_belongs_is_called_text_not_a_date(tmp_path, monkeypatch):
    (tmp_path / "reconciler.yaml").write_text(
        "retry:\n  timeout_s: 1e309\naccounts:\n  main: {sid: HX1, waba_id: '1', pod: in}\n"
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationFailed) as failed:
        load_config()
    assert (
        str(failed.value.problems[0])
        == "reconciler.yaml:2:14: timeout_s: expected a number, got text ('1e309')"
    )
