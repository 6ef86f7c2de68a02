# Messages: each is a CBOR array [kind, node, boot, seq, field...] (SPEC.md "Messages").
#
#   kind  = 32 * (version - 1) + type: version 1 uses kinds 0..31, and every type so far is
#           below 24 so the kind costs one byte.
#   node  = node id (uint32). Uplink: the sender; downlink: the addressee.
#   boot  = boot counter of the node (uint32, persisted, +1 on every boot).
#   seq   = uint32 >= 1, strictly increasing within (node, boot, direction).
#
# Each class lists its body fields (FIELDS) and their kinds (KINDS); encoding and decoding
# are generic over those tables and check every field's type and range. A decoder reads and
# ignores extra trailing fields (a newer sender appends fields, never reorders them).
# Human-readable forms and dict conversion live in show.py, which boards do not carry.

try:
    from micropython import const
except ImportError:     # CPython: every const() here is an int (no function: heap on a board)
    const = int  # type: ignore[assignment]

from protocol.cbor import Reader, Writer
from protocol.errors import FIELD, OVERSIZE, TYPE, VERSION, ProtocolError

VERSION_NUMBER = const(1)
_KINDS_PER_VERSION = const(32)
_HEADER_N = const(4)

# Message types (version 1)
HELLO = const(1)
FLOOD = const(2)
TRAFFIC = const(3)
ALARM = const(4)
HEALTH = const(5)
ACK = const(16)
TIME = const(17)
CONFIG = const(18)

# Field kinds
U32 = const(0)      # unsigned, < 2**32
I32 = const(1)      # signed, -2**31 .. 2**31-1
U32N = const(2)     # U32 or null (not measured)
I32N = const(3)     # I32 or null
TEXT = const(4)     # text, at most 32 bytes of UTF-8
BYTES = const(5)    # bytes, at most 32
U32A = const(6)     # array of at most 16 U32
U64 = const(7)      # unsigned, < 2**64
CFG = const(8)      # map: key 1..255 -> I32 or array of at most 16 I32

_MAX_STR_B = const(32)
_MAX_ARRAY_N = const(16)
_MAX_CFG_N = const(32)
_U32_MAX = const(0xFFFFFFFF)
_I32_MIN = const(-0x80000000)
_I32_MAX = const(0x7FFFFFFF)

# Flood reading flags (bit masks; SPEC.md "Flood flags")
FLAG_RANGE = const(0x001)      # range filter: depth clamped to 0 (<= 10 mm) or above H0
FLAG_BLIP = const(0x002)       # single-sample spike replaced by the previous value
FLAG_BOX = const(0x004)        # flat plateau from dry: an object (car, bin), not water
FLAG_GRADIENT = const(0x008)   # rise faster than water can rise (> 4.23 mm/s)
FLAG_SHORT = const(0x010)      # <= 2 wet samples between dry ones
FLAG_ZERO = const(0x020)       # sensor reads 0: electrical fault
FLAG_MINRANGE = const(0x040)   # reads its minimum range: obstruction in the dead zone
FLAG_NOECHO = const(0x080)     # reads no echo (max range): weeds, dirt, tilt
FLAG_NOTEMP = const(0x100)     # no air temperature now: the last one (30 min) or 20 C used
FLAG_INVALID = const(0x200)    # no usable depth this interval (depth field is 0)

# Alarm kinds
ALARM_CROSSED = const(1)       # depth crossed a level upwards
ALARM_PREDICTED = const(2)     # depth + rate * lead time reaches a level
ALARM_CLEARED = const(3)       # depth fell below level - hysteresis
ALARM_RATE = const(4)          # rate of rise above the configured limit

# Time quality (time message)
TIME_FREE = const(0)           # gateway clock not synchronised (free running)
TIME_NTP = const(1)            # gateway clock synchronised by NTP
TIME_GNSS = const(2)           # gateway clock disciplined by GNSS/PPS

