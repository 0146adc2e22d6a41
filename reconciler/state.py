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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ReconcilerError, StateCorrupt
from .escape import json_line, json_text
from .lock import UNKNOWN, LockInfo, LockStore
from .lock import locked as locked  # re-exported: commands lock through the state module
from .lock import unlock as unlock

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from .config import Config

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
    def from_json(cls, data: Any, where: str) -> Entry:
        """An entry read from a file; anything of the wrong shape is a StateCorrupt naming `where`."""
        if not isinstance(data, dict):
            raise StateCorrupt(f"{where}: an entry must be an object, not {_kind(data)}")
        for name in ("account", "fields"):
            if name not in data:
                raise StateCorrupt(f"{where}: the entry has no '{name}'")
        for name in ("account", "target", "applied_at", "digest"):
            if not isinstance(data.get(name, ""), str):
                raise StateCorrupt(f"{where}: '{name}' must be text, not {_kind(data[name])}")
        fields = data["fields"]
        if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
            raise StateCorrupt(f"{where}: 'fields' must map field names to text")
        return cls(
            account=data["account"],
            target=data.get("target", ""),
            fields=dict(fields),
            applied_at=data.get("applied_at", ""),
            digest=data.get("digest", ""),
        )


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


@dataclass
class State:
    lineage: str | None = None
    serial: int = 0
    entries: dict[str, Entry] = field(default_factory=dict)
    # Set on the copy `state migrate` moved away from: the live state is now at that place.
    moved_to: str | None = None

    def to_json(self) -> dict[str, Any]:
        document = {
            "format_version": STATE_FORMAT,
            "lineage": self.lineage,
            "serial": self.serial,
            "numbers": {phone: entry.to_json() for phone, entry in sorted(self.entries.items())},
        }
        if self.moved_to:
            document["moved_to"] = self.moved_to
        return document

    def refuse_if_moved(self, where: str) -> None:
        """A state `state migrate` moved away from is kept only as a marker: using it would let two
        copies go on diverging, and one of them would lose a success when migrated over the other."""
        if self.moved_to:
            raise ReconcilerError(
                f"{where}: this state was moved to {self.moved_to} by `state migrate`; set state.backend "
                "to use it there (or migrate it back)"
            )


class Recorder(Protocol):
    """What `apply` and `import` record through: a journal, local or remote (see `Journal`)."""

    written: int

    def open(self) -> None: ...

    def record(self, changes: Iterable[tuple[str, Entry | None]]) -> None: ...


class Store(LockStore, Protocol):
    """A place the state lives: a local file (`StateStore`) or an S3 object (`s3state.S3StateStore`)."""

    def where(self) -> str: ...

    def journal_where(self) -> str: ...

    def load(self) -> State: ...

    def writer(self, state: State) -> AbstractContextManager[Recorder]: ...

    def replace(self, state: State) -> None: ...


def open_store(config: Config) -> Store:
    """The store `state.backend` names in reconciler.yaml: every command builds its store here."""
    if config.s3 is not None and config.state_backend == "s3":
        from .s3state import S3StateStore  # boto3 is imported only for this backend

        return S3StateStore(config.s3)
    return StateStore(config.state_path)


