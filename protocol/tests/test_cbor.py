# Deterministic CBOR: golden items both ways, and every non-deterministic or ill-formed
# encoding refused with its reason.

from protocol import cbor
from protocol.errors import ProtocolError
from protocol.tests.vecio import Failures, rows, same, value


def test_items_encode_to_golden_bytes():
    """Each valid item encodes to the one deterministic encoding in the vectors."""
    fails = Failures()
    for v in rows("cbor.jsonl"):
        if "value" not in v:
            continue
        got = cbor.dumps(value(v["value"])).hex()
        fails.check(got == v["hex"], v["name"], "encoded to " + got)
    fails.done(50)


def test_golden_bytes_decode_to_items():
    """Each valid encoding decodes to its value."""
    fails = Failures()
    for v in rows("cbor.jsonl"):
        if "value" not in v:
            continue
        try:
            got = cbor.loads(bytes.fromhex(v["hex"]))
        except ProtocolError as e:
            fails.check(False, v["name"], "raised " + str(e))
            continue
        fails.check(same(got, value(v["value"])), v["name"], "decoded to %r" % (got,))
    fails.done(50)


def test_bad_encodings_fail_with_their_reason():
    """Each ill-formed or non-deterministic encoding raises ProtocolError with its reason."""
    fails = Failures()
    for v in rows("cbor.jsonl"):
        if "reason" not in v:
            continue
        try:
            got = cbor.loads(bytes.fromhex(v["hex"]))
            fails.check(False, v["name"], "accepted as %r" % (got,))
        except ProtocolError as e:
            fails.check(e.reason == v["reason"], v["name"],
                        "reason %s (%s), want %s" % (e.reason, e.detail, v["reason"]))
    fails.done(30)


def test_writer_refuses_integers_beyond_64_bits():
    """2**64 and -2**64-1 cannot be encoded."""
    for v in (1 << 64, -(1 << 64) - 1):
        try:
            cbor.dumps(v)
            raise AssertionError("encoded %d" % v)
        except ProtocolError as e:
            assert e.reason == "cbor"


def test_writer_signals_a_full_buffer():
    """Writing past the caller's buffer raises IndexError rather than writing elsewhere."""
    w = cbor.Writer(bytearray(4))
    try:
        w.bytes(b"12345")
        raise AssertionError("wrote 6 bytes into 4")
    except IndexError:
        pass


def test_map_keys_sorted_bytewise_not_length_first():
    """{-1, 24} sorts as 18 18 before 20 (RFC 8949), unlike RFC 7049 length-first order."""
    assert cbor.dumps({-1: 1, 24: 2}).hex() == "a21818022001"