# A node time field t >= UNIX_MIN is Unix time (UTC seconds); below, the node's clock was not
# yet synchronised and t counts seconds since boot.
UNIX_MIN = const(1000000000)


class Message:
    TYPE = 0
    NAME = ""
    UPLINK = True
    FIELDS = ()  # type: tuple
    KINDS = ()  # type: tuple

    def __init__(self, node, boot, seq, *body, **named):
        self.node = node
        self.boot = boot
        self.seq = seq
        names = self.FIELDS
        if len(body) > len(names):
            raise TypeError("too many fields")
        for i in range(len(names)):
            name = names[i]
            if i < len(body):
                v = body[i]
            elif name in named:
                v = named.pop(name)
            else:
                raise TypeError("missing field " + name)
            setattr(self, name, v)
        if named:
            raise TypeError("unknown field " + ", ".join(named))

    def values(self):
        return tuple(getattr(self, n) for n in self.FIELDS)

    def __eq__(self, other):
        return (type(other) is type(self) and self.node == other.node
                and self.boot == other.boot and self.seq == other.seq
                and self.values() == other.values())


class Hello(Message):
    TYPE = HELLO
    NAME = "hello"
    FIELDS = ("fw", "board", "reset_cause", "cfg_hash", "cfg_error")
    KINDS = (TEXT, TEXT, U32, BYTES, TEXT)


class Flood(Message):
    TYPE = FLOOD
    NAME = "flood"
    FIELDS = ("t", "depth_mm", "range_mm", "temp_cc", "flags", "q")
    KINDS = (U32, I32, U32, I32N, U32, U32)


class Traffic(Message):
    TYPE = TRAFFIC
    NAME = "traffic"
    FIELDS = ("t", "window_s", "count", "occupancy_pm", "speed_mms", "samples")
    KINDS = (U32, U32, U32, U32, U32N, U32)


class Alarm(Message):
    TYPE = ALARM
    NAME = "alarm"
    FIELDS = ("t", "alarm", "level_mm", "depth_mm", "rate_ums", "eta_s")
    KINDS = (U32, U32, I32, I32, I32, U32N)


class Health(Message):
    TYPE = HEALTH
    NAME = "health"
    FIELDS = ("t", "uptime_s", "heap_free", "heap_min", "resets", "battery_mv", "queue",
              "dropped", "link", "status")
    KINDS = (U32, U32, U32, U32, U32A, U32N, U32, U32, U32A, U32)


class Ack(Message):
    TYPE = ACK
    NAME = "ack"
    UPLINK = False
    FIELDS = ("acked_boot", "floor", "sack")
    KINDS = (U32, U32, U64)


class Time(Message):
    TYPE = TIME
    NAME = "time"
    UPLINK = False
    FIELDS = ("utc_ms", "quality")
    KINDS = (U64, U32)


class Config(Message):
    TYPE = CONFIG
    NAME = "config"
    UPLINK = False
    FIELDS = ("cfg",)
    KINDS = (CFG,)


CLASSES = (Hello, Flood, Traffic, Alarm, Health, Ack, Time, Config)
BY_TYPE = {}
for _c in CLASSES:
    BY_TYPE[_c.TYPE] = _c


def _int_in(v, lo, hi):
    return type(v) is int and lo <= v <= hi


def valid(kind, v):
    # True if v is a valid value of the field kind.
    if v is None:
        return kind == U32N or kind == I32N
    if kind == U32 or kind == U32N:
        return _int_in(v, 0, _U32_MAX)
    if kind == I32 or kind == I32N:
        return _int_in(v, _I32_MIN, _I32_MAX)
    if kind == U64:
        return _int_in(v, 0, 0xFFFFFFFFFFFFFFFF)
    if kind == TEXT:
        return isinstance(v, str) and len(v.encode("utf-8")) <= _MAX_STR_B
    if kind == BYTES:
        return isinstance(v, (bytes, bytearray)) and len(v) <= _MAX_STR_B
    if kind == U32A:
        if not isinstance(v, (list, tuple)) or len(v) > _MAX_ARRAY_N:
            return False
        for x in v:
            if not _int_in(x, 0, _U32_MAX):
                return False
        return True
    if kind == CFG:
        if not isinstance(v, dict) or len(v) > _MAX_CFG_N:
            return False
        for k in v:
            x = v[k]
            if not _int_in(k, 1, 255):
                return False
            if isinstance(x, (list, tuple)):
                if len(x) > _MAX_ARRAY_N:
                    return False
                for e in x:
                    if not _int_in(e, _I32_MIN, _I32_MAX):
                        return False
            elif not _int_in(x, _I32_MIN, _I32_MAX):
                return False
        return True
    return False


