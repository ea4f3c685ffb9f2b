"""Storage backends. The interface is :class:`~funnelkvs.storage.backend.StorageBackend`; the
built-in backends (memory, lmdb, sqlite) register themselves as plugins like any third party's."""

from funnelkvs.storage.backend import StorageBackend

__all__ = ["StorageBackend"]
