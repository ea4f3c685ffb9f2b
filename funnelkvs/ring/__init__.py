"""The node's side of the Chord ring: the driver of the pure rules (:mod:`funnelkvs.ring.driver`).

The rules themselves are :mod:`funnelkvs.chord`; the simulator drives the same rules elsewhere.
"""
