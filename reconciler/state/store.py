"""The protocol every state backend implements: `StateStore`, its `Recorder` and its `AuditLog`.

The promises below are what `apply`, `import` and the `state` commands rely on; a new backend (see
docs/development/architecture.md) keeps every one of them, and `state.backends.open_store` is the one
place that chooses a backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from .lock import LockStore
from .model import Entry, State

if TYPE_CHECKING:
    from contextlib import AbstractContextManager


class Recorder(Protocol):
    """A run's journal: what `apply` and `import` record through.

    - `open()` proves, before anything is sent, that records can be made durable here.
    - `record(changes)` makes one batch durable before it returns (each (number, entry) pair; None
      drops the number). When it cannot, it raises `RecordingFailed` and refuses every later batch,
      so the caller stops sending and reports what it could not record.
    - `written` counts the batches recorded.
    """

    written: int

    def open(self) -> None: ...

    def record(self, changes: Iterable[tuple[str, Entry | None]]) -> None: ...


class AuditLog(Protocol):
    """The append-only audit log beside the state: one record per result, with who ran it.

    `open()` proves it can write before anything is sent; `append` raises `RecordingFailed` when a
    record cannot be kept (and `unwritten_numbers` then names the numbers whose records were lost);
    `read` yields every record, oldest first, all or one number's.
    """

    def open(self) -> None: ...

    def append(self, records: Iterable[dict[str, Any]]) -> None: ...

    def unwritten_numbers(self) -> set[str]: ...

    def close(self) -> None: ...

    def read(self, phone_number: str | None = None) -> Iterator[dict[str, Any]]: ...


class StateStore(LockStore, Protocol):
    """A place the state lives: local files (`local.LocalStateStore`) or S3 (`s3.S3StateStore`).

    Every backend promises:
    - **Load what was recorded.** `load()` returns the state as last written plus every journal record
      made since; a state or journal of the wrong shape is a `StateCorrupt` naming `where()`.
    - **One writer.** `create_lock` succeeds for one caller only (an atomic create), `read_lock` says
      who holds it, `remove_lock(mine)` removes only the caller's own lock (see `lock.LockStore`).
    - **Durable records.** `writer(state)` gives the run's `Recorder`; on leaving it, the journal is
      compacted into the state. A crash at any moment leaves a state that loads and holds every record
      `record` returned from, and nothing else.
    - **Atomic replacement.** `replace(state)` writes a whole new state or nothing (never a torn one).
    - **Its own audit log.** `audit_log()` is the log that lives beside this state.
    """

    def where(self) -> str: ...

    def journal_where(self) -> str: ...

    def load(self) -> State: ...

    def writer(self, state: State) -> AbstractContextManager[Recorder]: ...

    def replace(self, state: State) -> None: ...

    def audit_log(self) -> AuditLog: ...
