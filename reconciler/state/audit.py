"""The audit log: append-only JSON Lines beside the state (a local file, or one S3 object per run),
one record per result, with who ran it."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ReconcilerError
from ..escape import json_line
from ..yamlfile import NotARegularFile, read_regular
from .files import drop_torn_tail, open_appending, sync_appended, write_all
from .lock import github_run_url
from .model import RecordingFailed, now

if TYPE_CHECKING:
    from ..config import S3Location


def who(cwd: Path | None = None) -> dict[str, str]:
    """Who is running this: GitHub Actions' variables where set, else the local user and git commit."""
    env = os.environ
    actor = env.get("GITHUB_ACTOR") or env.get("CI_ACTOR") or _local_user()
    found = {
        "actor": actor,
        "commit": env.get("GITHUB_SHA") or _git_commit(cwd),
        "branch": env.get("GITHUB_REF_NAME") or "",
        "ci_run": github_run_url(),
    }
    return {key: value for key, value in found.items() if value}


def entry(
    phone_number: str,
    account: str,
    action: str,
    fields: dict[str, tuple[str | None, str | None]],
    result: str,
    message: str,
    actor: dict[str, str],
) -> dict[str, Any]:
    """One audit record: what happened to one number, each field's old and new value, and who did it."""
    return {
        "time": now(),
        "phone_number": phone_number,
        "account": account,
        "action": action,
        "fields": {name: {"old": old, "new": new} for name, (old, new) in fields.items()},
        "result": result,
        "message": message,
        "by": actor,
    }


class LocalAuditLog:
    """Append-only JSON Lines. Every batch is written and flushed at once, so a crash of the process
    loses nothing; it is synced to disk at most every SYNC_INTERVAL_S and on close, so a power cut can
    lose its last second. (The state, which must never lose a success, is synced with every batch.)
    A write that fails raises RecordingFailed: the run stops sending rather than act unrecorded."""

    SYNC_INTERVAL_S = 1.0

    def __init__(self, path: Path):
        self.path = path
        self.file: Any = None
        self.size = 0
        self.last_sync = 0.0
        self.failed_numbers: list[str] = []  # the records a failure lost, by phone number
        self.written_numbers: list[str] = []

    def open(self) -> None:
        """Prove, before anything is sent, that the audit log can be opened for appending and synced."""
        if self.file is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open_appending(self.path)
            self.size = drop_torn_tail(self.file, self.path)
            sync_appended(self.file.fileno())
        except OSError as error:
            self.file = None
            raise RecordingFailed(
                f"{self.path}: cannot write the audit log ({error.strerror or error}); nothing was sent"
            ) from None

    def unwritten_numbers(self) -> set[str]:
        """The numbers whose records a failure lost: the batch whose write failed (earlier ones reached
        the file), or every record of the run when the file was removed under it."""
        return set(self.failed_numbers)

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        records = list(records)
        text = "".join(json_line(entry) for entry in records)
        if not text:
            return
        self.open()
        data = text.encode()
        numbers = [str(entry.get("phone_number")) for entry in records]
        try:
            write_all(self.file, data)
            if time.monotonic() - self.last_sync >= self.SYNC_INTERVAL_S:
                sync_appended(self.file.fileno())
                self.last_sync = time.monotonic()
        except OSError as error:
            self.failed_numbers = numbers
            with contextlib.suppress(OSError):  # the log must end on a whole record
                self.file.truncate(self.size)
            raise RecordingFailed(f"{self.path}: cannot append ({error.strerror or error})") from None
        self.size += len(data)
        self.written_numbers += numbers
        try:
            moved = os.stat(self.path).st_ino != os.fstat(self.file.fileno()).st_ino
        except FileNotFoundError:
            moved = True
        if moved:  # written, but into a file nobody will read again (the folder was deleted?)
            self.failed_numbers = self.written_numbers
            raise RecordingFailed(f"{self.path} was removed or replaced during the run")

    def close(self) -> None:
        if self.file is not None:
            try:
                sync_appended(self.file.fileno())
            except OSError as error:
                raise RecordingFailed(f"{self.path}: cannot sync ({error.strerror or error})") from None
            finally:
                with contextlib.suppress(OSError):
                    self.file.close()
                self.file = None

    def read(self, phone_number: str | None = None) -> Iterator[dict[str, Any]]:
        """Every record, oldest first; a line torn by a crash at the very end is skipped."""
        try:
            data = read_regular(self.path)
        except FileNotFoundError:
            return
        except NotARegularFile as error:
            raise ReconcilerError(f"{self.path}: {error}") from None
        except OSError as error:
            raise ReconcilerError(f"{self.path}: cannot be read ({error.strerror})") from None
        yield from audit_records(data, str(self.path), phone_number)


