# Scenario-replay sensor driver: the ranger, air temperature, both magnetometers and the
# battery ADC answer from a scenario stored on flash instead of from the hardware, so the
# whole firmware (filters, alarms, traffic, uplink, store) runs unchanged on a real board
# against a modelled world. For the HIL rig only: the node replays only when /config.json
# names the file (config key `replay`), and then every health frame carries status bit 0x80.
#
# The file is made on the host from a scenario TOML (hil_tests/emulator/replay_file.py; the
# format is in hil_tests/README.md, "Replay files"): one line of JSON, a list (no key names:
# each would be a qstr on the board), then the vehicles as raw little-endian int32s read
# straight into their array (a JSON list of 500 ints needs a 4-8 KB list while parsing:
# MemoryError on rush hour). The line, all numbers integers:
#   [1 (the format version), name, seed, h0 um, range noise sd um, magnetometer noise sd
#    in 1/1000 mG, [x, y, z] baseline mG at A, at B, depth [t_ms, um, ...], air [t_ms,
#    milli-C, ...], battery [t_ms, mV, ...] (piecewise linear), faults [sensor, kind,
#    from ms, to ms, ...] (codes below), n = the int32s that follow]
# and per vehicle 6 int32s: centre at A ms, centre at B ms, sd ms, x, y, z mG (its Gaussian
# bump at each magnetometer), sorted by centre at A. The vehicles stay on flash: the file is
# kept open and a window of _WIN of them is read into a fixed array when the magnetometers
# walk past it (rush hour's 84 vehicles in RAM took 2 KB of a 64 KiB heap; the window takes
# 384 B whatever the scenario's traffic). When all of them fit, the file is closed.
#
# Scenario time is ms since t0, the node's boot (the uplink clock's origin, so health
# uptime_s is scenario seconds): on the emulated board it follows virtual time, on silicon it
# runs at 1x. A reset starts the scenario again. Readings are pure functions of scenario
# time: the same physics as hil_tests/emulator/world.py, with noise from a 30-bit integer
# hash of (seed, channel, ms) (ESP32 small ints hold 31 bits: no big-int maths, no heap
# in the magnetometer path, which runs at mag_hz for two sensors). State sits in lists
# indexed by const slots, not attributes, to keep the names (qstrs) this module adds few.

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
# Replay state slots (the header list's order, then the driver's own)
_NAME = const(1)
_SEED = const(2)
_H0 = const(3)
_RN = const(4)
_MN = const(5)
_GA = const(6)              # _GA + 1: the baseline at B
_DEPTH = const(8)
_AIR = const(9)
_BAT = const(10)
_FLT = const(11)
_VEH = const(12)
_T0 = const(13)
_DIV = const(14)
_SINCE = const(15)          # the start of the window _fault found last
_TEMP_OK = const(16)        # start() found the DS18B20 present
_GAUSS = const(17)
_VF = const(18)             # the open replay file
_VOFF = const(19)           # its offset of the first vehicle
_NV = const(20)             # int32s of vehicles in the file (6 per vehicle)
_VB = const(21)             # the int32 index of the window's first entry
_MS = const(22)             # both magnetometers' state lists (their _LO)
_WIN = const(96)            # int32s in the window: 16 vehicles
# magnetometer state slots
_WHICH = const(0)           # 0 A, 1 B
_LO = const(1)              # the first vehicle whose bump may still come
_LAST = const(2)            # the time of the last field computed
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


def _fault(s, i, t):
    # The fault kind active on sensor i at t (0: none); its window's start in s[_SINCE].
    f = s[_FLT]
    for k in range(0, len(f), 4):
        if f[k] == i and f[k + 2] <= t < f[k + 3]:
            s[_SINCE] = f[k + 2]
            return f[k + 1]
    return 0


def _at(c, t):
    # Piecewise-linear curve c = [t0, v0, t1, v1, ...] at t (constant outside), a float.
    n = len(c)
    if t <= c[0]:
        return c[1]
    for i in range(2, n, 2):
        if t < c[i]:
            return c[i - 1] + (c[i + 1] - c[i - 1]) * (t - c[i - 2]) / (c[i] - c[i - 2])
    return c[n - 1]


def _page(s, i):
    # Reads the window so that it holds vehicle int32 index i, from the lowest index either
    # magnetometer may still need where that fits (they walk the same vehicles, B behind
    # A); returns the window's first index. No heap: seek and readinto a fixed array.
    v = s[_VEH]
    b = i
    for m in s[_MS]:
        lo = m[_LO]
        if lo < b and i + 6 - lo <= len(v):
            b = lo
    f = s[_VF]
    f.seek(s[_VOFF] + 4 * b)
    f.readinto(v)
    s[_VB] = b
    return b


