"""The capture file format: what is written reads back the same; bad lines are named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hil_tests.rig import capture_file as cf


def test_messages_round_trip_in_order(tmp_path: Path) -> None:
    """Written messages read back equal, in order, one JSON object per line with 5 keys."""
    msgs = [cf.Message(1764756000.125, "roadside/v1/s/g/data", bytes([0x9f, 0, 0xff]), 1, False),
            cf.Message(1764756001.5, "roadside/v1/s/g/state", b'{"state":"online"}', 1, True),
            cf.Message(1764756002.0, "x", b"", 0, False)]
    path = tmp_path / "mqtt.jsonl"
    assert cf.write(path, msgs) == 3
    assert list(cf.read(path)) == msgs
    first = json.loads(path.read_text().splitlines()[0])
    assert first == {"t": 1764756000.125, "topic": "roadside/v1/s/g/data",
                     "payload_hex": "9f00ff", "qos": 1, "retain": False}


@pytest.mark.parametrize("line", [
    "not json", "[1, 2]", '{"t": 1, "topic": "a", "qos": 0, "retain": false}',
    '{"t": "x", "topic": "a", "payload_hex": "", "qos": 0, "retain": false}',
    '{"t": 1, "topic": "a", "payload_hex": "zz", "qos": 0, "retain": false}',
])
def test_a_bad_line_is_named(tmp_path: Path, line: str) -> None:
    """A line that is not a message raises CaptureFileError naming the file and line 2."""
    path = tmp_path / "bad.jsonl"
    path.write_text(cf.Message(1.0, "a", b"").to_json() + "\n" + line + "\n")
    with pytest.raises(cf.CaptureFileError, match=r"bad\.jsonl:2: not a captured message"):
        list(cf.read(path))
