"""gateway/fastpath.py gives exactly protocol/'s verdicts: golden vectors, mutations, streams."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import fastpath
from protocol import frame, link, mac, messages
from protocol.errors import ProtocolError

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors"
_KEYS = json.loads((VECTORS / "keys.json").read_text())
RING = frame.KeyRing({int(n): bytes.fromhex(k) for n, k in _KEYS["keys"].items()},
                     open_nodes=True)
CLOSED = frame.KeyRing({int(n): bytes.fromhex(k) for n, k in _KEYS["keys"].items()})
KEY = bytes.fromhex(_KEYS["keys"]["7"])


def _lines(name: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (VECTORS / name).read_text().splitlines() if x.strip()]


def reference(wire: bytes, ring: frame.KeyRing) -> tuple[str, object]:
    """protocol/'s verdict on one wire frame: ("ok", (message, body)) or ("bad", reason)."""
    try:
        payload = link.unframe(wire)
        msg = frame.open_payload(payload, ring)
    except ProtocolError as exc:
        return "bad", exc.reason
    body = mac.unwrap(payload)[0] if mac.is_mac0(payload) else payload
    return "ok", (msg, body)


def fast(wire: bytes, ring: frame.KeyRing) -> tuple[str, object]:
    """The fast path's verdict on the same frame, through its deframer and opener."""
    items = list(fastpath.Deframer().feed(wire if wire.endswith(b"\x00") else wire + b"\x00"))
    if not items:
        return "bad", "empty"
    assert len(items) == 1, items
    item = items[0]
    if isinstance(item, ProtocolError):
        return "bad", item.reason
    try:
        return "ok", fastpath.Opener(ring).open(item)
    except ProtocolError as exc:
        return "bad", exc.reason


def test_every_golden_uplink_frame_opens_on_the_fast_path_as_protocol_does() -> None:
    """Each valid uplink vector: the same message and body; all but trailing fields fast."""
    n = 0
    for v in _lines("frames.jsonl"):
        if not v["uplink"]:
            continue
        wire = bytes.fromhex(v["wire"])
        for ring in (RING, CLOSED):
            want = reference(wire, ring)
            assert fast(wire, ring) == want, v["name"]
        opener = fastpath.Opener(RING)
        opener.open(link.unframe(wire))
        # A newer sender's extra trailing field is protocol/'s to judge (rare, and allowed).
        assert opener.fast == ("trailing" not in v["name"]), f"{v['name']}: wrong path"
        n += 1
    assert n >= 5


def test_every_invalid_vector_gets_protocols_reason() -> None:
    """Each bad-input vector is refused with the reason written in the vector."""
    for v in _lines("invalid.jsonl"):
        if not v["uplink"]:
            continue
        wire = bytes.fromhex(v["wire"])
        ring = RING if v["open"] else CLOSED
        assert fast(wire, ring) == ("bad", v["reason"]), v["name"]
        assert reference(wire, ring) == ("bad", v["reason"]), v["name"]


def test_stream_vectors_deframe_to_the_same_items() -> None:
    """The deframer yields the same payloads and error reasons as protocol.link.Deframer."""
    for v in _lines("streams.jsonl"):
        chunks = [bytes.fromhex(c) for c in v["chunks"]]
        ref, got = link.Deframer(), fastpath.Deframer()
        want = [_item(x) for c in chunks for x in ref.feed(c)]
        assert [_item(x) for c in chunks for x in got.feed(c)] == want, v


def _item(x: bytes | ProtocolError) -> object:
    return x.reason if isinstance(x, ProtocolError) else bytes(x)


u32 = st.integers(0, 2**32 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)
KIND_STRATEGY: dict[int, st.SearchStrategy[Any]] = {
    messages.U32: u32 | st.integers(0, 300),
    messages.I32: i32 | st.integers(-300, 300),
    messages.U32N: st.none() | u32,
    messages.I32N: st.none() | i32,
    messages.TEXT: st.text(max_size=8).filter(lambda s: len(s.encode()) <= 32),
    messages.BYTES: st.binary(max_size=32),
    messages.U32A: st.lists(u32, max_size=16),
}
UPLINK = [c for c in messages.CLASSES if c.UPLINK]


