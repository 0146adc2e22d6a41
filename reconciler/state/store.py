"""The protocol every state backend implements."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from .lock import LockStore
from .model import Entry, State

if TYPE_CHECKING:
    from contextlib import AbstractContextManager


class Recorder(Protocol):
    """What `apply` and `import` record through: a journal, local or remote (see `Journal`)."""

    written: int

    def open(self) -> None: ...

    def record(self, changes: Iterable[tuple[str, Entry | None]]) -> None: ...


class StateStore(LockStore, Protocol):
    """A place the state lives: a local file (`LocalStateStore`) or an S3 object (`s3state.S3StateStore`)."""

    def where(self) -> str: ...

    def journal_where(self) -> str: ...

    def load(self) -> State: ...

    def writer(self, state: State) -> AbstractContextManager[Recorder]: ...

    def replace(self, state: State) -> None: ...
