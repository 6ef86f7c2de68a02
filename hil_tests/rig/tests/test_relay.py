"""The null-modem relay on real ptys: bytes both ways, seeded bit flips, unplug and replug."""

from __future__ import annotations

import json
import os
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from hil_tests.rig.relay import Relay, RelayError

Node = tuple[int, str]


@pytest.fixture
def node() -> Iterator[tuple[int, str]]:
    """A pty standing for the node's UART: the test writes and reads its master; the relay
    opens its path."""
    master, holder = os.openpty()
    tty.setraw(holder)
    tty.setraw(master)
    yield master, os.ttyname(holder)
    os.close(master)
    os.close(holder)


def _read(port: serial.Serial, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = port.read(n - len(out))
        assert chunk, f"only {len(out)} of {n} bytes arrived"
        out += chunk
    return out


def _read_fd(fd: int, n: int) -> bytes:
    out = b""
    while len(out) < n:
        out += os.read(fd, n - len(out))
    return out


def _flips(path: Path) -> list[tuple[str, int, int]]:
    events = [json.loads(line) for line in path.read_text().splitlines()]
    return [(e["dir"], e["byte"], e["bit"]) for e in events if e["event"] == "flip"]


def test_bytes_cross_both_ways_unchanged_and_are_captured(tmp_path: Path, node: Node) -> None:
    """Every byte value crosses in both directions unchanged; the hex captures hold them."""
    data = bytes(range(256)) * 8
    with Relay(node[1], tmp_path, "n1") as relay, \
            serial.Serial(str(relay.path), 115200, timeout=10) as gw:
        os.write(node[0], data)
        assert _read(gw, len(data)) == data
        gw.write(data[::-1])
        assert _read_fd(node[0], len(data)) == data[::-1]
    captured = b"".join(bytes.fromhex(line.split()[1])
                        for line in (tmp_path / "n1.node-gw.hex").read_text().splitlines())
    assert captured == data
    assert relay.counters()["node-gw.delivered"] == len(data)


def test_bit_flips_follow_the_rate_and_replay_from_the_seed(tmp_path: Path, node: Node) -> None:
    """At 1e-3 per bit about 1 bit in 1000 flips; the same seed flips the same bits."""
    data = bytes(20_000)
    runs = []
    for i in range(2):
        folder = tmp_path / str(i)
        with Relay(node[1], folder, "n1", flip_rate=1e-3,
                   seed=1234) as relay, \
                serial.Serial(str(relay.path), 115200, timeout=10) as gw:
            os.write(node[0], data)
            got = _read(gw, len(data))
        changed = sum(bin(b).count("1") for b in got)
        flips = _flips(folder / "n1.faults.jsonl")
        assert changed == len(flips) == relay.counters()["node-gw.flips"]
        assert 100 <= changed <= 230                  # 160 expected; 5 sigma is about 63
        runs.append(flips)
    assert runs[0] == runs[1]


def test_unplug_hangs_up_and_plug_comes_back_on_the_same_path(tmp_path: Path,
                                                                node: Node) -> None:
    """Unplugged, the gateway's reads fail and the node's bytes are lost; plugged again,
    the same path carries bytes."""
    with Relay(node[1], tmp_path, "n1") as relay:
        gw = serial.Serial(str(relay.path), 115200, timeout=10)
        os.write(node[0], b"before")
        assert _read(gw, 6) == b"before"
        relay.unplug()
        with pytest.raises(serial.SerialException):
            gw.read(1)
        gw.close()
        os.write(node[0], b"into the void")
        deadline = time.monotonic() + 10
        while relay.counters()["node-gw.dropped"] < len(b"into the void"):
            assert time.monotonic() < deadline, relay.counters()
            time.sleep(0.01)
        relay.plug()
        with serial.Serial(str(relay.path), 115200, timeout=10) as gw2:
            os.write(node[0], b"after")
            assert _read(gw2, 5) == b"after"
        counters = relay.counters()
    assert counters["node-gw.dropped"] == len(b"into the void")
    assert counters["node-gw.in"] == counters["node-gw.delivered"] + counters["node-gw.dropped"]


def test_a_missing_port_is_named(tmp_path: Path) -> None:
    """A node port that does not exist is refused naming the path and the fix."""
    with pytest.raises(RelayError, match=r"/dev/ttyUSB97: cannot open .*plug in"):
        Relay("/dev/ttyUSB97", tmp_path, "n1").start()


def test_truncate_next_delivers_half_a_chunk(tmp_path: Path, node: Node) -> None:
    """A mid-frame cut passes the first half of the node's next chunk and loses the rest."""
    with Relay(node[1], tmp_path, "n1") as relay, \
            serial.Serial(str(relay.path), 115200, timeout=10) as gw:
        cut = relay.truncate_next()
        os.write(node[0], b"0123456789")
        assert cut.wait(10)
        os.write(node[0], b"next")
        assert _read(gw, 9) == b"01234next"
