"""A virtual null-modem cable between a node's link and the gateway, with faults on the line.

`Relay` opens the node's side of a serial link (an emulated board's `host_port` pty, or a real
USB-UART adapter such as /dev/ttyUSB1) and offers the gateway a fresh pty behind a stable path
(`relay.path`, a symlink in the relay's folder that the gateway config names). A thread copies
bytes both ways:

- **pacing**: each direction delivers at most baud / 10 bytes per second (8N1), as a UART does;
- **bit flips**: every bit flips with probability `flip_rate`, drawn from `random.Random(seed)`
  (the seed is recorded in `faults.jsonl`, with every flip: direction, byte offset, bit);
- **mid-frame cut**: `truncate_next()` delivers only the first half of the node's next chunk
  (a power cut while the UART was sending);
- **unplug / plug**: `unplug()` hangs up the gateway's pty (its reads fail with EIO as when a
  USB adapter is pulled) and drops what the node sends meanwhile; `plug()` makes a new pty and
  points the same path at it;
- **capture**: `<name>.node-gw.hex` and `<name>.gw-node.hex` get one line per chunk, the Unix
  time and the bytes as hex, as they entered the cable (before any flip).

The relay is a thread in the test's process: it needs no privileges and dies with the test.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import select
import termios
import threading
import time
import tty
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TextIO

CHUNK_B = 4096
POLL_S = 0.02
PENDING_MAX_B = 64 * 1024          # what a direction holds for a reader that is not reading


class RelayError(RuntimeError):
    """The relay could not open a side of the link."""


@dataclass
class Direction:
    """One direction of the cable: bytes waiting to be delivered, counters, its capture."""

    name: str                       # "node-gw" or "gw-node"
    capture: TextIO
    pending: bytearray
    offset: int = 0                 # bytes that entered this direction so far
    delivered: int = 0
    dropped: int = 0                # lost to an unplugged line
    flips: int = 0
    credit: float = 0.0             # bytes the line may carry now (pacing)
    next_flip: int = -1             # bit index of the next flip in this direction's stream


def _open_tty(path: str, baud: int) -> int:
    """Opens a tty raw and non-blocking at `baud` (a pty ignores the speed)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise RelayError(f"{path}: cannot open ({exc.strerror}); plug in the USB-UART adapter "
                         "or give the node's link port") from exc
    tty.setraw(fd)
    speed = getattr(termios, f"B{baud}", None)
    if speed is not None:
        attrs = termios.tcgetattr(fd)
        attrs[4] = attrs[5] = speed
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return fd


