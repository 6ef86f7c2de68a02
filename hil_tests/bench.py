"""A bench peer for a node's serial link: decodes, acknowledges and timestamps frames.

This is what a firmware test needs from "the gateway": it opens the host side of the link
with pyserial, reads frames with `protocol/`, refuses what the protocol refuses (counted by
reason), acknowledges every accepted frame as SPEC 9.2 says, answers each hello with a time
frame, and can push config frames. It keeps every accepted message with the virtual time
it arrived. The production gateway (`gateway/`) does all this durably and forwards to MQTT;
this one keeps everything in memory, for tests and `roadside emulate --ack`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import serial

from protocol import frame, link, messages
from protocol.errors import ProtocolError
from protocol.replay import ReplayGuard


@dataclass(frozen=True)
class Received:
    """One accepted uplink message and the virtual time (ms) it reached the bench."""

    msg: messages.Message
    at_ms: float


class BenchGateway:
    """Acknowledging peer on one serial port; a context manager running a reader thread."""

    def __init__(self, port: str, *, keys: Mapping[int, bytes] | None = None,
                 clock_ms: Callable[[], float] = lambda: time.time() * 1000.0,
                 utc_ms: Callable[[], int] | None = None, baudrate: int = 115200,
                 ack: bool = True,
                 on_accept: Callable[[Received], None] | None = None) -> None:
        self.port = port
        self.ring = frame.KeyRing(dict(keys or {}), open_nodes=not keys)
        self.clock_ms = clock_ms
        self.utc_ms = utc_ms or (lambda: int(time.time() * 1000))
        self.ack = ack
        self.on_accept = on_accept
        self.received: list[Received] = []
        self.refused: Counter[str] = Counter()
        self.duplicates = 0
        self.guard = ReplayGuard()
        self._serial = serial.serial_for_url(port, baudrate=baudrate, timeout=0.02,
                                             exclusive=True)
        self._deframer = link.Deframer()
        self._current_boot: dict[int, int] = {}
        self._down_seq: dict[tuple[int, int], int] = {}
        self._keys = dict(keys or {})
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read_loop, name="bench.reader",
                                        daemon=True)

    def __enter__(self) -> BenchGateway:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._serial.close()

    # ----- what tests read ------------------------------------------------------------

    def of_kind(self, kind: type[messages.Message] | None = None) -> list[messages.Message]:
        with self._lock:
            return [r.msg for r in self.received if kind is None or type(r.msg) is kind]

    def wait_for(self, pred: Callable[[list[Received]], bool], timeout_s: float = 60.0) -> None:
        """Blocks until pred(received) is true; raises TimeoutError naming what arrived."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not pred(self.received):
                left = deadline - time.monotonic()
                if left <= 0:
                    kinds = Counter(r.msg.NAME for r in self.received)
                    raise TimeoutError(f"bench on {self.port}: condition not met within "
                                       f"{timeout_s:.0f} s; received {dict(kinds)}, "
                                       f"refused {dict(self.refused)}")
                self._lock.wait(min(left, 0.2))

    # ----- downlink -------------------------------------------------------------------

    def send(self, node: int, make: Callable[[int, int, int], messages.Message]) -> None:
        """Seals and writes a downlink built by make(node, boot, seq) for the node's boot."""
        boot = self._current_boot.get(node)
        if boot is None:
            raise RuntimeError(f"node {node} has not been heard from: no boot to address")
        key = (node, boot)
        seq = self._down_seq.get(key, 0) + 1
        self._down_seq[key] = seq
        self._serial.write(frame.seal(make(node, boot, seq), self._keys.get(node)))

    def send_config(self, node: int, cfg: Mapping[int, int | list[int]]) -> None:
        self.send(node, lambda n, b, s: messages.Config(n, b, s, dict(cfg)))

    # ----- reader ---------------------------------------------------------------------

    def _read_loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._serial.read(4096)
            except serial.SerialException:
                time.sleep(0.05)        # the board side went away (unplug, reboot): retry
                continue
            if not data:
                continue
            for item in self._deframer.feed(data):
                if isinstance(item, ProtocolError):
                    self._refuse(item.reason)
                else:
                    self._handle(item)

    def _refuse(self, reason: str) -> None:
        with self._lock:
            self.refused[reason] += 1
            self._lock.notify_all()

    def _handle(self, payload: bytes) -> None:
        try:
            msg = frame.open_payload(payload, self.ring)
        except ProtocolError as e:
            self._refuse(e.reason)
            return
        node = msg.node
        if isinstance(msg, messages.Hello) or msg.boot > self._current_boot.get(node, -1):
            self._current_boot[node] = max(msg.boot, self._current_boot.get(node, 0))
        try:
            self.guard.accept(node, msg.boot, msg.seq)
            fresh = True
        except ProtocolError:
            fresh = False           # a retransmission we already hold: ack it again
        got = Received(msg, self.clock_ms())
        with self._lock:
            if fresh:
                self.received.append(got)
            else:
                self.duplicates += 1
            self._lock.notify_all()
        if fresh and self.on_accept is not None:
            self.on_accept(got)
        if not self.ack:
            return
        floor, sack = self.guard.ack(node, msg.boot)
        acked_boot = msg.boot
        self.send(node, lambda n, b, s: messages.Ack(n, b, s, acked_boot, floor, sack))
        if isinstance(msg, messages.Hello) and fresh:
            utc = self.utc_ms()
            self.send(node, lambda n, b, s: messages.Time(n, b, s, utc, messages.TIME_NTP))
