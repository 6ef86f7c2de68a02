"""Tests of gateway/keys.py: the keys file into a KeyRing, every bad line named with its fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.keys import load_keys, parse_keys
from protocol import frame, messages

KEY_HEX = "00112233445566778899aabbccddeeff" * 2
KEY = bytes.fromhex(KEY_HEX)


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    p = tmp_path / "node-keys"
    p.write_text(text)
    p.chmod(mode)
    return p


def test_loads_keys_comments_and_blank_lines(tmp_path: Path) -> None:
    """Pairs load into a closed ring that verifies the node's frames; comments are ignored."""
    path = write(tmp_path, f"# node key\n\n1042 {KEY_HEX}  # pole 3\n  7\t{KEY_HEX.upper()}\n")
    ring, warnings = load_keys(path)
    assert warnings == []
    assert sorted(ring.keys) == [7, 1042] and not ring.open_nodes
    msg = messages.Flood(1042, 1, 1, 1_760_000_000, 1, 2, None, 0, 9)
    assert frame.open_wire(frame.seal(msg, KEY)[:-1], ring) == msg


@pytest.mark.parametrize(("line", "words"), [
    ("1042 " + KEY_HEX[:-1], "odd number of hex digits (63)"),
    ("1042 " + KEY_HEX[:-2], "key is 31 bytes, need 32"),
    ("1042 " + KEY_HEX[:-1] + "g", "non-hex character(s) 'g'"),
    ("4294967296 " + KEY_HEX, "node 4294967296 is out of range"),
    ("-1 " + KEY_HEX, "node '-1' is not a decimal number"),
    ("1042", "expected `NODE HEX64`, got 1 field(s)"),
])
def test_bad_lines_name_file_line_and_fix(tmp_path: Path, line: str, words: str) -> None:
    """Each kind of bad line is reported with file:line and what to do."""
    path = write(tmp_path, f"# keys\n{line}\n")
    with pytest.raises(ConfigError) as info:
        load_keys(path)
    assert str(info.value).startswith(f"{path}:2: ")
    assert words in str(info.value)


def test_duplicate_node_names_both_lines() -> None:
    """A node given twice is refused, naming the line that already holds its key."""
    with pytest.raises(ConfigError, match=r"keys:3: node 5 already has a key on line 1"):
        parse_keys(f"5 {KEY_HEX}\n6 {KEY_HEX}\n5 {KEY_HEX}\n", "keys")


def test_all_problems_reported_at_once() -> None:
    """Several bad lines give one error listing each of them."""
    with pytest.raises(ConfigError) as info:
        parse_keys(f"1 abc\n2 {KEY_HEX}\nx {KEY_HEX}\n", "k")
    assert [ln.split(": ")[0] for ln in str(info.value).splitlines()] == ["k:1", "k:3"]


def test_group_readable_file_loads_with_a_warning(tmp_path: Path) -> None:
    """Mode 644 is not fatal: the keys load and a warning says chmod 600."""
    path = write(tmp_path, f"1 {KEY_HEX}\n", mode=0o644)
    ring, warnings = load_keys(path)
    assert list(ring.keys) == [1]
    assert warnings == [f"keys.file: {path} is readable by others (mode 644); chmod 600 {path}"]


def test_missing_file_names_the_fix(tmp_path: Path) -> None:
    """A keys file that does not exist is a ConfigError saying how to create it."""
    with pytest.raises(ConfigError, match=r'does not exist; create it .* or set keys\.file = ""'):
        load_keys(tmp_path / "nope")


def test_no_keys_warns_and_allow_unkeyed_opens_the_ring() -> None:
    """No keys and a closed ring warns that every frame is refused; allow_unkeyed opens it."""
    ring, warnings = load_keys(None)
    assert not ring.open_nodes and "every frame will be refused" in warnings[0]
    ring, warnings = load_keys(None, allow_unkeyed=True)
    assert ring.open_nodes and len(warnings) == 1 and "bench use only" in warnings[0]
