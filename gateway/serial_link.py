"""Serial link stage: one node's serial port, read without blocking the loop, reopened on unplug.

`SerialLink.run()` is a long-running task (`name=link.task_name`, "gateway.serial:<path>"):
open the port, pass every chunk read to `on_data(path, data)` (an async callable, or an
`asyncio.Queue` of (path, data)), call `on_open(path)` after each open (the deframer drops
the partial frame of the old connection), and when the port goes away wait a capped, jittered
exponential delay (`reopen_delay`) and open it again, forever. `write()` sends acks and
downlinks. `async with SerialLink(...)` runs the task itself and stops it on exit.

Why the event loop's reader rather than a thread per port: a tty fd is pollable, pyserial
opens it with O_NONBLOCK, and `loop.add_reader` wakes us exactly when bytes (or a hang-up)
are there; reads then never block, there are no threads to stop or locks to hold, and
`on_data` is awaited in order with natural back-pressure (the kernel buffers while the
consumer is busy). pyserial is used to open the port: termios settings, baud rate, raw mode
and the exclusive lock (a second gateway, or a forgotten `screen`, cannot steal bytes). Bytes
move with `os.read`/`os.write` on its fd. Opening runs in the default executor, since some
USB-serial drivers take a while in open().

Unplug is recognised by any of: a read returning EOF or an OSError (EIO when a USB adapter
vanishes or a pty's other side closes), a write failing the same way, or the path no longer
naming the device that was opened (checked every `probe_s`: a /dev/serial/by-id/ link that
vanished or now points at a new device node). Each state change is logged once: the first
failed open of a series at WARNING, the rest of the series at DEBUG.

Writes never block: `write()` queues whole frames in a buffer bounded by `max_out_b` and the
loop's writer drains it as the fd accepts bytes. A frame that does not fit, or any write
while the port is not open, is dropped and counted (`stats.write_drops`); acks are idempotent
and repaired by the next one (SPEC 9.2), so dropping beats blocking the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import random
import termios
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType

import serial

from gateway import backoff
from gateway.config import SerialPort

log = logging.getLogger(__name__)

OnData = Callable[[str, bytes], Awaitable[None]] | asyncio.Queue[tuple[str, bytes]]

READ_CHUNK_B = 4096
# Yield to other ports after this many bytes: what one wake-up verifies at once (~5 ms of
# frames at saturation) is what an alarm on another port may wait behind. 64 KiB gave an
# alarm p99 of 52-88 ms at saturation, 16 KiB 38 ms, 4 KiB 42 ms but 17% less throughput.
MAX_READ_PER_WAKE_B = 16384
MAX_OUT_B = 4096  # write buffer: dozens of ack frames
PROBE_S = 1.0  # how often an open port's path is compared with the opened device
STABLE_S = 5.0  # an open that lasted this long restarts the backoff from reopen_min_s
_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)


def reopen_delay(attempt: int, min_s: float, max_s: float, rng: random.Random) -> float:
    """Seconds to wait before reopen number `attempt` (0 = first) of a vanished port.

    Exponential from min_s, capped at max_s, with equal jitter: uniform in [base/2, base], so
    ports (and gateways) that lost power together do not retry in lockstep.
    """
    return backoff.delay(attempt, min_s, max_s, rng.random())


@dataclass
class LinkStats:
    """Counters of one port since the gateway started."""

    bytes_in: int = 0
    bytes_out: int = 0
    opens: int = 0  # successful opens, the first included
    open_failures: int = 0
    unplugs: int = 0  # an open port that went away
    write_drops: int = 0  # frames dropped by write(): port not open, or buffer full
    write_drop_bytes: int = 0


class _LostError(Exception):
    """The open port went away; the message says how."""


class SerialLink:
    """One serial port to a node, reopened whenever it goes away."""

    def __init__(self, port: SerialPort, reopen_min_s: float, reopen_max_s: float,
                 on_data: OnData, *, max_out_b: int = MAX_OUT_B, probe_s: float = PROBE_S,
                 rng: random.Random | None = None,
                 on_open: Callable[[str], None] | None = None) -> None:
        self.port = port
        self.path = port.path
        self.reopen_min_s = reopen_min_s
        self.reopen_max_s = max(reopen_min_s, reopen_max_s)
        self.stats = LinkStats()
        self._on_data = on_data
        self._on_open = on_open
        self._max_out_b = max_out_b
        self._probe_s = probe_s
        self._rng = rng or random.Random()
        self._serial: serial.Serial | None = None
        self._fd = -1
        self._out = bytearray()
        self._readable = asyncio.Event()
        self._lost: str | None = None
        self._opened = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def task_name(self) -> str:
        return f"gateway.serial:{self.path}"

    @property
    def is_open(self) -> bool:
        return self._serial is not None and self._lost is None

    async def wait_open(self) -> None:
        """Returns once the port is open (at once if it is)."""
        await self._opened.wait()

    # ----- the task -------------------------------------------------------------------

    async def __aenter__(self) -> SerialLink:
        self._task = asyncio.create_task(self.run(), name=self.task_name)
        return self

    async def __aexit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        """Opens, reads and reopens the port until cancelled."""
        loop = asyncio.get_running_loop()
        attempt = 0
        failing: str | None = None  # error of the current series of failed opens
        try:
            while True:
                try:
                    await self._open()
                except (serial.SerialException, OSError, ValueError) as exc:
                    self.stats.open_failures += 1
                    if str(exc) != failing:
                        log.warning("serial %s: cannot open (%s); retrying, at most every "
                                    "%.1f s", self.path, exc, self.reopen_max_s)
                    else:
                        log.debug("serial %s: still cannot open (%s)", self.path, exc)
                    failing = str(exc)
                else:
                    failing = None
                    opened_at = loop.time()
                    reason = await self._pump()
                    self.stats.unplugs += 1
                    log.warning("serial %s: lost (%s); reopening", self.path, reason)
                    self._close()
                    if loop.time() - opened_at >= STABLE_S:
                        attempt = 0
                await asyncio.sleep(reopen_delay(attempt, self.reopen_min_s,
                                                 self.reopen_max_s, self._rng))
                attempt += 1
        finally:
            self._close()

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(None, self._open_blocking)
        try:
            ser = await asyncio.shield(fut)
        except asyncio.CancelledError:
            fut.add_done_callback(_close_opened)  # it may still open after we gave up
            raise
        self._serial = ser
        self._fd = ser.fileno()
        self._lost = None
        self._out.clear()
        self._readable.clear()
        loop.add_reader(self._fd, self._readable.set)
        self.stats.opens += 1
        self._opened.set()
        log.info("serial %s: open at %d baud", self.path, self.port.baudrate)
        if self._on_open is not None:
            self._on_open(self.path)

    def _open_blocking(self) -> serial.Serial:
        ser = serial.serial_for_url(self.path, baudrate=self.port.baudrate, timeout=0,
                                    write_timeout=0, exclusive=True)
        try:
            fd = ser.fileno()
            os.set_blocking(fd, False)
            # pyserial's timeout=0 sets VMIN=0: then read() returns b"" when nothing is
            # there, indistinguishable from a hang-up. VMIN=1 with O_NONBLOCK gives EAGAIN
            # for "nothing yet" and b"" only for a hang-up.
            attrs = termios.tcgetattr(fd)
            cc = attrs[6]
            cc[termios.VMIN], cc[termios.VTIME] = 1, 0
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        except Exception:
            ser.close()
            raise
        return ser

    async def _pump(self) -> str:
        """Reads and delivers until the port is lost; returns how it was lost."""
        rdev = _rdev_of_fd(self._fd)
        while self._lost is None:
            try:
                async with asyncio.timeout(self._probe_s):
                    await self._readable.wait()
            except TimeoutError:
                if _rdev_of_path(self.path) != rdev:
                    self._lose(f"{self.path} no longer names the opened device")
                continue
            self._readable.clear()
            try:
                data = self._read_available()
            except _LostError as exc:
                self._lose(str(exc))
                data = b""
            if data:
                self.stats.bytes_in += len(data)
                if isinstance(self._on_data, asyncio.Queue):
                    await self._on_data.put((self.path, data))
                else:
                    await self._on_data(self.path, data)
        return self._lost

    def _read_available(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while total < MAX_READ_PER_WAKE_B:
            try:
                chunk = os.read(self._fd, READ_CHUNK_B)
            except OSError as exc:
                if exc.errno in _AGAIN:
                    break
                if chunks:  # deliver what came before the error; the next wake-up reports it
                    self._readable.set()
                    break
                raise _LostError(f"read failed: {exc}") from exc
            if not chunk:
                if chunks:
                    self._readable.set()
                    break
                raise _LostError("end of file (device hung up)")
            chunks.append(chunk)
            total += len(chunk)
        else:
            self._readable.set()  # more may be waiting: come back after the others ran
        return b"".join(chunks)

    def _lose(self, reason: str) -> None:
        if self._lost is None:
            self._lost = reason
            self._readable.set()

    def _close(self) -> None:
        ser, self._serial = self._serial, None
        self._opened.clear()
        if ser is None:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._fd)
        loop.remove_writer(self._fd)
        # Output still queued in the kernel would make close() wait for it (a tty's
        # closing_wait, 30 s by default) with the loop blocked: discard it first.
        with contextlib.suppress(OSError, termios.error):
            termios.tcflush(self._fd, termios.TCOFLUSH)
        self._fd = -1
        if self._out:
            self.stats.write_drops += 1
            self.stats.write_drop_bytes += len(self._out)
            self._out.clear()
        with contextlib.suppress(Exception):
            ser.close()

    # ----- writing --------------------------------------------------------------------

    def write(self, data: bytes) -> bool:
        """Queues one frame for the node; never blocks. False: dropped (counted)."""
        if not self.is_open or len(self._out) + len(data) > self._max_out_b:
            self.stats.write_drops += 1
            self.stats.write_drop_bytes += len(data)
            return False
        was_empty = not self._out
        self._out += data
        if was_empty:
            self._flush()
        return True

    def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._out and self.is_open:
            try:
                n = os.write(self._fd, self._out)
            except OSError as exc:
                if exc.errno in _AGAIN:
                    break
                self._lose(f"write failed: {exc}")
                break
            self.stats.bytes_out += n
            del self._out[:n]
        if self._out and self.is_open:
            loop.add_writer(self._fd, self._flush)
        elif self._fd >= 0:
            loop.remove_writer(self._fd)

    @property
    def pending_out(self) -> int:
        """Bytes written but not yet accepted by the device."""
        return len(self._out)


def _close_opened(fut: asyncio.Future[serial.Serial]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        fut.result().close()


def _rdev_of_fd(fd: int) -> int | None:
    try:
        return os.fstat(fd).st_rdev
    except OSError:
        return None


def _rdev_of_path(path: str) -> int | None:
    try:
        return os.stat(path).st_rdev
    except OSError:
        return None
