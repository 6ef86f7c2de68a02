# A levelled print logger: one line per event, "I  12.345 flood: depth 412 mm".
#
# The console (UART0 / USB) is for people; frames to the gateway go on another UART, so a
# log line can never corrupt a frame. No logging module on a 64 KB heap: print with %
# arguments formatted only when the level is enabled.

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython; the ESP32 has micropython.const
        return x

import time

DEBUG = const(10)
INFO = const(20)
WARN = const(30)
ERROR = const(40)

level = INFO
_t0 = time.ticks_ms()
_LETTER = {DEBUG: "D", INFO: "I", WARN: "W", ERROR: "E"}


def _emit(lvl, tag, fmt, args):
    if lvl < level:
        return
    ms = time.ticks_diff(time.ticks_ms(), _t0)
    try:
        text = fmt % args if args else fmt
    except Exception:       # a bad format string must never take the node down
        text = fmt + " " + repr(args)
    print("%s %4d.%03d %s: %s" % (_LETTER[lvl], ms // 1000, ms % 1000, tag, text))


def debug(tag, fmt, *args):
    _emit(DEBUG, tag, fmt, args)


def info(tag, fmt, *args):
    _emit(INFO, tag, fmt, args)


def warn(tag, fmt, *args):
    _emit(WARN, tag, fmt, args)


def error(tag, fmt, *args):
    _emit(ERROR, tag, fmt, args)


def exc(tag, what, e):
    # An exception with its type, on one line (tracebacks cost heap and flood the console).
    _emit(ERROR, tag, "%s: %s %s", (what, type(e).__name__, e))
