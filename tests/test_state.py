"""State: the journal is replayed on load, torn records are ignored, compaction is one atomic write."""

from __future__ import annotations

import dataclasses
import json
import os
import socket

import pytest

from reconciler.errors import LockHeld, StateCorrupt
from reconciler.state.local import LocalStateStore
from reconciler.state.lock import locked, unlock
from reconciler.state.model import Entry


def entry(about: str) -> Entry:
    return Entry("main", "HX/766", {"about": about}, "2026-11-25T00:00:00Z", "d")


def test_a_fresh_store_loads_empty_and_writing_nothing_creates_nothing(tmp_path):
    store = LocalStateStore(tmp_path / "state.json")
    state = store.load()
    assert (state.lineage, state.serial, state.entries) == (None, 0, {})
    with store.writer(state):
        pass
    assert not store.path.exists() and not store.journal_path.exists()


def test_records_are_compacted_into_the_state_file_and_the_journal_removed(tmp_path):
    store = LocalStateStore(tmp_path / "state.json")
    state = store.load()
    with store.writer(state) as journal:
        journal.record([("+1", entry("a"))])
        journal.record([("+2", entry("b")), ("+1", entry("c"))])
    assert not store.journal_path.exists()
    saved = json.loads(store.path.read_text())
    assert saved["serial"] == 3 and saved["lineage"] == state.lineage
    assert {phone: data["fields"]["about"] for phone, data in saved["numbers"].items()} == {
        "+1": "c",
        "+2": "b",
    }


def test_a_crash_before_compaction_is_recovered_from_the_journal(tmp_path):
    store = LocalStateStore(tmp_path / "state.json")
    state = store.load()
    journal = store.writer(state).__enter__()  # never exited: as if the process died here
    journal.record([("+1", entry("a"))])
    journal.record([("+2", entry("b"))])
    journal.record([("+2", None)])
    assert not store.path.exists()
    recovered = LocalStateStore(store.path).load()
    assert recovered.serial == 3 and set(recovered.entries) == {"+1"}
    assert recovered.lineage == state.lineage


def test_a_torn_last_journal_record_is_ignored(tmp_path):
    store = LocalStateStore(tmp_path / "state.json")
    state = store.load()
    journal = store.writer(state).__enter__()
    journal.record([("+1", entry("a"))])
    with open(store.journal_path, "ab") as file:
        file.write(b'{"lineage": "x", "serial": 2, "phone_nu')  # the crash hit mid-write
    recovered = store.load()
    assert set(recovered.entries) == {"+1"} and recovered.serial == 1


def test_a_journal_already_compacted_is_not_applied_twice(tmp_path):
    store = LocalStateStore(tmp_path / "state.json")
    state = store.load()
    journal = store.writer(state).__enter__()
    journal.record([("+1", entry("a")), ("+2", entry("b"))])
    store.write_state_file(state)  # compaction happened, then the crash came before the journal went
    state.entries.pop("+2")
    recovered = store.load()
    assert recovered.serial == 2 and set(recovered.entries) == {"+1", "+2"}


def test_sent_in_full_at_survives_the_journal_and_compaction_and_is_written_only_when_set(tmp_path):
    store = LocalStateStore(tmp_path / "state.json")
    state = store.load()
    full = dataclasses.replace(entry("a"), sent_in_full_at="2026-11-01T00:00:00Z")
    journal = store.writer(state).__enter__()  # never exited: recovered from the journal
    journal.record([("+1", full), ("+2", entry("b"))])
    assert LocalStateStore(store.path).load().entries == {"+1": full, "+2": entry("b")}
    journal.close()  # compacted
    saved = json.loads(store.path.read_text())["numbers"]
    assert saved["+1"]["sent_in_full_at"] == "2026-11-01T00:00:00Z" and "sent_in_full_at" not in saved["+2"]
    assert LocalStateStore(store.path).load().entries == {"+1": full, "+2": entry("b")}


def test_a_corrupt_state_file_is_a_clear_error(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(StateCorrupt, match="is not a valid state file"):
        LocalStateStore(path).load()


def test_the_lock_is_exclusive_and_released(tmp_path):
    store = LocalStateStore(tmp_path / "state.json")
    with locked(store, "apply"), pytest.raises(LockHeld, match=f"pid {os.getpid()}"), locked(store, "apply"):
        pass
    assert not store.lock_path.exists()


def test_a_lock_whose_process_is_gone_is_stale_and_can_be_cleared(tmp_path):
    store = LocalStateStore(tmp_path / "state.json")
    dead = {"host": socket.gethostname(), "pid": 2**22 + 17, "user": "ci", "command": "apply", "since": "T"}
    store.lock_path.write_text(json.dumps(dead))
    with pytest.raises(LockHeld, match="stale"), locked(store, "apply"):
        pass
    assert "removed the lock" in unlock(store, force=False)
    assert not store.lock_path.exists()


def test_a_lock_taken_over_by_another_run_is_neither_removed_nor_written_under(tmp_path):
    """Same host, same pid, same command (a CI runner reusing pids): only the lock's id tells them apart."""
    from reconciler.state.model import RecordingFailed

    store = LocalStateStore(tmp_path / "state.json")
    with locked(store, "apply") as mine:
        state = store.load()
        with (
            pytest.raises(RecordingFailed, match="no longer this run's lock"),
            store.writer(state) as journal,
        ):
            journal.record([("+1", Entry("main", "HX/1", {"about": "a"}, "T", "d"))])
            assert unlock(store, force=True).startswith("removed the lock")
            other = LocalStateStore(store.path)
            assert other.create_lock(dataclasses.replace(mine, id="another-run"))
            journal.record([("+2", Entry("main", "HX/1", {"about": "b"}, "T", "d"))])
        assert store.remove_lock(mine) is False
    assert store.read_lock() == dataclasses.replace(mine, id="another-run")
    assert not store.path.exists(), "the run that lost its lock did not compact"
    assert set(other.load().entries) == {"+1"}, "what it recorded before stays in the journal"


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("[]", "holds a list, not an object"),
        ('{"format_version": 1, "lineage": "x", "serial": "3", "numbers": {}}', "'serial' must be a whole"),
        ('{"format_version": 1, "lineage": "x", "serial": 1, "numbers": []}', "'numbers' must be an object"),
        ('{"format_version": 1, "lineage": 7, "serial": 1, "numbers": {}}', "'lineage' must be text"),
        (
            '{"format_version": 1, "lineage": "x", "serial": 1, "numbers": {"+1": {"oops": 1}}}',
            "numbers.+1: the entry has no 'account'",
        ),
        (
            '{"format_version": 1, "lineage": "x", "serial": 1, '
            '"numbers": {"+1": {"account": "a", "fields": {"about": 5}}}}',
            "'fields' must map field names to text",
        ),
    ],
)
def test_a_state_file_of_the_wrong_shape_is_a_clear_error_naming_the_file(tmp_path, content, complaint):
    path = tmp_path / "state.json"
    path.write_text(content)
    with pytest.raises(StateCorrupt) as raised:
        LocalStateStore(path).load()
    assert str(path) in str(raised.value) and complaint in str(raised.value)


