"""A dependency-free progress report for long commands, on standard error.

On a terminal it is a bar redrawn in place; otherwise (a pipe, a log file, CI) a plain
line every few seconds, so long work still shows it is alive without filling logs.
A total of 0 means "unknown": the count and rate are shown without a bar.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

# Seconds between two redraws on a terminal, and between two plain lines otherwise.
TERMINAL_INTERVAL = 0.1
LINE_INTERVAL = 5.0


class ProgressBar:
    """``bar.update(n)`` as work is done, ``bar.close()`` at the end."""

    def __init__(self, total: int, label: str, *, stream: TextIO | None = None) -> None:
        self.total = max(total, 0)
        self.label = label
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = self.stream.isatty()
        self._started = time.monotonic()
        self._last = self._started
        self._drawn = False

    def update(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        interval = TERMINAL_INTERVAL if self.terminal else LINE_INTERVAL
        if now - self._last >= interval:
            self._last = now
            self._draw(now)

    def _text(self, now: float) -> str:
        """The report at time ``now``: label, bar or percentage, count and rate."""
        rate = self.done / max(now - self._started, 1e-9)
        if not self.total:
            return f"{self.label}: {self.done:,} ({rate:,.0f}/s)"
        fraction = min(self.done / self.total, 1.0)
        counts = f"{self.done:,}/{self.total:,} ({rate:,.0f}/s)"
        if not self.terminal:
            return f"{self.label}: {fraction:.0%} {counts}"
        width = 30
        filled = int(width * fraction)
        return f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {counts}"

    def _draw(self, now: float) -> None:
        """Write the report: over the last one on a terminal, as a new line otherwise."""
        if self.terminal:
            self.stream.write("\r" + self._text(now))
        else:
            self.stream.write(self._text(now) + "\n")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the report: a final bar on a terminal, a final line if any was written."""
        if self.terminal or self._drawn:
            self._draw(time.monotonic())
        if self.terminal:
            self.stream.write("\n")
            self.stream.flush()
