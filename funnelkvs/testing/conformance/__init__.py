"""The storage backend conformance suite: one set of tests every backend must pass.

Backend authors (built-in or third-party) subclass :class:`BackendConformance` in a pytest module and
say how to open their backend; pytest collects the inherited tests::

    from pathlib import Path

    from funnelkvs.testing.conformance import BackendConformance
    from my_backend import create_my_backend

    class TestMyBackend(BackendConformance):
        persistent = True
        concurrent_readers = False

        def make_backend(self, path: Path):
            return create_my_backend(path, {})

It needs pytest and hypothesis (``pip install 'funnelkvs[test]'``). What it checks: get/put/delete,
overwrite, all 256 byte values in keys and values, the empty key and value, 64 KiB keys, 16 MiB values,
range scans in ring order against a brute-force filter (ranges that wrap past zero, the whole ring from
any start, boundaries on key positions), count and size (total value bytes), scanning while writing,
``sync()`` then close and reopen (``persistent``), close twice, a reader in another process
(``concurrent_readers``), and a hypothesis model of random operations against a dict.

The package, one idea a module: :mod:`~funnelkvs.testing.conformance.suite` (the test class),
:mod:`~funnelkvs.testing.conformance.expected` (what scans must yield, by brute force),
:mod:`~funnelkvs.testing.conformance.model` (the hypothesis model against a dict) and
:mod:`~funnelkvs.testing.conformance.reader` (the concurrent reader in another process).
"""

from __future__ import annotations

from funnelkvs.testing.conformance.expected import expected_scan, scan_fingerprint
from funnelkvs.testing.conformance.reader import READER_TIMEOUT as READER_TIMEOUT
from funnelkvs.testing.conformance.suite import KIB as KIB
from funnelkvs.testing.conformance.suite import MIB as MIB
from funnelkvs.testing.conformance.suite import BackendConformance

__all__ = ["BackendConformance", "expected_scan", "scan_fingerprint"]
