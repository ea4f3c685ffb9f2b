"""FunnelKVS: a distributed key-value store on the Chord DHT.

Public API: :class:`Client` (``funnelkvs.client``), :data:`hookimpl` for plugin authors
(``funnelkvs.hookspecs``), and the error tree (``funnelkvs.errors``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from funnelkvs.errors import (
    ClientClosed,
    ConfigError,
    FunnelKVSError,
    InvalidRequest,
    KeyNotFound,
    LocalProtocolError,
    NodeUnreachable,
    NotAnswered,
    PluginError,
    ProtocolError,
    RemoteProtocolError,
    RequestTimeout,
    ServerError,
    StorageBusy,
    StorageError,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from funnelkvs.client import Client
    from funnelkvs.hookspecs import hookimpl

__all__ = [
    "Client",
    "ClientClosed",
    "ConfigError",
    "FunnelKVSError",
    "InvalidRequest",
    "KeyNotFound",
    "LocalProtocolError",
    "NodeUnreachable",
    "NotAnswered",
    "PluginError",
    "ProtocolError",
    "RemoteProtocolError",
    "RequestTimeout",
    "ServerError",
    "StorageBusy",
    "StorageError",
    "__version__",
    "hookimpl",
]


def __getattr__(name: str) -> Any:
    # Imported lazily so that `import funnelkvs` (e.g. by a plugin) does not pull in sockets or pluggy.
    if name == "Client":
        from funnelkvs.client import Client

        return Client
    if name == "hookimpl":
        from funnelkvs.hookspecs import hookimpl

        return hookimpl
    raise AttributeError(f"module 'funnelkvs' has no attribute {name!r}")
