"""Captured MQTT messages as JSONL, one object per message, in arrival order.

    {"t": 1764756000.123, "topic": "roadside/v1/site/gw/data", "payload_hex": "9f...",
     "qos": 1, "retain": false}

``t`` is the subscriber's Unix time (float seconds) when the message arrived, ``payload_hex``
the payload as lowercase hex. The HIL suite writes one file per test into
``hil_tests/artifacts/``; the demo's plot command reads the same format.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TextIO

FIELDS = ("t", "topic", "payload_hex", "qos", "retain")


class CaptureFileError(ValueError):
    """A line of a capture file is not a message object; the message names file and line."""


@dataclass(frozen=True)
class Message:
    """One captured MQTT message."""

    t: float
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False

    def to_json(self) -> str:
        """The message as one JSONL line (without the newline)."""
        return json.dumps({"t": self.t, "topic": self.topic, "payload_hex": self.payload.hex(),
                           "qos": self.qos, "retain": self.retain}, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> Message:
        """Parses one line; ValueError, KeyError or TypeError when it is not a message."""
        obj = json.loads(line)
        if not isinstance(obj, dict):
            raise TypeError(f"a JSON {type(obj).__name__}, not an object")
        t, topic, qos, retain = obj["t"], obj["topic"], obj["qos"], obj["retain"]
        if not isinstance(t, int | float) or isinstance(t, bool):
            raise TypeError(f"t is {t!r}, not a number")
        if not isinstance(topic, str) or not isinstance(qos, int) or not isinstance(retain, bool):
            raise TypeError("topic must be a string, qos an integer, retain true or false")
        return cls(float(t), topic, bytes.fromhex(str(obj["payload_hex"])), qos, retain)


class Writer:
    """Writes messages to a JSONL file, flushed after each one (a killed run loses none)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f: TextIO = path.open("w", encoding="utf-8")
        self.count = 0

    def write(self, msg: Message) -> None:
        self._f.write(msg.to_json() + "\n")
        self._f.flush()
        self.count += 1

    def write_all(self, msgs: Iterable[Message]) -> None:
        for msg in msgs:
            self.write(msg)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def read(path: Path) -> Iterator[Message]:
    """The messages of a capture file, in order; CaptureFileError names the first bad line."""
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield Message.from_json(line)
            except (ValueError, KeyError, TypeError) as exc:
                raise CaptureFileError(
                    f"{path}:{i}: not a captured message ({exc}); each line must be an object "
                    'with "t", "topic", "payload_hex", "qos" and "retain"') from exc


def write(path: Path, msgs: Iterable[Message]) -> int:
    """Writes all messages to path (replacing it); returns how many."""
    with Writer(path) as w:
        w.write_all(msgs)
        return w.count
