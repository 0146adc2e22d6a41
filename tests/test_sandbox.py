"""The sandbox answers like the API reference: the same checks, codes and bodies, over a real socket."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import types

import httpx
import pytest

from reconciler.kaleyra.sandbox import FIELDS, Sandbox, SandboxAccount, TokenBucket, serve_in_thread

from conftest import NUMBERS, OTHER_SID, OTHER_WABA, SID, WABA

URL = f"/v2/{SID}/whatsapp/{WABA}/number/update"
A = NUMBERS[0]


def put_head(length: object) -> bytes:
    """The request line and headers of an update PUT, for tests that write to the socket themselves."""
    return (
        f"PUT {URL} HTTP/1.1\r\nHost: x\r\napi-key: k\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


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


def test_latency_runs_from_the_requests_arrival_not_from_its_last_byte(sandbox):
    """--latency-ms is the time a client waits for its answer: the sandbox's own reading of the
    request counts within it, as a real server's work does (bench/apply.py compares with it)."""
    sandbox.sandbox.latency_ms = 400
    body = json.dumps({"phone_number": A}).encode()
    host, port = sandbox.server_address[:2]
    with socket.create_connection((host, port)) as connection:
        started = time.monotonic()
        connection.sendall(put_head(len(body)))
        time.sleep(0.3)  # a slow client: the body comes 300 ms after the request line
        connection.sendall(body)
        answer = connection.recv(4096)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 200")
    # From the last byte it would be 700 ms; from arrival, 400 (a slow machine only adds a little).
    assert 0.39 <= waited < 0.6, waited


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
    from reconciler.kaleyra.sandbox import provision
    from reconciler.profiles import load_profiles

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
    from reconciler.kaleyra.sandbox import provision
    from reconciler.profiles import load_profiles

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


# --- rate limit -------------------------------------------------------------------------------------


def test_the_token_bucket_allows_a_burst_then_refills_at_its_rate():
    bucket = TokenBucket(rate=4, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(100.125) is False  # half a token
    assert bucket.take(100.25) is True  # one token a quarter of a second
    assert bucket.take(100.25) is False
    assert [bucket.take(200.0) for _ in range(4)] == [True, True, True, False]  # never more than the burst


@pytest.fixture
def limited():
    held = Sandbox(
        [SandboxAccount(SID, WABA, {A: {}}), SandboxAccount(OTHER_SID, OTHER_WABA, {A: {}})],
        rate_limit=0.01,  # no refill within a test: exactly the burst is admitted
        burst=2,
    )
    server = serve_in_thread(held)
    yield server
    server.shutdown()
    server.server_close()


def test_a_rate_limit_answers_429_beyond_the_burst_with_retry_after(limited):
    answers = [put(limited) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert answers[2].headers["Retry-After"] == "1"
    assert limited.sandbox.number(A) == {}  # the throttled request changed nothing


def test_retry_after_none_answers_429_without_the_header(limited):
    limited.sandbox.retry_after_s = None
    answers = [put(limited) for _ in range(3)]
    assert answers[2].status_code == 429 and "Retry-After" not in answers[2].headers


def test_each_account_has_its_own_bucket_and_stats_count_them(limited):
    other = f"/v2/{OTHER_SID}/whatsapp/{OTHER_WABA}/number/update"
    assert [put(limited).status_code for _ in range(3)] == [200, 200, 429]
    assert [put(limited, path=other).status_code for _ in range(2)] == [200, 200]
    assert httpx.get(limited.url + "/_sandbox/stats").json() == {
        "served": 4,
        "throttled": 1,
        "accounts": {
            SID: {"served": 2, "throttled": 1},
            OTHER_SID: {"served": 2, "throttled": 0},
        },
    }


def test_without_a_rate_limit_nothing_is_throttled(sandbox):
    with httpx.Client(base_url=sandbox.url) as client:
        headers = {"api-key": "k", "Content-Type": "application/json"}
        answers = [client.put(URL, json={"phone_number": A}, headers=headers) for _ in range(30)]
        assert [answer.status_code for answer in answers] == [200] * 30
        assert client.get("/_sandbox/stats").json() == {
            "served": 30,
            "throttled": 0,
            "accounts": {SID: {"served": 30, "throttled": 0}},
        }


# --- callback profiles ------------------------------------------------------------------------------


def get_profile(server, profile_id, key="k", sid=SID):
    headers = {} if key is None else {"api-key": key}
    return httpx.get(f"{server.url}/v1/{sid}/callback/profiles/{profile_id}", headers=headers)


def test_a_callback_profile_is_served_as_kaleyra_documents_it(sandbox):
    sandbox.sandbox.callback_profiles = {SID: {"cb-1": {"profile_id": "cb-1", "title": "t", "status": 2}}}
    answer = get_profile(sandbox, "cb-1")
    assert answer.status_code == 200
    body = answer.json()
    assert (body["code"], body["message"], body["status"]) == ("RBC024", "Profile fetched successfully", 200)
    assert body["data"]["profile_id"] == "cb-1" and body["data"]["status"] == 2


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"profile_id": "nope"}, 404, "RBC302"),
        ({"profile_id": "cb-1", "sid": OTHER_SID}, 404, "RBC302"),  # profiles belong to one account
        ({"profile_id": "cb-1", "key": None}, 401, "RBC001"),
        ({"profile_id": "cb-1", "sid": "HXNOPE"}, 401, "RBC001"),
    ],
)
def test_a_callback_profile_lookup_fails_like_kaleyra(sandbox, kwargs, status, code):
    sandbox.sandbox.callback_profiles = {SID: {"cb-1": {"profile_id": "cb-1", "status": 1}}}
    answer = get_profile(sandbox, **kwargs)
    assert answer.status_code == status and answer.json()["code"] == code
    if code == "RBC302":
        assert answer.json()["message"] == "No profile exists with this id"


