# Deterministic CBOR (RFC 8949 section 4.2.1 "core deterministic encoding"), the subset the
# protocol uses: unsigned and negative integers up to 64 bits, byte and text strings,
# arrays, maps, false/true/null and floats. Tags are read only by the frame layer (COSE).
#
# Writer encodes into a caller's preallocated bytearray (no allocation per item except when
# sorting map keys). Reader decodes from bytes and refuses anything that is not the one
# deterministic encoding: longer-than-needed integer or length heads, indefinite lengths,
# unsorted or duplicate map keys, floats that a shorter float represents exactly, NaN other
# than f97e00. Lengths are checked against the bytes left before anything is allocated.

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

import struct

from protocol.errors import CBOR, NONCANONICAL, TRUNCATED, ProtocolError

_MAX_DEPTH = const(8)
_U64_MAX = const(0xFFFFFFFFFFFFFFFF)
_NAN16 = b"\xf9\x7e\x00"
_MAX_KEY_B = const(64)      # a map key, encoded (keys are small ints or short text)


class Writer:
    def __init__(self, buf):
        self.buf = buf
        self.n = 0

    def _head(self, mt, v):
        # mt is the major type already shifted (0x00, 0x20, ... 0xe0)
        b = self.buf
        n = self.n
        if v < 24:
            b[n] = mt | v
            self.n = n + 1
        elif v < 0x100:
            b[n] = mt | 24
            b[n + 1] = v
            self.n = n + 2
        elif v < 0x10000:
            b[n] = mt | 25
            b[n + 1] = v >> 8
            b[n + 2] = v & 0xFF
            self.n = n + 3
        elif v < 0x100000000:
            b[n] = mt | 26
            b[n + 1] = v >> 24
            b[n + 2] = (v >> 16) & 0xFF
            b[n + 3] = (v >> 8) & 0xFF
            b[n + 4] = v & 0xFF
            self.n = n + 5
        elif v <= _U64_MAX:
            b[n] = mt | 27
            s = 56
            for k in range(1, 9):
                b[n + k] = (v >> s) & 0xFF
                s -= 8
            self.n = n + 9
        else:
            raise ProtocolError(CBOR, "integer beyond 64 bits")

    def uint(self, v):
        self._head(0x00, v)

    def int(self, v):
        if v >= 0:
            self._head(0x00, v)
        else:
            self._head(0x20, -1 - v)

    def bytes(self, v):
        self._head(0x40, len(v))
        self._raw(v)

    def text(self, s):
        e = s.encode("utf-8")
        self._head(0x60, len(e))
        self._raw(e)

    def array(self, count):
        self._head(0x80, count)

    def map(self, count):
        self._head(0xA0, count)

    def null(self):
        self._byte(0xF6)

    def bool(self, v):
        self._byte(0xF5 if v else 0xF4)

    def float(self, x):
        # Shortest of half, single, double that holds x exactly; NaN as f97e00.
        if x != x:
            self._raw(_NAN16)
            return
        for fmt, head in ((">e", 0xF9), (">f", 0xFA)):
            try:
                p = struct.pack(fmt, x)
            except (OverflowError, ValueError):
                continue
            if struct.unpack(fmt, p)[0] == x:
                self._byte(head)
                self._raw(p)
                return
        self._byte(0xFB)
        self._raw(struct.pack(">d", x))

    def raw(self, data):
        # Appends bytes that are already CBOR (a nested item encoded elsewhere).
        self._raw(data)

    def value(self, v):
        # Generic encoder for values built of the supported types. Map keys are sorted by
        # their encoded bytes, as RFC 8949 section 4.2.1 requires.
        if v is None:
            self.null()
        elif v is True or v is False:
            self.bool(v)
        elif isinstance(v, int):
            self.int(v)
        elif isinstance(v, float):
            self.float(v)
        elif isinstance(v, (bytes, bytearray, memoryview)):
            self.bytes(v)
        elif isinstance(v, str):
            self.text(v)
        elif isinstance(v, (list, tuple)):
            self.array(len(v))
            for x in v:
                self.value(x)
        elif isinstance(v, dict):
            items = []
            for k in v:
                kw = Writer(bytearray(_MAX_KEY_B))
                kw.value(k)
                items.append((bytes(kw.buf[0:kw.n]), v[k]))
            items.sort(key=_first)
            self.map(len(items))
            for i in range(len(items)):
                if i and items[i][0] == items[i - 1][0]:
                    raise ProtocolError(CBOR, "duplicate map key")
                self._raw(items[i][0])
                self.value(items[i][1])
        else:
            raise ProtocolError(CBOR, "cannot encode %s" % type(v).__name__)

    def getvalue(self):
        return bytes(self.buf[0:self.n])

    def _byte(self, b):
        self.buf[self.n] = b
        self.n += 1

    def _raw(self, data):
        n = self.n
        m = len(data)
        if n + m > len(self.buf):
            raise IndexError("CBOR buffer full")
        self.buf[n:n + m] = data
        self.n = n + m



def _first(item):
    return item[0]


def dumps(v, size=256):
    # Convenience for tests and tools: one value -> deterministic CBOR bytes.
    w = Writer(bytearray(size))
    w.value(v)
    return w.getvalue()


