"""Which state backend a configuration names: the one place a backend is chosen."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .local import LocalStateStore
from .store import StateStore

if TYPE_CHECKING:
    from ..config import Config


def open_store(config: Config) -> StateStore:
    """The store `state.backend` names in reconciler.yaml: every command builds its store here."""
    if config.s3 is not None and config.state_backend == "s3":
        from .s3 import S3StateStore  # boto3 is imported only for this backend

        return S3StateStore(config.s3)
    return LocalStateStore(config.state_path)