def test_callback_profile_lookups_share_the_accounts_rate_limit(limited):
    limited.sandbox.callback_profiles = {SID: {"cb-1": {"profile_id": "cb-1", "status": 1}}}
    assert put(limited).status_code == 200
    assert get_profile(limited, "cb-1").status_code == 200
    assert get_profile(limited, "cb-1").status_code == 429
    assert [lookup["answer"] for lookup in limited.sandbox.lookups] == ["RBC024", "throttled"]


def test_the_sandbox_command_provisions_named_callback_profiles_and_a_file_of_others(project):
    project.write_profile(A, callback_profile_id="named-active", outgoing_callback_profile_id="overridden")
    listed = project.root / "callback-profiles.json"
    listed.write_text(
        json.dumps(
            {
                "callback_profiles": [
                    {"profile_id": "overridden", "status": 3},
                    {"profile_id": "tired", "status": 2, "url": "https://hooks.example.com/x"},
                ]
            }
        )
    )
    process = start_sandbox_command(project, "--callback-profiles", str(listed), "--rate-limit", "1000")
    try:
        served = types.SimpleNamespace(url=process.url)
        statuses = {
            profile_id: get_profile(served, profile_id).json().get("data", {}).get("status")
            for profile_id in ("named-active", "overridden", "tired", "unknown")
        }
        assert statuses == {"named-active": 1, "overridden": 3, "tired": 2, "unknown": None}
        stats = httpx.get(process.url + "/_sandbox/stats").json()
        assert stats["served"] == 4 and stats["throttled"] == 0
    finally:
        process.terminate()
        process.wait()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--retry-after", "soon"], "--retry-after"),
        (["--retry-after", "-1"], "--retry-after"),
        (["--rate-limit", "0"], "--rate-limit"),
        (["--rate-limit", "nan"], "--rate-limit"),
        (["--burst", "0"], "--burst"),
    ],
)
def test_bad_sandbox_options_are_usage_errors(project, args, message):
    result = project.run("sandbox", "--port", "0", *args)
    assert result.exit_code == 1 and message in result.output
    assert "Traceback" not in result.output


def test_a_malformed_callback_profiles_file_is_a_clear_error(project):
    bad = project.root / "callbacks.json"
    bad.write_text('{"callback_profiles": [{"profile_id": "x", "status": 7}]}')
    result = project.run("sandbox", "--callback-profiles", str(bad), "--port", "0")
    assert result.exit_code == 1
    assert "not a callback profiles file" in result.stderr and "internal error" not in result.stderr


def start_sandbox_command(project, *args):
    """`reconciler sandbox` as a process on a free port; its URL is on the returned Popen as `.url`."""
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "sandbox", "--port", "0", *args],
        cwd=project.root,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = process.stderr.readline()
    assert "listening on http://127.0.0.1:" in line, line
    process.url = line.split("listening on ")[1].split()[0]
    return process


