"""Typed node settings: what a validated config file (plus command-line overrides) becomes.

``funnelkvs.config`` builds these from YAML and validates every field; the node only ever sees
these dataclasses. Defaults here are the documented defaults (config.example.yaml repeats them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from funnelkvs.protocol import DEFAULT_MAX_KEY_SIZE, DEFAULT_MAX_VALUE_SIZE


@dataclass(slots=True)
class NodeSettings:
    host: str = "127.0.0.1"
    port: int = 8001
    #: The address other nodes and clients use; default ``host:port``.
    advertise: str | None = None
    #: Seeds to join; empty starts a new ring.
    join: list[str] = field(default_factory=list)
    #: The node's ring id as 40 hex digits; None: SHA-1 of the advertised address.
    id: str | None = None

    @property
    def address(self) -> str:
        return self.advertise or f"{self.host}:{self.port}"


@dataclass(slots=True)
class RingSettings:
    """Chord maintenance (docs/chord.md). Intervals and timeouts in seconds."""

    #: r, the successor list length (distinct nodes).
    successors: int = 8
    stabilize_interval: float = 0.5
    fix_fingers_interval: float = 0.1
    check_predecessor_interval: float = 0.5
    #: How long a node-to-node call may take before the peer counts as failed (the failure detector).
    rpc_timeout: float = 1.0
    #: How often the full membership (every member, by a walk of successor lists) is refreshed.
    membership_interval: float = 2.0


@dataclass(slots=True)
class StorageSettings:
    backend: str = "memory"
    path: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ReplicationSettings:
    #: Copies kept of each key (N): the key's owner and the next N-1 members.
    factor: int = 3
    #: W and R; None means min(2, factor), so a config that sets only the factor stays valid.
    write_quorum: int | None = None
    read_quorum: int | None = None
    #: Seconds between two anti-entropy rounds (each key range compared with its replicas).
    anti_entropy_interval: float = 10.0
    #: Seconds a tombstone is kept before it may be purged (once every replica has it); also how
    #: long a node may be away and still rejoin with its data directory.
    tombstone_grace: float = 86400.0
    strategy: str = "successor-list"
    conflict_resolver: str = "last-writer-wins"

    @property
    def w(self) -> int:
        """The write quorum in effect."""
        return min(2, self.factor) if self.write_quorum is None else self.write_quorum

    @property
    def r(self) -> int:
        """The read quorum in effect."""
        return min(2, self.factor) if self.read_quorum is None else self.read_quorum


@dataclass(slots=True)
class LimitsSettings:
    max_key_size: int = DEFAULT_MAX_KEY_SIZE
    max_value_size: int = DEFAULT_MAX_VALUE_SIZE
    max_connections: int = 10_000
    #: Per-connection output cap: past it the node stops reading from that client until it drains.
    max_output_buffer: int = 8 * 1024 * 1024


@dataclass(slots=True)
class LoggingSettings:
    level: str = "INFO"


@dataclass(slots=True)
class MetricsSettings:
    exporters: list[str] = field(default_factory=list)


@dataclass(slots=True)
class PluginSettings:
    disabled: list[str] = field(default_factory=list)
    #: Load third-party plugins from the ``funnelkvs`` entry-point group.
    autoload: bool = True
    #: ``plugins.<name>`` sections, handed to that plugin as-is.
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(slots=True)
class Settings:
    node: NodeSettings = field(default_factory=NodeSettings)
    ring: RingSettings = field(default_factory=RingSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    replication: ReplicationSettings = field(default_factory=ReplicationSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    plugins: PluginSettings = field(default_factory=PluginSettings)
