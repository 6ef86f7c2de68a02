# Deterministic CBOR (RFC 8949 section 4.2.1 "core deterministic encoding"), the subset the
# protocol uses: integers up to 64 bits, byte and text strings, arrays, maps with integer or
# text keys, false/true/null and floats. Tags are read only by the frame layer (COSE).
#
# Writer encodes into a caller's preallocated bytearray (no allocation per item except when
# sorting map keys); a full buffer raises IndexError. Reader decodes from bytes and refuses
# anything but the one deterministic encoding: integer or length heads longer than needed,
# indefinite lengths, unsorted or duplicate map keys, floats that a shorter float holds
# exactly, NaN other than f97e00. Lengths are checked against the bytes left before
# anything is allocated, and nesting is limited.

try:
    from micropython import const
except ImportError:     # CPython: every const() here is an int (no function: heap on a board)
    const = int  # type: ignore[assignment]

import struct

from protocol.errors import CBOR, NONCANONICAL, TRUNCATED, ProtocolError

_MAX_DEPTH = const(8)
_MAX_KEY_B = const(64)      # one encoded map key (keys are small ints or short text)
_NAN16 = b"\xf9\x7e\x00"
_FLOATS = (">e", ">f", ">d")


class Writer:
    def __init__(self, buf):
        self.buf = buf
        self.n = 0

    def _head(self, t, v):
        # t: major type already shifted (0x00, 0x20, ... 0xe0); v: argument, shortest form
        b = self.buf
        n = self.n
        if v < 24:
            b[n] = t | v
            self.n = n + 1
            return
        if v < 0x100:
            k = 1
        elif v < 0x10000:
            k = 2
        elif v < 0x100000000:
            k = 4
        elif v < 0x10000000000000000:
            k = 8
        else:
            raise ProtocolError(CBOR, "int over 64 bits")
        b[n + k] = v & 0xFF       # the last byte first: IndexError before a partial write
        b[n] = t | (24 + (0, 0, 1, 0, 2, 0, 0, 0, 3)[k])
        for i in range(k, 0, -1):
            b[n + i] = v & 0xFF
            v >>= 8
        self.n = n + 1 + k

    def uint(self, v):
        if v < 0:
            raise ProtocolError(CBOR, "uint < 0")
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

    def float(self, x):
        # Shortest of half, single, double that holds x exactly; NaN as f97e00.
        if x != x:
            self._raw(_NAN16)
            return
        for i in range(2):
            try:
                p = struct.pack(_FLOATS[i], x)
                exact = struct.unpack(_FLOATS[i], p)[0] == x
            except (OverflowError, ValueError):
                exact = False
            if exact:
                self._raw(bytes((0xF9 + i,)) + p)
                return
        self._raw(b"\xfb" + struct.pack(">d", x))

    def value(self, v):
        # Any value built of the supported types. Map keys are sorted by their encoded bytes.
        if v is None:
            self._raw(b"\xf6")
        elif v is True or v is False:
            self._raw(b"\xf5" if v else b"\xf4")
        elif isinstance(v, int):
            self.int(v)
        elif isinstance(v, float):
            self.float(v)
        elif isinstance(v, (bytes, bytearray)):
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
                if not isinstance(k, (int, str)) or k is True or k is False:
                    raise ProtocolError(CBOR, "map key %r" % (k,))
                kw = Writer(bytearray(_MAX_KEY_B))
                kw.value(k)
                items.append((kw.getvalue(), v[k]))
            items.sort()        # by encoded key: distinct keys never compare the values
            self.map(len(items))
            for k, x in items:
                self._raw(k)
                self.value(x)
        else:
            raise ProtocolError(CBOR, "cannot encode " + type(v).__name__)

    def getvalue(self):
        return bytes(self.buf[0:self.n])

    def _raw(self, data):
        n = self.n
        m = n + len(data)
        if m > len(self.buf):
            raise IndexError("CBOR buffer full")
        self.buf[n:m] = data
        self.n = m