@pytest.mark.parametrize(
    ("record", "complaint"),
    [
        ('{"entry": {"oops": 1}}', "no 'lineage'"),
        ('{"lineage": "x", "serial": "2", "phone_number": "+1", "entry": null}', "'serial' must be a whole"),
        ('{"lineage": "x", "serial": 2, "phone_number": "+1", "entry": {"oops": 1}}', "no 'account'"),
        ('"just text"', "holds text, not an object"),
    ],
)
def test_a_journal_record_of_the_wrong_shape_is_a_clear_error_naming_the_line(tmp_path, record, complaint):
    store = LocalStateStore(tmp_path / "state.json")
    store.journal_path.write_text(record + "\n" + '{"lineage": "x"}\n')
    with pytest.raises(StateCorrupt) as raised:
        store.load()
    assert f"{store.journal_path}:1" in str(raised.value) and complaint in str(raised.value)


def test_a_failed_journal_write_is_cut_back_and_refuses_further_records(tmp_path, monkeypatch):
    from reconciler.state import local as state_module
    from reconciler.state.model import RecordingFailed

    store = LocalStateStore(tmp_path / "state.json")
    state = store.load()
    journal = store.writer(state).__enter__()
    journal.record([("+1", entry("a"))])

    def disk_full(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state_module, "sync_appended", disk_full)
    with pytest.raises(RecordingFailed, match="No space left"):
        journal.record([("+2", entry("b"))])
    monkeypatch.undo()
    assert "+2" not in state.entries and state.serial == 1  # memory holds only what is on disk
    with pytest.raises(RecordingFailed):
        journal.record([("+3", entry("c"))])
    # The file ends on a whole record: it loads, with exactly what was durable.
    assert set(LocalStateStore(store.path).load().entries) == {"+1"}
    journal.close()
    assert set(LocalStateStore(store.path).load().entries) == {"+1"}
    assert store.journal_path.exists()  # kept after a failure; replaying it is harmless


def test_a_failed_compaction_leaves_no_temporary_file_and_loses_nothing(tmp_path, monkeypatch):
    store = LocalStateStore(tmp_path / "state.json")
    state = store.load()
    journal = store.writer(state).__enter__()
    journal.record([("+1", entry("a"))])

    def refuse(source, destination):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        journal.close()
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert set(LocalStateStore(store.path).load().entries) == {"+1"}  # the journal still holds it


def test_every_backend_implements_the_whole_state_store_protocol():
    """Local and S3 stores (and their journals and audit logs) have every method the protocols name,
    with the same parameters, so code written against StateStore runs on either."""
    import inspect

    from reconciler.state import audit, local, s3, store

    def methods(protocol: type) -> dict[str, inspect.Signature]:
        names = {
            name
            for klass in protocol.__mro__
            if klass not in (object,) and getattr(klass, "_is_protocol", False)
            for name, value in vars(klass).items()
            if callable(value) and not name.startswith("_")
        }
        return {name: inspect.signature(getattr(protocol, name)) for name in names}

    pairs = [
        (store.StateStore, local.LocalStateStore),
        (store.StateStore, s3.S3StateStore),
        (store.Recorder, local.Journal),
        (store.Recorder, s3.S3Journal),
        (store.AuditLog, audit.LocalAuditLog),
        (store.AuditLog, audit.S3AuditLog),
    ]
    for protocol, backend in pairs:
        wanted = methods(protocol)
        assert {"load", "writer", "replace", "audit_log", "create_lock", "remove_lock"} <= set(
            methods(store.StateStore)
        )
        for name, signature in wanted.items():
            assert hasattr(backend, name), f"{backend.__name__} lacks {name}"
            found = inspect.signature(getattr(backend, name))
            assert list(found.parameters) == list(signature.parameters), f"{backend.__name__}.{name}"


def test_a_state_that_is_not_utf8_is_named_in_a_whole_sentence(tmp_path):
    path = tmp_path / "state.json"
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(StateCorrupt) as error:
        LocalStateStore(path).load()
    assert str(error.value) == (
        f"{path}: is not a valid state file (not UTF-8 text: byte 0xff at offset 0 is not valid UTF-8); "
        "restore it from version control"
    )
