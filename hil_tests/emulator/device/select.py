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

    def poll(self, timeout=-1):
        return self._p.poll(timeout if timeout <= 0 else timeout * _tm._D // _tm._N)

    def ipoll(self, timeout=-1, flags=0):
        return self._p.ipoll(timeout if timeout <= 0 else timeout * _tm._D // _tm._N, flags)


def poll():
    return _Poll()
