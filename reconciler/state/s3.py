"""The applied state on S3-compatible storage, with the same promises as the local files.

Objects, beside the state object `<key>` (the same JSON as a local state.json):
- `<key>.lock`: the lock, created only if absent (If-None-Match: *), so exactly one run holds it.
The state object is the document a local state.json holds, written compact: nobody diffs it in
git, and compact JSON is encoded several times faster.
- `<key>.journal/<serial>.jsonl`: one segment per group commit, written whole before its results are
  reported; named by its first serial, zero-padded, so listing order is serial order. A segment is
  also created only if absent: two runs that both think they hold the lock (one was force-unlocked)
  collide on their first segment, and the loser stops sending.
- the state object is replaced only with If-Match on the ETag it was read (or last written) with, so
  no run overwrites a state it has not seen; its segments are kept until the state holds them.
Loading replays the segments over the state object; the end of a run compacts them into it and
deletes them. A SIGKILL at any moment therefore loses no success and invents none.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Iterable, Iterator

from ..config import S3Location
from ..errors import StateCorrupt
from ..escape import json_text
from .audit import S3AuditLog
from .journal import journal_lines, journal_records, remember_batch, replay
from .lock import UNKNOWN, LockInfo
from .model import Entry, RecordingFailed, State, parse_state, state_bytes
from .s3objects import ObjectStore, PreconditionFailed, RemoteStateError

SEGMENT = re.compile(r"[0-9]{12}\.jsonl")
PROBE_PREFIX = "probe-"
# A reader that takes no lock (plan, drift) may see a run compact between its reads: it reads again.
LOAD_ATTEMPTS = 5


class StateConflict(RecordingFailed):
    """The state object changed since this run read it: it is not overwritten."""


class S3StateStore:
    def __init__(self, location: S3Location, objects: ObjectStore | None = None):
        self.location = location
        self.objects = objects or ObjectStore(location)
        self.key = location.key
        self.lock_key = f"{location.key}.lock"
        self.journal_prefix = f"{location.key}.journal/"
        self.etag: str | None = None  # of the state object as last read or written; None: absent
        self.segments_seen: list[str] = []  # journal objects found by the last load (and probes)
        self.lock_seen: tuple[bytes, str] | None = None  # the lock object as last read or written

    def where(self) -> str:
        return self.location.url()

    def journal_where(self) -> str:
        return self.location.url(self.journal_prefix)

    def audit_log(self) -> S3AuditLog:
        return S3AuditLog(self.location)

    def load(self) -> State:
        """The state object with the journal segments of an unfinished (or crashed) run replayed: one
        consistent snapshot, read again (a few times at most) when a run compacted meanwhile."""
        for _ in range(LOAD_ATTEMPTS):
            state = self._load_once()
            if state is not None:
                return state
        raise StateCorrupt(
            f"{self.where()}: the state and its journal {self.journal_where()} kept changing while they "
            f"were read ({LOAD_ATTEMPTS} times: another run is compacting); try again"
        )

    def _load_once(self) -> State | None:
        found = self.objects.get(self.key)
        if found is None:
            state, self.etag = State(), None
        else:
            state = parse_state(found[0], self.where(), "restore an earlier version of the object")
            self.etag = found[1]
        self.segments_seen = []
        for key in self.objects.list(self.journal_prefix):
            name = key[len(self.journal_prefix) :]
            self.segments_seen.append(key)
            if name.startswith(PROBE_PREFIX):
                continue  # left by a run that died during its preflight: nothing in it
            if not SEGMENT.fullmatch(name):
                raise StateCorrupt(
                    f"{self.location.url(key)}: not a journal segment (<serial>.jsonl); move it away"
                )
            segment = self.objects.get(key)
            if segment is None:
                return None  # compacted and deleted since the state object was read
            replay(state, journal_records(segment[0], self.location.url(key), torn_tail_allowed=False))
        # A run that compacted between the two reads replaced the state object, then deleted the
        # segments it now holds: the listing lacks them, and the state read lacks them too. The state
        # object unchanged since it was read proves no compaction came between.
        if self.objects.etag(self.key) != self.etag:
            return None
        return state

    @contextlib.contextmanager
    def writer(self, state: State) -> Iterator[S3Journal]:
        """Record into `state` durably; compact into the state object on the way out, even after an
        error (unless the state object changed: then the segments stay, and are replayed)."""
        journal = S3Journal(self, state)
        try:
            yield journal
        finally:
            journal.close()

    def write_state(self, state: State) -> None:
        """Replace the state object, only if it is still the one this store read or wrote last."""
        try:
            self.etag = self.objects.put(
                self.key, state_bytes(state, pretty=False), if_match=self.etag, if_absent=self.etag is None
            )
        except PreconditionFailed:
            raise StateConflict(
                f"{self.where()}: the state object changed since this run read it (another run wrote "
                "it, or this run's lock was removed with `state unlock --force`); it was not overwritten"
            ) from None

    def replace(self, state: State) -> None:
        """Make `state` the whole state (state migrate): the object is replaced, the journal goes."""
        self.write_state(state)
        self.objects.delete_many(self.segments_seen)
        self.segments_seen = []

    # The lock: an object created only if absent; removed only while it is still the one we wrote.

    def create_lock(self, info: LockInfo) -> bool:
        data = _lock_bytes(info)
        try:
            etag = self.objects.put(self.lock_key, data, if_absent=True)
        except PreconditionFailed:
            return False
        self.lock_seen = (data, etag)
        return True

    def read_lock(self) -> LockInfo | None:
        found = self.objects.get(self.lock_key)
        self.lock_seen = found
        if found is None:
            return None
        try:
            return LockInfo.from_json(json.loads(found[0]))
        except ValueError:
            return UNKNOWN

    def remove_lock(self, mine: LockInfo | None) -> bool:
        """With `mine`: delete the lock only if it still holds exactly `mine` (a forced unlock may have
        let another run take it since). Without: delete the lock last read (state unlock)."""
        if mine is not None:
            found = self.objects.get(self.lock_key)
            if found is None or found[0] != _lock_bytes(mine):
                return False
            return self.objects.delete(self.lock_key, if_match=found[1])
        etag = self.lock_seen[1] if self.lock_seen else None
        return self.objects.delete(self.lock_key, if_match=etag)


class S3Journal:
    """Writes one segment object per batch; each is whole on S3 before the caller reports it.

    A batch is added to the in-memory state only once its segment is written. A failed write (or a
    segment another run wrote first) makes every later `record` refuse: the caller stops sending.
    """

    # Each commit is an S3 round trip (and a request billed): at most ten a second.
    commit_interval_s = 0.1

    def __init__(self, store: S3StateStore, state: State):
        self.store = store
        self.state = state
        self.opened = False
        self.written = 0
        self.segments: list[str] = []
        self.failure: str | None = None
        if state.lineage is None:
            state.lineage = str(uuid.uuid4())

    def open(self) -> None:
        """Prove, before anything is sent, that this run can write: the state object is written back
        as read (If-Match: nobody replaced it since; a new state gets its lineage), and a probe
        object is written to and deleted from the journal prefix."""
        if self.opened:
            return
        store = self.store
        probe = f"{store.journal_prefix}{PROBE_PREFIX}{uuid.uuid4().hex}"
        try:
            store.write_state(self.state)
            store.objects.put(probe, b"", if_absent=True)
            store.objects.delete(probe)
        except (RemoteStateError, PreconditionFailed, RecordingFailed) as error:
            raise RecordingFailed(f"{_reason(error)}; nothing was sent") from None
        self.opened = True

    def record(self, changes: Iterable[tuple[str, Entry | None]]) -> None:
        """Durably record a batch (one object for all of it); `None` drops the number from the state."""
        if self.failure is not None:
            raise RecordingFailed(f"the journal failed earlier ({self.failure})")
        changes = list(changes)
        if not changes:
            return
        self.open()
        key = f"{self.store.journal_prefix}{self.state.serial + 1:012d}.jsonl"
        data, serial = journal_lines(self.state, changes)
        try:
            self.store.objects.put(key, data, if_absent=True)
        except PreconditionFailed:
            self.failure = "another run wrote the same journal segment"
            raise RecordingFailed(
                f"{self.store.location.url(key)}: another run wrote this journal segment first: the lock was "
                "removed (`state unlock --force`) while this run was sending, and another run took it"
            ) from None
        except RemoteStateError as error:
            self.failure = str(error)
            raise RecordingFailed(f"cannot record: {error}") from None
        remember_batch(self.state, changes, serial)
        self.segments.append(key)
        self.written += len(changes)

    def close(self) -> None:
        """Compact: replace the state object (If-Match), then delete the segments it now holds. If
        the state object changed, nothing is overwritten and every segment stays: the next load
        replays them, so nothing recorded is lost."""
        if not self.opened:
            return
        store = self.store
        compacted = [*store.segments_seen, *self.segments]
        if self.written:
            try:
                store.write_state(self.state)  # a StateConflict leaves every segment in place
            except RemoteStateError as error:
                raise RecordingFailed(str(error)) from None
        try:
            store.objects.delete_many(compacted)
        except RemoteStateError as error:
            raise RecordingFailed(
                f"the state was saved, but {error}; those segments are skipped on load and the next run "
                "deletes them"
            ) from None
        store.segments_seen = []


def _lock_bytes(info: LockInfo) -> bytes:
    return json_text(info.to_json(), sort_keys=True).encode()


def _reason(error: Exception) -> str:
    if isinstance(error, PreconditionFailed):
        return f"{error}: another run wrote this object at the same moment"
    return str(error)
