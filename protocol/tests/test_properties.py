"""CPython only: hypothesis properties of the codec, link layer and replay window."""

from typing import Any

import cbor2
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from protocol import cbor, frame, link, messages
from protocol.errors import ProtocolError
from protocol.replay import WINDOW, ReplayGuard, covered

KEY = bytes(range(32))
RING = frame.KeyRing({1: KEY}, open_nodes=True)

u32 = st.integers(0, 2**32 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)
KIND_STRATEGY: dict[int, st.SearchStrategy[Any]] = {
    messages.U32: u32,
    messages.I32: i32,
    messages.U32N: st.none() | u32,
    messages.I32N: st.none() | i32,
    messages.TEXT: st.text(max_size=8).filter(lambda s: len(s.encode()) <= 32),
    messages.BYTES: st.binary(max_size=32),
    messages.U32A: st.lists(u32, max_size=16),
    messages.U64: st.integers(0, 2**64 - 1),
    messages.CFG: st.dictionaries(st.integers(1, 255), i32 | st.lists(i32, max_size=4),
                                  max_size=6),
}


@st.composite
def any_message(draw: st.DrawFn) -> messages.Message:
    cls = draw(st.sampled_from(messages.CLASSES))
    node = draw(st.sampled_from([1, 2]))        # 1 has a key, 2 has none (open ring)
    vals = [draw(KIND_STRATEGY[k]) for k in cls.KINDS]
    return cls(node, draw(u32), draw(st.integers(1, 2**32 - 1)), *vals)


def _sealed(msg: messages.Message) -> bytes | None:
    try:
        return frame.seal(msg, KEY if msg.node == 1 else None)
    except ProtocolError as e:
        assert e.reason == "oversize", e       # the only reason a valid message cannot be sealed
        return None


@given(any_message())
def test_every_valid_message_round_trips(msg: messages.Message) -> None:
    """Any valid message of any type seals, opens in its direction and compares equal."""
    wire = _sealed(msg)
    assume(wire is not None)
    assert wire is not None
    assert len(wire) <= link.MAX_WIRE_B
    assert frame.open_wire(wire, RING, msg.UPLINK) == msg


@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_ever_raise_protocol_error(data: bytes) -> None:
    """Whatever the bytes, every decoding entry point returns a value or raises ProtocolError."""
    for fn in (lambda: link.unframe(data), lambda: cbor.loads(data),
               lambda: frame.open_payload(data, RING, True),
               lambda: frame.open_payload(data, RING, False),
               lambda: messages.decode(data, True)):
        try:
            fn()
        except ProtocolError:
            pass
    d = link.Deframer()
    for item in d.feed(data):
        if isinstance(item, bytes):
            try:
                frame.open_payload(item, RING)
            except ProtocolError:
                pass
    assert d.pending() <= link.MAX_COBS_B


mutation = st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate"]),
                     st.integers(0, 400), st.integers(1, 255))


@settings(suppress_health_check=[HealthCheck.filter_too_much])
@given(any_message(), st.lists(mutation, min_size=1, max_size=4))
def test_mutated_tagged_frames_never_yield_another_message(msg: messages.Message,
                                                          muts: list[tuple[str, int, int]]) -> None:
    """A tagged frame damaged anywhere either fails with ProtocolError or is the same message."""
    msg.node = 1
    wire = _sealed(msg)
    assume(wire is not None)
    assert wire is not None
    w = bytearray(wire)
    for op, pos, val in muts:
        if not w:
            break
        i = pos % len(w)
        if op == "flip":
            w[i] ^= val
        elif op == "insert":
            w.insert(i, val)
        elif op == "delete" and len(w) > 1:
            del w[i]
        else:
            w = w[:i]
    try:
        got = frame.open_wire(bytes(w), RING, msg.UPLINK)
    except ProtocolError:
        return
    assert got == msg


cbor_scalar = (st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1)
               | st.floats(allow_nan=True) | st.binary(max_size=20) | st.text(max_size=10))
cbor_value = st.recursive(
    cbor_scalar,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.integers(-1000, 1000) | st.text(max_size=4), inner, max_size=4),
    max_leaves=12)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (a != a and b != b)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@given(cbor_value)
def test_cbor_round_trips_and_cbor2_agrees(v: Any) -> None:
    """Any supported value encodes, decodes back equal, and cbor2 decodes it to the same value."""
    try:
        data = cbor.dumps(v, size=4096)
    except ProtocolError as e:
        assert e.reason == "cbor"       # keys that collapse (True vs 1) are refused, not merged
        return
    assert _same(cbor.loads(data), v)
    assert _same(cbor2.loads(data), v)


@given(st.binary(max_size=64))
def test_the_only_accepted_encoding_is_the_deterministic_one(data: bytes) -> None:
    """If bytes decode, re-encoding the value gives back exactly those bytes."""
    try:
        v = cbor.loads(data)
    except ProtocolError:
        return
    assert cbor.dumps(v, size=4096) == data


@given(st.lists(st.binary(min_size=1, max_size=60), min_size=1, max_size=6),
       st.binary(max_size=40), st.lists(st.integers(1, 50), max_size=8))
def test_deframer_recovers_every_frame_after_garbage(payloads: list[bytes], garbage: bytes,
                                                     cuts: list[int]) -> None:
    """Garbage then a delimiter, then frames split anywhere: every frame comes out intact."""
    stream = garbage + b"\x00" + b"".join(link.frame(p) for p in payloads)
    chunks, i = [], 0
    for c in cuts:
        chunks.append(stream[i:i + c])
        i += c
    chunks.append(stream[i:])
    d = link.Deframer()
    got = [x for c in chunks for x in d.feed(c) if isinstance(x, bytes)]
    assert got[-len(payloads):] == payloads


@given(st.lists(st.integers(1, 300), max_size=120))
def test_replay_guard_matches_its_model(seqs: list[int]) -> None:
    """Accepts a seq at most once, acks exactly what it accepted or skipped, counts skips."""
    g = ReplayGuard()
    accepted: set[int] = set()
    for s in seqs:
        try:
            g.accept(1, 1, s)
        except ProtocolError as e:
            assert e.reason == "replay"
            floor, _ = g.ack(1, 1)
            assert s in accepted or s <= floor
            continue
        assert s not in accepted
        accepted.add(s)
    floor, sack = g.ack(1, 1)
    for s in range(1, 300 + WINDOW):
        if s in accepted:
            assert covered(floor, sack, s)
        elif s > floor:
            assert not covered(floor, sack, s)
    assert g.skipped == len([s for s in range(1, floor + 1) if s not in accepted])
