# Messages: each is a CBOR array [kind, node, boot, seq, field...] (SPEC.md, "Messages").
#
#   kind  = 32 * (version - 1) + type: version 1 uses kinds 0..31, and the frequent ones
#           (all of them today) stay below 24 so the kind costs one byte.
#   node  = node id (uint32). Uplink: the sender; downlink: the addressee.
#   boot  = boot counter of the node (uint32, persisted, +1 on every boot).
#   seq   = uint32 >= 1, strictly increasing within (node, boot, direction).
#
# Each message class lists its body fields (FIELDS) and their kinds (KINDS). Encoding and
# decoding are generic over those tables, and both check every field's type and range.
# A decoder accepts extra trailing fields (a newer sender) and ignores them.

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

from protocol.cbor import Reader, Writer
from protocol.errors import FIELD, TYPE, VERSION, ProtocolError

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
_U32 = const(0)      # unsigned, < 2**32
_I32 = const(1)      # signed, -2**31 .. 2**31-1
_U32N = const(2)     # _U32 or null (not measured)
_I32N = const(3)     # _I32 or null
_TEXT = const(4)     # text, at most 32 bytes of UTF-8
_BYTES = const(5)    # bytes, at most 32
_U32A = const(6)     # array of at most 16 _U32
_U64 = const(7)      # unsigned, < 2**64
_CFG = const(8)      # map: uint key (1..255) -> _I32 or array of at most 16 _I32

_MAX_STR_B = const(32)
_MAX_ARRAY_N = const(16)
_MAX_CFG_KEY = const(255)
_U32_MAX = const(0xFFFFFFFF)
_I32_MIN = const(-0x80000000)
_I32_MAX = const(0x7FFFFFFF)
_KIND_NAMES = ("uint32", "int32", "uint32 or null", "int32 or null", "text", "bytes",
               "array of uint32", "uint64", "config map")

# Flood reading flags (bit numbers; SPEC.md "Flood flags").
FLAG_RANGE = const(0x001)      # range filter: depth clamped to 0 (<= 10 mm) or above H0
FLAG_BLIP = const(0x002)       # single-sample spike replaced by the previous value
FLAG_BOX = const(0x004)        # flat plateau from dry: an object (car, bin), not water
FLAG_GRADIENT = const(0x008)   # rise faster than water can rise (> 4.23 mm/s)
FLAG_SHORT = const(0x010)      # <= 2 wet samples between dry ones
FLAG_ZERO = const(0x020)       # sensor reads 0: electrical fault
FLAG_MINRANGE = const(0x040)   # reads its minimum range: obstruction in the dead zone
FLAG_NOECHO = const(0x080)     # reads no echo (max range): weeds, dirt, tilt
FLAG_NOTEMP = const(0x100)     # no air temperature: speed of sound at 20 C assumed
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

# Node time: a t field >= UNIX_MIN is Unix time (UTC seconds); below, the node's clock was
# not yet synchronised and t is seconds since boot.
UNIX_MIN = const(1000000000)

# Config map keys (SPEC.md "Config keys"); index = key.
CONFIG_KEYS = ("", "dry_s", "wet_s", "rising_s", "levels_mm", "lead_s", "hysteresis_mm",
               "h0_mm", "burst", "traffic_window_s", "mag_distance_mm", "mag_on", "mag_off",
               "health_s", "rate_limit_ums")


class Message:
    TYPE = 0
    NAME = ""
    UPLINK = True
    FIELDS = ()
    KINDS = ()

    def __init__(self, node, boot, seq, *body, **named):
        self.node = node
        self.boot = boot
        self.seq = seq
        names = self.FIELDS
        if len(body) > len(names):
            raise TypeError("%s takes %d fields, got %d" % (self.NAME, len(names), len(body)))
        for i in range(len(names)):
            name = names[i]
            if i < len(body):
                if name in named:
                    raise TypeError("%s.%s given twice" % (self.NAME, name))
                v = body[i]
            elif name in named:
                v = named.pop(name)
            else:
                raise TypeError("%s.%s missing" % (self.NAME, name))
            setattr(self, name, v)
        for name in named:
            raise TypeError("%s has no field %s" % (self.NAME, name))

    def values(self):
        return tuple(getattr(self, n) for n in self.FIELDS)

    def to_dict(self):
        d = {"type": self.NAME, "node": self.node, "boot": self.boot, "seq": self.seq}
        for n in self.FIELDS:
            d[n] = getattr(self, n)
        return d

    def __eq__(self, other):
        return (type(other) is type(self) and self.node == other.node
                and self.boot == other.boot and self.seq == other.seq
                and self.values() == other.values())

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        parts = ["node=%r" % self.node, "boot=%r" % self.boot, "seq=%r" % self.seq]
        for n in self.FIELDS:
            parts.append("%s=%r" % (n, getattr(self, n)))
        return "%s(%s)" % (type(self).__name__, ", ".join(parts))