class StateStore:
    """The state as local files: `state.json`, its journal and its lock beside it."""

    def __init__(self, path: Path):
        self.path = path
        self.journal_path = path.with_name(path.name + ".journal")
        self.lock_path = path.with_name(path.name + ".lock")
        # The lock file this process created, so a run can tell when it was removed under it.
        self.lock_identity: tuple[int, int] | None = None

    def where(self) -> str:
        return str(self.path)

    def journal_where(self) -> str:
        return self.journal_path.name

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
        atomic_write(self.path, state_bytes(state))

    def replace(self, state: State) -> None:
        """Make `state` the whole state (state migrate): the file is rewritten and any journal goes."""
        self.write_state_file(state)
        self.journal_path.unlink(missing_ok=True)
        _fsync_dir(self.path.parent)

    def _read_state_file(self) -> State:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return State()
        except OSError as error:
            raise StateCorrupt(f"{self.path}: cannot be read ({error.strerror})") from None
        return parse_state(raw, str(self.path), "restore it from version control")

    def _read_journal(self) -> Iterator[tuple[str, dict[str, Any]]]:
        try:
            data = self.journal_path.read_bytes()
        except OSError as error:
            raise StateCorrupt(f"{self.journal_path}: cannot be read ({error.strerror})") from None
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
        self.lock_identity = _identity(os.stat(self.lock_path))
        return True

    def read_lock(self) -> LockInfo | None:
        try:
            return LockInfo.from_json(json.loads(self.lock_path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError):
            return UNKNOWN

    def remove_lock(self, mine: LockInfo | None) -> bool:
        self.lock_path.unlink(missing_ok=True)
        self.lock_identity = None
        return True

    def still_recording_here(self, journal: Any) -> str | None:
        """Why this run's records no longer land where the next command looks, or None: the journal
        file was removed or replaced (the folder deleted mid-run), or the lock this run holds is gone
        (`state unlock --force`), so another run could be writing too."""
        try:
            if _identity(os.stat(self.journal_path)) != _identity(os.fstat(journal.fileno())):
                return f"{self.journal_path} was replaced during the run"
        except FileNotFoundError:
            return f"{self.journal_path} was removed during the run (was the state folder deleted?)"
        if self.lock_identity is not None:
            try:
                if _identity(os.stat(self.lock_path)) != self.lock_identity:
                    return f"{self.lock_path} is no longer this run's lock (another run took it)"
            except FileNotFoundError:
                return f"{self.lock_path} was removed during the run (`state unlock --force`?)"
        return None


def _identity(status: os.stat_result) -> tuple[int, int]:
    return (status.st_dev, status.st_ino)


def state_bytes(state: State, pretty: bool = True) -> bytes:
    """The state as it is stored: sorted, and pretty-printed so it diffs well in git (a remote state
    is written compact: json's C encoder only runs without indentation)."""
    return (json_text(state.to_json(), indent=2 if pretty else None, sort_keys=True) + "\n").encode()


def parse_state(raw: bytes, where: str, advice: str) -> State:
    """A stored state; anything of the wrong shape is a StateCorrupt naming `where`."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise StateCorrupt(f"{where}: is not a valid state file (not JSON: {error}); {advice}") from None
    if not isinstance(data, dict):
        raise StateCorrupt(f"{where}: is not a valid state file (it holds {_kind(data)}, not an object)")
    if data.get("format_version") != STATE_FORMAT:
        raise StateCorrupt(
            f"{where}: state format {data.get('format_version')!r} is not {STATE_FORMAT}; "
            "use the reconciler version that wrote it"
        )
    lineage, serial, numbers = data.get("lineage"), data.get("serial"), data.get("numbers")
    if lineage is not None and not isinstance(lineage, str):
        raise StateCorrupt(f"{where}: 'lineage' must be text, not {_kind(lineage)}")
    if not _is_serial(serial):
        raise StateCorrupt(f"{where}: 'serial' must be a whole number >= 0, not {_kind(serial)}")
    if not isinstance(numbers, dict):
        raise StateCorrupt(f"{where}: 'numbers' must be an object of phone number -> entry")
    entries = {phone: Entry.from_json(entry, f"{where}: numbers.{phone}") for phone, entry in numbers.items()}
    moved_to = data.get("moved_to")
    if moved_to is not None and not isinstance(moved_to, str):
        raise StateCorrupt(f"{where}: 'moved_to' must be text, not {_kind(moved_to)}")
    return State(lineage=lineage, serial=serial, entries=entries, moved_to=moved_to)


def journal_records(data: bytes, where: str, torn_tail_allowed: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each journal record in `data` with where it is (`name:line`). A record torn by a crash
    mid-write is the last line of a local journal and was never reported as applied, so it is
    skipped; a remote segment is written whole, so nothing in it may be torn."""
    lines = data.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        at = f"{where}:{number}"
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            if torn_tail_allowed and number == len(lines):
                return
            raise StateCorrupt(f"{at}: unreadable journal record") from None
        problem = _journal_problem(record)
        if problem:
            raise StateCorrupt(f"{at}: not a journal record ({problem})")
        yield at, record


def replay(state: State, records: Iterable[tuple[str, dict[str, Any]]]) -> None:
    """Apply journal records on top of `state`, skipping those already compacted into it."""
    for where, record in records:
        if state.lineage is None:
            state.lineage = record["lineage"]
        if record["lineage"] != state.lineage:
            raise StateCorrupt(
                f"{where}: belongs to another state (lineage {record['lineage']}); "
                "move the journal away if the state was replaced on purpose"
            )
        if record["serial"] <= state.serial:
            continue  # already compacted into the state before a crash
        state.serial = record["serial"]
        if record["entry"] is None:
            state.entries.pop(record["phone_number"], None)
        else:
            state.entries[record["phone_number"]] = Entry.from_json(record["entry"], where)


def journal_lines(state: State, changes: list[tuple[str, Entry | None]]) -> tuple[bytes, int]:
    """The journal records of a batch, numbered on from `state.serial`, and the last serial."""
    serial = state.serial
    lines = []
    for phone_number, entry in changes:
        serial += 1
        record = {
            "lineage": state.lineage,
            "serial": serial,
            "phone_number": phone_number,
            "entry": None if entry is None else entry.to_json(),
        }
        lines.append(json_line(record))
    return "".join(lines).encode(), serial


def remember_batch(state: State, changes: list[tuple[str, Entry | None]], serial: int) -> None:
    """Apply a batch that is now durable to the in-memory state."""
    state.serial = serial
    for phone_number, entry in changes:
        if entry is None:
            state.entries.pop(phone_number, None)
        else:
            state.entries[phone_number] = entry


def _is_serial(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _journal_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return f"it holds {_kind(record)}, not an object"
    missing = [key for key in ("lineage", "serial", "phone_number", "entry") if key not in record]
    if missing:
        return f"no '{missing[0]}'"
    if not isinstance(record["lineage"], str):
        return "'lineage' must be text"
    if not _is_serial(record["serial"]):
        return f"'serial' must be a whole number, not {_kind(record['serial'])}"
    if not isinstance(record["phone_number"], str):
        return "'phone_number' must be text"
    return None


class RecordingFailed(ReconcilerError):
    """A success could not be made durable (a full disk, a vanished folder): the run must stop sending."""


class Journal:
    """Appends synced records for one run; each is durable before the caller reports it.

    A batch is added to the in-memory state only once it is on disk. A failed write is cut back off
    the file (so no torn record is ever followed by another) and every later `record` refuses: the
    caller stops sending and reports what it could not record.
    """

    def __init__(self, store: StateStore, state: State):
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
        remember_batch(self.state, changes, serial)
        self.written += len(changes)
        # The batch is durable, but perhaps in a file nobody will read: stop sending if so.
        moved = self.store.still_recording_here(self.file)
        if moved:
            self.failure = OSError(moved)
            raise RecordingFailed(f"{moved}; stopping so that every send stays recorded")

    def close(self) -> None:
        """Compact: one atomic rewrite of state.json, then the journal goes. If the rewrite fails, the
        journal stays and the next load replays it: nothing recorded is lost."""
        if self.file is None:
            return
        self._close_file()
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


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file, fsync it, rename it over `path`, fsync the folder. On any failure the
    temporary file is removed and `path` is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    _fsync_dir(path.parent)


def open_appending(path: Path) -> Any:
    """A JSON Lines file opened for appending without a Python buffer: a failed write leaves nothing
    pending in memory, so `truncate` can cut the file back to its last whole record. A symlink is
    refused (O_NOFOLLOW): a link committed in a pull request must not make us write elsewhere."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    return os.fdopen(descriptor, "ab", buffering=0)


def write_all(file: Any, data: bytes) -> None:
    """Write every byte (an unbuffered write may be partial) or raise OSError."""
    view = memoryview(data)
    while view:
        written = file.write(view)
        if not written:
            raise OSError(28, "No space left on device (a write made no progress)")
        view = view[written:]


def drop_torn_tail(file: Any, path: Path) -> int:
    """Cut a last line torn by a crash off a JSON Lines file opened for appending, so that a new record
    never follows it (a torn line in the middle would make the file unreadable); return the size."""
    size = file.seek(0, os.SEEK_END)
    if size == 0:
        return 0
    with open(path, "rb") as reader:
        reader.seek(size - 1)
        if reader.read(1) == b"\n":
            return size
        # Walk back to the last newline; a JSON Lines record is small, so this reads little.
        end = size
        while end > 0:
            start = max(0, end - 65536)
            reader.seek(start)
            newline = reader.read(end - start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
    file.truncate(end)
    file.seek(end)
    return end


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
