# Host-side conveniences for messages: names for codes, dict conversion, one-line text.
# Runs on both interpreters (tests use it on MicroPython) but boards do not carry it.

from protocol import messages as m
from protocol.errors import TYPE, ProtocolError

BY_NAME = {}
for _c in m.CLASSES:
    BY_NAME[_c.NAME] = _c

# Config map keys; index = key (SPEC.md "Config keys").
CONFIG_KEYS = ("", "dry_s", "wet_s", "rising_s", "levels_mm", "lead_s", "hysteresis_mm",
               "h0_mm", "burst", "traffic_window_s", "mag_distance_mm", "mag_on", "mag_off",
               "health_s", "rate_limit_ums")
FLAG_NAMES = ("range", "blip", "box", "gradient", "short", "zero", "minrange", "noecho",
              "notemp", "invalid")
ALARM_NAMES = ("", "crossed", "predicted", "cleared", "rate")
RESET_NAMES = ("unknown", "power-on", "hard", "watchdog", "deep-sleep", "soft", "brownout",
               "panic")
TIME_QUALITY_NAMES = ("free-running", "ntp", "gnss")


def to_dict(msg):
    d = {"type": msg.NAME, "node": msg.node, "boot": msg.boot, "seq": msg.seq}
    for n in msg.FIELDS:
        d[n] = getattr(msg, n)
    return d


def from_dict(d):
    # Inverse of to_dict. Bytes fields may also be given as hex text, config keys as text.
    cls = BY_NAME.get(d.get("type"))
    if cls is None:
        raise ProtocolError(TYPE, "unknown message type name %r" % (d.get("type"),))
    vals = []
    for i in range(len(cls.FIELDS)):
        name = cls.FIELDS[i]
        if name not in d:
            raise ProtocolError(TYPE, "%s needs field %s" % (cls.NAME, name))
        v = d[name]
        if cls.KINDS[i] == m.BYTES and isinstance(v, str):
            v = bytes.fromhex(v)
        if cls.KINDS[i] == m.CFG and isinstance(v, dict):
            v = dict((int(k), x) for k, x in v.items())
        vals.append(v)
    return cls(d["node"], d["boot"], d["seq"], *vals)


def flag_names(flags):
    return [FLAG_NAMES[i] for i in range(len(FLAG_NAMES)) if flags >> i & 1]


def describe(msg):
    # One line for people: "flood 1042/17#40321 t=... depth_mm=412 ...".
    parts = ["%s %d/%d#%d" % (msg.NAME, msg.node, msg.boot, msg.seq)]
    for n in msg.FIELDS:
        v = getattr(msg, n)
        if n == "flags" and v:
            v = "|".join(flag_names(v))
        elif n == "alarm" and isinstance(v, int) and v < len(ALARM_NAMES):
            v = ALARM_NAMES[v]
        elif n == "reset_cause" and isinstance(v, int) and v < len(RESET_NAMES):
            v = RESET_NAMES[v]
        elif n == "quality" and isinstance(v, int) and v < len(TIME_QUALITY_NAMES):
            v = TIME_QUALITY_NAMES[v]
        elif n == "cfg" and isinstance(v, dict):
            v = dict((CONFIG_KEYS[k] if k < len(CONFIG_KEYS) else k, x) for k, x in v.items())
        elif isinstance(v, (bytes, bytearray)):
            v = bytes(v).hex()
        parts.append("%s=%s" % (n, v))
    return " ".join(parts)
