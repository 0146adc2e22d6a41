"""Fixtures: a small reconciler project in tmp_path and a sandbox on a real loopback socket."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from reconciler.cli import cli
from reconciler.sandbox import Sandbox, SandboxAccount, serve_in_thread
from reconciler.state import StateStore

API_KEY = "tEsT-KeY-9f8e7d6c5b4a"  # distinctive, so a leak anywhere is found by a plain search
SID, WABA = "HXTEST0000000001", "766000000000001"
OTHER_SID, OTHER_WABA = "HXTEST0000000002", "766000000000002"
NUMBERS = [f"+1415555{index:04d}" for index in range(100, 120)]


class Project:
    """A reconciler project on disk, driven through the CLI in-process."""

    def __init__(self, root: Path, endpoint: str):
        self.root = root
        self.endpoint = endpoint
        self.env = {"KALEYRA_API_KEY": API_KEY, "KALEYRA_API_KEY_OTHER": API_KEY + "-other", "NO_COLOR": "1"}
        self.write_config()

    def write_config(self, **extra: Any) -> None:
        config: dict[str, Any] = {
            "profiles_dir": "profiles",
            "retry": {"attempts": 3, "backoff_base_s": 0.01, "backoff_max_s": 0.05, "deadline_s": 10},
            "accounts": {
                "main": {
                    "sid": SID,
                    "waba_id": WABA,
                    "pod": "in",
                    "api_version": "v2",
                    "endpoint": self.endpoint,
                },
                "legacy": {
                    "sid": OTHER_SID,
                    "waba_id": OTHER_WABA,
                    "pod": "na",
                    "api_version": "v1",
                    "api_key_env": "KALEYRA_API_KEY_OTHER",
                    "endpoint": self.endpoint,
                },
            },
        }
        config.update(extra)
        (self.root / "reconciler.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        (self.root / "profiles").mkdir(exist_ok=True)

    def profile_path(self, phone_number: str) -> Path:
        return self.root / "profiles" / f"{phone_number}.yaml"

    def write_profile(self, phone_number: str, account: str = "main", **fields: str) -> Path:
        path = self.profile_path(phone_number)
        path.write_text(
            yaml.safe_dump({"phone_number": phone_number, "account": account, **fields}, sort_keys=False)
        )
        return path

    def write_raw(self, name: str, text: str | bytes) -> Path:
        path = self.root / "profiles" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return path

    def run(self, *args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
        old = Path.cwd()
        os.chdir(self.root)
        try:
            return CliRunner().invoke(cli, list(args), env={**self.env, **(env or {})}, input=input)
        finally:
            os.chdir(old)

    @property
    def state_path(self) -> Path:
        return self.root / ".reconciler" / "state.json"

    def applied(self) -> dict[str, dict[str, str]]:
        """Fields the state records per number (journal replayed)."""
        state = StateStore(self.state_path).load()
        return {phone: dict(entry.fields) for phone, entry in state.entries.items()}

    def audit(self) -> list[dict[str, Any]]:
        path = self.root / ".reconciler" / "audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def sandbox() -> Iterator[Any]:
    held = Sandbox(
        [
            SandboxAccount(SID, WABA, {number: {} for number in NUMBERS}),
            SandboxAccount(OTHER_SID, OTHER_WABA, {number: {} for number in NUMBERS}),
        ],
        api_key=None,
    )
    server = serve_in_thread(held)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def project(tmp_path: Path, sandbox: Any) -> Project:
    return Project(tmp_path, sandbox.url)


def put_bodies(sandbox_server: Any, phone_number: str | None = None) -> list[dict[str, str]]:
    """The bodies of PUTs the sandbox received (optionally for one number), oldest first."""
    with sandbox_server.sandbox.lock:
        bodies = [request["body"] for request in sandbox_server.sandbox.requests]
    return [body for body in bodies if phone_number is None or body.get("phone_number") == phone_number]


def assert_clean_failure(result: Result) -> None:
    """Exit 1 with a message and never a Python traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert "Traceback" not in result.output + result.stderr
    assert "internal error" not in result.stderr, result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
