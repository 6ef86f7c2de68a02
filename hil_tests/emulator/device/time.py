# Stand-in for the ESP32's `time` on the emulated board: every tick, sleep and date follows
# the virtual clock the supervisor defines in ROADSIDE_CLOCK ("<epoch_ns> <scale>") and the
# lag below (the formula at the end of this comment).
# The wall clock is read once at import (time_ns allocates a big int on every call); after
# that the interpreter's monotonic ticks_us carry it forward, so a tick costs no heap.
# Ticks start near 0 at each boot (as after an ESP32 reset) and wrap with the interpreter's
# own ticks period, which asyncio's C task queue relies on.
#
# Starved wall time does not count: an ESP32 never waits for a CPU, but the board's process
# does (other processes on the cores, a VM's steal), and a late wake at 20x turns 5 wall ms
# into 100 virtual ms of samples the firmware never took. So a sleep or poll that overruns
# its wall time by more than _LATE_US adds the overrun to _LAG, the wall µs the virtual clock
# leaves out, and machine.py adds the time of each query to the supervisor (an emulator
# artefact, not board time). Virtual time then advances with what the firmware ran and what
# it asked to sleep:
#   virtual µs = ((time.time_ns() - epoch_ns) / 1000 - _LAG) * scale
# _LAG lives in the file ROADSIDE_LAG (8 bytes, little-endian µs), written whenever it grew
# by _PUB_US, so the supervisor reads the same clock; a boot starts from the file's value.

import os
import sys

# Import the interpreter's built-in time: with sys.path empty and this module out of
# sys.modules, `import time` can only find the built-in.
_path = sys.path
sys.path = ()
_me = sys.modules.pop("time", None)
import time as _t  # noqa: E402

if _me is not None:
    sys.modules["time"] = _me
sys.path = _path
del _path, _me

# Scale as the exact fraction _N / _D ("50.0" -> 500 / 10); exponent forms via float.
_c = (os.getenv("ROADSIDE_CLOCK") or "").split()
_s = _c[1] if len(_c) > 1 else "1"
if "e" in _s or "E" in _s:
    _N = int(float(_s) * 1000000)
    _D = 1000000
else:
    _c2 = _s.split(".")
    _f = _c2[1] if len(_c2) > 1 else ""
    _N = int(_c2[0] + _f)
    _D = 10 ** len(_f)
_PUB_US = 500  # publish _LAG when it grew by this much (supervisor error < 10 ms at 20x)
# A wake later than this is starvation; below it is the kernel's timer slack (50 µs) and
# wake-up latency of every sleep, which the firmware's schedule absorbs (at 20x 4 virtual
# ms). Counting that too would slow an idle board's clock by a quarter (measured).
_LATE_US = 200
_LB = bytearray(8)
_LF = None
_LAG = 0
_p = os.getenv("ROADSIDE_LAG")
if _p:
    try:
        _LF = open(_p, "r+b")  # noqa: SIM115 - written for the whole boot
        _LF.readinto(_LB)
    except OSError:
        _LF = open(_p, "wb")  # noqa: SIM115
    _LAG = int.from_bytes(_LB, "little")
_LW = _LAG  # the value in the file
# _V0: virtual µs since scenario start at _T0 (the interpreter's ticks_us at import).
_ns = _t.time_ns()
_T0 = _t.ticks_us()
_V0 = (_ns - int(_c[0]) - _LAG * 1000) * _N // (_D * 1000) if _c else 0
_LAG0 = _LAG  # _LAG at _T0, already in _V0
_MASK = _t.ticks_add(0, -1)
del _c, _s, _ns, _p

ticks_add = _t.ticks_add
ticks_diff = _t.ticks_diff
mktime = _t.mktime


def lag(us):
    # leaves `us` wall µs out of the virtual clock (see the top); allocation-free
    global _LAG, _LW  # noqa: PLW0603
    _LAG += us
    if _LF is not None and _LAG - _LW >= _PUB_US:
        _LW = x = _LAG
        for i in range(8):
            _LB[i] = x & 255
            x >>= 8
        _LF.seek(0)
        _LF.write(_LB)


def _run_us():
    # wall µs since _T0 that count
    return _t.ticks_diff(_t.ticks_us(), _T0) - _LAG + _LAG0


def _vus():
    # virtual µs since scenario start (since boot without ROADSIDE_CLOCK)
    return _V0 + _run_us() * _N // _D


def ticks_us():
    return _run_us() * _N // _D & _MASK


ticks_cpu = ticks_us


def ticks_ms():
    return _run_us() * _N // (_D * 1000) & _MASK


def lag_since(t0, w=-1):
    # A wait that began at interpreter ticks_us t0: with w (its wall µs) only an overrun of
    # more than _LATE_US is lag (starvation); without, all of it (a query's latency)
    o = _t.ticks_diff(_t.ticks_us(), t0)
    if w < 0:
        lag(o)
    elif o - w > _LATE_US:
        lag(o - w)


def wall_sleep_us(w):
    # sleeps w wall µs; a late wake is lag
    t0 = _t.ticks_us()
    _t.sleep_us(w)
    lag_since(t0, w)


def sleep_us(us):
    # blocks for `us` virtual µs
    if us > 0:
        wall_sleep_us(us * _D // _N)


def sleep_ms(ms):
    if ms > 0:
        wall_sleep_us(ms * 1000 * _D // _N)


def sleep(s):
    sleep_us(int(s * 1000000))


def time():
    # seconds of the board's RTC: virtual seconds since scenario start
    return _vus() // 1000000


def time_ns():
    return _vus() * 1000


def localtime(secs=None):
    # the ESP32 has no time zone: localtime is gmtime, both of the virtual RTC
    return _t.gmtime(time() if secs is None else secs)


gmtime = localtime
