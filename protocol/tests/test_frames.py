# Golden frames: every message type, untagged and tagged, encodes to the exact bytes and
# decodes to the exact message; every class of bad input fails with its named reason.

from protocol import frame, link, messages, show
from protocol.errors import ProtocolError
from protocol.tests.vecio import Failures, keyring, rows


def _sealer(v, ring):
    node = v["message"]["node"]
    return frame.Sealer(ring.get(node) if v["tagged"] else None)


def test_frames_encode_to_golden_bytes():
    """Every valid vector's message seals to exactly its wire bytes."""
    fails = Failures()
    closed = keyring(False)
    for v in rows("frames.jsonl"):
        if v.get("encode") is False:
            continue
        msg = show.from_dict(v["message"])
        got = _sealer(v, closed).seal(msg).hex()
        fails.check(got == v["wire"], v["name"], "sealed to " + got)
        body = messages.encode(msg).hex()
        fails.check(body == v["body"], v["name"], "body encoded to " + body)
    fails.done(40)


def test_frames_decode_to_golden_messages():
    """Every valid vector's wire bytes open to exactly its message, in its direction."""
    fails = Failures()
    for v in rows("frames.jsonl"):
        ring = keyring(v["open"])
        want = show.from_dict(v["message"])
        try:
            got = frame.open_wire(bytes.fromhex(v["wire"]), ring, v["uplink"])
        except ProtocolError as e:
            fails.check(False, v["name"], "raised " + str(e))
            continue
        fails.check(got == want, v["name"], "decoded to %r" % (got,))
    fails.done(40)


def test_invalid_inputs_fail_with_their_reason():
    """Every bad-input vector raises ProtocolError with the vector's reason and nothing else."""
    fails = Failures()
    classes = {}
    for v in rows("invalid.jsonl"):
        classes[v["class"]] = 1
        ring = keyring(v["open"])
        try:
            got = frame.open_wire(bytes.fromhex(v["wire"]), ring, v["uplink"])
            fails.check(False, v["name"], "accepted as %r" % (got,))
        except ProtocolError as e:
            fails.check(e.reason == v["reason"], v["name"],
                        "reason %s (%s), want %s" % (e.reason, e.detail, v["reason"]))
        except Exception as e:
            fails.check(False, v["name"], "raised %s %r, not ProtocolError" % (type(e).__name__, e))
    fails.done(40)
    for c in ("bad CRC", "truncated", "oversize", "bad COBS", "unknown version", "unknown type",
              "bad tag", "unknown node", "non-deterministic", "wrong field type",
              "malformed CBOR"):
        assert c in classes, "no invalid vector of class " + c


def test_every_message_type_has_tagged_and_untagged_vectors():
    """The vectors cover each message type in both framings."""
    seen = {}
    for v in rows("frames.jsonl"):
        seen[(v["message"]["type"], v["tagged"])] = 1
    for cls in messages.CLASSES:
        for tagged in (False, True):
            assert (cls.NAME, tagged) in seen, "no vector for %s tagged=%s" % (cls.NAME, tagged)


def test_frame_sizes_within_link_limit():
    """No valid vector exceeds the 256-byte wire limit and all end with one delimiter."""
    for v in rows("frames.jsonl"):
        w = bytes.fromhex(v["wire"])
        assert len(w) <= link.MAX_WIRE_B, v["name"]
        assert w[-1] == 0 and w[:-1].find(b"\x00") < 0, v["name"]


def test_sealer_refuses_a_message_too_large_for_a_frame():
    """An oversize message is refused at encode time with reason oversize, not truncated."""
    msg = messages.Health(1, 1, 1, 0, 0, 0, 0, [0xFFFFFFFF] * 16, 0, 0, 0, [0xFFFFFFFF] * 16, 0)
    msg2 = messages.Hello(1, 1, 1, "x" * 32, "y" * 32, 1, b"\xff" * 32, "z" * 32)
    big = messages.Config(1, 1, 1, dict((k, [-0x80000000] * 16) for k in range(1, 6)))
    for m in (big,):
        try:
            frame.seal(m, bytes(32))
            raise AssertionError("sealed an oversize message")
        except ProtocolError as e:
            assert e.reason == "oversize", e
    assert len(frame.seal(msg, bytes(32))) <= link.MAX_WIRE_B
    assert len(frame.seal(msg2, bytes(32))) <= link.MAX_WIRE_B


def test_tag_covers_every_body_byte():
    """Flipping any single bit of a tagged payload is detected (CRC recomputed to pass)."""
    ring = keyring(False)
    good = messages.Flood(1042, 17, 9, 1795000000, 412, 2788, 3150, 0, 7)
    payload = frame.Sealer(ring.get(1042)).payload(good)
    for i in range(len(payload)):
        for bit in (0x01, 0x80):
            p = bytearray(payload)
            p[i] ^= bit
            try:
                got = frame.open_payload(bytes(p), ring)
                raise AssertionError("byte %d bit %x accepted as %r" % (i, bit, got))
            except ProtocolError:
                pass
