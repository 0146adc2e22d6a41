"""Applied state: what was last sent for each number, kept crash-safe, plus the lock that guards it.

Layout beside `state.json`: `state.json.journal` (JSON Lines, one fsynced record per success, replayed
on load) and `state.json.lock`. A run appends to the journal as PUTs succeed and compacts once at the
end (one atomic rewrite of state.json), so cost grows linearly with the number of changes and a crash
at any moment leaves a state that loads and is true.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import LockHeld, ReconcilerError, StateCorrupt

STATE_FORMAT = 1


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Entry:
    """What was applied to one number: its account and target, field values, when, and the digest."""

    account: str
    target: str
    fields: dict[str, str]
    applied_at: str
    digest: str

    def to_json(self) -> dict[str, Any]:
        # By hand: dataclasses.asdict deep-copies, and this runs for every number of every apply.
        return {
            "account": self.account,
            "target": self.target,
            "fields": self.fields,
            "applied_at": self.applied_at,
            "digest": self.digest,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        return cls(
            account=str(data["account"]),
            target=str(data.get("target", "")),
            fields={str(key): str(value) for key, value in dict(data["fields"]).items()},
            applied_at=str(data.get("applied_at", "")),
            digest=str(data.get("digest", "")),
        )


@dataclass
class State:
    lineage: str | None = None
    serial: int = 0
    entries: dict[str, Entry] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": STATE_FORMAT,
            "lineage": self.lineage,
            "serial": self.serial,
            "numbers": {phone: entry.to_json() for phone, entry in sorted(self.entries.items())},
        }


class StateStore:
    def __init__(self, path: Path):
        self.path = path
        self.journal_path = path.with_name(path.name + ".journal")
        self.lock_path = path.with_name(path.name + ".lock")

    def load(self) -> State:
        """The state file with the journal of an unfinished (or crashed) run replayed on top."""
        state = self._read_state_file()
        if self.journal_path.exists():
            for record in self._read_journal():
                if state.lineage is None:
                    state.lineage = record["lineage"]
                if record["lineage"] != state.lineage:
                    raise StateCorrupt(
                        f"{self.journal_path}: belongs to another state (lineage {record['lineage']}); "
                        "move it away if the state file was replaced on purpose"
                    )
                if record["serial"] <= state.serial:
                    continue  # already compacted into the state file before a crash
                state.serial = record["serial"]
                if record["entry"] is None:
                    state.entries.pop(record["phone_number"], None)
                else:
                    state.entries[record["phone_number"]] = Entry.from_json(record["entry"])
        return state

    @contextlib.contextmanager
    def writer(self, state: State) -> Iterator[Journal]:
        """Record into `state` durably; compact into state.json on the way out, even after an error."""
        journal = Journal(self, state)
        try:
            yield journal
        finally:
            journal.close()

    def write_state_file(self, state: State) -> None:
        text = json.dumps(state.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        atomic_write(self.path, text.encode())

    def _read_state_file(self) -> State:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return State()
        except OSError as error:
            raise StateCorrupt(f"{self.path}: cannot be read ({error.strerror})") from None
        try:
            data = json.loads(raw)
            if data.get("format_version") != STATE_FORMAT:
                raise StateCorrupt(
                    f"{self.path}: state format {data.get('format_version')!r} is not {STATE_FORMAT}; "
                    "use the reconciler version that wrote it"
                )
            entries = {phone: Entry.from_json(entry) for phone, entry in data["numbers"].items()}
            return State(lineage=data["lineage"], serial=int(data["serial"]), entries=entries)
        except StateCorrupt:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise StateCorrupt(
                f"{self.path}: is not a valid state file ({type(error).__name__}: {error}); "
                "restore it from version control"
            ) from None

    def _read_journal(self) -> Iterator[dict[str, Any]]:
        lines = self.journal_path.read_bytes().split(b"\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not {"lineage", "serial", "phone_number", "entry"} <= record.keys():
                    raise ValueError("incomplete record")
            except (ValueError, KeyError, TypeError):
                if number == len(lines):
                    return  # a record torn by a crash mid-write was never reported as applied
                raise StateCorrupt(f"{self.journal_path}:{number}: unreadable journal record") from None
            yield record


class Journal:
    """Appends fsynced records for one run; each is durable before the caller reports it."""

    def __init__(self, store: StateStore, state: State):
        self.store = store
        self.state = state
        self.file = None
        self.written = 0
        if state.lineage is None:
            state.lineage = str(uuid.uuid4())

    def record(self, changes: Iterable[tuple[str, Entry | None]]) -> None:
        """Durably record a batch (one fsync for all of it); `None` drops the number from the state."""
        lines = []
        for phone_number, entry in changes:
            self.state.serial += 1
            record = {
                "lineage": self.state.lineage,
                "serial": self.state.serial,
                "phone_number": phone_number,
                "entry": None if entry is None else entry.to_json(),
            }
            lines.append(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
            if entry is None:
                self.state.entries.pop(phone_number, None)
            else:
                self.state.entries[phone_number] = entry
        if not lines:
            return
        if self.file is None:
            self.store.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.store.journal_path, "ab")  # noqa: SIM115 (kept open for the run)
            _fsync_dir(self.store.path.parent)
        self.file.write("".join(lines).encode())
        self.file.flush()
        sync_appended(self.file.fileno())
        self.written += len(lines)

    def close(self) -> None:
        """Compact: one atomic rewrite of state.json, then the journal goes."""
        if self.file is None:
            return
        self.file.close()
        self.file = None
        self.store.write_state_file(self.state)
        self.store.journal_path.unlink(missing_ok=True)
        _fsync_dir(self.store.path.parent)


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file, fsync it, rename it over `path`, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    _fsync_dir(path.parent)


def sync_appended(descriptor: int) -> None:
    """Make appended bytes durable. fdatasync flushes the data and the size that makes it readable,
    and skips timestamps; it is what write-ahead logs use on Linux. fsync where it is missing."""
    getattr(os, "fdatasync", os.fsync)(descriptor)


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# --- the lock -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LockInfo:
    host: str
    pid: int
    user: str
    command: str
    since: str

    def is_stale(self) -> bool:
        """True when the holder ran on this host and its process is gone."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def describe(self) -> str:
        text = f"{self.user}@{self.host} (pid {self.pid}, `{self.command}`) since {self.since}"
        if self.is_stale():
            text += "; that process is gone, so the lock is stale"
        return text


