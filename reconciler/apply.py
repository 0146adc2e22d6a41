"""Executing a plan: PUTs in parallel, every result recorded durably before it is reported.

Only the main thread writes the state and the audit log; workers only talk to Kaleyra. Results that
arrive within COMMIT_INTERVAL_S of each other are written with one sync (group commit), then
reported. A stop (Ctrl-C, SIGTERM, or a recording that failed) means no new request starts; those in
flight finish and are recorded; the rest are reported as not attempted.
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from . import secrets
from .config import Config, resolve_keys
from .errors import ReconcilerError
from .kaleyra.client import AccountBusy, AccountThrottling, KaleyraClient, KaleyraError, Progress
from .kaleyra.codes import ACCOUNT_FATAL, NOT_SENT
from .plan import Change, Plan, audit_record
from .state import audit
from .state.model import Entry, RecordingFailed, State, now
from .state.store import AuditLog, Recorder

APPLIED, RECORDED, FAILED, NOT_ATTEMPTED = "applied", "recorded", "failed", "not attempted"
STATUSES = (APPLIED, RECORDED, FAILED, NOT_ATTEMPTED)
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
    # Set when a success could not be made durable: sending stopped at once.
    recording_failure: str | None = None
    # Accepted by Kaleyra but not in the state (the journal failed), or not in the audit log.
    unrecorded: list[Outcome] = field(default_factory=list)
    unaudited: list[Outcome] = field(default_factory=list)
    # Set when progress could not be shown (stdout closed or full): the run stopped sending.
    output_failure: str | None = None
    throttling: list[AccountThrottling] = field(default_factory=list)  # accounts Kaleyra slowed down

    def having(self, status: str) -> list[Outcome]:
        return sorted(
            (outcome for outcome in self.outcomes if outcome.status == status),
            key=lambda outcome: outcome.change.phone_number,
        )

    def counts(self) -> dict[str, int]:
        counted = dict.fromkeys(STATUSES, 0)
        for outcome in self.outcomes:
            counted[outcome.status] += 1
        return counted

    @property
    def ok(self) -> bool:
        counted = self.counts()
        return not (
            self.interrupted
            or self.recording_failure
            or self.output_failure
            or counted[FAILED]
            or counted[NOT_ATTEMPTED]
        )


def check_safety(plan: Plan, state: State, max_changes: int | None, force: bool) -> None:
    """Refuse, before anything is sent and unless `force`, a plan that changes more than
    `safety.max_changes` numbers (every change that alters the state counts: forgets and unmanages
    too, not only PUTs), or one that forgets every managed number it covers. The usual cause of the
    latter is a `profiles_dir` pointing at the wrong (or an empty) folder."""
    if force:
        return
    changed = len(plan.changes)
    if max_changes is not None and changed > max_changes:
        raise ReconcilerError(
            f"this plan changes {changed} numbers ({len(plan.puts)} PUTs, {plan.count('forget')} forgets, "
            f"{plan.count('unmanage')} unmanages), more than safety.max_changes ({max_changes}); "
            "check it, then run again with --force to apply it"
        )
    forgets = plan.count("forget")
    # Every managed number of the state, or every one of several that a --target/--exclude selection
    # covers, is what an emptied or mistyped profiles_dir looks like. One number forgotten on purpose
    # (`--target` on a deleted profile) is not.
    if forgets and (forgets == len(state.entries) or forgets == plan.managed > 1):
        raise ReconcilerError(
            f"this plan forgets every managed number it covers ({forgets}); is profiles_dir right? "
            "Run again with --force if that is what you want"
        )


def api_keys(plan: Plan, config: Config) -> dict[str, str]:
    """The API key of every account the plan sends to; any missing or malformed one stops the run."""
    keys = resolve_keys(config, {change.account for change in plan.puts})
    refuse_key_leaks(plan.changes)
    return keys


def refuse_key_leaks(changes: Iterable[Change]) -> None:
    """A profile value holding an API key would publish it on the WhatsApp profile: refuse the run."""
    leaks = [
        f"{change.phone_number}: {name} holds the API key of an account; never put a key in a profile"
        for change in changes
        for name, value in change.sends.items()
        if secrets.holds_key(value)
    ]
    if leaks:
        raise ReconcilerError("; ".join(leaks) + " (nothing was sent)")


def apply_plan(
    plan: Plan,
    config: Config,
    state: State,
    journal: Recorder,
    audit_log: AuditLog,
    client: KaleyraClient,
    keys: dict[str, str],
    *,
    parallelism: int = 8,
    stop: threading.Event | None = None,
    progress: Callable[[Outcome | None], None] | None = None,
) -> ApplyReport:
    """Execute `plan`; `keys` (from `api_keys`) holds the API key of every account it sends to.

    `progress` is called with each outcome once it is recorded, and with None about every 0.2 s
    while waiting, so callers can print progress. Setting `stop` stops the run as Ctrl-C does.
    """
    run = _Run(plan, config, state, journal, audit_log, client, keys, stop or threading.Event(), progress)
    return run.execute(parallelism)


class _Run:
    """One execution of a plan. Workers take the next change themselves, send it, and hand the result
    back through a queue, so they never wait for the calling thread. The calling thread only records:
    it takes whatever has arrived as one batch (one sync), so batches grow when disks are slow (group
    commit) and the cost stays linear.

    Changes wait in one queue per account pace (sid and base URL): a worker takes the next change of
    an account that may send now, so one account's Retry-After pause never idles the workers while
    another account has work. A request that would wait for its account's pause is handed back
    (AccountBusy) whenever another account has work, and taken up again where it stopped.
    """

    def __init__(
        self,
        plan: Plan,
        config: Config,
        state: State,
        journal: Recorder,
        audit_log: AuditLog,
        client: KaleyraClient,
        keys: dict[str, str],
        stop: threading.Event,
        progress: Callable[[Outcome | None], None] | None,
    ):
        self.plan, self.config, self.state = plan, config, state
        self.journal, self.audit_log, self.client, self.keys = journal, audit_log, client, keys
        self.stop, self.progress = stop, progress
        self.actor = audit.who(config.path.parent)
        self.report = ApplyReport()
        # One RBC001 or WA401 condemns the account's key, SID or WABA: its other numbers are failed at
        # once instead of sending N identical doomed requests.
        self.condemned: dict[str, KaleyraError] = {}
        # Per account pace, in plan order: each change, with its request's progress once started.
        self.todo: dict[tuple[str, str], collections.deque[tuple[Change, Progress | None]]] = {}
        self.todo_lock = threading.Lock()
        self.targets = {name: account.target() for name, account in config.accounts.items()}
        self.turn = 0  # which queue is looked at first: accounts take turns
        # Outcomes, and one None per worker as it finishes (so the end is seen at once, with no polling).
        self.results: queue.SimpleQueue[Outcome | None] = queue.SimpleQueue()
        self.workers = 0
        self.ended = 0  # workers that have ended, counted by the workers themselves
        self.ended_lock = threading.Lock()
        self.every_worker_ended = threading.Event()
        self.finished = 0  # workers whose end marker the recorder has taken
        self.batch: list[Outcome] = []
        # A remote journal pays a round trip per commit: it may ask for fewer, larger commits.
        self.commit_interval = max(COMMIT_INTERVAL_S, getattr(journal, "commit_interval_s", 0.0))

    def execute(self, parallelism: int) -> ApplyReport:
        # Prove the run can record before it sends anything.
        self.journal.open()
        self.audit_log.open()
        local = [change for change in self.plan.changes if not change.needs_put]
        self.record([Outcome(change, RECORDED, "-", _local_message(change)) for change in local])

        for change in self.plan.puts:
            self.todo.setdefault(self.pace_key(change), collections.deque()).append((change, None))
        self.workers = min(parallelism, len(self.plan.puts))
        with ThreadPoolExecutor(max_workers=max(1, self.workers), thread_name_prefix="put") as executor:
            for _ in range(self.workers):
                executor.submit(self.work)
            try:
                self.record_until_workers_end()
            except BaseException:
                # Whatever went wrong here, nothing new is sent, and what the requests in flight bring
                # back is still recorded before the error goes on.
                self.stop.set()
                self.record_until_workers_end()
                raise
        self.record_not_sent()
        self.report.throttling = self.client.throttling()
        return self.report

    def show(self, outcome: Outcome | None) -> None:
        if self.progress is None:
            return
        try:
            self.progress(outcome)
        except Exception as error:  # stdout closed or full: stop sending, but keep recording
            self.progress = None
            self.report.output_failure = f"progress could not be shown ({type(error).__name__}: {error})"
            self.stop.set()

    def record(self, outcomes: list[Outcome]) -> None:
        report = self.report
        successes = [outcome for outcome in outcomes if outcome.status in (APPLIED, RECORDED)]
        try:
            self.journal.record((o.change.phone_number, entry_after(o.change, self.state)) for o in successes)
        except RecordingFailed as failure:
            report.recording_failure = report.recording_failure or str(failure)
            report.unrecorded.extend(o for o in successes if o.status == APPLIED)
            self.stop.set()
        report.outcomes.extend(outcomes)
        try:
            # Each record names the plan it belongs to and its outcome, so a re-run of the same apply
            # can tell that this plan was applied in full already (audit.applied_already).
            self.audit_log.append(
                {
                    **audit_record(o.change, o.code, o.message, self.actor),
                    "plan": self.plan.checksum,
                    "status": o.status,
                }
                for o in outcomes
            )
        except RecordingFailed as failure:
            report.recording_failure = report.recording_failure or str(failure)
            note_unaudited(report, self.audit_log.unwritten_numbers())
            self.stop.set()
        for outcome in outcomes:
            self.show(outcome)

    def pace_key(self, change: Change) -> tuple[str, str]:
        return self.targets[change.account].pace_key

    def take(self) -> tuple[Change, Progress | None] | None:
        """The next change of an account that may send now (or whose pause outlasts the change's
        deadline: it fails at once); None when none is left or the run stops. While every account with
        work is paused, wait for the first pause to end (a stop ends the wait at once)."""
        while not self.stop.is_set():
            with self.todo_lock:
                queues = [waiting for waiting in self.todo.values() if waiting]
                if not queues:
                    return None
                soonest = math.inf
                for index in range(len(queues)):
                    waiting = queues[(self.turn + index) % len(queues)]
                    left = self.pause_left(waiting[0])
                    if left <= 0:
                        self.turn += index + 1
                        return waiting.popleft()
                    soonest = min(soonest, left)
            self.stop.wait(min(soonest, 0.5))
        return None

    def pause_left(self, item: tuple[Change, Progress | None]) -> float:
        """How long `item` must wait for its account; 0.0 also when the pause outlasts its deadline."""
        change, progress = item
        left = self.client.pause_left(self.targets[change.account])
        budget = progress.deadline - self.client.clock() if progress else self.client.policy.deadline_s
        return 0.0 if left > budget else left

    def another_account_ready(self, key: tuple[str, str]) -> bool:
        """True when an account other than `key` has a change that may be sent now."""
        with self.todo_lock:
            return any(
                waiting and self.pause_left(waiting[0]) <= 0
                for other, waiting in self.todo.items()
                if other != key
            )

    def hand_back(self, change: Change, progress: Progress) -> None:
        """Put a change whose account is paused back at the head of its queue, to go on later."""
        with self.todo_lock:
            self.todo[self.pace_key(change)].appendleft((change, progress))

    def send(self, change: Change, progress: Progress | None = None) -> Outcome | None:
        """Send one change; None when it was handed back (its account is paused, another has work)."""
        fatal = self.condemned.get(change.account)
        if fatal is not None:
            return Outcome(change, FAILED, fatal.code, f"not sent: {fatal.detail()}")
        key = self.pace_key(change)
        try:
            success = self.client.update(
                self.targets[change.account],
                self.keys[change.account],
                change.phone_number,
                change.sends,
                progress=progress or self.client.new_progress(),
                hand_back=lambda: self.another_account_ready(key),
            )
        except AccountBusy as busy:
            self.hand_back(change, busy.progress)
            return None
        except KaleyraError as error:
            if error.attempts == 0 and error.code == NOT_SENT:  # stopped before the first attempt
                return Outcome(change, NOT_ATTEMPTED, "-", "interrupted before sending")
            if error.code in ACCOUNT_FATAL:
                self.condemned.setdefault(change.account, error)
            return Outcome(change, FAILED, error.code, error.detail())
        except Exception as error:  # a bug must not lose track of the other numbers
            return Outcome(change, FAILED, "ERROR", f"{type(error).__name__}: {error}")
        return Outcome(change, APPLIED, success.code, success.message)

    def work(self) -> None:
        """A worker: send changes until none is left or the run stops."""
        try:
            while (item := self.take()) is not None:
                outcome = self.send(*item)
                if outcome is not None:
                    self.results.put(outcome)
        finally:
            self.results.put(None)
            with self.ended_lock:
                self.ended += 1
                if self.ended == self.workers:
                    self.every_worker_ended.set()

    def gather(self, timeout: float) -> None:
        """Wait up to `timeout` for a result (or a worker's end), then take whatever else has come."""
        while True:
            try:
                item = self.results.get(timeout=timeout) if timeout > 0 else self.results.get_nowait()
            except queue.Empty:
                return
            timeout = 0
            if item is None:
                self.finished += 1
            else:
                self.batch.append(item)

    def record_until_workers_end(self) -> None:
        last_commit = 0.0
        while self.finished < self.workers:
            self.gather(timeout=0.2)
            # Group commit: while more can arrive, let results gather for a moment between syncs.
            # A result is reported only once synced, so this delays reports and loses nothing. The
            # last results are recorded the moment the last worker ends.
            pause = last_commit + self.commit_interval - time.monotonic()
            if self.batch and pause > 0 and self.finished < self.workers:
                self.every_worker_ended.wait(pause)
                self.gather(timeout=0)
            if self.batch:
                taken, self.batch = self.batch, []
                self.record(taken)
                last_commit = time.monotonic()
            else:
                self.show(None)

    def record_not_sent(self) -> None:
        not_sent, stopped = [], []
        with self.todo_lock:
            for waiting in self.todo.values():
                for change, progress in waiting:
                    if progress is not None and progress.last is not None:
                        stopped.append((change, progress.last))  # tried, throttled, then stopped
                    else:
                        not_sent.append(change)
                waiting.clear()
        report = self.report
        # Stopped by a signal, not by a recording or output failure (those say so themselves).
        report.interrupted = self.stop.is_set() and not (report.recording_failure or report.output_failure)
        reason = "not sent: recording failed" if report.recording_failure else "interrupted before sending"
        outcomes = [Outcome(change, NOT_ATTEMPTED, "-", reason) for change in not_sent]
        outcomes += [
            Outcome(change, FAILED, last.code, f"{last.detail()}; not retried: the run stopped")
            for change, last in stopped
        ]
        if outcomes:
            self.record(outcomes)


def note_unaudited(report: ApplyReport, numbers: set[str]) -> None:
    """List the successes whose audit records were lost (a buffered remote log can lose several
    batches at once), unless they are already listed as not in the state at all."""
    listed = {o.change.phone_number for o in report.unaudited + report.unrecorded}
    report.unaudited.extend(
        outcome
        for outcome in report.outcomes
        if outcome.status in (APPLIED, RECORDED)
        and outcome.change.phone_number in numbers
        and outcome.change.phone_number not in listed
    )


def entry_after(change: Change, state: State, unverified: bool = False) -> Entry | None:
    """The state entry once `change` succeeded. An entry stays unverified (recorded, never sent in full)
    until a create or replace sends every field; `unverified` marks one recorded without sending (import).
    `sent_in_full_at` moves only when every field was sent; an update or unmanage carries it over."""
    if change.action == "forget":
        return None
    before = state.entries.get(change.phone_number)
    sent_in_full = change.action in ("create", "replace") and not unverified
    applied_at = now()
    return Entry(
        account=change.account,
        target=change.target,
        fields=change.applied_fields(before.fields if before else {}),
        applied_at=applied_at,
        digest=change.digest,
        unverified=unverified or (not sent_in_full and before is not None and before.unverified),
        sent_in_full_at=applied_at if sent_in_full else _last_full_send(before),
    )


def _last_full_send(before: Entry | None) -> str:
    """The best known time `before` was sent in full: an entry written before `sent_in_full_at` existed
    was last sent (in full, as far as anyone knows) at its `applied_at`, unless import recorded it."""
    if before is None or before.unverified:
        return before.sent_in_full_at if before else ""
    return before.sent_in_full_at or before.applied_at


def _local_message(change: Change) -> str:
    if change.action == "forget":
        return "forgotten: dropped from the state, nothing sent (the API cannot delete a profile)"
    if change.action == "unmanage":
        return "no longer managed: dropped from the state, nothing sent"
    return "recorded with no fields to send"


class SignalGuard:
    """Signals while a command holds the state lock.

    From the start, SIGTERM and SIGHUP (CI cancelling a job, a closed terminal) raise KeyboardInterrupt
    as Ctrl-C does, so the lock is released on the way out instead of the process dying with it held.
    Once `activate`d (when sending starts), Ctrl-C and SIGTERM only ask the run to stop: nothing new is
    sent, requests in flight finish and are recorded, and the report is printed. Later signals only say
    so again, however many come: whatever Kaleyra accepted must be recorded first.

    On exit the previous handlers come back, or, for the real command line (`ignore_after`), signals
    are ignored: Python restores the default handlers while it shuts down, and a signal then would
    turn a reported exit 1 into a kill and could leave the lock behind.
    """

    SIGNALS = tuple(
        getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
    )

    def __init__(self, stop: threading.Event, in_flight_note: str = "", ignore_after: bool = False):
        self.stop = stop
        self.note = in_flight_note
        self.ignore_after = ignore_after
        self.active = False
        self.previous: dict[int, Any] = {}

    def activate(self) -> None:
        self.active = True

    def _handle(self, signum: int, frame: object) -> None:
        if not self.active:
            raise KeyboardInterrupt  # nothing sent yet: unwind, releasing the lock
        if self.stop.is_set():
            # os.write, not print: a handler may interrupt a print of the main thread (re-entrancy);
            # and a closed stderr must not turn a signal into an exception here.
            with contextlib.suppress(OSError):
                os.write(2, f"\nStill stopping: {self.note}\n".encode())
        self.stop.set()

    def __enter__(self) -> SignalGuard:
        try:
            for number in self.SIGNALS:
                self.previous[number] = signal.signal(number, self._handle)
        except ValueError:  # not the main thread (driven from a worker): no handlers to install
            pass
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, signal.SIG_IGN if self.ignore_after and self.active else handler)
