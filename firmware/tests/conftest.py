"""CPython only: the few MicroPython `time` functions the firmware uses, for the shared tests.

On MicroPython they are built in; the emulated board's stand-in adds the virtual clock.
"""

import time

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


for _name, _fn in (("ticks_ms", _ticks_ms), ("ticks_us", _ticks_us), ("ticks_add", _ticks_add),
                   ("ticks_diff", _ticks_diff), ("sleep_ms", _sleep_ms)):
    if not hasattr(time, _name):
        setattr(time, _name, _fn)
