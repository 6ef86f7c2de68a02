"""The virtual clock of one emulated board, as the host reads it.

Virtual ms since the scenario's start = (wall ns since the epoch - lag ns) * scale / 1e6.
The lag is the wall time the board's process left out of its clock (device/time.py): waits
that overran because the process was starved of a CPU, and the time its queries to the
supervisor took. The board keeps it in a file of 8 bytes (little-endian µs) that this class
creates, resets with the epoch and reads; a board that lost cores for a while is then behind
the wall-scaled time by exactly that while, and everything on the host that schedules by
virtual time (watchdog deadlines, power cuts, waits, the bench's UTC) follows the board.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import threading
import time
from pathlib import Path

HISTORY_EVERY_NS = 20_000_000      # a lag sample kept per 20 wall ms at most (for ms_at)


class VirtualClock:
    """Epoch, scale and the board's lag file."""

    def __init__(self, lag_path: Path, scale: float) -> None:
        self.lag_path = lag_path
        self.scale = float(scale)
        self.epoch_ns = time.time_ns()
        self._fd = -1
        self._lag = 0                     # the last lag read (kept after close)
        self._lock = threading.Lock()
        self._walls: list[int] = []       # wall ns of the samples, ascending
        self._lags: list[int] = []        # lag ns at each

    def reset(self) -> None:
        """A new epoch (now) and no lag: the scenario starts again at virtual 0."""
        with self._lock:
            self.close()
            self.lag_path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.lag_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            os.write(self._fd, bytes(8))
            self._lag = 0
            self.epoch_ns = time.time_ns()
            self._walls = [self.epoch_ns]
            self._lags = [0]

    def close(self) -> None:
        """Reads the lag a last time and lets the file go; the clock stays readable."""
        if self._fd >= 0:
            self.lag_ns()
            os.close(self._fd)
            self._fd = -1

    def lag_ns(self) -> int:
        """The wall ns the board's clock has left out so far."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                raw = os.pread(self._fd, 8, 0)
                self._lag = int.from_bytes(raw.ljust(8, b"\0"), "little") * 1000
        return self._lag

    def now_ms(self) -> float:
        """Virtual ms since the scenario's start, as the board computes them."""
        wall = time.time_ns()
        lag = self.lag_ns()
        with self._lock:
            if self._lags and lag != self._lags[-1] and wall - self._walls[-1] >= \
                    HISTORY_EVERY_NS:
                self._walls.append(wall)
                self._lags.append(lag)
        return (wall - self.epoch_ns - lag) * self.scale / 1e6

    def ms_at(self, unix_s: float) -> float:
        """Virtual ms at a past wall instant (Unix s), with the lag sampled nearest before
        it (as fine as the host's reads of the clock: every few wall ms while it waits)."""
        wall = round(unix_s * 1e9)
        self.now_ms()                     # the latest lag, for an instant after the samples
        with self._lock:
            i = bisect.bisect_right(self._walls, wall) - 1
            lag = self._lags[i] if i >= 0 else 0
        return (wall - self.epoch_ns - lag) * self.scale / 1e6
