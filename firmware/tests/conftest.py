"""CPython only: what MicroPython has built in that the firmware's shared tests need.

The few `time` functions the firmware uses, `micropython.const` (firmware modules import it
without a CPython fallback: each fallback function would cost heap on the board), and an
empty `machine` module so that drivers import; each test hands the drivers its own bus and
pin objects. On MicroPython these are built in; the emulated board's stand-ins add the
virtual clock and the modelled hardware.
"""

import sys
import time
import types

_PERIOD = 1 << 30       # MicroPython's ticks wrap at 2**30 on every port


def _ticks_ms() -> int:
    return time.monotonic_ns() // 1_000_000 % _PERIOD


def _ticks_us() -> int:
    return time.monotonic_ns() // 1_000 % _PERIOD


def _ticks_add(t: int, delta: int) -> int:
    return (t + delta) % _PERIOD


def _ticks_diff(a: int, b: int) -> int:
    return (a - b + _PERIOD // 2) % _PERIOD - _PERIOD // 2


def _sleep_ms(ms: int) -> None:
    time.sleep(ms / 1000)


def _sleep_us(us: int) -> None:
    time.sleep(us / 1_000_000)


for _name, _fn in (("ticks_ms", _ticks_ms), ("ticks_us", _ticks_us), ("ticks_add", _ticks_add),
                   ("ticks_diff", _ticks_diff), ("sleep_ms", _sleep_ms),
                   ("sleep_us", _sleep_us)):
    if not hasattr(time, _name):
        setattr(time, _name, _fn)

sys.modules.setdefault("machine", types.ModuleType("machine"))


def _const(x: object) -> object:
    return x


_upy = types.ModuleType("micropython")
_upy.const = _const  # type: ignore[attr-defined]
sys.modules.setdefault("micropython", _upy)
