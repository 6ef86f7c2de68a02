# A levelled print logger: one line per event, "I  12.345 flood: depth 412 mm".
#
# The console (UART0 / USB) is for people; frames to the gateway go on another UART, so a
# log line can never corrupt a frame. No logging module on a 64 KB heap: print with %
# arguments formatted only when the level is enabled.
#
# Levels are the numbers of config key `log`: 10 debug, 20 info, 30 warn, 40 error; `level`
# (set by main from the config) is the lowest one printed. The firmware has no debug lines
# today: each name costs heap (a qstr-pool entry, a function object), so only the levels in
# use have a function. A line's letter is "DIWE"[level // 10 - 1].

import time

from micropython import const

_INFO = const(20)
_WARN = const(30)
_ERROR = const(40)

level = _INFO
_t0 = time.ticks_ms()


def _emit(n, tag, text, args):
    # n: the line's level
    if n < level:
        return
    ms = time.ticks_diff(time.ticks_ms(), _t0)
    try:
        text = text % args if args else text
    except Exception:       # a bad format string must never take the node down
        text = text + " " + repr(args)
    print("%s %4d.%03d %s: %s" % ("DIWE"[n // 10 - 1], ms // 1000, ms % 1000, tag, text))


def info(tag, text, *args):
    _emit(_INFO, tag, text, args)


def warn(tag, text, *args):
    _emit(_WARN, tag, text, args)


def error(tag, text, *args):
    _emit(_ERROR, tag, text, args)


def exc(tag, text, e):
    # An exception with its type, on one line (tracebacks cost heap and flood the console).
    _emit(_ERROR, tag, "%s: %s %s", (text, type(e).__name__, e))
