"""The HTTP client, request by request (respx): URLs, headers, body, error codes, retries, pacing.

Time is a FakeClock: waits advance it instantly and are recorded, so nothing here depends on how fast
the machine is. The whole-request timeout and the body cap are proven against real dripping and
flooding servers on loopback sockets.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import json
import socket
import threading

import httpx
import pytest
import respx

from reconciler.config import Account
from reconciler.kaleyra.client import MAX_BODY_BYTES, KaleyraClient, KaleyraError
from reconciler.targets import RetryPolicy, Target

KEY = "sEcReT-kEy-1234567"
POLICY = RetryPolicy(attempts=4, backoff_base_s=0.001, backoff_max_s=0.002, deadline_s=5)
OK = {"code": "WA200", "message": "Request Processed Successfully", "data": 1, "error": {}}


def body(code: str, message: str) -> dict:
    return {"code": code, "message": message, "data": {}, "error": {"error": message}}


class FakeClock:
    """Monotonic time that only moves when something waits; thread-safe."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.sleeps.append(seconds)
            self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def client(clock):
    with KaleyraClient(POLICY, sleep=clock.sleep, clock=clock) as kaleyra:
        kaleyra.sleeps = clock.sleeps
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
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("read timed out"),
        httpx.RemoteProtocolError("server disconnected"),
    ],
    ids=["WA500", "WA500-in-200", "502", "connect-error", "timeout", "dropped"],
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
def test_retry_after_is_honoured(client):
    ok = httpx.Response(200, json=body("WA200", "ok"))
    respx.put(target().url).mock(side_effect=[httpx.Response(429, headers={"Retry-After": "3"}), ok])
    client.update(target(), KEY, "+914846000101", {"about": "x"})
    assert client.sleeps == [3.0]


@respx.mock
def test_a_retry_that_would_pass_the_deadline_is_not_made(clock):
    policy = RetryPolicy(attempts=10, backoff_base_s=0.001, deadline_s=2)
    route = respx.put(target().url).mock(return_value=httpx.Response(429, headers={"Retry-After": "60"}))
    with (
        KaleyraClient(policy, sleep=clock.sleep, clock=clock) as client,
        pytest.raises(KaleyraError) as raised,
    ):
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
def test_verbose_log_lines_carry_the_request_but_never_the_key(clock):
    lines: list[str] = []
    respx.put(target().url).respond(200, json=body("WA200", "ok"))
    with KaleyraClient(POLICY, log=lines.append, sleep=clock.sleep, clock=clock) as client:
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


# --- a stop: no new attempt, no wait ----------------------------------------------------------------


@respx.mock
def test_a_stop_before_the_first_attempt_sends_nothing_and_says_not_sent(clock):
    route = respx.put(target().url).respond(200, json=OK)
    stop = threading.Event()
    stop.set()
    with (
        KaleyraClient(POLICY, sleep=clock.sleep, clock=clock, stop=stop) as client,
        pytest.raises(KaleyraError) as raised,
    ):
        client.update(target(), KEY, "+914846000101", {"about": "x"})
    assert route.call_count == 0
    assert raised.value.code == "NOT_SENT" and raised.value.attempts == 0


