"""``python -m funnelkvs.bench --worker``: the entry point of a benchmark worker subprocess."""

from __future__ import annotations

import sys

from funnelkvs.bench.worker import worker_process_main

if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    worker_process_main()