class Relay:
    """The cable between `node_port` and a pty the gateway opens at `path` (a context manager).

    flip_rate is per bit, in both directions; seed None draws one (recorded either way).
    """

    def __init__(self, node_port: str, folder: Path, name: str, *, baud: int = 115200,
                 flip_rate: float = 0.0, seed: int | None = None) -> None:
        if not 0.0 <= flip_rate < 0.5:
            raise RelayError(f"flip_rate {flip_rate}: give a probability per bit in [0, 0.5)")
        self.node_port = node_port
        self.folder = folder
        self.name = name
        self.baud = baud
        self.seed = random.randrange(1 << 32) if seed is None else seed
        self._rng = random.Random(self.seed)
        self._flip_rate = flip_rate
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{name}.tty"
        self._faults = (folder / f"{name}.faults.jsonl").open("w", encoding="utf-8")
        self._lock = threading.Lock()
        self._dirs = {d: Direction(d, (folder / f"{name}.{d}.hex").open("w", encoding="utf-8"),
                                   bytearray()) for d in ("node-gw", "gw-node")}
        self._node_fd = -1
        self._gw_master = self._gw_holder = -1
        self.plugged = False
        self._stop = threading.Event()
        self._truncate: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._fault("start", flip_rate=flip_rate, seed=self.seed, baud=baud,
                    node_port=node_port)
        for d in self._dirs.values():
            d.next_flip = self._skip(0)

    # ----- public interface ---------------------------------------------------------------

    def start(self) -> Relay:
        self._node_fd = _open_tty(self.node_port, self.baud)
        self.plug()
        self._thread = threading.Thread(target=self._loop, name=f"rig.relay.{self.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        with self._lock:
            self._hang_up()
            if self._node_fd >= 0:
                os.close(self._node_fd)
                self._node_fd = -1
            self._fault("stop", **self.counters())
            for d in self._dirs.values():
                d.capture.close()
            self._faults.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def flip_rate(self) -> float:
        return self._flip_rate

    @flip_rate.setter
    def flip_rate(self, rate: float) -> None:
        """Changes the flip rate from now on (recorded)."""
        with self._lock:
            self._flip_rate = rate
            for d in self._dirs.values():
                d.next_flip = self._skip(d.offset * 8)
            self._fault("flip_rate", flip_rate=rate)

    def unplug(self) -> None:
        """Pulls the cable: the gateway's pty hangs up; what the node sends is lost."""
        with self._lock:
            self._hang_up()
            self._fault("unplug")

    def plug(self) -> None:
        """Plugs the cable (again): a new pty behind the same path."""
        with self._lock:
            if self.plugged:
                return
            master, holder = os.openpty()
            tty.setraw(holder)
            tty.setraw(master)
            os.set_blocking(master, False)
            tmp = self.path.with_suffix(".new")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(os.ttyname(holder))
            tmp.replace(self.path)
            self._gw_master, self._gw_holder = master, holder
            for d in self._dirs.values():
                d.pending.clear()
            self.plugged = True
            self._fault("plug", pty=os.ttyname(holder))

    def truncate_next(self) -> threading.Event:
        """Arms a mid-frame cut: the next chunk from the node reaches the gateway only up to
        its middle, the rest is lost (recorded). The event is set when that happened: cut
        the board's power then, and the gateway has seen half a frame."""
        with self._lock:
            self._truncate = threading.Event()
            return self._truncate

    def drop_pending(self, direction: str = "node-gw") -> int:
        """Loses what is still on its way in one direction (a UART FIFO at a power cut, so
        the far end gets half a frame); returns how many bytes were lost (recorded)."""
        with self._lock:
            d = self._dirs[direction]
            n = len(d.pending)
            d.dropped += n
            d.pending.clear()
            self._fault("drop_pending", dir=direction, bytes=n)
            return n

    def counters(self) -> dict[str, int]:
        """Bytes in, delivered, dropped and bits flipped, per direction."""
        out: dict[str, int] = {}
        for d in self._dirs.values():
            out |= {f"{d.name}.in": d.offset, f"{d.name}.delivered": d.delivered,
                    f"{d.name}.dropped": d.dropped, f"{d.name}.flips": d.flips}
        return out

    # ----- the loop -----------------------------------------------------------------------

    def _fault(self, event: str, **fields: object) -> None:
        self._faults.write(json.dumps({"t": time.time(), "event": event, **fields}) + "\n")
        self._faults.flush()

    def _hang_up(self) -> None:
        if not self.plugged:
            return
        for fd in (self._gw_master, self._gw_holder):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._gw_master = self._gw_holder = -1
        self.plugged = False

    def _skip(self, bit: int) -> int:
        """The bit index of the next flip at or after `bit` (geometric gaps); -1: never."""
        p = self._flip_rate
        if p <= 0.0:
            return -1
        u = self._rng.random()
        return bit + int(math.log1p(-u) / math.log1p(-p))

    def _enter(self, d: Direction, data: bytes) -> None:
        """Bytes entering one direction: captured, flipped, queued (or dropped unplugged)."""
        d.capture.write(f"{time.time():.6f} {data.hex()}\n")
        d.capture.flush()
        buf = bytearray(data)
        end_bit = (d.offset + len(buf)) * 8
        while 0 <= d.next_flip < end_bit:
            i, bit = divmod(d.next_flip, 8)
            buf[i - d.offset] ^= 1 << bit
            d.flips += 1
            self._fault("flip", dir=d.name, byte=i, bit=bit)
            d.next_flip = self._skip(d.next_flip + 1)
        d.offset += len(buf)
        if self._truncate is not None and d.name == "node-gw" and len(buf) >= 2:
            keep = len(buf) // 2
            d.dropped += len(buf) - keep
            self._fault("truncate", dir=d.name, kept=keep, lost=len(buf) - keep)
            del buf[keep:]
            self._truncate.set()
            self._truncate = None
        if self.plugged:
            d.pending += buf
            if len(d.pending) > PENDING_MAX_B:      # nobody reads: the oldest bytes are lost
                d.dropped += len(d.pending) - PENDING_MAX_B
                del d.pending[:len(d.pending) - PENDING_MAX_B]
        else:
            d.dropped += len(buf)

    def _loop(self) -> None:
        last = time.monotonic()
        rate = self.baud / 10.0
        while not self._stop.is_set():
            with self._lock:
                fds = [self._node_fd] + ([self._gw_master] if self.plugged else [])
                busy = any(d.pending for d in self._dirs.values())
            try:
                ready, _, _ = select.select(fds, [], [], POLL_S / 4 if busy else POLL_S)
            except (OSError, ValueError):       # a side closed meanwhile
                continue
            with self._lock:
                now = time.monotonic()
                for d in self._dirs.values():
                    d.credit = min(d.credit + (now - last) * rate, rate * POLL_S + CHUNK_B)
                last = now
                for fd in ready:
                    try:
                        data = os.read(fd, CHUNK_B)
                    except OSError:              # EIO: the other side hung up
                        data = b""
                    if not data:
                        continue
                    if fd == self._node_fd:
                        self._enter(self._dirs["node-gw"], data)
                    elif fd == self._gw_master and self.plugged:
                        self._enter(self._dirs["gw-node"], data)
                self._deliver(self._dirs["node-gw"], self._gw_master if self.plugged else -1)
                self._deliver(self._dirs["gw-node"], self._node_fd)

    def _deliver(self, d: Direction, fd: int) -> None:
        n = min(len(d.pending), int(d.credit))
        if n <= 0 or fd < 0:
            return
        try:
            sent = os.write(fd, d.pending[:n])
        except BlockingIOError:
            return
        except OSError:                          # nobody on the other side: lost, as on a UART
            sent = n
        del d.pending[:sent]
        d.credit -= sent
        d.delivered += sent