@respx.mock
def test_a_stop_during_a_backoff_ends_it_with_the_last_error_not_retried(clock):
    route = respx.put(target().url).respond(500, json=body("WA500", "Please try again later"))
    stop = threading.Event()

    def sleep_then_stop(seconds: float) -> None:  # Ctrl-C arrives during the first backoff
        clock.sleep(seconds)
        stop.set()

    with (
        KaleyraClient(POLICY, sleep=sleep_then_stop, clock=clock, stop=stop) as client,
        pytest.raises(KaleyraError) as raised,
    ):
        client.update(target(), KEY, "+914846000101", {"about": "x"})
    assert route.call_count == 1
    assert raised.value.code == "WA500" and raised.value.attempts == 1
    assert "not retried: the run was interrupted" in raised.value.describe()


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(500, json=body("WA500", "Please try again later")),  # a 30 s backoff
        httpx.Response(429, headers={"Retry-After": "60"}, json={"message": "slow down"}),  # an account pause
    ],
    ids=["backoff", "retry-after-pause"],
)
@respx.mock
def test_a_stop_wakes_a_sleeping_worker_at_once(answer):
    """Real waiting (no injected sleep): the worker is asleep for 30-60 s when the stop comes."""

    class Slow(RetryPolicy):
        def backoff(self, attempt: int, retry_after: float | None) -> float:
            return 30.0

    route = respx.put(target().url).mock(return_value=answer)
    stop = threading.Event()
    outcome: list[BaseException] = []
    with KaleyraClient(Slow(deadline_s=600), stop=stop) as client:

        def work() -> None:
            try:
                client.update(target(), KEY, "+914846000101", {"about": "x"})
            except KaleyraError as error:
                outcome.append(error)

        worker = threading.Thread(target=work)
        worker.start()
        while route.call_count == 0:
            threading.Event().wait(0.01)
        stop.set()
        worker.join(timeout=20)  # it would sleep 30-60 s more if the stop did not wake it
        assert not worker.is_alive()
    assert route.call_count == 1
    assert "not retried: the run was interrupted" in outcome[0].describe()


# --- throttling -------------------------------------------------------------------------------------


def other_target() -> Target:
    return Account("b", "HXOTHER0000000IN", "766000000000009", "in").target()


@respx.mock
def test_throttled_attempts_do_not_use_up_the_error_attempts(clock):
    policy = RetryPolicy(attempts=2, backoff_base_s=0.001, backoff_max_s=0.002, deadline_s=60)
    throttled = httpx.Response(429, json={"message": "slow down"})
    route = respx.put(target().url).mock(side_effect=[throttled] * 6 + [httpx.Response(200, json=OK)])
    with KaleyraClient(policy, sleep=clock.sleep, clock=clock) as client:
        result = client.update(target(), KEY, "+914846000101", {"about": "x"})
    assert result.attempts == 7 and route.call_count == 7


@respx.mock
def test_errors_still_count_between_throttles(clock):
    policy = RetryPolicy(attempts=2, backoff_base_s=0.001, backoff_max_s=0.002, deadline_s=60)
    throttled = httpx.Response(429, json={"message": "slow down"})
    failed = httpx.Response(500, json=body("WA500", "Please try again later"))
    route = respx.put(target().url).mock(side_effect=[throttled, failed, throttled, failed, throttled])
    with (
        KaleyraClient(policy, sleep=clock.sleep, clock=clock) as client,
        pytest.raises(KaleyraError) as raised,
    ):
        client.update(target(), KEY, "+914846000101", {"about": "x"})
    assert route.call_count == 4 and raised.value.code == "WA500"
    assert "after 4 attempts, 2 throttled" in raised.value.describe()


@respx.mock
def test_throttled_attempts_stop_at_the_deadline(clock):
    policy = RetryPolicy(attempts=2, backoff_base_s=0.001, deadline_s=30)
    route = respx.put(target().url).respond(429, json={"message": "slow down"})
    with (
        KaleyraClient(policy, sleep=clock.sleep, clock=clock) as client,
        pytest.raises(KaleyraError) as raised,
    ):
        client.update(target(), KEY, "+914846000101", {"about": "x"})
    assert raised.value.code == "HTTP429" and "gave up at the 30s deadline" in raised.value.describe()
    assert 2 < route.call_count < 200  # kept trying (beyond the 2 error attempts), ever more slowly
    assert sum(clock.sleeps) <= 30


