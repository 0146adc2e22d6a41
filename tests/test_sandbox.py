"""The sandbox answers like the API reference: the same checks, codes and bodies, over a real socket."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import httpx
import pytest

from reconciler.sandbox import Sandbox, SandboxAccount, serve_in_thread

from conftest import NUMBERS, SID, WABA

URL = f"/v2/{SID}/whatsapp/{WABA}/number/update"
A = NUMBERS[0]


def put(server, path=URL, body=None, key="k", content_type="application/json", raw=None):
    headers = {"Content-Type": content_type}
    if key is not None:
        headers["api-key"] = key
    content = raw if raw is not None else json.dumps(body if body is not None else {"phone_number": A})
    return httpx.put(server.url + path, content=content, headers=headers)


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "message"),
    [
        ({"key": None}, 401, "RBC001", "Incorrect SID or API key."),
        ({"path": f"/v2/HXNOPE/whatsapp/{WABA}/number/update"}, 401, "RBC001", "Incorrect SID or API key."),
        (
            {"path": f"/v2/{SID}/whatsapp/999/number/update"},
            401,
            "WA401",
            "Waba_id is not present or does not belong to the account.",
        ),
        ({"raw": "{not json"}, 400, "WA400", "Refer to correct payload format "),
        ({"content_type": "text/plain"}, 400, "WA400", "Refer to correct payload format "),
        ({"body": {"phone_number": A, "colour": "red"}}, 400, "WA400", "Refer to correct payload format "),
        ({"body": {"phone_number": "12345"}}, 400, "WA400", "please provide valid phone_number"),
        (
            {"body": {"phone_number": "+14155559999"}},
            404,
            "E112",
            "invalid Phone Number or Phone Number Not Found",
        ),
        ({"body": {"phone_number": A, "email": "nope"}}, 400, "WA400", "invalid email format"),
        (
            {"body": {"phone_number": A, "description": "x" * 257}},
            400,
            "WA400",
            "description exceeds maximum character limit of 256 characters",
        ),
        (
            {"body": {"phone_number": A, "address": "x" * 257}},
            400,
            "WA400",
            "address exceeds maximum character limit of 256 characters",
        ),
        (
            {"body": {"phone_number": A, "about": "x" * 140}},
            400,
            "WA400",
            "about info exceeds maximum character limit of 139 characters",
        ),
        (
            {"body": {"phone_number": A, "category": "SPA"}},
            400,
            "WA400",
            "business_catregory value is invalid. Valid values are : AUTOMOTIVE",
        ),
    ],
)
def test_each_error_of_the_reference(sandbox, kwargs, status, code, message):
    response = put(sandbox, **kwargs)
    assert response.status_code == status
    payload = response.json()
    assert payload["code"] == code
    assert payload["message"].startswith(message)
    assert set(payload) == {"code", "message", "data", "error"}
    assert sandbox.sandbox.number(A) == {}


def test_a_valid_update_succeeds_and_is_held(sandbox):
    response = put(sandbox, body={"phone_number": A, "about": "Body care", "category": "OTHER"})
    assert response.status_code == 200
    assert response.json() == {
        "code": "WA200",
        "message": "Request Processed Successfully",
        "data": 1,
        "error": {},
    }
    assert sandbox.sandbox.number(A) == {"about": "Body care", "category": "OTHER"}
    held = httpx.get(sandbox.url + "/_sandbox/numbers").json()
    assert held["accounts"][0]["numbers"][A] == {"about": "Body care", "category": "OTHER"}


def test_a_required_api_key_rejects_any_other(sandbox):
    sandbox.sandbox.api_key = "right"
    assert put(sandbox, key="wrong").json()["code"] == "RBC001"
    assert put(sandbox, key="right").json()["code"] == "WA200"


def test_fail_rate_answers_wa500_429_or_drops():
    held = Sandbox(
        [SandboxAccount(SID, WABA, {A: {}})], fail_rate=1.0, faults=("wa500", "429", "drop"), seed=3
    )
    server = serve_in_thread(held)
    try:
        seen = set()
        for _ in range(30):
            try:
                response = put(server)
                seen.add(
                    response.json()["code"] if response.status_code == 500 else str(response.status_code)
                )
                if response.status_code == 429:
                    assert response.headers["Retry-After"] == "1"
            except httpx.RemoteProtocolError:
                seen.add("drop")
        assert seen == {"WA500", "429", "drop"}
        assert held.number(A) == {}
    finally:
        server.shutdown()
        server.server_close()


def test_data_file_is_loaded_and_persisted(tmp_path):
    data = tmp_path / "sandbox.json"
    data.write_text(
        json.dumps({"accounts": [{"sid": SID, "waba_id": WABA, "numbers": {A: {"about": "old"}}}]})
    )
    server = serve_in_thread(Sandbox.from_file(data))
    try:
        assert put(server, body={"phone_number": A, "about": "new"}).json()["code"] == "WA200"
    finally:
        server.shutdown()
        server.server_close()
    assert json.loads(data.read_text())["accounts"][0]["numbers"][A] == {"about": "new"}


def test_the_sandbox_command_provisions_from_the_project(project, monkeypatch):
    """`reconciler sandbox` with no --data holds every account and profile number of the project."""
    from reconciler.config import load_config
    from reconciler.profiles import load_profiles
    from reconciler.sandbox import provision

    project.write_profile(A, about="x")
    project.write_profile(NUMBERS[1], account="legacy", about="y")
    monkeypatch.chdir(project.root)
    config = load_config()
    accounts = provision(config, load_profiles(config))
    assert {(a.sid, a.waba_id): sorted(a.numbers) for a in accounts} == {
        (SID, WABA): [A],
        ("HXTEST0000000002", "766000000000002"): [NUMBERS[1]],
    }


def test_sandbox_command_requires_the_given_api_key(project):
    """`reconciler sandbox --api-key KEY` serves, and answers RBC001 to any other key."""
    project.write_profile(A, about="x")
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "sandbox", "--port", "0", "--api-key", "s3cret"],
        cwd=project.root,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stderr.readline()
        assert "listening on http://127.0.0.1:" in line
        url = line.split("listening on ")[1].split()[0]
        served = types.SimpleNamespace(url=url)
        assert put(served, key="wrong").json()["code"] == "RBC001"
        assert put(served, key="s3cret").json()["code"] == "WA200"
    finally:
        process.terminate()
        process.wait()


def test_a_malformed_data_file_is_a_clear_error(project):
    bad = project.root / "sandbox.json"
    bad.write_text('{"accounts": [{"sid": "HX1"}]}')
    result = project.run("sandbox", "--data", str(bad), "--port", "0")
    assert result.exit_code == 1
    assert "not a sandbox data file" in result.stderr and "internal error" not in result.stderr


def test_two_account_names_on_one_waba_are_provisioned_as_one(project, monkeypatch):
    from reconciler.config import load_config
    from reconciler.profiles import load_profiles
    from reconciler.sandbox import provision

    project.write_config(
        accounts={
            "main": {"sid": SID, "waba_id": WABA, "pod": "in"},
            "alias": {"sid": SID, "waba_id": WABA, "pod": "in"},
        }
    )
    project.write_profile(A, account="main", about="x")
    project.write_profile(NUMBERS[1], account="alias", about="y")
    monkeypatch.chdir(project.root)
    config = load_config()
    accounts = provision(config, load_profiles(config))
    assert [(a.sid, a.waba_id, sorted(a.numbers)) for a in accounts] == [(SID, WABA, [A, NUMBERS[1]])]
