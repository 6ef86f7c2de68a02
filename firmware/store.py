# Uplink frames kept on flash until the gateway acknowledges them.
#
# Every sealed uplink frame is appended here *before* it is first written to the UART, so a
# frame the gateway may have seen is always on flash: a power cut, a watchdog bite or a crash
# cannot lose a frame awaiting its ack.
#
# Layout (LittleFS, which never corrupts on power loss): append-only segment files
# /q/00000001, /q/00000002 ... of at most `size` bytes. A segment holds records of one boot
# with consecutive seqs; a record is
#     header 16 B  "<HBBIII": data length, priority, 0, boot, seq, CRC-32 of the first 12
#                  header bytes and the data
#     data         the wire frame exactly as sent (retransmissions are byte-identical)
# Flash wear: one append per frame, one file deletion per segment once every record in it is
# acknowledged; nothing is ever rewritten in place. A record cut short by a power cut (bad
# length or CRC) ends its segment at boot; new records always go to a new segment after a
# boot, so a torn tail is never appended to.
#
# Acks are state, not events (SPEC 9.2): for each boot the latest (floor, sack) is kept, and
# a record is acknowledged when the ack covers its seq (acked(), the same rule as
# protocol.replay.covered: importing that module for one four-line function would cost the
# node over a kilobyte of heap; test_store checks they agree). Acks live in RAM only; after
# a reboot unacknowledged-looking records are sent again and the gateway de-duplicates them
# and acks again, which costs a few frames and loses nothing.
#
# Bounded: at most `limit` segments. When a new segment is needed and the store is full, the
# oldest segment is deleted and its unacknowledged records are counted in `dropped` (the
# gateway sees the gap as skipped seqs). At ~60 B per frame, 32 segments of 4 KB hold about
# 2000 frames: a day of readings with the gateway unreachable.

import os
import struct
from binascii import crc32

from micropython import const

_HDR_B = const(16)
_HDR = const("<HBBIII")
_MAX_DATA_B = const(256)
# segs entries: [segment number, boot, first seq, record count, size in bytes]
_NO = const(0)
_BOOT = const(1)
_FIRST = const(2)
_COUNT = const(3)
_SIZE = const(4)
_WINDOW = const(64)             # SPEC 9.3: an ack's sack maps the 64 seqs above its floor