@st.composite
def uplink_message(draw: st.DrawFn) -> messages.Message:
    cls = draw(st.sampled_from(UPLINK))
    node = draw(st.sampled_from([7, 1005, 4294967295, 9]))   # keyed, open, keyed, unknown
    vals = [draw(KIND_STRATEGY[k]) for k in cls.KINDS]
    return cls(node, draw(u32), draw(st.integers(1, 2**32 - 1)), *vals)


def _seal(msg: messages.Message) -> bytes | None:
    key = {7: KEY, 4294967295: bytes.fromhex(_KEYS["keys"]["4294967295"])}.get(msg.node)
    try:
        return frame.seal(msg, key)
    except ProtocolError:
        return None


@settings(max_examples=400, deadline=None)
@given(uplink_message(), st.integers(0, 2**32 - 1), st.sampled_from(["none", "flip", "cut",
                                                                       "insert", "zero"]))
def test_mutated_frames_get_the_same_verdict(msg: messages.Message, seed: int,
                                             how: str) -> None:
    """Valid, bit-flipped, cut, extended and zeroed frames: fast verdict == protocol/'s."""
    wire = _seal(msg)
    if wire is None:
        return
    raw = bytearray(wire[:-1])
    rnd = random.Random(seed)
    if how == "flip" and raw:
        raw[rnd.randrange(len(raw))] ^= 1 << rnd.randrange(8)
    elif how == "cut" and len(raw) > 1:
        del raw[rnd.randrange(1, len(raw)):]
    elif how == "insert":
        raw.insert(rnd.randrange(len(raw) + 1), rnd.randrange(1, 256))
    elif how == "zero" and raw:
        raw[rnd.randrange(len(raw))] = 0
    for ring in (RING, CLOSED):
        data = bytes(raw) + b"\x00"
        ref = [_verdict(x, ring) for x in link.Deframer().feed(data)]
        got = [_verdict(x, ring) for x in fastpath.Deframer().feed(data)]
        assert got == ref


def _verdict(item: bytes | ProtocolError, ring: frame.KeyRing) -> object:
    if isinstance(item, ProtocolError):
        return item.reason
    try:
        msg, body = fastpath.Opener(ring).open(item) if ring is not None else (None, b"")
    except ProtocolError as exc:
        return exc.reason
    assert msg == frame.open_payload(item, ring)
    return ("ok", msg.TYPE, msg.node, msg.seq, body)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=40), max_size=6),
       st.binary(max_size=600), st.lists(st.integers(1, 700), max_size=8))
def test_any_byte_stream_in_any_chunking_deframes_like_protocol(
        payloads: list[bytes], garbage: bytes, cuts: list[int]) -> None:
    """Garbage, oversize runs and frames split anywhere: the same items as protocol/'s."""
    stream = garbage + b"".join(link.frame(p) for p in payloads if len(p) <= link.MAX_PAYLOAD_B)
    chunks, at = [], 0
    for c in sorted(set(cuts)):
        if c < len(stream):
            chunks.append(stream[at:c])
            at = c
    chunks.append(stream[at:])
    ref, got = link.Deframer(), fastpath.Deframer()
    want = [_item(x) for c in chunks for x in ref.feed(c)]
    assert [_item(x) for c in chunks for x in got.feed(c)] == want
    assert got.pending() == ref.pending()


def test_decode_stored_is_messages_decode() -> None:
    """Stored bodies decode to the same message on the fast path and through protocol/."""
    for v in _lines("frames.jsonl"):
        if v["uplink"]:
            body = bytes.fromhex(v["body"])
            assert fastpath.decode_stored(body) == messages.decode(body), v["name"]


def test_decode_stored_takes_what_the_opener_decoded_and_stays_bounded() -> None:
    """A body opened a moment ago is not decoded again; the memo never exceeds MEMO_MAX."""
    fastpath._memo.clear()
    opener = fastpath.Opener(RING)
    sealer = frame.Sealer(KEY)
    bodies = []
    for seq in range(1, fastpath.MEMO_MAX + 11):
        msg, body = opener.open(link.unframe(sealer.seal(
            messages.Flood(7, 1, seq, 1_790_000_000 + seq, 300, 2700, None, 0, 5))))
        bodies.append((msg, body))
    assert len(fastpath._memo) == fastpath.MEMO_MAX
    last_msg, last_body = bodies[-1]
    assert fastpath.decode_stored(last_body) is last_msg           # from the memo
    first_msg, first_body = bodies[0]
    again = fastpath.decode_stored(first_body)                      # evicted: decoded anew
    assert again == first_msg and again is not first_msg
