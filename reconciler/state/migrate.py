"""`state migrate --to s3|local`: copy the state and its audit log between the local files and S3.

Both ends come from reconciler.yaml (`state.path`, and `state.bucket`/`key`); `state.backend` only
says which one the other commands use. Both locks are held while copying, so no run writes either
end meanwhile. A target holding another lineage (a different state) or a newer serial of the same
lineage is never overwritten.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable

from ..config import Config
from ..errors import ReconcilerError
from ..escape import json_line
from .local import LocalStateStore
from .lock import locked, stderr
from .s3 import S3StateStore
from .store import AuditLog


def migrate(
    config: Config, to: str, lock_timeout_s: float = 0.0, notify: Callable[[str], None] = stderr
) -> str:
    """Copy the state (lineage, serial, entries) and the audit records the target lacks; return a
    summary of what was done."""
    if config.s3 is None:
        raise ReconcilerError(
            f"{config.path.name}: state migrate needs state.bucket and state.key (the S3 object to copy "
            "to or from), even while state.backend is local"
        )
    local, remote = LocalStateStore(config.state_path), S3StateStore(config.s3)
    local_audit, remote_audit = local.audit_log(), remote.audit_log()
    if to == "s3":
        source, target, source_audit, target_audit = local, remote, local_audit, remote_audit
    else:
        source, target, source_audit, target_audit = remote, local, remote_audit, local_audit
    with contextlib.ExitStack() as locks:
        locks.enter_context(locked(local, "state migrate", lock_timeout_s, notify))
        locks.enter_context(locked(remote, "state migrate", lock_timeout_s, notify))
        state = source.load()
        if state.lineage is None:
            raise ReconcilerError(f"{source.where()}: there is no state to migrate (nothing applied yet)")
        if state.moved_to:
            raise ReconcilerError(
                f"{source.where()}: this state was already moved to {state.moved_to}; nothing to migrate"
            )
        existing = target.load()
        if existing.lineage is not None and existing.lineage != state.lineage:
            raise ReconcilerError(
                f"{target.where()}: holds another state (lineage {existing.lineage}, serial "
                f"{existing.serial}), not {state.lineage}; it was not overwritten. Move it away first if it "
                "is not needed"
            )
        # Only the marker left by an earlier migration (or an identical copy) may be overwritten: a live
        # copy of the same lineage may hold successes the source lacks, and they would be lost.
        if existing.lineage is not None and not existing.moved_to and existing.to_json() != state.to_json():
            raise ReconcilerError(
                f"{target.where()}: holds a live copy of this state (serial {existing.serial}) that differs "
                f"from {source.where()} (serial {state.serial}); both may have recorded applies, so it was "
                "not overwritten. Check which one is current and move the other away"
            )
        copied = _copy_audit(source_audit, target_audit)
        target.replace(state)
        # The source stays behind as a marker: commands refuse it, so the two cannot diverge.
        source.replace(dataclasses.replace(state, moved_to=target.where()))
    summary = (
        f"Copied the state (lineage {state.lineage}, serial {state.serial}, {len(state.entries)} number(s)) "
        f"and {copied} audit record(s) from {source.where()} to {target.where()}."
    )
    if config.state_backend != to:
        summary += f" Set `state.backend: {to}` in {config.path.name} to use it."
    return summary


def _copy_audit(source: AuditLog, target: AuditLog) -> int:
    """Append to `target` the records of `source` it does not hold yet (so migrating back and forth
    never doubles a record); return how many were copied."""
    held = {json_line(record) for record in target.read()}
    missing = [record for record in source.read() if json_line(record) not in held]
    if missing:
        target.open()
        try:
            target.append(missing)
        finally:
            target.close()
    return len(missing)
