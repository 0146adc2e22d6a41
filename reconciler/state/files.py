"""Crash-safe local file writes: atomic replace, synced appends, torn tails cut off."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Any

from ..yamlfile import NotARegularFile, refuse_unless_regular


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
    # Non-blocking, then checked: opening a FIFO to write would wait for a reader forever (non-blocking,
    # it fails with ENXIO when there is none).
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        descriptor = os.open(path, flags, 0o644)
    except OSError as error:
        if error.errno == errno.ENXIO:
            _refuse_unless_regular(path, os.stat(path).st_mode)
        raise
    try:
        _refuse_unless_regular(path, os.fstat(descriptor).st_mode)
    except NotARegularFile:
        os.close(descriptor)
        raise
    return os.fdopen(descriptor, "ab", buffering=0)


def _refuse_unless_regular(path: Path, mode: int) -> None:
    try:
        refuse_unless_regular(mode, "written")
    except NotARegularFile as error:
        error.filename = os.fspath(path)
        raise


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
