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
    # polls without waiting (input arriving meanwhile waits < 1 wall ms).
    def _wall_ms(self, timeout):
        if timeout <= 0:
            return timeout
        us = timeout * 1000 * _tm._D // _tm._N
        if us < 1000:
            _tm._t.sleep_us(us)
        return us // 1000

    def poll(self, timeout=-1):
        return self._p.poll(self._wall_ms(timeout))

    def ipoll(self, timeout=-1, flags=0):
        return self._p.ipoll(self._wall_ms(timeout), flags)


def poll():
    return _Poll()
