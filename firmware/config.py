# Node configuration: /config.json on flash, validated at boot and on every change.
#
# A bad or missing file never stops the node: every key that fails validation keeps its
# default, the first failure is named in `error` (it goes into the hello frame as cfg_error
# and the health status bit 0x02), and the node keeps sensing and talking to the gateway so
# the fix can arrive as a config frame. Only `node` and `h0_mm` have no safe default:
#   - without `node` the node speaks as 0x80000000 | (crc32 of machine.unique_id()) so the
#     gateway sees an unprovisioned board instead of silence;
#   - without `h0_mm` readings carry the raw range and depth is flagged invalid.

import binascii
import hashlib
import json
import os

from micropython import const

_PATH = const("/config.json")
_MAX_TEXT_B = const(32)
_KEY_HEX = const(64)

# The keys, four items each: name, default, low, high. One flat tuple: a dict of tuples
# would cost the heap an object per key. Lists (levels_mm) check each element and ascending
# order; text keys have low None and high the most bytes. The first _WIRE_N keys are the
# ones the gateway may change over the air, in wire-number order (SPEC 5.4.4: config frame
# key n is the n-th); the others change only on the bench (tools/provision).
# Intervals: Singapore PUB polls 10 min dry and 2 min in rain (field.md); we read faster
# while the water rises. Levels: FloodNet alerts above 76 mm, HCMC street lights at 200 mm.
_WIRE_N = const(14)
_KEYS = const((
    "dry_s", 300, 5, 86400,
    "wet_s", 60, 5, 3600,
    "rising_s", 15, 2, 600,
    "levels_mm", (76, 200, 400), 1, 6000,
    "lead_s", 600, 0, 7200,
    "hysteresis_mm", 20, 0, 500,
    "h0_mm", None, 300, 6000,
    "burst", 7, 1, 15,
    "traffic_window_s", 60, 10, 3600,
    "mag_distance_mm", 2000, 100, 20000,
    "mag_on", 40, 5, 5000,
    "mag_off", 20, 2, 5000,
    "health_s", 300, 10, 86400,
    "rate_limit_ums", 1000, 10, 100000,
    "traffic", 1, 0, 1,                 # 0: a flood-only site without magnetometers
    "mag_hz", 50, 5, 200,               # magnetometer sampling rate
    "node", None, 0, 0xFFFFFFFF,
    "log", 20, 10, 40,
    "site", "", None, _MAX_TEXT_B,
    "board", "esp32-devkitc", None, _MAX_TEXT_B,
    "key", "", None, _KEY_HEX,
    "replay", "", None, _MAX_TEXT_B,    # HIL rig only: replay a scenario file (replay.py)
))


class Config:
    def __init__(self):
        self.values = {}  # type: dict
        for i in range(0, len(_KEYS), 4):
            d = _KEYS[i + 1]
            self.values[_KEYS[i]] = list(d) if isinstance(d, tuple) else d
        self.error = ""

    def get(self, name):
        return self.values[name]

    def key_bytes(self):
        k = self.values["key"]
        return binascii.unhexlify(k) if k else None

    def module_name(self):
        # "esp32-devkitc" -> "boards.esp32_devkitc"
        return "boards." + self.values["board"].replace("-", "_")

    def _fail(self, text):
        if not self.error:
            self.error = text[:_MAX_TEXT_B]

    def update(self, data):
        # Applies the valid entries of data (name -> value); names the first refusal in name
        # order (dict order differs between interpreters).
        for name in sorted(data):
            v = data[name]
            i = 0
            while i < len(_KEYS) and _KEYS[i] != name:
                i += 4
            why = ""
            if i == len(_KEYS):
                why = "unknown key " + name
            elif _KEYS[i + 2] is None:                  # text
                if not isinstance(v, str) or len(v) > _KEYS[i + 3]:
                    why = "%s must be text" % name
                elif name == "key" and v:
                    try:
                        ok = len(v) == _KEY_HEX and binascii.unhexlify(v)
                    except ValueError:
                        ok = False
                    if not ok:
                        why = "key must be 64 hex digits"
                elif name == "replay" and v and v[0] != "/":
                    why = "replay must be a path: /replay.json"
            elif name == "levels_mm":
                if not isinstance(v, list) or not 1 <= len(v) <= 8:
                    why = "levels_mm must be a list of 1..8 levels"
                else:
                    prev = 0
                    for x in v:
                        if type(x) is not int or not _KEYS[i + 2] <= x <= _KEYS[i + 3] \
                                or x <= prev:
                            why = "levels_mm must ascend within %d..%d" % (_KEYS[i + 2],
                                                                           _KEYS[i + 3])
                            break
                        prev = x
            elif type(v) is not int or not _KEYS[i + 2] <= v <= _KEYS[i + 3]:
                why = "%s must be an int %d..%d" % (name, _KEYS[i + 2], _KEYS[i + 3])
            if why:
                self._fail(why)
            else:
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
        for k in ("node", "h0_mm"):
            if self.values[k] is None:
                self._fail("%s missing" % k)
                break
        return self

    def apply_wire(self, cfg):
        # A config frame's map (wire number -> value). Returns the number of keys applied.
        # Unknown numbers are ignored (SPEC 5.6); the first refused key is named in error.
        self.error = ""
        d = {}
        for k in cfg:
            if 0 < k <= _WIRE_N:
                v = cfg[k]
                d[_KEYS[4 * k - 4]] = list(v) if isinstance(v, (list, tuple)) else v
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

    def digest(self):
        # cfg_hash for the hello frame: 8 bytes identifying the configuration in force.
        h = hashlib.sha256()
        for k in sorted(self.values):
            if k != "key":
                h.update(k.encode())
                h.update(repr(self.values[k]).encode())
        h.update(b"keyed" if self.values["key"] else b"open")
        return h.digest()[0:8]