def test_the_sandbox_only_listens_on_loopback(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from reconciler.cli import cli

    (tmp_path / "reconciler.yaml").write_text("accounts:\n  main: {sid: HX1, waba_id: '1', pod: in}\n")
    (tmp_path / "profiles").mkdir()
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["sandbox", "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 1 and "not a loopback address" in result.output + result.stderr


def test_the_sandbox_refuses_a_trailing_newline_as_kaleyra_would(tmp_path):
    from reconciler.kaleyra.sandbox import Sandbox, SandboxAccount

    held = Sandbox([SandboxAccount("HX1", "1", {"+14155550100": {}})])
    for body in ({"phone_number": "+14155550100\n"}, {"phone_number": "+14155550100", "email": "a@b.co\n"}):
        answer = held.update("HX1", "1", "some-key-123", "application/json", json.dumps(body).encode())
        assert answer["code"] == "WA400", body


@pytest.mark.parametrize("length", ["abc", "-1", "1e3", "²", str(2 << 20)])
def test_a_content_length_that_is_not_a_sane_size_is_a_payload_error_not_a_crash(sandbox, length):
    host, port = sandbox.server_address[:2]
    with socket.create_connection((host, port), timeout=5) as connection:
        connection.sendall(put_head(length))
        answer = b""
        while chunk := connection.recv(4096):  # the sandbox closes the connection after answering
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert b'"WA400"' in answer


def console(server, number, body, sid=None):
    query = f"?sid={sid}" if sid else ""
    return httpx.post(f"{server.url}/_sandbox/console/{number}{query}", content=json.dumps(body))


def test_a_console_edit_changes_the_profile_without_an_api_request(sandbox):
    assert put(sandbox, body={"phone_number": A, "about": "Sent"}).json()["code"] == "WA200"
    answer = console(sandbox, A, {"about": "Console", "email": "a@example.com"}, sid=SID)
    assert answer.status_code == 200 and answer.json()["accounts"] == [SID]
    numbers = httpx.get(sandbox.url + "/_sandbox/numbers").json()["accounts"]
    held = {account["sid"]: account["numbers"][A] for account in numbers}
    assert held[SID] == {"about": "Console", "email": "a@example.com"}
    assert held[OTHER_SID] == {}  # only the sid named
    assert len(sandbox.sandbox.requests) == 1  # the API saw only the PUT


@pytest.mark.parametrize(
    ("number", "body", "status", "says"),
    [
        (A, {"nickname": "x"}, 400, "profile fields"),
        (A, {"about": 1}, 400, "profile fields"),
        (A, {}, 400, "profile fields"),
        (A, {"email": "not an email"}, 400, "invalid email format"),
        ("+19999999999", {"about": "x"}, 404, "holds +19999999999"),
    ],
)
def test_a_console_edit_of_the_wrong_shape_is_refused(sandbox, number, body, status, says):
    answer = console(sandbox, number, body)
    assert answer.status_code == status and says in answer.json()["error"]
    assert sandbox.sandbox.number(A) == {}


def test_the_console_emulation_answers_loopback_only():
    from reconciler.kaleyra.sandbox import _is_loopback

    assert _is_loopback("127.0.0.1") and _is_loopback("::1")
    assert not _is_loopback("192.168.1.10") and not _is_loopback("example.com")


def test_a_console_edit_is_persisted_to_the_data_file(tmp_path):
    data = tmp_path / "sandbox.json"
    data.write_text(json.dumps({"accounts": [{"sid": SID, "waba_id": WABA, "numbers": {A: {"about": "x"}}}]}))
    server = serve_in_thread(Sandbox.from_file(data))
    try:
        assert console(server, A, {"about": "console"}).status_code == 200
    finally:
        server.shutdown()
        server.server_close()
    assert json.loads(data.read_text())["accounts"][0]["numbers"][A] == {"about": "console"}


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "127.0.0.1.nip.io", ""])
@pytest.mark.parametrize("method, path", [("GET", "/_sandbox/numbers"), ("POST", f"/_sandbox/console/{A}")])
def test_the_sandbox_endpoints_refuse_a_host_that_is_not_loopback(sandbox, host, method, path):
    """A page on a name rebound to 127.0.0.1 sends its own name as Host: it must not read or edit."""
    body = json.dumps({"about": "rebound"}).encode()
    host_line = f"Host: {host}\r\n" if host else ""
    request = (
        f"{method} {path} HTTP/1.1\r\n{host_line}Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + (body if method == "POST" else b"")
    with socket.create_connection(sandbox.server_address[:2]) as connection:
        connection.sendall(request)
        answer = b"".join(iter(lambda: connection.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 403"), answer
    assert sandbox.sandbox.number(A) != {"about": "rebound"}


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:8080", "127.0.0.1:1", "[::1]:8080"])
def test_the_sandbox_endpoints_answer_a_loopback_host(sandbox, host):
    response = httpx.get(sandbox.url + "/_sandbox/numbers", headers={"Host": host})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "origin, status", [("https://evil.example", 403), ("null", 403), ("http://localhost:3000", 200)]
)
def test_the_console_edit_refuses_a_cross_origin_browser_request(sandbox, origin, status):
    response = httpx.post(
        sandbox.url + f"/_sandbox/console/{A}", json={"about": "from a page"}, headers={"Origin": origin}
    )
    assert response.status_code == status
    assert (sandbox.sandbox.number(A).get("about") == "from a page") is (status == 200)


def test_a_console_edit_of_the_wrong_shape_says_what_to_send(sandbox):
    response = httpx.post(sandbox.url + f"/_sandbox/console/{A}", json=["about"])
    assert response.status_code == 400
    assert response.json()["error"] == (
        "send a JSON object mapping profile fields (" + ", ".join(FIELDS) + ") to text values"
    )