class S3AuditLog:
    """The audit log as S3 objects, one per run: `<key>.audit/<start time>-<run>.jsonl`, so listing
    order is time order. S3 cannot append, so a run's object is rewritten whole at a group commit at
    most every FLUSH_INTERVAL_S, and at the end of the run: a crash can lose the audit records of the
    run's last second (never a state entry: the journal segments hold those). A write that fails
    raises RecordingFailed: the run stops sending rather than act unaudited."""

    FLUSH_INTERVAL_S = 1.0

    def __init__(self, location: S3Location):
        from .s3objects import ObjectStore

        self.location = location
        self.objects = ObjectStore(location)
        self.prefix = f"{location.key}.audit/"
        self.key: str | None = None
        self.lines: list[str] = []
        self.flushed = 0  # how many of `lines` the object holds
        self.last_flush = 0.0

    def open(self) -> None:
        """Prove, before anything is sent, that this run's audit object can be written."""
        if self.key is not None:
            return
        from .s3objects import RemoteStateError

        started = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        key = f"{self.prefix}{started}-{uuid.uuid4().hex[:12]}.jsonl"
        try:
            self.objects.put(key, b"", if_absent=True)
        except RemoteStateError as error:
            raise RecordingFailed(f"cannot write the audit log: {error}; nothing was sent") from None
        self.key = key
        self.last_flush = time.monotonic()

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        text = "".join(json_line(entry) for entry in records)
        if not text:
            return
        self.open()
        self.lines.append(text)
        if time.monotonic() - self.last_flush >= self.FLUSH_INTERVAL_S:
            self._flush()

    def close(self) -> None:
        if self.key is not None and self.flushed < len(self.lines):
            self._flush()

    def unwritten_numbers(self) -> set[str]:
        """The numbers of records appended but not yet in the object (all of them after a failure)."""
        return {
            json.loads(line)["phone_number"]
            for text in self.lines[self.flushed :]
            for line in text.splitlines()
            if line
        }

    def _flush(self) -> None:
        from .s3objects import RemoteStateError

        count = len(self.lines)
        try:
            self.objects.put(str(self.key), "".join(self.lines).encode())
        except RemoteStateError as error:
            raise RecordingFailed(f"cannot write the audit log: {error}") from None
        self.flushed = count
        self.last_flush = time.monotonic()

    def read(self, phone_number: str | None = None) -> Iterator[dict[str, Any]]:
        """Every record of every run, oldest run first."""
        for key in sorted(self.objects.list(self.prefix)):
            found = self.objects.get(key)
            if found is not None:
                yield from audit_records(found[0], self.location.url(key), phone_number)


def applied_already(
    records: Iterable[dict[str, Any]], checksum: str, commit: str, pending: set[str]
) -> dict[str, Any] | None:
    """The last audit record of a run that applied the plan `checksum` in full at `commit`, or None.

    In full: every number apply recorded under that plan at that commit ended `applied` or
    `recorded`, and none of them is among `pending`, the numbers the fresh plan still changes. A run
    that failed for one number, or a plan never applied at this commit, gives None (then apply refuses
    the checksum as stale, as before)."""
    if not commit:
        return None
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        by = record.get("by") if isinstance(record.get("by"), dict) else {}
        if record.get("plan") == checksum and by.get("commit") == commit:
            latest[str(record.get("phone_number"))] = record
    if not latest or set(latest) & pending:
        return None
    if any(record.get("status") not in ("applied", "recorded") for record in latest.values()):
        return None
    return max(latest.values(), key=lambda record: str(record.get("time", "")))


def audit_records(data: bytes, where: str, phone_number: str | None) -> Iterator[dict[str, Any]]:
    """The records in one log (oldest first), all or those of one number; a line torn by a crash at
    the very end is skipped."""
    lines = data.decode("utf-8", errors="replace").split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            if number == len(lines):
                return
            raise ReconcilerError(f"{where}:{number}: unreadable audit record") from None
        fields = entry.get("fields", {}) if isinstance(entry, dict) else None
        if not isinstance(fields, dict) or not all(isinstance(f, dict) for f in fields.values()):
            raise ReconcilerError(f"{where}:{number}: not an audit record (expected an object)")
        if phone_number is None or entry.get("phone_number") == phone_number:
            yield entry


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _git_commit(cwd: Path | None) -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""