@contextlib.contextmanager
def locked(store: StateStore, command: str) -> Iterator[LockInfo]:
    """Hold the state lock for the block; fail at once, saying who holds it, if it is taken."""
    info = LockInfo(socket.gethostname(), os.getpid(), _user(), command, now())
    store.lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(store.lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        holder = read_lock(store)
        held_by = holder.describe() if holder else "an unknown process (unreadable lock file)"
        advice = "run `reconciler state unlock`" if holder and holder.is_stale() else "wait for it to finish"
        raise LockHeld(
            f"the state is locked by {held_by}; {advice} "
            f"(or `reconciler state unlock --force` if you are sure no run is active)"
        ) from None
    with os.fdopen(descriptor, "w") as file:
        json.dump(asdict(info), file)
        file.flush()
        os.fsync(file.fileno())
    try:
        yield info
    finally:
        store.lock_path.unlink(missing_ok=True)


def read_lock(store: StateStore) -> LockInfo | None:
    try:
        return LockInfo(**json.loads(store.lock_path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def unlock(store: StateStore, force: bool) -> str:
    """Remove a stale lock (or, with force, any lock); return what was done."""
    if not store.lock_path.exists():
        return "the state is not locked"
    holder = read_lock(store)
    if not force and not (holder and holder.is_stale()):
        held_by = holder.describe() if holder else "an unknown process"
        raise ReconcilerError(
            f"the lock is held by {held_by} and is not known to be stale; "
            "use `reconciler state unlock --force` if you are sure no run is active"
        )
    store.lock_path.unlink(missing_ok=True)
    return f"removed the lock held by {holder.describe() if holder else 'an unknown process'}"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
