# Scenario-replay sensor driver: the ranger, air temperature, both magnetometers and the
# battery ADC answer from a scenario stored on flash instead of from the hardware, so the
# whole firmware (filters, alarms, traffic, uplink, store) runs unchanged on a real board
# against a modelled world. For the HIL rig only: the node replays only when /config.json
# names the file (config key `replay`), and then every health frame carries status bit 0x80.
#
# The file is JSON made on the host from a scenario TOML (hil_tests/emulator/replay_file.py;
# the format is in hil_tests/README.md, "Replay files"). All numbers are integers:
#   depth [t_ms, um, ...]   air [t_ms, milli-C, ...]   bat [t_ms, mV, ...]   piecewise linear
#   veh   [centre at A ms, centre at B ms, sd ms, x, y, z mG] per vehicle (a Gaussian bump)
#   flt   [sensor, kind, from ms, to ms] per fault window (codes below)
#   h0 um, rn range noise sd um, mn magnetometer noise sd in 1/1000 mG, ga/gb baselines mG
#
# Scenario time is ms since t0, the node's boot (the uplink clock's origin, so health
# uptime_s is scenario seconds): on the emulated board it follows virtual time, on silicon it
# runs at 1x. A reset starts the scenario again. Readings are pure functions of scenario
# time: the same physics as hil_tests/emulator/world.py, with noise from a 30-bit integer
# hash of (seed, channel, ms) (ESP32 small ints hold 31 bits: no big-int maths, no heap
# in the magnetometer path, which runs at mag_hz for two sensors).

import math
from array import array
from time import ticks_diff, ticks_ms

from micropython import const

_VERSION = const(1)
_M30 = const(0x3FFFFFFF)
# SR04T semantics (ranger.SR04T.ping): 250 mm dead zone read at 343.4 m/s, no echo past 6 m
_MIN_UM = const(250000)
_MAX_UM = const(6000000)
_MIN_TOF = const(1456)          # round(2 * 250 / 0.3434)
# fault codes in the file: sensors and kinds
_RANGER = const(0)
_TEMP = const(1)
_MAG_A = const(2)
_NOECHO = const(1)
_OBSTRUCTION = const(2)
_ZERO = const(3)
_STUCK = const(4)
_ABSENT = const(5)              # 6 is hang: not replayed (a reset would restart into it)
_ENODEV = const(19)
# noise channels
_CH_ECHO = const(1)
_CH_MAG = const(10)             # 10..12 magnetometer A x y z, 20..22 B
# a Gaussian bump: exp(-d^2/2) at d = k/32 sd, k <= 192 (6 sd), scaled to 1024, read
# with linear interpolation between entries (within 0.1 mG of exp for a 400 mG bump)
_STEPS = const(32)             # a shift of 5: (dt << 13) // sd is dt / sd in 1/256 steps
_TAIL = const(192)
# Irwin-Hall: the sum of four 7-bit uniforms less 254 has a standard deviation of 73.9
_SD_X1000 = const(73900)


def _noise(seed, ch, t):
    # A deviate of standard deviation 73.9 (times 1000: _SD_X1000), fixed by (seed, ch, t).
    # Three xorshift rounds on 30 bits, each shift masked first so no value passes 2^30.
    h = (seed ^ (ch << 24) ^ t) & _M30
    for _ in range(3):
        h ^= (h & 0x1FFFF) << 13
        h ^= h >> 17
        h ^= (h & 0x1FFFFFF) << 5
    return (h & 127) + (h >> 7 & 127) + (h >> 14 & 127) + (h >> 21 & 127) - 254


def _at(c, t):
    # Piecewise-linear curve c = [t0, v0, t1, v1, ...] at t (constant outside), a float.
    n = len(c)
    if t <= c[0]:
        return c[1]
    for i in range(2, n, 2):
        if t < c[i]:
            return c[i - 1] + (c[i + 1] - c[i - 1]) * (t - c[i - 2]) / (c[i] - c[i - 2])
    return c[n - 1]


