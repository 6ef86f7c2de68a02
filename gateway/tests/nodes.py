"""Test nodes for the gateway: frames made by `protocol/` written on real ptys.

A `PtyNode` plays one node's side of a serial link the way the firmware does (SPEC 9):
frames get a seq per boot and stay *pending* until an ack covers them; a new frame waits
while 64 frames from the oldest pending one are out (the sender window of SPEC 9.3, which
keeps a lost frame from falling below the gateway's replay window); `retransmit()` sends
the pending ones again, unchanged; acks, time and config frames from the gateway are read by a
reader thread and checked like the node does (addressed to this node and its current boot,
downlink seq strictly increasing, tag of the node's key). The gateway opens `path`, the pty's
slave side; the node writes on the master.

`unplug()` closes the slave the node holds and hangs up the pty so the gateway sees EIO, as
when a USB adapter is pulled; `plug()` makes a new pty and points the same `path` (a symlink,
like /dev/serial/by-id/) at it.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path

from protocol import frame, link, replay
from protocol import messages as m
from protocol.errors import ProtocolError

GUARD_S = 30.0


class PtyNode:
    """One emulated node on a pty (see the module documentation)."""

    def __init__(self, folder: Path, node: int, key: bytes | None, *, boot: int = 1,
                 name: str | None = None) -> None:
        self.node = node
        self.boot = boot
        self.key = key
        self.path = folder / (name or f"node-{node}")
        self.seq = 0
        self.pending: dict[tuple[int, int], bytes] = {}   # (boot, seq) -> wire, all boots
        self.sent: list[m.Message] = []
        self.acks = 0
        self.times: list[m.Time] = []
        self.configs: list[m.Config] = []
        self.refused: list[str] = []
        self.down_seq = 0
        self._sealer = frame.Sealer(key)
        self._ring = frame.KeyRing({node: key} if key else {}, open_nodes=key is None)
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._master = -1
        self._slave = -1
        self.plug()
        self._thread = threading.Thread(target=self._read_loop, name=f"node-{node}",
                                        daemon=True)
        self._thread.start()

    # -- the pty ---------------------------------------------------------------------------

    def plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        os.set_blocking(master, False)
        with self._lock:
            self._master, self._slave = master, slave
        tmp = self.path.with_suffix(".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        os.replace(tmp, self.path)

    def unplug(self) -> None:
        with self._lock:
            master, slave = self._master, self._slave
            self._master = self._slave = -1
        self.path.unlink(missing_ok=True)
        for fd in (slave, master):
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.unplug()

    def __enter__(self) -> PtyNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- uplink ----------------------------------------------------------------------------

    def next(self, cls: type[m.Message], *fields: object) -> m.Message:
        self.seq += 1
        return cls(self.node, self.boot, self.seq, *fields)

    def reboot(self) -> None:
        """A new boot: seqs restart at 1; pending frames of the old boot stay pending."""
        self.boot += 1
        self.seq = 0
        self.down_seq = 0

    def send(self, msg: m.Message, *, corrupt: Callable[[bytes], bytes] | None = None) -> bytes:
        """Writes msg; a new frame of the current boot first waits for the sender window."""
        wire = self._sealer.seal(msg)
        if corrupt is None and msg.boot == self.boot:
            self._window(msg.seq)
        if corrupt is None:
            with self._lock:
                self.pending[(msg.boot, msg.seq)] = wire
                self.sent.append(msg)
        else:
            wire = corrupt(wire)
        self.write(wire)
        return wire

    def flood(self, t: int, depth_mm: int) -> m.Message:
        msg = self.next(m.Flood, t, depth_mm, 3000 - depth_mm, 2450, 0, 5)
        self.send(msg)
        return msg

    def hello(self, cfg_hash: bytes = b"\x00" * 8, cfg_error: str = "") -> m.Message:
        msg = self.next(m.Hello, "test-1.0", "emulated", 1, cfg_hash, cfg_error)
        self.send(msg)
        return msg

    def alarm(self, t: int, kind: int = 1, level_mm: int = 200) -> m.Message:
        msg = self.next(m.Alarm, t, kind, level_mm, level_mm + 5, 1000, None)
        self.send(msg)
        return msg

    def _window(self, seq: int) -> None:
        # SPEC 9.3: no new frame with seq >= u + 64, u the oldest pending seq of this boot.
        # Waiting here retransmits like the firmware, so a frame lost on the line (or flushed
        # when the gateway opened the port) does not stall the node for ever.
        def room() -> bool:
            oldest = min((q for b, q in self.pending if b == self.boot), default=None)
            return oldest is None or seq < oldest + replay.WINDOW

        self._retransmitting_until(room, f"window for seq {seq}")

    def _retransmitting_until(self, done: Callable[[], bool], what: str,
                              timeout_s: float = GUARD_S, retransmit_s: float = 2.0) -> None:
        # Waits (lock held) until done(), sending every pending frame again each
        # retransmit_s, as the firmware does after its ack timeout.
        deadline = time.monotonic() + timeout_s
        next_retx = time.monotonic() + retransmit_s
        with self._lock:
            while not done():
                now = time.monotonic()
                if now >= deadline:
                    raise TimeoutError(f"node {self.node}: {what}: {len(self.pending)} frames "
                                       f"never acked (refused downlinks: {self.refused})")
                if now >= next_retx:
                    self._lock.release()
                    try:
                        self.retransmit()
                    finally:
                        self._lock.acquire()
                    next_retx = now + retransmit_s
                self._lock.wait(min(0.1, deadline - now))

    def write(self, data: bytes) -> None:
        with self._lock:
            fd = self._master
        if fd < 0:
            return
        # A UART never blocks: with nobody reading (gateway stopped) its bytes are lost. The
        # pty's buffer fills instead, so wait a moment for room, then drop the rest; the
        # frame stays pending and is sent again.
        view = memoryview(data)
        while view:
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                _, room, _ = select.select([], [fd], [], 1.0)
                if not room:
                    return
                continue
            except OSError:
                return            # unplugged meanwhile: the frame stays pending
            view = view[n:]

    def retransmit(self) -> int:
        """Sends every pending frame again, unchanged; returns how many."""
        with self._lock:
            wires = list(self.pending.values())
        for w in wires:
            self.write(w)
        return len(wires)

    def wait_acked(self, timeout_s: float = GUARD_S, retransmit_s: float = 2.0) -> None:
        """Waits until nothing is pending, retransmitting every retransmit_s like a node."""
        self._retransmitting_until(lambda: not self.pending, "waiting for acks", timeout_s,
                                   retransmit_s)

    def wait_for(self, pred: Callable[[PtyNode], bool], timeout_s: float = GUARD_S) -> None:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not pred(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"node {self.node}: condition not met")
                self._lock.wait(min(0.1, left))

    # -- downlink --------------------------------------------------------------------------

    def _read_loop(self) -> None:
        deframer = link.Deframer()
        while not self._stop.is_set():
            with self._lock:
                fd = self._master
            if fd < 0:
                time.sleep(0.02)
                continue
            try:
                ready, _, _ = select.select([fd], [], [], 0.05)
                data = os.read(fd, 4096) if ready else b""
            except OSError:
                time.sleep(0.02)           # the gateway closed its side: wait for a reopen
                continue
            for item in deframer.feed(data):
                if isinstance(item, ProtocolError):
                    self._refuse(item.reason)
                    continue
                try:
                    msg = frame.open_payload(item, self._ring, uplink=False)
                except ProtocolError as exc:
                    self._refuse(exc.reason)
                    continue
                self._handle(msg)

    def _refuse(self, reason: str) -> None:
        with self._lock:
            self.refused.append(reason)
            self._lock.notify_all()

    def _handle(self, msg: m.Message) -> None:
        with self._lock:
            if msg.node != self.node or msg.boot != self.boot or msg.seq <= self.down_seq:
                self.refused.append(f"addressing {msg.node}/{msg.boot}#{msg.seq}")
                self._lock.notify_all()
                return
            self.down_seq = msg.seq
            if isinstance(msg, m.Ack):
                self.acks += 1
                for boot, seq in list(self.pending):
                    if boot == msg.acked_boot and replay.covered(msg.floor, msg.sack, seq):
                        del self.pending[(boot, seq)]
            elif isinstance(msg, m.Time):
                self.times.append(msg)
            elif isinstance(msg, m.Config):
                self.configs.append(msg)
            self._lock.notify_all()