def dumps(v, size=256):
    # One value -> deterministic CBOR bytes.
    w = Writer(bytearray(size))
    w.value(v)
    return w.getvalue()


class Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0
        self.end = len(data)

    def _need(self, n):
        if self.pos + n > self.end:
            raise ProtocolError(TRUNCATED, "CBOR ends early")

    def head(self):
        # -> (major type, argument). For major 7 the argument is the additional info and
        # any float bytes are left for value(). The shortest form is enforced.
        self._need(1)
        d = self.data
        ib = d[self.pos]
        self.pos += 1
        mt = ib >> 5
        ai = ib & 0x1F
        if ai < 24 or (mt == 7 and ai < 28):
            return mt, ai
        if ai == 31 and mt in (2, 3, 4, 5):
            raise ProtocolError(NONCANONICAL, "indefinite length")
        if ai > 27:
            raise ProtocolError(CBOR, "reserved additional info %d" % ai)
        k = 1 << (ai - 24)
        self._need(k)
        v = 0
        for i in range(k):
            v = (v << 8) | d[self.pos + i]
        self.pos += k
        if v < (24, 0x100, 0x10000, 0x100000000)[ai - 24]:
            raise ProtocolError(NONCANONICAL, "head not in shortest form")
        return mt, v

    def array(self):
        mt, v = self.head()
        if mt != 4:
            raise ProtocolError(CBOR, "want array, got major %d" % mt)
        if v > self.end - self.pos:
            raise ProtocolError(TRUNCATED, "array of %d items" % v)
        return v

    def _take(self, n):
        self._need(n)
        p = self.pos
        self.pos = p + n
        return bytes(self.data[p:p + n])

    def value(self, depth=0):
        # One item of any supported type. Tags are refused (the frame layer reads COSE's).
        if depth > _MAX_DEPTH:
            raise ProtocolError(CBOR, "nested too deep")
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
                raise ProtocolError(CBOR, "text not UTF-8")
        if mt == 4 or mt == 5:
            if (mt - 3) * v > self.end - self.pos:
                raise ProtocolError(TRUNCATED, "container of %d items" % v)
            if mt == 4:
                return [self.value(depth + 1) for _ in range(v)]
            out = {}
            prev = None
            for _ in range(v):
                ks = self.pos
                k = self.value(depth + 1)
                kb = bytes(self.data[ks:self.pos])
                if not isinstance(k, (int, str)) or k is True or k is False:
                    raise ProtocolError(CBOR, "map key must be int or text")
                if prev is not None and kb <= prev:
                    if kb == prev:
                        raise ProtocolError(CBOR, "duplicate map key")
                    raise ProtocolError(NONCANONICAL, "map keys not in bytewise order")
                prev = kb
                out[k] = self.value(depth + 1)
            return out
        if mt == 6:
            raise ProtocolError(CBOR, "unexpected tag %d" % v)
        # major 7: v is the additional info
        if v == 20 or v == 21:
            return v == 21
        if v == 22:
            return None
        if v < 25:
            raise ProtocolError(CBOR, "simple value not used")
        raw = self._take(1 << (v - 24))         # 2, 4 or 8 bytes of float
        x = struct.unpack(_FLOATS[v - 25], raw)[0]
        if x != x:
            if bytes(self.data[start:self.pos]) != _NAN16:
                raise ProtocolError(NONCANONICAL, "NaN not f97e00")
            return x
        if v > 25:
            shorter = _FLOATS[v - 26]
            try:
                exact = struct.unpack(shorter, struct.pack(shorter, x))[0] == x
            except (OverflowError, ValueError):
                exact = False
            if exact:
                raise ProtocolError(NONCANONICAL, "float has a shorter form")
        return x


def loads(data):
    # One complete item, nothing after it.
    r = Reader(data)
    v = r.value()
    if r.pos != r.end:
        raise ProtocolError(CBOR, "%d bytes after the item" % (r.end - r.pos))
    return v