@respx.mock
def test_a_429_slows_every_worker_of_that_account_and_no_other(clock):
    """One worker's 429 limits the account: another worker's next request to it waits its turn,
    while requests to another account (another sid) go at once."""
    times: list[tuple[str, float]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        times.append((request.url.path.split("/")[2], clock()))
        return httpx.Response(200, json=OK)

    throttled = httpx.Response(429, json={"message": "slow"})
    respx.put(target().url).mock(side_effect=[throttled, answer, answer, answer])
    respx.put(other_target().url).mock(side_effect=answer)
    with KaleyraClient(POLICY, sleep=clock.sleep, clock=clock) as client:
        for aim in (target(), target(), other_target(), other_target(), target()):
            worker = threading.Thread(target=client.update, args=(aim, KEY, "+914846000101", {"about": "x"}))
            worker.start()
            worker.join()
        summary = client.throttling()
    slow = [at for sid, at in times if sid == target().sid]
    fast = [at for sid, at in times if sid == other_target().sid]
    assert len(slow) == 3 and all(later > earlier for earlier, later in itertools.pairwise(slow))
    assert fast[0] == fast[1]  # no wait between the other account's two requests
    assert [account.sid for account in summary] == [target().sid]
    # Two successes after the 429 are too few to say what pace the account settled at.
    assert summary[0].throttled == 1 and summary[0].settled_rps is None


@respx.mock
def test_retry_after_pauses_the_whole_account(clock):
    starts: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        starts.append(clock())
        if len(starts) == 1:
            return httpx.Response(429, headers={"Retry-After": "5"}, json={"message": "slow"})
        return httpx.Response(200, json=OK)

    respx.put(target().url).mock(side_effect=answer)
    with KaleyraClient(POLICY, sleep=clock.sleep, clock=clock) as client:
        first = threading.Thread(target=client.update, args=(target(), KEY, "+914846000101", {}))
        first.start()
        first.join()
        client.update(target(), KEY, "+914846000102", {})  # another number, another worker's turn
        [account] = client.throttling()
    assert starts[1] >= starts[0] + 5 and starts[2] >= starts[0] + 5
    assert (account.paused, account.paused_s) == (1, 5.0)
    assert "paused 1 time for Retry-After (5.0 s)" in client.throttling_summary()


@respx.mock
def test_max_rps_stays_a_ceiling_after_the_rate_recovers(clock):
    starts: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        starts.append(clock())
        return httpx.Response(429 if len(starts) == 1 else 200, json=OK)

    respx.put(target().url).mock(side_effect=answer)
    with KaleyraClient(POLICY, sleep=clock.sleep, clock=clock, max_rps=4) as client:
        for index in range(12):
            client.update(target(), KEY, f"+9148460001{index:02d}", {})
        clock.sleep(60)  # long enough for CUBIC to climb far past 4 requests/s
        for index in range(6):
            client.update(target(), KEY, f"+9148460002{index:02d}", {})
        assert client.paces[target().pace_key].current() > 4  # the adaptive rate allows more...
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert min(gaps) >= 0.25 - 1e-9  # ...but --max-rps 4 still spaces every start


@respx.mock
def test_no_throttle_no_wait_and_no_summary(client):
    respx.put(target().url).respond(200, json=OK)
    for index in range(20):
        client.update(target(), KEY, f"+9148460001{index:02d}", {})
    assert client.sleeps == [] and client.throttling() == [] and client.throttling_summary() is None


@respx.mock
def test_verbose_logs_say_when_and_how_much_the_pace_changes(clock):
    lines: list[str] = []
    throttled = httpx.Response(429, headers={"Retry-After": "2"}, json={"message": "slow"})
    respx.put(target().url).mock(side_effect=[throttled, httpx.Response(200, json=OK)])
    with KaleyraClient(POLICY, log=lines.append, sleep=clock.sleep, clock=clock) as client:
        client.update(target(), KEY, "+914846000101", {})
    pace = [line for line in lines if line.startswith("pace ")]
    assert any("paused 2s (Retry-After)" in line for line in pace)
    assert any("throttled: no limit -> " in line and "requests/s" in line for line in pace)
    assert all(target().sid in line and "+0.00s" in line for line in pace)


# --- callback profiles ------------------------------------------------------------------------------


def profile_url(profile_id: str) -> str:
    return target().callback_profile_url(profile_id)


@respx.mock
def test_a_callback_profile_is_fetched_with_the_key_and_read(client, monkeypatch):
    monkeypatch.delenv("KALEYRA_ENDPOINT", raising=False)
    found = {
        "code": "RBC024",
        "message": "Profile fetched successfully",
        "data": {"profile_id": "cb-1", "title": "hooks", "url": "https://x.example", "status": 3},
        "error": {},
        "status": 200,
    }
    route = respx.get("https://api.in.kaleyra.io/v1/HXAP16XXXXXX97IN/callback/profiles/cb-1").respond(
        200, json=found
    )
    profile = client.callback_profile(target(), KEY, "cb-1")
    assert (profile.profile_id, profile.status, profile.status_name, profile.active) == (
        "cb-1",
        3,
        "disabled",
        False,
    )
    assert route.calls.last.request.headers["api-key"] == KEY


@respx.mock
def test_an_unknown_callback_profile_is_rbc302_and_not_retried(client):
    missing = {"code": "RBC302", "message": "No profile exists with this id", "data": {}, "error": []}
    route = respx.get(profile_url("nope")).respond(404, json=missing)
    with pytest.raises(KaleyraError) as raised:
        client.callback_profile(target(), KEY, "nope")
    assert raised.value.code == "RBC302" and route.call_count == 1


@respx.mock
def test_a_throttled_lookup_slows_the_accounts_updates_too(client):
    respx.get(profile_url("cb-1")).mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "4"}, json={"message": "slow"}),
            httpx.Response(200, json={"code": "RBC024", "message": "ok", "data": {"status": 1}}),
        ]
    )
    respx.put(target().url).respond(200, json=OK)
    client.callback_profile(target(), KEY, "cb-1")
    client.update(target(), KEY, "+914846000101", {})
    assert client.sleeps[0] == 4.0 and client.throttling()[0].throttled == 1