class Hello(Message):
    TYPE = HELLO
    NAME = "hello"
    FIELDS = ("fw", "board", "reset_cause", "cfg_hash", "cfg_error")
    KINDS = (_TEXT, _TEXT, _U32, _BYTES, _TEXT)


class Flood(Message):
    TYPE = FLOOD
    NAME = "flood"
    FIELDS = ("t", "depth_mm", "range_mm", "temp_cc", "flags", "q")
    KINDS = (_U32, _I32, _U32, _I32N, _U32, _U32)


class Traffic(Message):
    TYPE = TRAFFIC
    NAME = "traffic"
    FIELDS = ("t", "window_s", "count", "occupancy_pm", "speed_mms", "samples")
    KINDS = (_U32, _U32, _U32, _U32, _U32N, _U32)


class Alarm(Message):
    TYPE = ALARM
    NAME = "alarm"
    FIELDS = ("t", "alarm", "level_mm", "depth_mm", "rate_ums", "eta_s")
    KINDS = (_U32, _U32, _I32, _I32, _I32, _U32N)


class Health(Message):
    TYPE = HEALTH
    NAME = "health"
    FIELDS = ("t", "uptime_s", "heap_free", "heap_min", "resets", "battery_mv", "queue",
              "dropped", "link", "status")
    KINDS = (_U32, _U32, _U32, _U32, _U32A, _U32N, _U32, _U32, _U32A, _U32)


class Ack(Message):
    TYPE = ACK
    NAME = "ack"
    UPLINK = False
    FIELDS = ("acked_boot", "floor", "sack")
    KINDS = (_U32, _U32, _U64)


class Time(Message):
    TYPE = TIME
    NAME = "time"
    UPLINK = False
    FIELDS = ("utc_ms", "quality")
    KINDS = (_U64, _U32)


class Config(Message):
    TYPE = CONFIG
    NAME = "config"
    UPLINK = False
    FIELDS = ("cfg",)
    KINDS = (_CFG,)


CLASSES = (Hello, Flood, Traffic, Alarm, Health, Ack, Time, Config)
BY_TYPE = {}
BY_NAME = {}
for _c in CLASSES:
    BY_TYPE[_c.TYPE] = _c
    BY_NAME[_c.NAME] = _c


def _is_int(v):
    return type(v) is int


def _bad(cls, name, kind, why):
    return ProtocolError(FIELD, "%s.%s: %s (%s)" % (cls.NAME, name, why, _KIND_NAMES[kind]))


def _check(cls, name, kind, v):
    # Raises ProtocolError(FIELD) unless v is a valid value of the kind.
    if v is None:
        if kind == _U32N or kind == _I32N:
            return
        raise _bad(cls, name, kind, "null")
    if kind == _U32 or kind == _U32N:
        if not _is_int(v) or v < 0 or v > _U32_MAX:
            raise _bad(cls, name, kind, "got %r" % (v,))
    elif kind == _I32 or kind == _I32N:
        if not _is_int(v) or v < _I32_MIN or v > _I32_MAX:
            raise _bad(cls, name, kind, "got %r" % (v,))
    elif kind == _U64:
        if not _is_int(v) or v < 0 or v > 0xFFFFFFFFFFFFFFFF:
            raise _bad(cls, name, kind, "got %r" % (v,))
    elif kind == _TEXT:
        if not isinstance(v, str) or len(v.encode("utf-8")) > _MAX_STR_B:
            raise _bad(cls, name, kind, "got %r" % (v,))
    elif kind == _BYTES:
        if not isinstance(v, (bytes, bytearray)) or len(v) > _MAX_STR_B:
            raise _bad(cls, name, kind, "got %r" % (v,))
    elif kind == _U32A:
        if not isinstance(v, (list, tuple)) or len(v) > _MAX_ARRAY_N:
            raise _bad(cls, name, kind, "got %r" % (v,))
        for x in v:
            if not _is_int(x) or x < 0 or x > _U32_MAX:
                raise _bad(cls, name, kind, "element %r" % (x,))
    elif kind == _CFG:
        if not isinstance(v, dict) or len(v) > _MAX_ARRAY_N * 2:
            raise _bad(cls, name, kind, "got %r" % (v,))
        for k in v:
            if not _is_int(k) or k < 1 or k > _MAX_CFG_KEY:
                raise _bad(cls, name, kind, "key %r" % (k,))
            x = v[k]
            xs = x if isinstance(x, (list, tuple)) else (x,)
            if isinstance(x, (list, tuple)) and len(x) > _MAX_ARRAY_N:
                raise _bad(cls, name, kind, "key %d: array too long" % k)
            for e in xs:
                if not _is_int(e) or e < _I32_MIN or e > _I32_MAX:
                    raise _bad(cls, name, kind, "key %d: value %r" % (k, e))


