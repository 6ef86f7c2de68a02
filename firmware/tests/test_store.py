# The flash store of unacknowledged frames: append, ack, reopen, torn tails, bounds.

from firmware.store import Store
from firmware.tests.scratch import fresh, wipe
from protocol.replay import covered


def _frame(seq):
    return bytes([seq & 0xFF]) * (20 + seq % 7)


def _filled(path, n, boot=1, size=4096, limit=32):
    s = Store(path + "/q", size, limit)
    s.open()
    for seq in range(1, n + 1):
        s.append(boot, seq, 0, _frame(seq))
    return s


def test_records_read_back_byte_for_byte():
    """Every appended frame is read back unchanged from its (segment, offset)."""
    d = fresh("store")
    try:
        s = Store(d + "/q")
        s.open()
        where = [s.append(1, seq, 0, _frame(seq)) for seq in range(1, 41)]
        buf = bytearray(256)
        for seq in range(1, 41):
            no, off = where[seq - 1]
            n = s.read(no, off, len(_frame(seq)), buf)
            assert bytes(buf[0:n]) == _frame(seq)
        assert s.pending() == 40
    finally:
        wipe(d)


def test_ack_releases_and_deletes_complete_segments():
    """An ack covering a whole closed segment deletes it; pending counts the rest."""
    d = fresh("store")
    try:
        s = _filled(d, 200, size=1024)
        segs = len(s.segs)
        assert segs > 3
        s.ack(1, 120, 0)
        assert s.pending() == 80
        assert len(s.segs) < segs
        assert s.oldest_unacked(1) == 121
        s.ack(1, 110, 0)                # an older ack changes nothing
        assert s.pending() == 80
        s.ack(1, 120, 0b101)            # selective: 121 and 123
        assert s.pending() == 78
        assert s.oldest_unacked(1) == 122
    finally:
        wipe(d)


def test_reopen_recovers_every_unacked_record():
    """After a reboot the store holds what was on flash; new records start a new segment."""
    d = fresh("store")
    try:
        s = _filled(d, 30)
        s.close()
        s2 = Store(d + "/q")
        assert s2.open() == 30
        s2.append(2, 1, 0, b"new boot")
        assert len(s2.segs) == 2
        got = [(r[0], r[1]) for r in s2.unacked(50, lambda b, q: False)]
        assert got[0] == (1, 1) and got[29] == (1, 30) and got[30] == (2, 1)
        s2.ack(1, 30, 0)
        assert s2.pending() == 1
    finally:
        wipe(d)


def test_torn_tail_from_a_power_cut_is_cut_off():
    """A record cut short mid-write ends its segment; the records before it survive."""
    d = fresh("store")
    try:
        s = _filled(d, 10)
        no = s.segs[-1][0]
        s.close()
        path = "%s/q/%08d" % (d, no)
        with open(path, "ab") as f:
            f.write(b"\x20\x00\x00\x00\x01\x00\x00\x00")   # half a header
        s2 = Store(d + "/q")
        assert s2.open() == 10
        assert s2.torn == 1
        with open(path, "r+b") as f:                        # corrupt record 5's data
            f.seek(4 * 16 + 20 + 21 + 22 + 23 + 16 + 2)
            f.write(b"\xff")
        s3 = Store(d + "/q")
        assert s3.open() == 4
        assert s3.torn == 1
    finally:
        wipe(d)


def test_full_store_drops_the_oldest_segment_and_counts_it():
    """Bounded by limit: the oldest segment goes, its unacked records are counted."""
    d = fresh("store")
    try:
        s = _filled(d, 300, size=512, limit=4)
        assert len(s.segs) == 4
        assert s.dropped + s.pending() == 300
        assert s.dropped > 0
        got = s.unacked(1, lambda b, q: False)
        assert got[0][1] == s.dropped + 1
    finally:
        wipe(d)


def test_unacked_skips_and_limits():
    """unacked() lists oldest first, leaves out skipped records, stops at the limit."""
    d = fresh("store")
    try:
        s = _filled(d, 20)
        s.ack(1, 5, 0b11)
        got = [r[1] for r in s.unacked(4, lambda b, q: q == 9)]
        assert got == [8, 10, 11, 12]
    finally:
        wipe(d)


def test_an_ack_covers_exactly_what_protocol_replay_covers():
    """The store's ack rule is protocol.replay.covered, at the floor, in and past the map."""
    d = fresh("store")
    try:
        s = Store(d + "/q")
        for floor, sack in ((0, 0), (5, 0b1011), (100, (1 << 63) | 1), (7, (1 << 64) - 1)):
            s.acks[1] = (floor, sack)
            for seq in range(1, floor + 70):
                assert s.acked(1, seq) == covered(floor, sack, seq), (floor, sack, seq)
    finally:
        wipe(d)
