"""FunnelKVS: a distributed key-value store on the Chord DHT."""

from __future__ import annotations

__version__ = "0.1.0"