class _Mag:
    # One replayed QMC5883L: read_mg(out) as qmc5883l.QMC5883L's (always a fresh sample).
    def __init__(self, rp, which):
        self.rp = rp
        self.which = which                  # 0 A, 1 B
        self.lo = 0                         # first vehicle whose bump may still come
        self.last = 0                       # the time of the last field computed
        self.stuck = [-1, 0, 0, 0]          # fault start ms, x, y, z of its stuck value

    def read_mg(self, out):
        rp = self.rp
        t = rp.now()
        w = self.which
        f = rp.fault(_MAG_A + w, t)
        if f == _ABSENT:
            raise OSError(_ENODEV)
        if f == _ZERO:
            out[0] = out[1] = out[2] = 0
            return True
        if f == _STUCK:
            s = self.stuck
            if s[0] != rp.since:
                s[0] = rp.since
                self._field(rp.since - 1, s, 1)
            out[0], out[1], out[2] = s[1], s[2], s[3]
            return True
        self._field(t, out, 0)
        return True

    def _field(self, t, out, o):
        # Baseline + vehicle bumps + noise at t into out[o..o+2], in mG. Vehicles are sorted
        # by their centre at A; a bump reaches 6 sd plus the A-B gap from it.
        rp = self.rp
        w = self.which
        v = rp.veh
        g = rp.gauss
        base = rp.base[w]
        x = base[0]
        y = base[1]
        z = base[2]
        n = len(v)
        i = self.lo if t >= self.last else 0
        self.last = t
        lo = -1
        while i < n:
            ca = v[i]
            c = v[i + w]
            sd = v[i + 2]
            reach = sd * 6 + abs(v[i + 1] - ca)
            if ca - reach > t:
                break
            if ca + reach >= t:
                if lo < 0:
                    lo = i
                k = (abs(t - c) << 13) // sd        # in 1/256 table steps
                if k < _TAIL << 8:
                    q = k & 255
                    k >>= 8
                    k = (g[k] * (256 - q) + g[k + 1] * q) >> 8
                    x += v[i + 3] * k >> 10
                    y += v[i + 4] * k >> 10
                    z += v[i + 5] * k >> 10
            i += 6
        self.lo = lo if lo >= 0 else i
        mn = rp.mn
        if mn:
            seed = rp.seed
            ch = _CH_MAG + 10 * w
            r = _SD_X1000 // 2
            x += (mn * _noise(seed, ch, t) + r) // _SD_X1000
            y += (mn * _noise(seed, ch + 1, t) + r) // _SD_X1000
            z += (mn * _noise(seed, ch + 2, t) + r) // _SD_X1000
        out[o] = x
        out[o + 1] = y
        out[o + 2] = z


class Replay:
    # Stands in for ranger.SR04T (begin, ping, GAP_MS, MIN_TOF_US), ranger.AirTemp (start,
    # read_cc) and the battery ADC (read_uv); mags() gives the two magnetometers.
    NAME = "replay"
    MIN_TOF_US = 1457
    GAP_MS = 150

    def __init__(self, path, t0, divider):
        # path: the replay file; t0: ticks_ms of scenario time 0; divider: the board's
        # BATTERY_DIVIDER. Raises OSError (no file) or ValueError (not a replay file).
        import json
        with open(path) as f:
            d = json.load(f)
        if not isinstance(d, dict) or d.get("v") != _VERSION:
            raise ValueError("not a version 1 replay file")
        self.name = d["name"]
        self.seed = d["seed"] & _M30
        self.h0 = d["h0"]
        self.rn = d["rn"]
        self.mn = d["mn"]
        self.base = (d["ga"], d["gb"])
        # arrays of ints, allocated once at boot, before the heap fragments
        for k in ("depth", "air", "bat"):
            if len(d[k]) < 2 or len(d[k]) % 2:
                raise ValueError(k + " needs [t_ms, value] pairs")
        self.depth = array("i", d["depth"])
        self.air = array("i", d["air"])
        self.bat = array("i", d["bat"])
        self.veh = array("i", d["veh"])
        self.flt = array("i", d["flt"])
        if len(self.veh) % 6 or len(self.flt) % 4:
            raise ValueError("veh or flt cut short")
        d = None
        g = array("H", bytes(2 * _TAIL + 2))
        for k in range(_TAIL + 1):
            g[k] = int(1024 * math.exp(-0.5 * (k / _STEPS) ** 2) + 0.5)
        self.gauss = g
        self.t0 = t0
        self.div = divider
        self.since = 0                      # the start of the fault fault() found last
        self._temp = True                   # start() found the sensor present

    def now(self):
        # Scenario ms since t0.
        return ticks_diff(ticks_ms(), self.t0)

    def fault(self, sensor, t):
        # The fault kind active on sensor at t (0: none); its window's start in .since.
        f = self.flt
        for i in range(0, len(f), 4):
            if f[i] == sensor and f[i + 2] <= t < f[i + 3]:
                self.since = f[i + 2]
                return f[i + 1]
        return 0

    def mags(self):
        return _Mag(self, 0), _Mag(self, 1)

    # -- the ranger --------------------------------------------------------------------

    def begin(self):
        pass

    def ping(self):
        # Time of flight in us of an SR04T echo now; 0 electrical fault, -1 no echo.
        t = self.now()
        f = self.fault(_RANGER, t)
        if f == _NOECHO:
            return -1
        if f == _OBSTRUCTION:
            return _MIN_TOF
        if f == _ZERO:
            return 0
        if f == _STUCK:
            t = self.since - 1
        um = self.h0 - _at(self.depth, t)
        if self.rn:
            um += self.rn * _noise(self.seed, _CH_ECHO, t) / 73.9
        if um < _MIN_UM:
            return _MIN_TOF
        if um > _MAX_UM:
            return -1
        c = 331.3 * math.sqrt(1.0 + _at(self.air, t) / 273150)
        return int(2 * um / c + 0.5)

    # -- the air temperature -----------------------------------------------------------

    def start(self):
        self._temp = self.fault(_TEMP, self.now()) != _ABSENT
        return self._temp

    def read_cc(self):
        # Hundredths of C in the DS18B20's 1/16 C steps, None while absent.
        if not self._temp:
            return None
        t = self.now()
        f = self.fault(_TEMP, t)
        if f == _ABSENT:
            return None
        if f == _STUCK:
            t = self.since - 1
        return (round(_at(self.air, t) * 16 / 1000) * 100 + 8) // 16

    # -- the battery ADC ---------------------------------------------------------------

    def read_uv(self):
        return int(_at(self.bat, self.now()) * 1000) // self.div
