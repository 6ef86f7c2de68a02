# Stand-in for the ESP32's `select` on the emulated board: poll objects whose timeouts are
# virtual milliseconds. MicroPython's asyncio sleeps inside `poll.ipoll(timeout)`, so with this
# module (and the `time` stand-in) the whole event loop follows the virtual clock.

import sys
import time as _tm  # the virtual-clock stand-in (emboot imports it first)

# The interpreter's built-in select (see time.py for the trick).
_path = sys.path
sys.path = ()
_me = sys.modules.pop("select", None)
import select as _s  # noqa: E402

if _me is not None:
    sys.modules["select"] = _me
sys.path = _path
del _path, _me

POLLIN = _s.POLLIN
POLLOUT = _s.POLLOUT
POLLERR = _s.POLLERR
POLLHUP = _s.POLLHUP


class _Poll:
    # register / unregister / modify go straight to the real poll object
    def __init__(self):
        self._p = _s.poll()

    def __getattr__(self, name):
        return getattr(self._p, name)

    # A virtual timeout shorter than a wall millisecond (most of them at 20x) would be a
    # poll(0) spin until the virtual time comes: a whole core taken from the supervisor that
    # answers the board's sensor queries. Such a wait sleeps its wall µs once instead and then
    # polls without waiting (input arriving meanwhile waits < 1 wall ms). A wait that ends
    # after its wall time is lag (see time.py): the board was starved, not sleeping.
    def _wait(self, timeout, it, flags):
        if timeout <= 0:
            return self._p.ipoll(timeout, flags) if it else self._p.poll(timeout)
        us = timeout * 1000 * _tm._D // _tm._N
        if us < 1000:
            _tm.wall_sleep_us(us)
            return self._p.ipoll(0, flags) if it else self._p.poll(0)
        t0 = _tm._t.ticks_us()
        r = self._p.ipoll(us // 1000, flags) if it else self._p.poll(us // 1000)
        _tm.lag_since(t0, us // 1000 * 1000)
        return r

    def poll(self, timeout=-1):
        return self._wait(timeout, False, 0)

    def ipoll(self, timeout=-1, flags=0):
        return self._wait(timeout, True, flags)


def poll():
    return _Poll()
