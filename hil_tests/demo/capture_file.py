"""Captured MQTT messages as JSONL: one object per message, in arrival order.

    {"t": 1764756000.123, "topic": "roadside/v1/demo/demo-gw/data", "payload_hex": "9f...",
     "qos": 1, "retain": false}

``t`` is the subscriber's Unix time when the message arrived. The HIL suite writes the same
format (hil_tests/rig/capture_file.py); this minimal reader/writer keeps the demo standalone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO


class CaptureFileError(ValueError):
    """A capture file line is not a message object; the message names the line."""


@dataclass(frozen=True)
class Message:
    """One captured message."""

    t: float
    topic: str
    payload: bytes
    qos: int
    retain: bool

    def to_json(self) -> str:
        return json.dumps({"t": self.t, "topic": self.topic, "payload_hex": self.payload.hex(),
                           "qos": self.qos, "retain": self.retain}, separators=(",", ":"))


class Writer:
    """Appends messages to a JSONL file, flushed after each (a killed demo loses none)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f: TextIO = path.open("w", encoding="utf-8")
        self.count = 0

    def write(self, msg: Message) -> None:
        self._f.write(msg.to_json() + "\n")
        self._f.flush()
        self.count += 1

    def close(self) -> None:
        self._f.close()


def read(path: Path) -> Iterator[Message]:
    """The messages of a capture file; CaptureFileError naming the first bad line."""
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                yield Message(float(obj["t"]), str(obj["topic"]),
                              bytes.fromhex(obj["payload_hex"]), int(obj.get("qos", 0)),
                              bool(obj.get("retain", False)))
            except (ValueError, KeyError, TypeError) as exc:
                raise CaptureFileError(
                    f"{path}:{i}: not a captured message ({exc}); each line must be "
                    '{"t": ..., "topic": ..., "payload_hex": ..., "qos": ..., "retain": ...}'
                ) from exc