# --- what a server may send back --------------------------------------------------------------------


@respx.mock
def test_an_echoed_message_is_cut_at_about_500_characters(client):
    respx.put(target().url).respond(400, json=body("WA400", "x" * 20_000))
    with pytest.raises(KaleyraError) as raised:
        client.update(target(), KEY, "+914846000101", {"about": "x"})
    described = raised.value.describe()
    assert len(described) < 600 and "19,500 more characters cut" in described


@respx.mock
def test_a_compressed_answer_is_inflated_but_never_past_the_cap(client):
    respx.put(target().url).mock(
        side_effect=[
            httpx.Response(
                200, content=gzip.compress(json.dumps(OK).encode()), headers={"Content-Encoding": "gzip"}
            ),
            httpx.Response(
                200, content=gzip.compress(b" " * (50 * MAX_BODY_BYTES)), headers={"Content-Encoding": "gzip"}
            ),
        ]
    )
    assert client.update(target(), KEY, "+914846000101", {}).code == "WA200"
    with pytest.raises(KaleyraError) as raised:
        client.update(target(), KEY, "+914846000102", {})
    assert raised.value.code == "TOO_LARGE" and "gzip" in raised.value.describe()


class RawServer:
    """A loopback server answering every connection with `respond(connection)`, in a thread."""

    def __init__(self, respond) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.respond = respond
        self.sent = 0
        self.done = threading.Event()
        threading.Thread(target=self.serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            connection.recv(65536)  # the request (small enough for one read)
            with contextlib.suppress(OSError):  # the client hung up: what we measure
                self.respond(self, connection)
        self.done.set()

    def send(self, connection: socket.socket, data: bytes) -> None:
        connection.sendall(data)
        self.sent += len(data)

    def close(self) -> None:
        self.listener.close()


def drip(headers_first: bool):
    def respond(server: RawServer, connection: socket.socket) -> None:
        answer = json.dumps(OK).encode()
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        head += b"Content-Length: %d\r\n\r\n" % len(answer)
        if headers_first:
            server.send(connection, head)
            head = b""
        for byte in head + answer:  # 300 bytes, one every 0.1 s: 30 s to answer in full
            server.send(connection, bytes([byte]))
            threading.Event().wait(0.1)

    return respond


@pytest.mark.parametrize("headers_first", [False, True], ids=["dripped-headers", "dripped-body"])
def test_timeout_s_bounds_the_whole_request_not_each_read(headers_first):
    server = RawServer(drip(headers_first))
    policy = RetryPolicy(attempts=1, timeout_s=0.5, deadline_s=5)
    aim = Target(server.url, "HXAP16XXXXXX97IN", "766000000000001")
    try:
        with KaleyraClient(policy) as client, pytest.raises(KaleyraError) as raised:
            client.update(aim, KEY, "+914846000101", {})
        still_dripping = not server.done.is_set()
    finally:
        server.close()
    assert raised.value.code == "TIMEOUT" and "retry.timeout_s (0.5s" in raised.value.describe()
    assert still_dripping  # the client gave up long before the server would have finished


def flood(announce: bool):
    def respond(server: RawServer, connection: socket.socket) -> None:
        total = 256 * MAX_BODY_BYTES
        length = b"Content-Length: %d\r\n" % total if announce else b"Connection: close\r\n"
        server.send(connection, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + length + b"\r\n")
        chunk = b"x" * 65536
        while server.sent < total:
            server.send(connection, chunk)

    return respond


@pytest.mark.parametrize("announce", [True, False], ids=["content-length", "until-close"])
def test_a_body_over_1_mib_is_cut_and_reported_without_reading_the_rest(announce):
    server = RawServer(flood(announce))
    aim = Target(server.url, "HXAP16XXXXXX97IN", "766000000000001")
    try:
        with (
            KaleyraClient(RetryPolicy(attempts=1, timeout_s=10)) as client,
            pytest.raises(KaleyraError) as raised,
        ):
            client.update(aim, KEY, "+914846000101", {})
        assert server.done.wait(10)
    finally:
        server.close()
    assert raised.value.code == "TOO_LARGE" and "larger than 1,048,576 bytes" in raised.value.describe()
    # 256 MiB were on offer; the client stopped reading at 1 MiB (plus what socket buffers held).
    assert server.sent < 32 * MAX_BODY_BYTES


@respx.mock
def test_a_message_echoing_the_key_is_redacted_before_it_is_cut_to_length(client, monkeypatch):
    from reconciler import secrets

    monkeypatch.delenv("KALEYRA_ENDPOINT", raising=False)
    key = "SECRETKEY-0123456789abcdef"
    secrets.remember(key)
    message = "x" * (500 - len(key) // 2) + key  # the cut at 500 would fall inside the key
    respx.put(target().url).respond(400, json=body("WA400", message))
    with pytest.raises(KaleyraError) as raised:
        client.update(target(), key, "+914846000101", {"about": "x"})
    assert key[: len(key) // 2] not in raised.value.describe()


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        ({"profile_id": "cb-1", "status": True}, None),  # true is no status: not active
        ({"profile_id": "another-id", "status": 1}, "WRONG_PROFILE"),
    ],
)
@respx.mock
def test_a_callback_profile_answer_must_be_about_the_id_asked_with_a_real_status(
    client, monkeypatch, data, complaint
):
    monkeypatch.delenv("KALEYRA_ENDPOINT", raising=False)
    respx.get(target().callback_profile_url("cb-1")).respond(
        200, json={"code": "RBC024", "message": "Profile fetched successfully", "data": data}
    )
    if complaint:
        with pytest.raises(KaleyraError, match=complaint):
            client.callback_profile(target(), KEY, "cb-1")
    else:
        profile = client.callback_profile(target(), KEY, "cb-1")
        assert profile.status is None and not profile.active


def test_building_a_client_leaves_httpxs_own_command_line_and_its_imports_alone():
    """httpx's package imports its command line (rich and pygments, when installed: 60 ms of every
    apply's start-up); the reconciler never runs it."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from reconciler.kaleyra.client import KaleyraClient\n"
        "KaleyraClient().close()\n"
        "print(sorted(name for name in ('httpx._main', 'pygments', 'rich') if sys.modules.get(name)))\n"
    )
    ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == "[]", ran.stdout


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("99999999999", 3600.0),
        ("1" + "0" * 400, 3600.0),  # a float that is not infinite, but absurd
        ("Fri, 31 Dec 9999 23:59:59 GMT", 3600.0),
        (" 12 ", 12.0),
        ("0", None),
        ("-5", None),
        ("nan", None),
        ("inf", None),
        ("1e400", None),
        ("soon", None),
        ("Mon, 99 Foo 2026 99:99:99 GMT", None),
        ("Fri, 01 Jan 1999 00:00:00 GMT", None),  # in the past
    ],
)
def test_any_retry_after_value_is_read_without_overflow_and_capped(value, seconds):
    from reconciler.kaleyra.client import _retry_after

    assert _retry_after(value) == seconds


@respx.mock
@pytest.mark.parametrize("value", ["99999999999", "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_an_absurd_retry_after_fails_the_number_at_once_with_a_clear_message(clock, value):
    route = respx.put(target().url).mock(return_value=httpx.Response(429, headers={"Retry-After": value}))
    with KaleyraClient(POLICY, sleep=clock.sleep, clock=clock) as client:
        with pytest.raises(KaleyraError) as first:
            client.update(target(), KEY, "+914846000101", {"about": "x"})
        # Another number of the paused account fails at once too: its deadline is shorter than the pause.
        with pytest.raises(KaleyraError) as second:
            client.update(target(), KEY, "+914846000102", {"about": "x"})
    assert route.call_count == 1 and clock.sleeps == []
    assert first.value.code == "HTTP429" and "deadline" in first.value.describe()
    assert "Retry-After 3600 s is beyond this number's remaining deadline (5 s" in first.value.describe()
    assert "gave up at the" not in first.value.describe()
    assert second.value.code == "PAUSED" and second.value.attempts == 0
    assert (
        "paused this account (Retry-After) for 3600 s more, beyond this number's remaining deadline (5 s"
        in (second.value.describe())
    )
    assert "paused" not in (client.throttling_summary() or "")  # no worker waited: no pause taken


@respx.mock
def test_a_retry_after_longer_than_the_time_left_says_so_with_the_time_left(clock):
    """Retry-After: 60 after 60.5 s of a 120 s deadline fails at once: the message names the
    Retry-After and what was left of the deadline, not a deadline that has not come."""
    policy = RetryPolicy(attempts=3, backoff_base_s=0.001, deadline_s=120)

    def answer(request: httpx.Request) -> httpx.Response:
        clock.sleep(60.5)  # the attempt takes a minute
        return httpx.Response(429, headers={"Retry-After": "60"}, json={"message": "slow"})

    respx.put(target().url).mock(side_effect=answer)
    with KaleyraClient(policy, sleep=clock.sleep, clock=clock) as client:
        with pytest.raises(KaleyraError) as raised:
            client.update(target(), KEY, "+914846000101", {"about": "x"})
        summary = client.throttling_summary() or ""
    said = raised.value.describe()
    assert "Retry-After 60 s is beyond this number's remaining deadline (59.5 s" in said, said
    assert "gave up at the 120s deadline" not in said
    assert "paused" not in summary, summary


@respx.mock
def test_a_request_handed_back_during_a_pause_goes_on_where_it_stopped(clock):
    from reconciler.kaleyra.client import AccountBusy

    answers = iter([httpx.Response(429, headers={"Retry-After": "3"}, json={"message": "slow"})])
    respx.put(target().url).mock(side_effect=lambda request: next(answers, httpx.Response(200, json=OK)))
    with KaleyraClient(POLICY, sleep=clock.sleep, clock=clock) as client:
        with pytest.raises(AccountBusy) as busy:
            client.update(target(), KEY, "+914846000101", {}, hand_back=lambda: True)
        assert clock.sleeps == [] and busy.value.progress.attempts == 1
        assert client.pause_left(target()) == 3.0
        done = client.update(target(), KEY, "+914846000101", {}, progress=busy.value.progress)
    assert done.attempts == 2 and clock.sleeps == [3.0]


@pytest.mark.parametrize(
    ("numbers", "text"),
    [
        (
            (3, 1, 25.4, 4.26, 0.5),
            "throttled 3 times; settled at 4.3 requests/s (slowest 0.5/s); paused 1 time",
        ),
        (
            (3, 1, 25.4, 48.2, 20.0),
            "settled at 48 requests/s (slowest 20/s); paused 1 time for Retry-After (25 s)",
        ),
        ((1, 1, 0.25, None, 0.5), "HX1: throttled 1 time; paused 1 time for Retry-After (0.2 s)"),
    ],
)
def test_the_throttling_summary_shows_small_rates_and_pauses_with_a_decimal(numbers, text):
    from reconciler.kaleyra.client import AccountThrottling

    assert text in AccountThrottling("https://x", "HX1", *numbers).describe()
