# Boot bookkeeping, the watchdog supervisor, and the numbers health frames carry (the
# status bits are main.py's, where the tasks that set them are wired).
#
# Boot: /boot.json holds the boot counter (the `boot` of every frame: it must never repeat,
# so it is written, atomically, before the first frame of a boot) and boots counted per
# reset cause since provisioning (health.resets, SPEC 5.4.5). RTC memory, which survives
# resets but not power loss, holds the boot-loop counter: boots that ended by watchdog or
# software reset before the node ran _STABLE_MS. _SAFE_AFTER of those in a row and the node
# boots into safe mode (flood sensing, link and health only) until it has run stably.
#
# Watchdog: machine.WDT cannot be stopped and is fed only by Supervisor.check(), and only
# while every registered task has reported progress (beat) within its own limit. A task
# that hangs or dies therefore gets the node reset by the hardware; a task that is merely
# slow gets the limit it declared.

import gc
import json
import os
import time

import machine
from micropython import const

from firmware import log

_RTC_MAGIC = const(b"RSb1")
_SAFE_AFTER = const(3)
_STABLE_MS = const(600000)      # 10 minutes without a reset: the boot loop is over
_CAUSES = const(8)
# Supervisor.tasks entries: [name, limit ms, last beat ms]
_NAME = const(0)
_LIMIT = const(1)
_LAST = const(2)


class Boot:
    def __init__(self, path="/boot.json"):
        self.path = path
        self.boot = 0
        # machine.reset_cause() as a SPEC 5.4.5 code (the ESP32 constants are 1..5 already)
        try:
            c = machine.reset_cause()
        except Exception:
            c = 0
        self.cause = c if 0 <= c < _CAUSES else 0
        self.resets = [0] * _CAUSES
        self.safe = False
        self._rtc = machine.RTC()
        self._stable = False

    def start(self):
        # Counts this boot, persists it, and decides on safe mode. Call once, first.
        try:
            with open(self.path) as f:
                d = json.load(f)
            self.boot = int(d["boot"])
            r = d["resets"]
            for i in range(min(len(r), _CAUSES)):
                self.resets[i] = int(r[i])
        except (OSError, ValueError, KeyError, TypeError):
            log.warn("boot", "no valid %s: boot counter starts again", self.path)
        self.boot += 1
        self.resets[self.cause] += 1
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"boot": self.boot, "resets": self.resets}, f)
        try:
            os.remove(self.path)
        except OSError:
            pass
        os.rename(tmp, self.path)
        # RTC memory: the magic, then the count of consecutive early resets (boot loop).
        mem = self._rtc.memory()
        loops = mem[4] if len(mem) >= 5 and mem[0:4] == _RTC_MAGIC else 0
        # Watchdog bites and software resets (crash handler) before _STABLE_MS count as a
        # loop; power-on, reset pin and deep-sleep wakes start afresh.
        early = self.cause in (machine.WDT_RESET, machine.SOFT_RESET)
        loops = min(loops + 1, 255) if early else 0
        self._rtc.memory(_RTC_MAGIC + bytes((loops,)))
        self.safe = loops >= _SAFE_AFTER
        log.info("boot", "boot %d, reset cause %d, early resets %d%s", self.boot, self.cause,
                 loops, ", SAFE MODE" if self.safe else "")

    def check_stable(self, ms):
        # ms: uptime. After _STABLE_MS the boot loop is over. Returns True once, when that
        # happens in safe mode (the caller then resets to try the full firmware again).
        if self._stable or ms < _STABLE_MS:
            return False
        self._stable = True
        self._rtc.memory(_RTC_MAGIC + b"\0")       # no early resets in a row
        log.info("boot", "stable")
        return self.safe


class Supervisor:
    # Feeds the watchdog while every task beats within its limit. timeout: the watchdog's,
    # in ms.
    def __init__(self, timeout=8000):
        self.tasks = []
        self.timeout = timeout
        self.wdt = None
        self.heap_min = 0x7FFFFFFF
        self.stalled = None

    def register(self, name, ms):
        # A task that must beat at least every ms. Returns its index for beat().
        self.tasks.append([name, ms, time.ticks_ms()])
        return len(self.tasks) - 1

    def beat(self, i):
        self.tasks[i][_LAST] = time.ticks_ms()

    def start(self):
        self.wdt = machine.WDT(timeout=self.timeout)

    def check(self):
        # Once a second: heap low-water mark of live data (after a collection, so garbage
        # that the next automatic collection would free does not count), then feed only if
        # no task is stalled.
        gc.collect()
        free = gc.mem_free()
        self.heap_min = min(self.heap_min, free)
        now = time.ticks_ms()
        for i in range(len(self.tasks)):
            t = self.tasks[i]
            late = time.ticks_diff(now, t[_LAST])
            if late > t[_LIMIT]:
                if self.stalled != i:
                    self.stalled = i
                    log.error("watchdog", "task %s stalled %d ms: letting the watchdog bite",
                              t[_NAME], late)
                return False
        self.stalled = None
        if self.wdt is not None:
            self.wdt.feed()
        return True


def battery_mv(adc, board):
    # Battery or supply voltage in mV from the ADC (µV at the pin, behind the board's
    # BATTERY_DIVIDER), None if not measured.
    if adc is None:
        return None
    try:
        return adc.read_uv() * board.BATTERY_DIVIDER // 1000
    except Exception:
        return None
