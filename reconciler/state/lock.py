"""The state lock, whatever holds the state: who holds it, waiting for it, and clearing a stale one.

A store (a local file or an S3 object) provides three primitives: create the lock only if there is
none (`create_lock`, returning the holder when it exists), read it, and remove it. Everything a
person sees about locks (the holder's description, --lock-timeout, `state unlock`) is here, once.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from ..errors import LockHeld, ReconcilerError

# Polling a held lock: start quickly (runs are often short), then back off to this.
POLL_MAX_S = 2.0


@dataclass(frozen=True)
class LockInfo:
    host: str
    pid: int
    user: str
    command: str
    since: str
    ci_run: str = ""
    # Unique to one holding of the lock: a run compares it before every write, so it can tell its own
    # lock from one another run took after `state unlock --force` (same host, perhaps the same pid).
    id: str = ""

    @classmethod
    def mine(cls, command: str) -> LockInfo:
        """The lock this process would hold for `command`, with the CI run's URL where there is one."""
        return cls(
            socket.gethostname(), os.getpid(), _user(), command, _now(), github_run_url(), uuid.uuid4().hex
        )

    @classmethod
    def from_json(cls, data: Any) -> LockInfo:
        """A lock read from a file or object; one that is not readable as a lock is UNKNOWN."""
        try:
            info = cls(**data)
        except TypeError:
            return UNKNOWN
        texts = (info.host, info.user, info.command, info.since, info.ci_run, info.id)
        if not (type(info.pid) is int and 0 < info.pid < 2**31 and all(isinstance(t, str) for t in texts)):
            return UNKNOWN
        return info

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "pid": self.pid,
            "user": self.user,
            "command": self.command,
            "since": self.since,
            "ci_run": self.ci_run,
            "id": self.id,
        }

    def same_holding(self, other: LockInfo | None) -> bool:
        """True when `other` is this very holding of the lock (not merely the same host and pid)."""
        return other is not None and other is not UNKNOWN and bool(self.id) and other.id == self.id

    def is_stale(self) -> bool:
        """True when the holder ran on this host and its process is gone."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except (PermissionError, OverflowError):
            return False
        return False

    def describe(self) -> str:
        if self is UNKNOWN:
            return "an unknown process (unreadable lock)"
        text = f"{self.user}@{self.host} (pid {self.pid}, `{self.command}`) since {self.since}"
        if self.ci_run:
            text += f", CI run {self.ci_run}"
        if self.is_stale():
            text += "; that process is gone, so the lock is stale"
        return text


class LockStore(Protocol):
    """What a state store provides for locking."""

    def create_lock(self, info: LockInfo) -> bool:
        """Create the lock holding `info` unless a lock exists; True when created."""

    def read_lock(self) -> LockInfo | None:
        """The holder (UNKNOWN when unreadable), or None when there is no lock."""

    def remove_lock(self, mine: LockInfo | None) -> bool:
        """Remove the lock (only if it is still `mine`, when given); False when it was not ours."""


UNKNOWN = LockInfo(host="", pid=0, user="", command="", since="")


def stderr(text: str) -> None:
    """The default way to tell the user about a lock: one escaped, redacted line on stderr."""
    from ..escape import escape
    from ..secrets import redact

    sys.stderr.write(redact(escape(text)) + "\n")
    sys.stderr.flush()


@contextlib.contextmanager
def locked(
    store: LockStore, command: str, timeout_s: float = 0.0, notify: Callable[[str], None] = stderr
) -> Iterator[LockInfo]:
    """Hold the state lock for the block. A held lock fails at once, saying who holds it; with
    `timeout_s`, it is waited for up to that long first (the caller plans only once it holds it)."""
    info = LockInfo.mine(command)
    deadline = time.monotonic() + timeout_s
    pause = 0.05
    told = False
    try:
        while True:
            if store.create_lock(info):
                break
            holder = store.read_lock()
            if holder is None:  # released between our attempt and our look: try again at once
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockHeld(_held_message(holder, waited=timeout_s))
            if not told:
                notify(f"waiting up to {_seconds(timeout_s)} for the state lock, held by {holder.describe()}")
                told = True
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, POLL_MAX_S)
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM) just as the lock was taken: a lock of ours must not outlive us.
        with contextlib.suppress(Exception):
            if store.read_lock() == info:
                store.remove_lock(info)
        raise
    try:
        yield info
    finally:
        try:
            if not store.remove_lock(info):
                notify(
                    "warning: the state lock was no longer this run's at the end (was it removed with "
                    "`state unlock --force`?); the lock now there was left alone"
                )
        except ReconcilerError as error:
            notify(f"warning: could not remove the state lock ({error}); run `reconciler state unlock`")


def unlock(store: LockStore, force: bool) -> str:
    """Remove a stale lock (or, with force, any lock); return what was done."""
    holder = store.read_lock()
    if holder is None:
        return "the state is not locked"
    if not force and not holder.is_stale():
        raise ReconcilerError(
            f"the lock is held by {holder.describe()} and is not known to be stale; "
            "use `reconciler state unlock --force` if you are sure no run is active"
        )
    store.remove_lock(None)
    return f"removed the lock held by {holder.describe()}"


def github_run_url() -> str:
    """The URL of the GitHub Actions run this is, or "" outside one."""
    env = os.environ
    server, repository, run = (
        env.get(name) for name in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    )
    return f"{server}/{repository}/actions/runs/{run}" if server and repository and run else ""


def _held_message(holder: LockInfo, waited: float) -> str:
    advice = "run `reconciler state unlock`" if holder.is_stale() else "wait for it to finish"
    after = f" (waited {_seconds(waited)})" if waited > 0 else ""
    return (
        f"the state is locked by {holder.describe()}{after}; {advice} "
        "(or `reconciler state unlock --force` if you are sure no run is active)"
    )


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