def _check_header(cls, node, boot, seq):
    if not _is_int(node) or node < 0 or node > _U32_MAX:
        raise ProtocolError(FIELD, "%s.node: got %r (uint32)" % (cls.NAME, node))
    if not _is_int(boot) or boot < 0 or boot > _U32_MAX:
        raise ProtocolError(FIELD, "%s.boot: got %r (uint32)" % (cls.NAME, boot))
    if not _is_int(seq) or seq < 1 or seq > _U32_MAX:
        raise ProtocolError(FIELD, "%s.seq: got %r (uint32 >= 1)" % (cls.NAME, seq))


def encode_into(msg, w):
    # Writes msg as a CBOR array through Writer w; checks every field first.
    cls = type(msg)
    _check_header(cls, msg.node, msg.boot, msg.seq)
    names = cls.FIELDS
    kinds = cls.KINDS
    for i in range(len(names)):
        _check(cls, names[i], kinds[i], getattr(msg, names[i]))
    w.array(_HEADER_N + len(names))
    w.uint(cls.TYPE)
    w.uint(msg.node)
    w.uint(msg.boot)
    w.uint(msg.seq)
    for i in range(len(names)):
        w.value(getattr(msg, names[i]))


def encode(msg):
    w = Writer(bytearray(256))
    encode_into(msg, w)
    return w.getvalue()


def peek_node(payload):
    # Node id of a message, read before it is authenticated (only to find the key).
    r = Reader(payload)
    n = r.array()
    if n < _HEADER_N:
        raise ProtocolError(FIELD, "message has %d items, a header needs %d" % (n, _HEADER_N))
    r.uint()
    return r.uint()


def decode(payload, uplink=True):
    # CBOR message bytes -> Message. Raises ProtocolError.
    r = Reader(payload)
    n = r.array()
    if n < _HEADER_N:
        raise ProtocolError(FIELD, "message has %d items, a header needs %d" % (n, _HEADER_N))
    kind = r.value(1)
    if not _is_int(kind) or kind < 0:
        raise ProtocolError(FIELD, "message kind %r is not an unsigned integer" % (kind,))
    if kind >= _KINDS_PER_VERSION:
        raise ProtocolError(VERSION, "protocol version %d (kind %d); this side speaks %d"
                            % (kind // _KINDS_PER_VERSION + 1, kind, VERSION_NUMBER))
    cls = BY_TYPE.get(kind)
    if cls is None:
        raise ProtocolError(TYPE, "unknown message type %d" % kind)
    if cls.UPLINK != uplink:
        raise ProtocolError(TYPE, "%s message travels %s, received on the %s side"
                            % (cls.NAME, "uplink" if cls.UPLINK else "downlink",
                               "gateway" if uplink else "node"))
    node = r.value(1)
    boot = r.value(1)
    seq = r.value(1)
    _check_header(cls, node, boot, seq)
    names = cls.FIELDS
    kinds = cls.KINDS
    if n - _HEADER_N < len(names):
        raise ProtocolError(FIELD, "%s has %d fields, needs %d"
                            % (cls.NAME, n - _HEADER_N, len(names)))
    vals = []
    for i in range(len(names)):
        v = r.value(1)
        _check(cls, names[i], kinds[i], v)
        vals.append(v)
    for _ in range(n - _HEADER_N - len(names)):
        r.value(1)      # newer sender: extra trailing fields are read (must be valid) and ignored
    if r.pos != r.end:
        raise ProtocolError(FIELD, "%d bytes after the %s message" % (r.end - r.pos, cls.NAME))
    return cls(node, boot, seq, *vals)


def from_dict(d):
    # Inverse of Message.to_dict (for vectors, tools and tests). Bytes fields may be hex.
    cls = BY_NAME.get(d.get("type"))
    if cls is None:
        raise ProtocolError(TYPE, "unknown message type name %r" % (d.get("type"),))
    vals = []
    for i in range(len(cls.FIELDS)):
        v = d[cls.FIELDS[i]]
        if cls.KINDS[i] == _BYTES and isinstance(v, str):
            v = bytes.fromhex(v)
        if cls.KINDS[i] == _CFG and isinstance(v, dict):
            v = dict((int(k), x) for k, x in v.items())
        vals.append(v)
    return cls(d["node"], d["boot"], d["seq"], *vals)
