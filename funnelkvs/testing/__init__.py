"""Testing tools shipped with FunnelKVS: the backend conformance suite and node fixtures."""
