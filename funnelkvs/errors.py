"""The one exception tree of FunnelKVS.

Every error the package raises on purpose derives from :class:`FunnelKVSError`. Library exceptions
(``OSError``, ``socket.timeout``, ``lmdb.Error``, ``yaml.YAMLError``...) are translated into this tree
once, at the boundary where they enter our code, with the original kept in ``__cause__``.

The split follows trio's rule of saying whose fault an error is:

- :class:`ProtocolError`: bytes on the wire broke the protocol (:class:`RemoteProtocolError` when the
  other side sent them, :class:`LocalProtocolError` when we were asked to send something invalid).
- :class:`NodeUnreachable`: the other side could not be reached or dropped the connection.
- :class:`RequestTimeout`: the other side was reached but did not answer in time.
- :class:`ServerError`: the node answered with an error status.
- :class:`NotAnswered`: the node closed the connection, after an error answer, before answering a
  request pipelined behind it.
- :class:`ClientClosed`: our own code closed the client or pool and then used it.
- :class:`StorageError`, :class:`ConfigError`, :class:`PluginError`: node-side failures
  (:class:`StorageBusy`: a read would wait for a lock; the node retries it off its event loop).
"""

from __future__ import annotations


class FunnelKVSError(Exception):
    """Root of every error FunnelKVS raises on purpose."""


# --- wire -------------------------------------------------------------------------------------------


class ProtocolError(FunnelKVSError):
    """Bytes that do not follow the FunnelKVS protocol."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol (bad magic, bad version, unknown code...)."""


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol cannot carry (e.g. a key over the size limit)."""


# --- talking to a node ------------------------------------------------------------------------------


class NodeUnreachable(FunnelKVSError):
    """No connection to the node could be made, or the node closed it mid-request."""


class RequestTimeout(FunnelKVSError):
    """The node was reached but did not answer within the deadline."""


class ServerError(FunnelKVSError):
    """The node answered with an error status; ``status`` holds it."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class InvalidRequest(ServerError):
    """The node rejected the request as invalid (status INVALID_REQUEST)."""


class NotResponsible(ServerError):
    """The node does not own the key (status NOT_RESPONSIBLE)."""


class NotAnswered(FunnelKVSError):
    """A pipelined request the node never answered: it closed the connection after an error answer to
    an earlier request of the same pipeline. Takes that request's place in the results."""


class KeyNotFound(FunnelKVSError, KeyError):
    """The key has no value. Also a ``KeyError`` so ``client[key]`` reads naturally."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain message.
        return str(self.args[0]) if self.args else "key not found"


class ClientClosed(FunnelKVSError):
    """The client (or its pool) was closed by our own code and then used."""


class InvalidStateError(FunnelKVSError):
    """Misuse of a loop future: read before it was done, or resolved twice."""


# --- node side --------------------------------------------------------------------------------------


class StorageError(FunnelKVSError):
    """A storage backend failed to read, write or sync."""


class StorageBusy(StorageError):
    """A read would have to wait (e.g. for another process's lock): the node retries it on its
    storage thread instead of stalling the event loop."""


class StorageFormatError(StorageError):
    """A data directory was created by another backend or format version."""


class ConfigError(FunnelKVSError):
    """A configuration file or option is invalid; ``problems`` lists every one found."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class PluginError(FunnelKVSError):
    """A plugin failed to load, registered a conflicting name, or was asked for by an unknown name."""
