"""Whether a storage backend may take ``storage.path``: shared by the plugin host when it opens the
backend and by config validation, so both refuse the same settings with the same words."""

from __future__ import annotations

from pathlib import Path

from funnelkvs.contributions import StorageBackendSpec
from funnelkvs.storage.options import path_required, path_unused


def storage_path_problem(spec: StorageBackendSpec, path: Path | None) -> str | None:
    """A persistent backend needs ``storage.path``; one that is not persistent keeps no files, so a
    path given for it is refused rather than silently ignored."""
    if spec.persistent and path is None:
        return path_required(spec.name)
    if not spec.persistent and path is not None:
        return path_unused(spec.name, path)
    return None
