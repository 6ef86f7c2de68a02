"""Tests of gateway/verify.py: frames in, Accepted out, every refusal counted by its reason."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from gateway.verify import MAX_NODE_LABELS, OTHER_NODE, Verifier
from protocol import frame, link, mac, messages
from protocol.errors import COBS, CRC, NODE, REPLAY, TAG, TYPE, UNTAGGED

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
NODE_ID = 1042
T = 1_760_000_000


def flood(seq: int, node: int = NODE_ID, boot: int = 3) -> messages.Flood:
    return messages.Flood(node, boot, seq, T + seq, 120, 880, 2150, 0, 90)


def verifier(open_nodes: bool = False, clock: Callable[[], float] = lambda: 0.0,
             log_interval_s: float = 10.0) -> Verifier:
    return Verifier(frame.KeyRing({NODE_ID: KEY}, open_nodes=open_nodes), clock=clock,
                    log_interval_s=log_interval_s)


def wire_of_raw(raw: bytes) -> bytes:
    """COBS-encodes raw bytes (payload and a CRC of our choice) into a wire frame."""
    out = bytearray(link.MAX_WIRE_B)
    n = link.cobs_encode_into(raw, len(raw), out)
    return bytes(out[:n]) + b"\x00"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_sealed_frames_come_out_accepted() -> None:
    """Frames sealed with the node's key are Accepted with identity, message and body bytes."""
    v = verifier()
    wire = b"".join(frame.seal(flood(s), KEY) for s in (1, 2, 3))
    got = v.feed("p0", wire)
    assert [(a.node, a.boot, a.seq, a.kind, a.port) for a in got] == [
        (NODE_ID, 3, s, messages.FLOOD, "p0") for s in (1, 2, 3)]
    assert got[0].msg == flood(1)
    assert got[0].body == messages.encode(flood(1))
    assert mac.unwrap(link.unframe(frame.seal(flood(1), KEY)[:-1]))[0] == got[0].body
    assert v.accepted == 3 and not v.bad


def test_untagged_body_is_the_payload_on_an_open_ring() -> None:
    """An unkeyed node on an open ring is accepted; its body is the untagged payload."""
    v = verifier(open_nodes=True)
    (got,) = v.feed("p0", frame.seal(flood(1, node=7)))
    assert got.node == 7 and got.body == messages.encode(flood(1, node=7))


def test_frames_split_across_chunks_and_ports_do_not_mix() -> None:
    """Each port has its own deframer: interleaved halves of two ports' frames both pass."""
    v = verifier()
    a, b = frame.seal(flood(1), KEY), frame.seal(flood(2), KEY)
    assert v.feed("a", a[:10]) == []
    assert v.feed("b", b[:7]) == []
    assert [x.seq for x in v.feed("a", a[10:])] == [1]
    assert [x.seq for x in v.feed("b", b[7:])] == [2]
    assert not v.bad


def test_bad_frames_are_counted_by_reason_and_never_raise() -> None:
    """Garbage, a bit flip, a forged tag, an unknown node, an untagged keyed node, a downlink."""
    v = verifier()
    payload = bytearray(link.unframe(frame.seal(flood(1), KEY)))
    crc = link.crc_bytes(payload)
    payload[12] ^= 0x04  # one bit flipped on the wire, inside the payload
    flipped = wire_of_raw(bytes(payload) + crc)
    stream = (b"\x00\x13\x37\x42\x01\x00"  # garbage: a COBS block past its frame's end
              + bytes(flipped)  # crc
              + frame.seal(flood(2), OTHER_KEY)  # forged tag
              + frame.seal(flood(3, node=99), OTHER_KEY)  # tagged, node without a key
              + frame.seal(flood(4))  # untagged frame of a keyed node
              + frame.seal(messages.Ack(NODE_ID, 3, 1, 3, 0, 0), KEY)  # wrong direction
              + frame.seal(flood(5), KEY))
    got = v.feed("p0", stream)
    assert [a.seq for a in got] == [5]
    assert v.bad == {COBS: 1, CRC: 1, TAG: 1, NODE: 1, UNTAGGED: 1, TYPE: 1}
    assert v.bad_by_node == {NODE_ID: 3, 99: 1}


def test_unknown_untagged_node_on_a_closed_ring_is_refused() -> None:
    """An untagged frame of a node without a key is refused as `node` when the ring is closed."""
    v = verifier()
    assert v.feed("p0", frame.seal(flood(1, node=5))) == []
    assert v.bad == {NODE: 1}


def test_replay_is_refused_only_after_accept() -> None:
    """feed() only checks: a frame passes again until accept(); then it counts as `replay`."""
    v = verifier()
    wire = frame.seal(flood(1), KEY)
    (first,) = v.feed("p0", wire)
    (again,) = v.feed("p0", wire)  # e.g. retransmitted while the first awaits its commit
    assert v.accept(first) is True
    assert v.accept(again) is False  # the store reports it as a duplicate as well
    assert v.feed("p0", wire) == []
    assert v.bad == {REPLAY: 1}
    assert v.take_reacks() == [("p0", NODE_ID, 3)]
    assert v.take_reacks() == []


def test_by_node_counters_are_bounded() -> None:
    """Refusals claiming ever new node ids stop adding labels after MAX_NODE_LABELS."""
    v = verifier()
    for node in range(MAX_NODE_LABELS + 5):
        v.feed("p0", frame.seal(flood(1, node=100_000 + node), KEY))
    assert len(v.bad_by_node) == MAX_NODE_LABELS + 1
    assert v.bad_by_node[OTHER_NODE] == 5
    assert v.bad[NODE] == MAX_NODE_LABELS + 5


def test_refusal_logs_are_rate_limited_per_reason(caplog: pytest.LogCaptureFixture) -> None:
    """At most one line per reason per interval, and the next line carries the count."""
    clock = Clock()
    v = verifier(clock=clock, log_interval_s=10.0)
    forged = frame.seal(flood(1), OTHER_KEY)
    with caplog.at_level(logging.INFO, logger="gateway.verify"):
        v.feed("p0", forged * 5 + b"\x00\x07\x01\x00")
        clock.now = 9.9
        v.feed("p0", forged)
        clock.now = 10.0
        v.feed("p0", forged)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert lines[0].startswith("refused 1 frame(s) as tag (1 in total)")
    assert lines[0].endswith("latest on p0 from node 1042: tag mismatch")
    assert lines[1].startswith("refused 1 frame(s) as cobs")
    assert lines[2].startswith("refused 6 frame(s) as tag in the last 10 s (7 in total)")
