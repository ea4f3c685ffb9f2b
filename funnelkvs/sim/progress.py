"""A one-line progress report on a terminal for long simulator runs.

Shown on standard error only when it is a terminal, and only once a run has lasted
:data:`SHOW_AFTER_S` seconds (short runs stay silent); each report overwrites the previous one and
:meth:`ProgressLine.close` erases it, so nothing of it is left in a pipe, a file or ``--json`` output.
"""

from __future__ import annotations

import time
from typing import TextIO

#: Seconds of running before the first report.
SHOW_AFTER_S = 2.0
#: Seconds between two reports at most once shown.
EVERY_S = 0.5


class ProgressLine:
    """Call it with a short text; it writes ``\\r<text>`` to ``stream`` when due."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self._began = time.perf_counter()
        self._last = 0.0
        self._shown = False

    def __call__(self, text: str) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._began < SHOW_AFTER_S or now - self._last < EVERY_S:
            return
        self._last = now
        elapsed = now - self._began
        self.stream.write(f"\r\033[K{elapsed:6.1f} s  {text}")
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        """Erase the line if one was shown."""
        if self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._shown = False