class _Mag:
    # One replayed QMC5883L: read_mg(out) as qmc5883l.QMC5883L's (always a fresh sample).
    def __init__(self, rp, i):
        self.rp = rp
        self.s = [i, 0, 0]

    def read_mg(self, out):
        rp = self.rp
        s = rp.s
        m = self.s
        w = m[_WHICH]
        t = ticks_diff(ticks_ms(), s[_T0])
        f = _fault(s, _MAG_A + w, t)
        if f == _ABSENT:
            raise OSError(_ENODEV)
        if f == _ZERO:
            out[0] = out[1] = out[2] = 0
            return True
        if f == _STUCK:
            t = s[_SINCE] - 1
        # baseline + vehicle bumps + noise at t; a bump reaches 6 sd plus the A-B gap
        v = s[_VEH]
        g = s[_GAUSS]
        base = s[_GA + w]
        x = base[0]
        y = base[1]
        z = base[2]
        n = s[_NV]
        nw = len(v)
        b = s[_VB]
        i = m[_LO] if t >= m[_LAST] else 0
        m[_LAST] = t
        lo = -1
        while i < n:
            j = i - b
            if j < 0 or j + 6 > nw:
                b = _page(s, i)
                j = i - b
            ca = v[j]
            sd = v[j + 2]
            reach = sd * 6 + abs(v[j + 1] - ca)
            if ca - reach > t:
                break
            if ca + reach >= t:
                if lo < 0:
                    lo = i
                k = (abs(t - v[j + w]) << 13) // sd        # in 1/256 table steps
                if k < _TAIL << 8:
                    q = k & 255
                    k >>= 8
                    k = (g[k] * (256 - q) + g[k + 1] * q) >> 8
                    x += v[j + 3] * k >> 10
                    y += v[j + 4] * k >> 10
                    z += v[j + 5] * k >> 10
            i += 6
        m[_LO] = lo if lo >= 0 else i
        mn = s[_MN]
        if mn:
            seed = s[_SEED]
            ch = _CH_MAG + 10 * w
            r = _SD_X1000 // 2
            x += (mn * _noise(seed, ch, t) + r) // _SD_X1000
            y += (mn * _noise(seed, ch + 1, t) + r) // _SD_X1000
            z += (mn * _noise(seed, ch + 2, t) + r) // _SD_X1000
        out[0] = x
        out[1] = y
        out[2] = z
        return True


class Replay:
    # Stands in for ranger.SR04T (begin, ping, GAP_MS, MIN_TOF_US), ranger.AirTemp (start,
    # read_cc) and the battery ADC (read_uv); mags() gives the two magnetometers.
    MIN_TOF_US = 1457
    GAP_MS = 150

    def __init__(self, path, t0, board):
        # path: the replay file; t0: ticks_ms of scenario time 0; board: the board module
        # (its BATTERY_DIVIDER). Raises OSError (no file) or ValueError (not a replay file).
        import json
        f = open(path, "rb")  # kept open: the vehicles are read from it for the whole boot
        try:
            s = json.loads(f.readline())
            if not isinstance(s, list) or len(s) != _VEH + 1 or s[0] != _VERSION:
                raise ValueError("not a version 1 replay file")
            n = s[_VEH]
            off = f.tell()
            if not isinstance(n, int) or n < 0 or n % 6 or f.seek(0, 2) - off != 4 * n:
                raise ValueError("vehicles cut short")
        except BaseException:
            f.close()
            raise
        s[_VEH] = array("i", range(min(n, _WIN)))
        s[_SEED] &= _M30
        for i in (_DEPTH, _AIR, _BAT, _FLT):
            c = s[i]
            if len(c) % (4 if i == _FLT else 2) or len(c) < (0 if i == _FLT else 2):
                raise ValueError("a curve or the faults cut short")
            s[i] = array("i", c)
        g = array("H", bytes(2 * _TAIL + 2))
        for k in range(_TAIL + 1):
            g[k] = int(1024 * math.exp(-0.5 * (k / _STEPS) ** 2) + 0.5)
        s += [t0, board.BATTERY_DIVIDER, 0, True, g, f, off, n, 0, []]
        _page(s, 0)
        if n <= _WIN:
            # all of them in the window: no file held open (its LittleFS buffers cost ~0.9
            # KB of heap, more than a few vehicles)
            f.close()
            s[_VF] = None
        self.s = s
        self.name = s[_NAME]

    def mags(self):
        a = _Mag(self, 0)
        b = _Mag(self, 1)
        self.s[_MS] = [a.s, b.s]
        return a, b

    # -- the ranger --------------------------------------------------------------------

    def begin(self):
        pass

    def ping(self):
        # Time of flight in us of an SR04T echo now; 0 electrical fault, -1 no echo.
        s = self.s
        t = ticks_diff(ticks_ms(), s[_T0])
        f = _fault(s, _RANGER, t)
        if f == _NOECHO:
            return -1
        if f == _OBSTRUCTION:
            return _MIN_TOF
        if f == _ZERO:
            return 0
        if f == _STUCK:
            t = s[_SINCE] - 1
        um = s[_H0] - _at(s[_DEPTH], t)
        if s[_RN]:
            um += s[_RN] * _noise(s[_SEED], _CH_ECHO, t) / 73.9
        if um < _MIN_UM:
            return _MIN_TOF
        if um > _MAX_UM:
            return -1
        c = 331.3 * math.sqrt(1.0 + _at(s[_AIR], t) / 273150)
        return int(2 * um / c + 0.5)

    # -- the air temperature -----------------------------------------------------------

    def start(self):
        s = self.s
        s[_TEMP_OK] = _fault(s, _TEMP, ticks_diff(ticks_ms(), s[_T0])) != _ABSENT
        return s[_TEMP_OK]

    def read_cc(self):
        # Hundredths of C in the DS18B20's 1/16 C steps, None while absent.
        s = self.s
        t = ticks_diff(ticks_ms(), s[_T0])
        f = _fault(s, _TEMP, t)
        if not s[_TEMP_OK] or f == _ABSENT:
            return None
        if f == _STUCK:
            t = s[_SINCE] - 1
        return (round(_at(s[_AIR], t) * 16 / 1000) * 100 + 8) // 16

    # -- the battery ADC ---------------------------------------------------------------

    def read_uv(self):
        s = self.s
        return int(_at(s[_BAT], ticks_diff(ticks_ms(), s[_T0])) * 1000) // s[_DIV]
