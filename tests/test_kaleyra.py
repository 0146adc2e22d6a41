"""The HTTP client, request by request (respx): URLs, headers, body, error codes, retries."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from reconciler.config import Account
from reconciler.kaleyra import KaleyraClient, KaleyraError, RetryPolicy, Target

KEY = "sEcReT-kEy-1234567"
POLICY = RetryPolicy(attempts=4, backoff_base_s=0.001, backoff_max_s=0.002, deadline_s=5)


def body(code: str, message: str) -> dict:
    return {"code": code, "message": message, "data": {}, "error": {"error": message}}


@pytest.fixture
def client():
    sleeps: list[float] = []
    with KaleyraClient(POLICY, sleep=sleeps.append) as kaleyra:
        kaleyra.sleeps = sleeps
        yield kaleyra


def target(pod: str = "in") -> Target:
    return Account("a", "HXAP16XXXXXX97IN", "766000000000001", pod).target()


@pytest.mark.parametrize(
    ("pod", "host"),
    [
        ("in", "api.in.kaleyra.io"),
        ("ap", "api.ap.kaleyra.io"),
        ("sg", "api.ap.kaleyra.io"),
        ("eu", "api.eu.kaleyra.io"),
        ("na", "api.na.kaleyra.io"),
    ],
)
def test_each_pod_has_its_https_url(pod, host, monkeypatch):
    monkeypatch.delenv("KALEYRA_ENDPOINT", raising=False)
    assert target(pod).url == f"https://{host}/v2/HXAP16XXXXXX97IN/whatsapp/766000000000001/number/update"


def test_kaleyra_endpoint_overrides_every_account(monkeypatch):
    monkeypatch.setenv("KALEYRA_ENDPOINT", "http://127.0.0.1:9999/")
    assert (
        target("eu").url == "http://127.0.0.1:9999/v2/HXAP16XXXXXX97IN/whatsapp/766000000000001/number/update"
    )


@respx.mock
def test_the_request_is_a_put_with_the_key_header_json_and_exactly_the_fields(client, monkeypatch):
    monkeypatch.delenv("KALEYRA_ENDPOINT", raising=False)
    route = respx.put(target().url).respond(200, json=body("WA200", "Request Processed Successfully"))
    result = client.update(target(), KEY, "+914846000101", {"about": "Body care", "email": "a@b.example"})
    assert result.code == "WA200" and result.attempts == 1
    request = route.calls.last.request
    assert request.method == "PUT"
    assert request.headers["api-key"] == KEY
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "phone_number": "+914846000101",
        "about": "Body care",
        "email": "a@b.example",
    }


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [
        (
            401,
            "RBC001",
            "Incorrect SID or API key.",
            "RBC001: Incorrect SID or API key. (check the account's sid",
        ),
        (
            401,
            "WA401",
            "Waba_id is not present or does not belong to the account.",
            "waba_id is not on this Kaleyra account",
        ),
        (
            404,
            "E112",
            "invalid Phone Number or Phone Number Not Found",
            "not registered on the account's WABA",
        ),
        (400, "WA400", "invalid email format", "WA400: invalid email format"),
        (400, "WA400", "about info exceeds maximum character limit of 139 characters", "about info exceeds"),
    ],
)
@respx.mock
def test_request_errors_are_reported_clearly_and_never_retried(client, status, code, message, expected):
    route = respx.put(target().url).respond(status, json=body(code, message))
    with pytest.raises(KaleyraError) as raised:
        client.update(target(), KEY, "+914846000101", {"about": "x"})
    assert route.call_count == 1
    assert raised.value.code == code
    assert expected in raised.value.describe()
    assert KEY not in raised.value.describe()


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(500, json=body("WA500", "Please try again later")),
        httpx.Response(200, json=body("WA500", "Please try again later")),  # the code decides, not the status
        httpx.Response(502, text="<html>bad gateway</html>"),
        httpx.Response(429, json={"message": "slow down"}),
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("read timed out"),
        httpx.RemoteProtocolError("server disconnected"),
    ],
    ids=["WA500", "WA500-in-200", "502", "429", "connect-error", "timeout", "dropped"],
)
@respx.mock
def test_transient_failures_are_retried_until_success(client, failure):
    ok = httpx.Response(200, json=body("WA200", "Request Processed Successfully"))
    route = respx.put(target().url).mock(side_effect=[failure, failure, ok])
    assert client.update(target(), KEY, "+914846000101", {"about": "x"}).attempts == 3
    assert route.call_count == 3
    assert len(client.sleeps) == 2


@respx.mock
def test_retries_stop_after_the_configured_attempts_with_the_last_error(client):
    route = respx.put(target().url).respond(500, json=body("WA500", "Please try again later"))
    with pytest.raises(KaleyraError) as raised:
        client.update(target(), KEY, "+914846000101", {"about": "x"})
    assert route.call_count == POLICY.attempts
    assert raised.value.code == "WA500" and "after 4 attempts" in raised.value.describe()


@respx.mock
def test_retry_after_is_honoured():
    sleeps: list[float] = []
    ok = httpx.Response(200, json=body("WA200", "ok"))
    respx.put(target().url).mock(side_effect=[httpx.Response(429, headers={"Retry-After": "3"}), ok])
    with KaleyraClient(POLICY, sleep=sleeps.append) as client:
        client.update(target(), KEY, "+914846000101", {"about": "x"})
    assert sleeps == [3.0]


@respx.mock
def test_a_retry_that_would_pass_the_deadline_is_not_made():
    policy = RetryPolicy(attempts=10, backoff_base_s=0.001, deadline_s=2)
    route = respx.put(target().url).mock(return_value=httpx.Response(429, headers={"Retry-After": "60"}))
    with KaleyraClient(policy, sleep=lambda s: None) as client, pytest.raises(KaleyraError) as raised:
        client.update(target(), KEY, "+914846000101", {"about": "x"})
    assert route.call_count == 1
    assert "deadline" in raised.value.describe()


def test_backoff_is_full_jitter_within_the_exponential_ceiling():
    policy = RetryPolicy(backoff_base_s=1, backoff_max_s=5)
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 5), (9, 5)]:
        delays = [policy.backoff(attempt, None) for _ in range(200)]
        assert all(0 <= delay <= ceiling for delay in delays)
        assert max(delays) > ceiling / 2  # jitter spreads over the range, not a fixed delay


@respx.mock
def test_a_non_json_answer_is_an_error_naming_the_status(client):
    respx.put(target().url).respond(403, text="<html>forbidden</html>")
    with pytest.raises(KaleyraError) as raised:
        client.update(target(), KEY, "+914846000101", {"about": "x"})
    assert raised.value.code == "HTTP403" and "not a Kaleyra JSON body" in raised.value.describe()


@respx.mock
def test_verbose_log_lines_carry_the_request_but_never_the_key():
    lines: list[str] = []
    respx.put(target().url).respond(200, json=body("WA200", "ok"))
    with KaleyraClient(POLICY, log=lines.append) as client:
        client.update(target(), KEY, "+914846000101", {"about": "x"})
    assert len(lines) == 1
    assert lines[0].startswith(f"PUT {target().url} +914846000101 -> 200 WA200")
    assert "attempt 1/4" in lines[0] and KEY not in lines[0]


@respx.mock
def test_a_library_error_quoting_the_headers_is_reported_without_the_key(client):
    leaky = httpx.ConnectError(f"connection refused; request headers {{'api-key': '{KEY}'}}")
    respx.put(target().url).mock(side_effect=leaky)
    with pytest.raises(KaleyraError) as raised:
        client.update(target(), KEY, "+914846000101", {"about": "x"})
    described = raised.value.describe()
    assert "ConnectError: connection refused" in described  # the library's words are kept...
    assert KEY not in described and "[redacted]" in described  # ...without the key