class Reader:
    def __init__(self, data, pos=0, end=-1):
        self.data = data
        self.pos = pos
        self.end = len(data) if end < 0 else end

    def left(self):
        return self.end - self.pos

    def _need(self, k):
        if self.pos + k > self.end:
            raise ProtocolError(TRUNCATED, "CBOR ends %d bytes early" % (self.pos + k - self.end))

    def head(self):
        # -> (major type 0..7, argument). For major 7 the argument is the additional info
        # (20..27) and any float bits are left for float(); shortest form is enforced.
        self._need(1)
        d = self.data
        ib = d[self.pos]
        self.pos += 1
        mt = ib >> 5
        ai = ib & 0x1F
        if ai < 24:
            return mt, ai
        if ai == 31:
            if mt in (2, 3, 4, 5):
                raise ProtocolError(NONCANONICAL, "indefinite length")
            raise ProtocolError(CBOR, "reserved additional information 31")
        if ai > 27:
            raise ProtocolError(CBOR, "reserved additional information %d" % ai)
        if mt == 7:
            return mt, ai
        k = 1 << (ai - 24)
        self._need(k)
        p = self.pos
        v = 0
        for i in range(k):
            v = (v << 8) | d[p + i]
        self.pos = p + k
        if (ai == 24 and v < 24) or (ai == 25 and v < 0x100) or \
                (ai == 26 and v < 0x10000) or (ai == 27 and v < 0x100000000):
            raise ProtocolError(NONCANONICAL, "integer or length not in its shortest form")
        return mt, v

    def uint(self):
        mt, v = self.head()
        if mt != 0:
            raise ProtocolError(CBOR, "expected unsigned integer, got major type %d" % mt)
        return v

    def array(self):
        mt, v = self.head()
        if mt != 4:
            raise ProtocolError(CBOR, "expected array, got major type %d" % mt)
        if v > self.left():
            raise ProtocolError(TRUNCATED, "array of %d items in %d bytes" % (v, self.left()))
        return v

    def bstr(self):
        mt, v = self.head()
        if mt != 2:
            raise ProtocolError(CBOR, "expected byte string, got major type %d" % mt)
        return self._take(v)

    def _take(self, n):
        self._need(n)
        p = self.pos
        self.pos = p + n
        return bytes(self.data[p:p + n])

    def value(self, depth=0):
        # Generic decode of one item. Tags are refused here (the frame layer reads COSE's).
        if depth > _MAX_DEPTH:
            raise ProtocolError(CBOR, "nested deeper than %d" % _MAX_DEPTH)
        start = self.pos
        mt, v = self.head()
        if mt == 0:
            return v
        if mt == 1:
            return -1 - v
        if mt == 2:
            return self._take(v)
        if mt == 3:
            b = self._take(v)
            try:
                return str(b, "utf-8")
            except Exception:
                raise ProtocolError(CBOR, "text string is not UTF-8")
        if mt == 4:
            if v > self.left():
                raise ProtocolError(TRUNCATED, "array of %d items in %d bytes" % (v, self.left()))
            out = []
            for _ in range(v):
                out.append(self.value(depth + 1))
            return out
        if mt == 5:
            if 2 * v > self.left():
                raise ProtocolError(TRUNCATED, "map of %d pairs in %d bytes" % (v, self.left()))
            out = {}
            prev = None
            for _ in range(v):
                ks = self.pos
                k = self.value(depth + 1)
                kb = bytes(self.data[ks:self.pos])
                if prev is not None and kb <= prev:
                    if kb == prev:
                        raise ProtocolError(CBOR, "duplicate map key")
                    raise ProtocolError(NONCANONICAL, "map keys not in bytewise order")
                if isinstance(k, (list, dict)):
                    raise ProtocolError(CBOR, "map key must be a scalar")
                prev = kb
                out[k] = self.value(depth + 1)
            return out
        if mt == 6:
            raise ProtocolError(CBOR, "unexpected tag %d" % v)
        return self._simple(v, start)

    def _simple(self, ai, start):
        if ai == 20:
            return False
        if ai == 21:
            return True
        if ai == 22:
            return None
        if ai == 23:
            raise ProtocolError(CBOR, "undefined is not used by the protocol")
        if ai == 24:
            self._need(1)
            sv = self.data[self.pos]
            self.pos += 1
            if sv < 32:
                raise ProtocolError(CBOR, "simple value %d in two bytes" % sv)
            raise ProtocolError(CBOR, "unassigned simple value %d" % sv)
        if ai < 20:
            raise ProtocolError(CBOR, "unassigned simple value %d" % ai)
        k = 1 << (ai - 24)     # 2, 4 or 8 bytes of float
        self._need(k)
        p = self.pos
        raw = bytes(self.data[p:p + k])
        self.pos = p + k
        x = struct.unpack((">e", ">f", ">d")[ai - 25], raw)[0]
        if x != x:
            if bytes(self.data[start:self.pos]) != _NAN16:
                raise ProtocolError(NONCANONICAL, "NaN not encoded as f97e00")
            return x
        if ai > 25:
            shorter = ">e" if ai == 26 else ">f"
            try:
                fits = struct.unpack(shorter, struct.pack(shorter, x))[0] == x
            except (OverflowError, ValueError):
                fits = False
            if fits:
                raise ProtocolError(NONCANONICAL, "float fits a shorter encoding")
        return x


def loads(data):
    # One complete item, nothing after it.
    r = Reader(data)
    v = r.value()
    if r.pos != r.end:
        raise ProtocolError(CBOR, "%d bytes after the item" % (r.end - r.pos))
    return v
