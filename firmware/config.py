# Node configuration: /config.json on flash, validated at boot and on every change.
#
# A bad or missing file never stops the node: every key that fails validation keeps its
# default, the first failure is named in `error` (it goes into the hello frame as cfg_error
# and the health status bit 0x02), and the node keeps sensing and talking to the gateway so
# the fix can arrive as a config frame. Only `node` and `h0_mm` have no safe default:
#   - without `node` the node speaks as 0x80000000 | (crc32 of machine.unique_id()) so the
#     gateway sees an unprovisioned board instead of silence;
#   - without `h0_mm` readings carry the raw range and depth is flagged invalid.
#
# Keys that the gateway may change over the air (config frames, SPEC 5.4.4) are listed in
# WIRE_KEYS by their wire number; the others (node, site, key, board, log) change only on the
# bench (tools/provision).

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython; the ESP32 has micropython.const
        return x

import binascii
import hashlib
import json
import os

_PATH = "/config.json"
_MAX_TEXT_B = const(32)
_KEY_HEX = const(64)

# Wire number -> name (SPEC 5.4.4). Index 0 unused.
WIRE_KEYS = ("", "dry_s", "wet_s", "rising_s", "levels_mm", "lead_s", "hysteresis_mm",
             "h0_mm", "burst", "traffic_window_s", "mag_distance_mm", "mag_on", "mag_off",
             "health_s", "rate_limit_ums")

# name -> (default, low, high). Lists (levels_mm) check each element and ascending order.
# Intervals: Singapore PUB polls 10 min dry and 2 min in rain (field.md); we read faster
# while the water rises. Levels: FloodNet alerts above 76 mm, HCMC street lights at 200 mm.
_INTS = {
    "dry_s": (300, 5, 86400),
    "wet_s": (60, 5, 3600),
    "rising_s": (15, 2, 600),
    "levels_mm": ([76, 200, 400], 1, 6000),
    "lead_s": (600, 0, 7200),
    "hysteresis_mm": (20, 0, 500),
    "h0_mm": (None, 300, 6000),
    "burst": (7, 1, 15),
    "traffic_window_s": (60, 10, 3600),
    "mag_distance_mm": (2000, 100, 20000),
    "mag_on": (40, 5, 5000),
    "mag_off": (20, 2, 5000),
    "health_s": (300, 10, 86400),
    "rate_limit_ums": (1000, 10, 100000),
    "traffic": (1, 0, 1),               # 0: a flood-only site without magnetometers
    "mag_hz": (50, 5, 200),             # magnetometer sampling rate
    "node": (None, 0, 0xFFFFFFFF),
    "log": (20, 10, 40),
}
_TEXTS = {"site": "", "board": "esp32-devkitc", "key": ""}


def _valid(name, v):
    # "" if v is acceptable for name, else why not.
    if name in _TEXTS:
        if not isinstance(v, str) or len(v) > (_KEY_HEX if name == "key" else _MAX_TEXT_B):
            return "%s must be text" % name
        if name == "key" and v:
            if len(v) != _KEY_HEX:
                return "key must be 64 hex digits"
            try:
                binascii.unhexlify(v)
            except ValueError:
                return "key must be 64 hex digits"
        return ""
    spec = _INTS.get(name)
    if spec is None:
        return "unknown key " + name
    lo = spec[1]
    hi = spec[2]
    if name == "levels_mm":
        if not isinstance(v, list) or not 1 <= len(v) <= 8:
            return "levels_mm must be a list of 1..8 levels"
        prev = 0
        for x in v:
            if type(x) is not int or not lo <= x <= hi or x <= prev:
                return "levels_mm must ascend within %d..%d" % (lo, hi)
            prev = x
        return ""
    if type(v) is not int or not lo <= v <= hi:
        return "%s must be an int %d..%d" % (name, lo, hi)
    return ""


class Config:
    def __init__(self):
        self.values = {}  # type: dict
        for k in _INTS:
            d = _INTS[k][0]
            self.values[k] = list(d) if isinstance(d, list) else d
        for k in _TEXTS:
            self.values[k] = _TEXTS[k]
        self.error = ""

    def get(self, name):
        return self.values[name]

    def key_bytes(self):
        k = self.values["key"]
        return binascii.unhexlify(k) if k else None

    def module_name(self):
        # "esp32-devkitc" -> "boards.esp32_devkitc"
        return "boards." + self.values["board"].replace("-", "_")

    def _fail(self, why):
        if not self.error:
            self.error = why[:_MAX_TEXT_B]

    def update(self, d):
        # Applies the valid entries of d (name -> value); names the first refusal in name
        # order (dict order differs between interpreters).
        for name in sorted(d):
            v = d[name]
            why = _valid(name, v)
            if why:
                self._fail(why)
                continue
            self.values[name] = v
        if self.values["mag_off"] >= self.values["mag_on"]:
            self._fail("mag_off must be below mag_on")
            self.values["mag_off"] = self.values["mag_on"] // 2

    def load(self, path=_PATH):
        # Reads and validates the file. Returns self; check .error.
        name = path.split("/")[-1]
        try:
            with open(path) as f:
                d = json.load(f)
        except OSError:
            self._fail("no " + name)
            d = {}
        except ValueError:
            self._fail(name + " is not JSON")
            d = {}
        if not isinstance(d, dict):
            self._fail(name + " is not an object")
            d = {}
        self.update(d)
        if self.values["node"] is None:
            self._fail("node missing")
        elif self.values["h0_mm"] is None:
            self._fail("h0_mm missing")
        return self

    def apply_wire(self, cfg):
        # A config frame's map (wire number -> value). Returns the number of keys applied.
        # Unknown numbers are ignored (SPEC 5.6); the first refused key is named in error.
        self.error = ""
        d = {}
        for k in cfg:
            if 0 < k < len(WIRE_KEYS):
                v = cfg[k]
                d[WIRE_KEYS[k]] = list(v) if isinstance(v, (list, tuple)) else v
        self.update(d)
        return len(d)

    def save(self, path=_PATH):
        # Atomic on LittleFS: write a new file, then rename over the old one.
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.values, f)
        try:
            os.remove(path)
        except OSError:
            pass
        os.rename(tmp, path)

    def settings(self):
        # The dict the sensing modules take (flood.Flood, traffic.Traffic).
        return self.values

    def digest(self):
        # cfg_hash for the hello frame: 8 bytes identifying the configuration in force.
        h = hashlib.sha256()
        for k in sorted(self.values):
            if k != "key":
                h.update(k.encode())
                h.update(repr(self.values[k]).encode())
        h.update(b"keyed" if self.values["key"] else b"open")
        return h.digest()[0:8]