def _check(cls, node, boot, seq, values):
    # Every field of a message of class cls; ProtocolError(FIELD) names the first bad one.
    if not _int_in(node, 0, _U32_MAX):
        name = "node"
        v = node
    elif not _int_in(boot, 0, _U32_MAX):
        name = "boot"
        v = boot
    elif not _int_in(seq, 1, _U32_MAX):
        name = "seq"
        v = seq
    else:
        for i in range(len(values)):
            if not valid(cls.KINDS[i], values[i]):
                name = cls.FIELDS[i]
                v = values[i]
                break
        else:
            return
    raise ProtocolError(FIELD, "%s.%s=%r" % (cls.NAME, name, v))


def encode_into(msg, w):
    # Writes msg as a CBOR array through Writer w; checks every field first.
    cls = type(msg)
    vals = msg.values()
    _check(cls, msg.node, msg.boot, msg.seq, vals)
    try:
        w.array(_HEADER_N + len(vals))
        w.uint(cls.TYPE)
        w.uint(msg.node)
        w.uint(msg.boot)
        w.uint(msg.seq)
        for v in vals:
            w.value(v)
    except IndexError:
        raise ProtocolError(OVERSIZE, "%s over %d bytes" % (cls.NAME, len(w.buf)))


def encode(msg):
    w = Writer(bytearray(256))
    encode_into(msg, w)
    return w.getvalue()


def _header(r):
    n = r.array()
    if n < _HEADER_N:
        raise ProtocolError(FIELD, "%d items, header needs 4" % n)
    kind = r.value(1)
    node = r.value(1)
    if not _int_in(kind, 0, 0xFFFFFFFFFFFFFFFF) or not _int_in(node, 0, _U32_MAX):
        raise ProtocolError(FIELD, "kind %r node %r" % (kind, node))
    return n, kind, node


def peek_node(payload):
    # Node id of a message, read before it is authenticated (only to find the key).
    return _header(Reader(payload))[2]


def decode(payload, uplink=True):
    # CBOR message bytes -> Message. Raises ProtocolError.
    r = Reader(payload)
    n, kind, node = _header(r)
    if kind >= _KINDS_PER_VERSION:
        raise ProtocolError(VERSION, "version %d" % (kind // _KINDS_PER_VERSION + 1))
    cls = BY_TYPE.get(kind)
    if cls is None:
        raise ProtocolError(TYPE, "type %d" % kind)
    if uplink != cls.UPLINK:
        raise ProtocolError(TYPE, cls.NAME + (" is uplink" if cls.UPLINK else " is downlink"))
    nf = len(cls.FIELDS)
    if n - _HEADER_N < nf:
        raise ProtocolError(FIELD, "%s has %d fields, needs %d" % (cls.NAME, n - _HEADER_N, nf))
    boot = r.value(1)
    seq = r.value(1)
    vals = [r.value(1) for _ in range(nf)]
    _check(cls, node, boot, seq, vals)
    for _ in range(n - _HEADER_N - nf):
        r.value(1)      # a newer sender's extra trailing field: must be valid CBOR, ignored
    if r.pos != r.end:
        raise ProtocolError(FIELD, "%d bytes after %s" % (r.end - r.pos, cls.NAME))
    return cls(node, boot, seq, *vals)
