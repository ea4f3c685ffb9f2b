"""Prometheus exporter for FunnelKVS (filled in by the plugin work)."""
