# Link layer: COBS, CRC-32 and the stream deframer.

from protocol import link
from protocol.errors import ProtocolError
from protocol.tests.vecio import Failures, rows


def _cobs(data):
    out = bytearray(len(data) + len(data) // 254 + 2)
    n = link.cobs_encode_into(data, len(data), out)
    return bytes(out[0:n])


def _uncobs(enc):
    out = bytearray(len(enc))
    n = link.cobs_decode_into(enc, len(enc), out)
    return bytes(out[0:n])


def test_cobs_known_encodings():
    """COBS matches the published examples (Cheshire and Baker), with no trailing block."""
    cases = (
        ("00", "0101"),
        ("0000", "010101"),
        ("001100", "01021101"),
        ("11220033", "03112202 33".replace(" ", "")),
        ("11223344", "0511223344"),
        ("11000000", "02110101 01".replace(" ", "")),
    )
    for raw, enc in cases:
        assert _cobs(bytes.fromhex(raw)).hex() == enc, raw
        assert _uncobs(bytes.fromhex(enc)).hex() == raw, enc
    block = bytes(range(1, 255))                      # 254 non-zero bytes
    assert _cobs(block) == b"\xff" + block
    assert _cobs(block + b"\x01") == b"\xff" + block + b"\x02\x01"


def test_cobs_round_trips_every_length_without_zeros():
    """Every payload length 0..254 with zeros at varied places round-trips and has no 0x00."""
    for n in range(0, 255):
        data = bytearray(n)
        for i in range(n):
            data[i] = (i * 7) % 5 * 60          # zeros every few bytes
        enc = _cobs(data)
        assert enc.find(b"\x00") < 0, n
        assert len(enc) <= n + 1 + n // 254, n
        assert _uncobs(enc) == bytes(data), n


def test_frame_then_unframe_round_trips_to_the_payload_limit():
    """Payloads up to 250 bytes fit a 256-byte wire frame; 251 is refused as oversize."""
    for n in (1, 24, 100, 249, 250):
        p = bytes(x & 0xFF for x in range(n))
        w = link.frame(p)
        assert len(w) <= link.MAX_WIRE_B
        assert link.unframe(w) == p
    try:
        link.frame(bytes(251))
        raise AssertionError("framed 251 bytes")
    except ProtocolError as e:
        assert e.reason == "oversize"


def test_crc_is_ieee_crc32_big_endian():
    """The trailer is CRC-32/IEEE of the payload, big-endian ("123456789" -> cbf43926)."""
    assert link.crc_bytes(b"123456789").hex() == "cbf43926"


def test_stream_vectors():
    """Each stream vector yields exactly its frames and errors, in order."""
    fails = Failures()
    for v in rows("streams.jsonl"):
        d = link.Deframer()
        got = []
        for c in v["chunks"]:
            for item in d.feed(bytes.fromhex(c)):
                if isinstance(item, ProtocolError):
                    got.append("error:" + item.reason)
                else:
                    got.append("frame:" + item.hex())
        fails.check(got == v["events"], v["name"], "events %r" % (got,))
    fails.done(10)


def test_deframer_memory_stays_bounded():
    """10 kB without a delimiter never holds more than 255 bytes and reports oversize."""
    d = link.Deframer()
    errors = 0
    for _ in range(40):
        for item in d.feed(b"\x42" * 250):
            assert isinstance(item, ProtocolError) and item.reason == "oversize"
            errors += 1
        assert d.pending() <= link.MAX_COBS_B
    assert errors == 1
    # The oversize run swallows everything up to the next delimiter; a sender that may have
    # been cut off starts its next frame with one (SPEC.md "Link layer").
    assert list(d.feed(b"\x00" + link.frame(b"ok"))) == [b"ok"]


def test_deframer_counts_frames_and_errors():
    """frames and errors counters match what was yielded."""
    d = link.Deframer()
    w = link.frame(b"abc")
    list(d.feed(w + b"\x05\x01\x00" + w))
    assert d.frames == 2 and d.errors == 1