class Store:
    # path: the directory of segment files; size: bytes per segment at most; limit: segments
    # at most
    def __init__(self, path="/q", size=4096, limit=32):
        self.path = path
        self.size = size
        self.limit = limit
        self.segs = []          # oldest first
        self.acks = {}          # boot -> (floor, sack), the latest ack seen
        self.dropped = 0        # unacknowledged records deleted because the store was full
        self.torn = 0           # records found cut short at boot (power cut mid-write)
        self._f = None          # the open tail segment, or None: the next append starts one
        self._buf = bytearray(_HDR_B)       # a record header

    def _path(self, n):
        return "%s/%08d" % (self.path, n)

    def open(self):
        # Scans the segments on flash. Returns the number of records recovered. A bad
        # record ends its segment (everything after it is the torn tail of a power cut).
        try:
            os.mkdir(self.path)
        except OSError:
            pass
        h = self._buf
        total = 0
        for name in sorted(os.listdir(self.path)):
            try:
                no = int(name)
            except ValueError:
                os.remove(self.path + "/" + name)       # a stray file (e.g. half-made name)
                continue
            seg = None
            off = 0
            with open(self._path(no), "rb") as f:
                while True:
                    got = f.readinto(h)
                    if got != _HDR_B:
                        if got:
                            self.torn += 1
                        break
                    ln, _prio, _z, boot, seq, crc = struct.unpack(_HDR, h)
                    data = f.read(ln) if 0 < ln <= _MAX_DATA_B else b""
                    if len(data) != ln or ln == 0 or crc32(data, crc32(h[0:12])) != crc:
                        self.torn += 1
                        break
                    if seg is None:
                        seg = [no, boot, seq, 0, 0]
                    elif boot != seg[_BOOT] or seq != seg[_FIRST] + seg[_COUNT]:
                        self.torn += 1
                        break
                    seg[_COUNT] += 1
                    off += _HDR_B + ln
                    seg[_SIZE] = off
            if seg is None:                             # it holds nothing
                os.remove(self._path(no))
                continue
            self.segs.append(seg)
            total += seg[_COUNT]
        return total

    def append(self, boot, seq, prio, data):
        # Writes one record and syncs it to flash; returns (segment no, data offset).
        # Raises OSError (flash full or faulty).
        ln = len(data)
        tail = self.segs[-1] if self.segs and self._f is not None else None
        if (tail is None or tail[_BOOT] != boot or seq != tail[_FIRST] + tail[_COUNT]
                or tail[_SIZE] + _HDR_B + ln > self.size):
            # A new segment; when the store is full the oldest goes, acknowledged or not.
            self.close()
            while len(self.segs) >= self.limit:
                old = self.segs.pop(0)
                self.dropped += self._unacked(old)
                try:
                    os.remove(self._path(old[_NO]))
                except OSError:
                    pass
            # numbers grow with age, so the newest segment has the highest
            no = self.segs[-1][_NO] + 1 if self.segs else 1
            self._f = open(self._path(no), "wb")
            tail = [no, boot, seq, 0, 0]
            self.segs.append(tail)
        h = self._buf
        # The CRC covers the header with crc 0, then the data; the header is packed again
        # with it.
        struct.pack_into(_HDR, h, 0, ln, prio, 0, boot, seq, 0)
        crc = crc32(data, crc32(memoryview(h)[0:12]))
        struct.pack_into(_HDR, h, 0, ln, prio, 0, boot, seq, crc)
        f = self._f
        if f is None:           # opened above; this only tells the type checker
            raise OSError(5)
        f.write(h)
        f.write(data)
        f.flush()                # LittleFS: the record is on flash when flush returns
        off = tail[_SIZE] + _HDR_B
        tail[_COUNT] += 1
        tail[_SIZE] = off + ln
        return tail[_NO], off

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None

    def acked(self, boot, seq):
        # Does the latest ack of this boot cover seq?
        a = self.acks.get(boot)
        if a is None:
            return False
        if seq <= a[0]:
            return True
        i = seq - a[0] - 1
        return i < _WINDOW and (a[1] >> i) & 1 == 1

    def _unacked(self, s):
        # Records of segment entry s not acknowledged.
        boot = s[_BOOT]
        k = 0
        for seq in range(s[_FIRST], s[_FIRST] + s[_COUNT]):
            if not self.acked(boot, seq):
                k += 1
        return k

    def ack(self, boot, floor, sack):
        # Records an ack; deletes every segment it completes. Returns segments deleted.
        old = self.acks.get(boot)
        if old is not None and floor < old[0]:
            return 0             # older than what we know (acks are cumulative)
        self.acks[boot] = (floor, sack)
        gone = 0
        i = 0
        while i < len(self.segs):
            seg = self.segs[i]
            if seg[_BOOT] == boot and (seg is not self.segs[-1] or self._f is None) \
                    and self._unacked(seg) == 0:
                try:
                    os.remove(self._path(seg[_NO]))
                except OSError:
                    pass
                self.segs.pop(i)
                gone += 1
            else:
                i += 1
        return gone

    def pending(self):
        # Records held and not acknowledged.
        n = 0
        for seg in self.segs:
            n += self._unacked(seg)
        return n

    def oldest_unacked(self, boot):
        # Lowest unacknowledged seq of this boot, or None (the sender window's u, SPEC 9.3).
        for seg in self.segs:
            if seg[_BOOT] == boot:
                for s in range(seg[_FIRST], seg[_FIRST] + seg[_COUNT]):
                    if not self.acked(boot, s):
                        return s
        return None

    def unacked(self, limit, skip):
        # Up to `limit` unacknowledged records, oldest first, as (boot, seq, seg no, offset,
        # length), leaving out those for which skip(boot, seq) is true. Reads headers only.
        out = []  # type: list
        h = self._buf
        for seg in self.segs:
            if len(out) >= limit:
                break
            boot = seg[_BOOT]
            if self._unacked(seg) == 0:
                continue
            if self._f is not None and seg is self.segs[-1]:
                self._f.flush()
            with open(self._path(seg[_NO]), "rb") as f:
                off = 0
                for s in range(seg[_FIRST], seg[_FIRST] + seg[_COUNT]):
                    f.seek(off)
                    f.readinto(h)
                    ln = h[0] | h[1] << 8                   # the data length, "<H"
                    if not self.acked(boot, s) and not skip(boot, s):
                        out.append((boot, s, seg[_NO], off + _HDR_B, ln))
                        if len(out) >= limit:
                            break
                    off += _HDR_B + ln
        return out

    def read(self, no, off, n, buf):
        # Copies a record's n data bytes into buf; returns n, or 0 if the segment is gone.
        try:
            with open(self._path(no), "rb") as f:
                f.seek(off)
                return f.readinto(memoryview(buf)[0:n])
        except OSError:
            return 0
