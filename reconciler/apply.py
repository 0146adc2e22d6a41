"""Executing a plan: PUTs in parallel, every result recorded durably as it arrives.

Only the main thread writes the state and the audit log; workers only talk to Kaleyra. Results that
arrive within COMMIT_INTERVAL_S of each other are written with one sync (group commit), then
reported. Ctrl-C (or SIGTERM) stops sending new requests, waits for those in flight, records them,
and reports the rest as not attempted.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from . import audit, secrets
from .config import Config
from .errors import ReconcilerError
from .kaleyra import NOT_SENT, AccountThrottling, KaleyraClient, KaleyraError
from .plan import Change, Plan
from .state import Entry, Journal, State, now

APPLIED, RECORDED, FAILED, NOT_ATTEMPTED = "applied", "recorded", "failed", "not attempted"
# The shortest time between two syncs of the journal and audit log (bench/state.py measured it).
COMMIT_INTERVAL_S = 0.05


@dataclass(frozen=True)
class Outcome:
    change: Change
    status: str
    code: str = ""
    message: str = ""


@dataclass
class ApplyReport:
    outcomes: list[Outcome] = field(default_factory=list)
    interrupted: bool = False
    throttling: list[AccountThrottling] = field(default_factory=list)  # accounts Kaleyra slowed down

    def having(self, status: str) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.status == status]

    @property
    def ok(self) -> bool:
        return not self.interrupted and not self.having(FAILED) and not self.having(NOT_ATTEMPTED)


def check_safety(plan: Plan, max_changes: int | None, force: bool) -> None:
    puts = len(plan.puts)
    if max_changes is not None and puts > max_changes and not force:
        raise ReconcilerError(
            f"this plan sends {puts} PUTs, more than safety.max_changes ({max_changes}); "
            "check it, then run again with --force to apply it"
        )


def api_keys(plan: Plan, config: Config) -> dict[str, str]:
    """The API key of every account the plan sends to; any missing or malformed one stops the run."""
    return secrets.resolve_keys(config, {change.account for change in plan.puts})


def apply_plan(
    plan: Plan,
    config: Config,
    state: State,
    journal: Journal,
    audit_log: audit.AuditLog,
    client: KaleyraClient,
    keys: dict[str, str],
    *,
    parallelism: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> ApplyReport:
    """Execute `plan`; `keys` (from `api_keys`) holds the API key of every account it sends to."""
    actor = audit.who(config.path.parent)
    report = ApplyReport()
    total = len(plan.changes)

    def record(outcomes: list[Outcome]) -> None:
        successes = [outcome for outcome in outcomes if outcome.status in (APPLIED, RECORDED)]
        journal.record((o.change.phone_number, entry_after(o.change, state)) for o in successes)
        audit_log.append(audit.record(o.change, o.code, o.message, actor) for o in outcomes)
        report.outcomes.extend(outcomes)
        if progress:
            progress(len(report.outcomes), total)

    local = [change for change in plan.changes if not change.needs_put]
    record([Outcome(change, RECORDED, "-", _local_message(change)) for change in local])

    def send(change: Change) -> Outcome:
        account = config.accounts[change.account]
        try:
            success = client.update(account.target(), keys[change.account], change.phone_number, change.sends)
        except KaleyraError as error:
            if error.code == NOT_SENT:  # stopped before its first attempt: nothing reached Kaleyra
                return Outcome(change, NOT_ATTEMPTED, "-", "interrupted before sending")
            return Outcome(change, FAILED, error.code, error.describe())
        except Exception as error:  # a bug must not lose track of the other numbers
            return Outcome(change, FAILED, "ERROR", f"{type(error).__name__}: {error}")
        return Outcome(change, APPLIED, success.code, success.message)

    # Workers take the next change themselves and hand results back through a queue, so they never wait
    # for the main thread. The main thread only records: it takes whatever has arrived as one batch
    # (one fsync), so batches grow when disks are slow (group commit) and the cost stays linear.
    todo: queue.SimpleQueue[Change] = queue.SimpleQueue()
    for change in plan.puts:
        todo.put(change)
    # Outcomes, and one None per worker as it finishes (so the end is seen at once, with no polling).
    results: queue.SimpleQueue[Outcome | None] = queue.SimpleQueue()
    stop = client.stop  # one event: a signal also ends the client's retries and waits at once
    workers = min(parallelism, len(plan.puts))

    def work() -> None:
        try:
            while not stop.is_set():
                try:
                    change = todo.get_nowait()
                except queue.Empty:
                    return
                results.put(send(change))
        finally:
            results.put(None)

    finished = 0
    batch: list[Outcome] = []

    def gather(block: bool) -> None:
        nonlocal finished
        while True:
            try:
                item = results.get(timeout=0.2) if block else results.get_nowait()
            except queue.Empty:
                return
            block = False
            if item is None:
                finished += 1
            else:
                batch.append(item)

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="put") as executor:
        for _ in range(workers):
            executor.submit(work)
        with _stop_on_signals(stop):
            last_commit = 0.0
            while finished < workers:
                gather(block=True)
                # Group commit: while more can arrive, let results gather for a moment between syncs.
                # A result is reported only once synced, so this delays reports and loses nothing.
                pause = last_commit + COMMIT_INTERVAL_S - time.monotonic()
                if batch and pause > 0 and finished < workers:
                    time.sleep(pause)
                    gather(block=False)
                if batch:
                    record(batch)
                    batch = []
                    last_commit = time.monotonic()
    not_sent = []
    while not todo.empty():
        not_sent.append(todo.get_nowait())
    if stop.is_set():
        report.interrupted = True
    if not_sent:
        record([Outcome(change, NOT_ATTEMPTED, "-", "interrupted before sending") for change in not_sent])
    report.throttling = client.throttling()
    return report


def entry_after(change: Change, state: State) -> Entry | None:
    if change.action == "forget":
        return None
    before = state.entries.get(change.phone_number)
    return Entry(
        account=change.account,
        target=change.target,
        fields=change.applied_fields(before.fields if before else {}),
        applied_at=now(),
        digest=change.digest,
    )


def _local_message(change: Change) -> str:
    if change.action == "forget":
        return "forgotten: dropped from the state, nothing sent (the API cannot delete a profile)"
    if change.action == "unmanage":
        return "no longer managed: dropped from the state, nothing sent"
    return "recorded with no fields to send"


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C or SIGTERM (CI cancelling a job) asks the run to stop: nothing new is sent, requests in
    flight finish and are recorded. The flag is only read between batches, so no result taken from a
    worker can be lost halfway through being recorded. A second signal interrupts at once."""

    def request_stop(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    try:
        previous = {number: signal.signal(number, request_stop) for number in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread (apply driven from a worker): no handlers to install
        yield
        return
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
