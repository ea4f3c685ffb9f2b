"""Simulating Chord rings in one process: the same :mod:`funnelkvs.chord` code the node runs, over an
in-memory network and a simulated clock (:mod:`funnelkvs.sim.network`)."""

from funnelkvs.sim.network import Network, NotQuiescent

__all__ = ["Network", "NotQuiescent"]
