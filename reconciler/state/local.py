"""Applied state: what was last sent for each number, kept crash-safe, plus the lock that guards it.

`open_store(config)` gives the store `state.backend` names: this module's local files (the default),
or an S3 object (`s3state`), which keeps the same promises with the same record formats.

Local layout beside `state.json`: `state.json.journal` (JSON Lines, one fsynced record per success, replayed
on load) and `state.json.lock`. A run appends to the journal as PUTs succeed and compacts once at the
end (one atomic rewrite of state.json), so cost grows linearly with the number of changes and a crash
at any moment leaves a state that loads and is true.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import StateCorrupt
from ..yamlfile import NotARegularFile, read_regular
from .audit import LocalAuditLog
from .files import _fsync_dir, atomic_write, drop_torn_tail, open_appending, sync_appended, write_all
from .journal import journal_lines, journal_records, remember_batch, replay
from .lock import UNKNOWN, LockInfo
from .model import Entry, RecordingFailed, State, parse_state, state_bytes


class LocalStateStore:
    """The state as local files: `state.json`, its journal and its lock beside it."""

    def __init__(self, path: Path):
        self.path = path
        self.journal_path = path.with_name(path.name + ".journal")
        self.lock_path = path.with_name(path.name + ".lock")
        # The lock this store took: while it holds one, every write first checks the lock is still it.
        self.held: LockInfo | None = None

    def where(self) -> str:
        return str(self.path)

    def journal_where(self) -> str:
        return self.journal_path.name

    def audit_log(self) -> LocalAuditLog:
        return LocalAuditLog(self.path.with_name("audit.jsonl"))

    def load(self) -> State:
        """The state file with the journal of an unfinished (or crashed) run replayed on top."""
        state = self._read_state_file()
        if self.journal_path.exists():
            replay(state, self._read_journal())
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
        self.refuse_unless_locked(f"{self.path} was not rewritten")
        atomic_write(self.path, state_bytes(state))

    def replace(self, state: State) -> None:
        """Make `state` the whole state (state migrate): the file is rewritten and any journal goes."""
        self.write_state_file(state)
        self.journal_path.unlink(missing_ok=True)
        _fsync_dir(self.path.parent)

    def lock_lost(self) -> str | None:
        """Why the lock this store took is no longer its own, or None (also when it took none): removed
        (`state unlock --force`), or replaced by another run's (another id)."""
        if self.held is None:
            return None
        holder = self.read_lock()
        if holder is None:
            return f"{self.lock_path} was removed during the run (`state unlock --force`?)"
        if not self.held.same_holding(holder):
            return (
                f"{self.lock_path} is no longer this run's lock (another run took it after "
                "`state unlock --force`)"
            )
        return None

    def refuse_unless_locked(self, consequence: str) -> None:
        """Raise RecordingFailed, having written nothing, when this run's lock is no longer its own."""
        lost = self.lock_lost()
        if lost:
            raise RecordingFailed(f"{lost}; {consequence}")

    def _read_state_file(self) -> State:
        try:
            raw = read_regular(self.path)
        except FileNotFoundError:
            return State()
        except NotARegularFile as error:
            raise StateCorrupt(f"{self.path}: {error}") from None
        except OSError as error:
            raise StateCorrupt(f"{self.path}: cannot be read ({error.strerror})") from None
        return parse_state(raw, str(self.path), "restore it from version control")

    def _read_journal(self) -> Iterator[tuple[str, dict[str, Any]]]:
        try:
            data = read_regular(self.journal_path)
        except OSError as error:
            raise StateCorrupt(f"{self.journal_path}: cannot be read ({error.strerror or error})") from None
        return journal_records(data, str(self.journal_path), torn_tail_allowed=True)

    # The lock: a file created with O_EXCL, so exactly one process can create it.

    def create_lock(self, info: LockInfo) -> bool:
        """Create the lock with its content in one step: written to a temporary file, then linked into
        place (link fails if the lock exists), so no reader ever sees an empty or partial lock."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.lock_path.with_name(f".{self.lock_path.name}.{os.getpid()}.tmp")
        try:
            with open(temporary, "w") as file:
                json.dump(info.to_json(), file)
                file.flush()
                os.fsync(file.fileno())
            try:
                os.link(temporary, self.lock_path)
            except FileExistsError:
                return False
        finally:
            temporary.unlink(missing_ok=True)
        self.held = info
        return True

    def read_lock(self) -> LockInfo | None:
        try:
            return LockInfo.from_json(json.loads(read_regular(self.lock_path)))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError):
            return UNKNOWN

    def remove_lock(self, mine: LockInfo | None) -> bool:
        """With `mine`: remove the lock only if it is still that holding of it (after a forced unlock,
        the lock there may be another run's). Without: remove whatever lock there is (state unlock)."""
        if mine is not None:
            self.held = None
            if not mine.same_holding(self.read_lock()):
                return False
        self.lock_path.unlink(missing_ok=True)
        return True

    def journal_moved(self, journal: Any) -> str | None:
        """Why this run's journal file is no longer the one the next command reads, or None: it was
        removed or replaced (the state folder deleted mid-run)."""
        try:
            if _identity(os.stat(self.journal_path)) != _identity(os.fstat(journal.fileno())):
                return f"{self.journal_path} was replaced during the run"
        except FileNotFoundError:
            return f"{self.journal_path} was removed during the run (was the state folder deleted?)"
        return None


def _identity(status: os.stat_result) -> tuple[int, int]:
    return (status.st_dev, status.st_ino)


class Journal:
    """Appends synced records for one run; each is durable before the caller reports it.

    A batch is added to the in-memory state only once it is on disk. A failed write is cut back off
    the file (so no torn record is ever followed by another) and every later `record` refuses: the
    caller stops sending and reports what it could not record.
    """

    def __init__(self, store: LocalStateStore, state: State):
        self.store = store
        self.state = state
        self.file: Any = None
        self.size = 0
        self.written = 0
        self.failure: OSError | None = None
        if state.lineage is None:
            state.lineage = str(uuid.uuid4())

    def open(self) -> None:
        """Prove, before anything is sent, that the state folder, the journal and compaction can be
        written and synced: a probe the size of a large batch is written, synced and removed."""
        if self.file is not None:
            return
        self.store.refuse_unless_locked("nothing was sent")
        folder = self.store.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".{self.store.path.name}.{os.getpid()}.probe"
            try:
                with open(probe, "wb") as file:
                    file.write(b"\0" * 65536)
                    file.flush()
                    os.fsync(file.fileno())
            finally:
                probe.unlink(missing_ok=True)
            self.file = open_appending(self.store.journal_path)
            self.size = drop_torn_tail(self.file, self.store.journal_path)
            sync_appended(self.file.fileno())
            _fsync_dir(folder)
        except OSError as error:
            self._close_file()
            raise RecordingFailed(
                f"{error.filename or folder}: cannot write and sync the state there "
                f"({error.strerror or error}); nothing was sent"
            ) from None

    def record(self, changes: Iterable[tuple[str, Entry | None]]) -> None:
        """Durably record a batch (one sync for all of it); `None` drops the number from the state."""
        if self.failure is not None:
            raise RecordingFailed(f"the journal failed earlier ({self.failure.strerror or self.failure})")
        changes = list(changes)
        if not changes:
            return
        self.open()
        # Nothing is written once the lock is another run's (or gone), or the journal is not where the
        # next command reads it: this batch is then exactly what is not recorded.
        problem = self.store.lock_lost() or self.store.journal_moved(self.file)
        if problem:
            self.failure = OSError(problem)
            raise RecordingFailed(f"{problem}; this batch was not recorded, and the run stops sending")
        data, serial = journal_lines(self.state, changes)
        try:
            write_all(self.file, data)
            sync_appended(self.file.fileno())
        except OSError as error:
            self.failure = error
            self._cut_back()
            raise RecordingFailed(
                f"{self.store.journal_path}: cannot record ({error.strerror or error})"
            ) from None
        self.size += len(data)
        # Synced, but perhaps into a file removed meanwhile, which nobody will read: then the batch is
        # not recorded (nor kept in memory, so that compaction does not record it either).
        moved = self.store.journal_moved(self.file)
        if moved:
            self.failure = OSError(moved)
            raise RecordingFailed(f"{moved}; this batch was not recorded, and the run stops sending")
        remember_batch(self.state, changes, serial)
        self.written += len(changes)

    def close(self) -> None:
        """Compact: one atomic rewrite of state.json, then the journal goes. If the rewrite fails, the
        journal stays and the next load replays it: nothing recorded is lost. A run whose lock was taken
        over writes nothing: what it recorded is in the journal, which the run now holding the lock
        loaded when it started (it took the lock after this run's last record), or the next command
        replays."""
        if self.file is None:
            return
        self._close_file()
        lost = self.store.lock_lost()
        if lost and not self.written:
            return  # nothing of this run's to compact, and the journal there may be another run's
        if lost:
            raise RecordingFailed(
                f"{lost}; this run did not rewrite {self.store.path.name}: every success it recorded is in "
                f"{self.store.journal_path.name}, which the next run reads"
            )
        if self.written:
            self.store.write_state_file(self.state)
        if self.failure is None:
            self.store.journal_path.unlink(missing_ok=True)
            _fsync_dir(self.store.path.parent)

    def _cut_back(self) -> None:
        """Remove a partly written batch, so the journal ends on a whole record."""
        with contextlib.suppress(OSError):
            self.file.truncate(self.size)
            sync_appended(self.file.fileno())

    def _close_file(self) -> None:
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
            self.file = None
