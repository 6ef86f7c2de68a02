# Message classes: construction, validation on encode, dict round trips.

from protocol import messages as m
from protocol import show
from protocol.errors import ProtocolError


def test_constructor_names_missing_and_unknown_fields():
    """A missing or unknown field is a TypeError naming it."""
    for args, kw, word in (((1, 1, 1, 0, 0), {}, "range_mm"),
                           ((1, 1, 1, 0, 0, 0, 0, 0, 0), {"colour": 1}, "colour")):
        try:
            m.Flood(*args, **kw)
            raise AssertionError("constructed")
        except TypeError as e:
            assert word in str(e), str(e)


def test_keyword_and_positional_fields_are_the_same_message():
    """Flood built by keywords equals Flood built positionally."""
    a = m.Flood(1, 2, 3, 4, 5, 6, 7, 8, 9)
    b = m.Flood(1, 2, 3, t=4, depth_mm=5, range_mm=6, temp_cc=7, flags=8, q=9)
    assert a == b
    assert not a != b  # noqa: SIM202  (MicroPython derives != from __eq__)
    assert a != m.Flood(1, 2, 3, 4, 5, 6, 7, 8, 10)


def test_encode_refuses_out_of_range_fields():
    """Encoding checks every field: ranges, nulls, types, sequence numbers."""
    bad = (
        m.Flood(1, 1, 0, 0, 0, 0, 0, 0, 0),                 # seq 0
        m.Flood(1, 1, 1, -1, 0, 0, 0, 0, 0),                # negative time
        m.Flood(1, 1, 1, 0, 0, None, 0, 0, 0),              # null range
        m.Flood(1, 1, 1, 0, 1 << 31, 0, 0, 0, 0),           # depth beyond int32
        m.Flood(1, 1, 1, 0, True, 0, 0, 0, 0),              # bool is not an int
        m.Hello(1, 1, 1, "x" * 33, "b", 0, b"", ""),        # text too long
        m.Health(1, 1, 1, 0, 0, 0, 0, [0] * 17, 0, 0, 0, [], 0),
        m.Config(1, 1, 1, {256: 1}),
        m.Config(1, 1, 1, {1: "a"}),
        m.Ack(1, 1, 1, 1, 1, 1 << 64),
    )
    for msg in bad:
        try:
            m.encode(msg)
            raise AssertionError("encoded %r" % (msg,))
        except ProtocolError as e:
            assert e.reason == "field", e


def test_dict_round_trip_for_every_type():
    """to_dict then from_dict gives back an equal message of each type."""
    msgs = (
        m.Hello(1, 2, 3, "1.0", "b", 1, b"\x01\x02", ""),
        m.Flood(1, 2, 3, 4, -5, 6, None, 8, 9),
        m.Traffic(1, 2, 3, 4, 60, 7, 8, None, 10),
        m.Alarm(1, 2, 3, 4, 1, 200, 201, 5, None),
        m.Health(1, 2, 3, 4, 5, 6, 7, [1, 2], None, 0, 0, [1, 2, 3, 4, 5], 0),
        m.Ack(1, 2, 3, 2, 10, 5),
        m.Time(1, 2, 3, 1795000000000, 1),
        m.Config(1, 2, 3, {1: 600, 4: [76, 200]}),
    )
    assert len(msgs) == len(m.CLASSES)
    for msg in msgs:
        d = show.to_dict(msg)
        assert show.from_dict(d) == msg, d
        assert m.decode(m.encode(msg), msg.UPLINK) == msg


def test_kind_fits_one_byte_for_every_type():
    """Every version-1 type is below 24, so the kind costs one byte on the wire."""
    for cls in m.CLASSES:
        assert 0 < cls.TYPE < 24, cls.NAME
