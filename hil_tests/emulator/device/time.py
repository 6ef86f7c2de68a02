# Stand-in for the ESP32's `time` on the emulated board: every tick, sleep and date follows
# the virtual clock the supervisor defines in ROADSIDE_CLOCK ("<epoch_ns> <scale>"):
#   virtual ms since scenario start = (time.time_ns() - epoch_ns) * scale / 1e6
# The wall clock is read once at import (time_ns allocates a big int on every call); after
# that the interpreter's monotonic ticks_us carry it forward, so a tick costs no heap.
# Ticks start near 0 at each boot (as after an ESP32 reset) and wrap with the interpreter's
# own ticks period, which asyncio's C task queue relies on.

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
# _V0: virtual µs since scenario start at _T0 (the interpreter's ticks_us at import).
_ns = _t.time_ns()
_T0 = _t.ticks_us()
_V0 = (_ns - int(_c[0])) * _N // (_D * 1000) if _c else 0
_MASK = _t.ticks_add(0, -1)
del _c, _s, _ns

ticks_add = _t.ticks_add
ticks_diff = _t.ticks_diff
mktime = _t.mktime


def _vus():
    # virtual µs since scenario start (since boot without ROADSIDE_CLOCK)
    return _V0 + _t.ticks_diff(_t.ticks_us(), _T0) * _N // _D


def ticks_us():
    return _t.ticks_diff(_t.ticks_us(), _T0) * _N // _D & _MASK


ticks_cpu = ticks_us


def ticks_ms():
    return _t.ticks_diff(_t.ticks_us(), _T0) * _N // (_D * 1000) & _MASK


def sleep_us(us):
    # blocks for `us` virtual µs
    if us > 0:
        _t.sleep_us(us * _D // _N)


def sleep_ms(ms):
    if ms > 0:
        _t.sleep_us(ms * 1000 * _D // _N)


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
