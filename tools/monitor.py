"""`roadside monitor`: the frames on a node's link, decoded as they pass; it never answers.

Which port: the node's link UART (LINK_UART of its board module: TX 23 / RX 19 on the
DevKitC), not its USB console, which carries the REPL and log lines. On a pole the link goes
to the gateway, so the technician listens in with a USB-UART adapter whose RX is clipped to
the node's TX (and GND): `--port u0` opens that adapter read-only, nothing is ever written,
so the gateway's acks are the only ones the node gets. On the emulated board it is
`board.host_port` (`serial: /dev/pts/N` of `roadside emulate`). Without a live line,
`--capture FILE` decodes a hex capture: one chunk of bytes per line as hex digits (spaces
allowed), optionally after a time stamp (`12.345` or `[   12.345]`); `#` starts a comment.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import serial

from protocol import frame, link, show
from protocol.errors import ProtocolError
from tools import ports
from tools.errors import ToolError

_STAMP = re.compile(r"^\s*(\[\s*[-+0-9.]+\s*\]|[-+]?\d+\.\d*)\s+")


def capture_chunks(path: Path) -> Iterator[bytes]:
    """The byte chunks of a hex capture file (see the module doc)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ToolError(f"{path}: cannot read the capture ({exc})") from exc
    for number, raw in enumerate(lines, start=1):
        line = _STAMP.sub("", raw.split("#", 1)[0])
        digits = "".join(line.split())
        if not digits:
            continue
        try:
            yield bytes.fromhex(digits)
        except ValueError as exc:
            raise ToolError(f"{path}:{number}: not hex bytes ({exc}); write each chunk as "
                            "hex digits, optionally after a time stamp like 12.345") from exc


class Decoder:
    """Bytes of an uplink in, one printed line per frame out."""

    def __init__(self, ring: frame.KeyRing, say: Callable[[str], None]) -> None:
        self._deframer = link.Deframer()
        self._ring = ring
        self._say = say
        self.frames = 0
        self.bad = 0

    def feed(self, data: bytes) -> None:
        for item in self._deframer.feed(data):
            try:
                if isinstance(item, ProtocolError):
                    raise item
                msg = frame.open_payload(item, self._ring, True)
            except ProtocolError as exc:
                self.bad += 1
                self._say(f"bad frame: {exc}")
            else:
                self.frames += 1
                self._say(show.describe(msg))


def decode_chunks(chunks: Iterable[bytes], decoder: Decoder) -> None:
    for chunk in chunks:
        decoder.feed(chunk)
    decoder.feed(b"\x00")              # a last frame without its delimiter


def listen(port: str, decoder: Decoder, *, count: int | None, duration_s: float | None,
           baud: int = 115200) -> None:
    """Decodes the live line until count frames (good or bad) or duration_s, or Ctrl-C."""
    path = ports.check(port)
    deadline = None if duration_s is None else time.monotonic() + duration_s
    try:
        line = serial.Serial(path, baud, exclusive=True, timeout=0.2)
    except serial.SerialException as exc:
        raise ToolError(f"port {path} cannot be opened ({exc}); is it busy?") from exc
    with line:
        while count is None or decoder.frames + decoder.bad < count:
            if deadline is not None and time.monotonic() >= deadline:
                break
            try:
                data = line.read(max(1, line.in_waiting))
            except serial.SerialException as exc:
                raise ToolError(f"port {path} went away ({exc}): the adapter was unplugged"
                                ) from exc
            if data:
                decoder.feed(data)
