# The node: boot, then five asyncio tasks wired here and nowhere else.
#
#   link      every 20 ms: UART in (acks, time, config), retransmissions       (uplink.py)
#   flood     a burst of pings, a reading, alarms at once; adaptive interval   (flood.py)
#   traffic   two magnetometers at mag_hz, one report per window               (traffic.py)
#   health    a health frame every health_s                                    (health.py)
#   watchdog  once a second: feeds the WDT only if every task above beat in time
#
# A failing sensor never stops the others: each task catches its own errors, flags them in
# the health status bits and carries on; only a task that stops making progress gets the
# node reset, by the watchdog. Safe mode (after a boot loop) runs without traffic.
# /main.py on the board is two lines: `from firmware import main` and `main.run()`.

import asyncio
import gc
import time

import machine
from micropython import const

from firmware import VERSION, config, health, log
from firmware.store import Store
from firmware.uplink import Clock, Uplink
from protocol import messages

_LINK_MS = const(20)
_PING_GAP_MS = const(150)       # FloodNet: pings 150 ms apart (field.md)
_WDT_MS = const(8000)
_FIRST_HEALTH_MS = const(10000)
# Without a fresh DS18B20 reading the last one is used for this long, then 20 C: 20 C at
# 35 C air is 78 mm off at 3 m (field.md); the last reading is off by what the air changed.
_TEMP_STALE_MS = const(1800000)

# health.status bits (SPEC 5.4.7)
_SAFE_MODE = const(0x01)
_CONFIG_ERROR = const(0x02)
_FLOOD_FAILED = const(0x04)
_TEMP_FAILED = const(0x08)
_MAG_A_FAILED = const(0x10)
_MAG_B_FAILED = const(0x20)
_CLOCK_UNSYNCED = const(0x40)
_REPLAY = const(0x80)           # the sensors are replayed from a scenario file (HIL rig)


class Node:
    def __init__(self):
        self.cfg = config.Config().load()
        log.level = self.cfg.get("log")
        self.boot = health.Boot()
        self.sup = health.Supervisor(_WDT_MS)
        self.clock = Clock()
        self.status = 0
        self._temp = None       # (the last good air temperature, its ticks_ms) or None

    # -- boot --------------------------------------------------------------------------

    def start(self):
        cfg = self.cfg
        if cfg.error:
            log.error("config", "%s: running with defaults for it; fix /config.json or "
                      "send a config frame", cfg.error)
            self.status |= _CONFIG_ERROR
        self.boot.start()
        if self.boot.safe:
            self.status |= _SAFE_MODE
        try:
            b = __import__(cfg.module_name(), None, None, ("NAME",))
        except ImportError:
            cfg._fail("board unknown")
            log.error("config", "no board module %s: using the ESP32 DevKitC pin map",
                      cfg.module_name())
            b = __import__("boards.esp32_devkitc", None, None, ("NAME",))
            self.status |= _CONFIG_ERROR
        self.board = b
        node = cfg.get("node")
        if node is None:
            from binascii import crc32
            node = 0x80000000 | (crc32(machine.unique_id()) & 0x7FFFFFFF)
        self.node = node
        # The scenario-replay driver when /config.json names a replay file (HIL rig). A
        # missing or bad file is a config error: the node runs on its real sensors.
        rp = None
        path = cfg.get("replay")
        if path:
            try:
                from firmware import replay
                rp = replay.Replay(path, self.clock._t0, b)
                log.warn("replay", "SENSORS REPLAYED from %s: scenario %s (status 0x80)", path,
                         rp.name)
                self.status |= _REPLAY
            except Exception as e:
                log.error("replay", "%s: %s %s; running on the real sensors. Copy a replay file "
                          "there (hil_tests/emulator/replay_file.py) or remove replay from "
                          "/config.json", path, type(e).__name__, e)
                cfg._fail("bad replay file")
                self.status |= _CONFIG_ERROR
        self.replay = rp
        self.store = Store()
        held = self.store.open()
        uart = machine.UART(b.LINK_UART, baudrate=b.LINK_BAUD, tx=b.LINK_TX, rx=b.LINK_RX,
                            rxbuf=256, timeout=0)
        self.link = Uplink(uart, node, self.boot.boot, cfg.key_bytes(), self.store,
                           self.clock, self.on_config)
        log.info("node", "node %d boot %d fw %s board %s; %d frames held from earlier boots",
                 node, self.boot.boot, VERSION, b.NAME, held)
        self.hello()
        # the sensors
        from firmware import flood, ranger
        s = cfg.values
        self.flood = flood.Flood(s)
        if rp is None:
            try:
                self.ranger = ranger.make_ranger(b)
            except Exception as e:
                log.exc("flood", "ranger", e)
                self.ranger = None
            self.temp = ranger.AirTemp(b.ONEWIRE_PIN)
            adc = None
            try:
                adc = machine.ADC(machine.Pin(b.BATTERY_ADC))
                adc.atten(machine.ADC.ATTN_11DB)
            except Exception as e:
                log.exc("health", "battery adc", e)
            self.adc = adc
        else:
            # The replay stands in for ranger, DS18B20 and ADC (duck typed; the rig's replay
            # tests run main.py on it).
            self.ranger = rp
            self.temp = rp          # type: ignore[assignment]
            self.adc = rp           # type: ignore[assignment]
        self.traffic = None
        if s["traffic"] and not self.boot.safe:
            from firmware import traffic
            self.traffic = traffic.Traffic(s)

    def hello(self):
        c = self.cfg
        self.link.send(messages.Hello, (VERSION, c.get("board"), self.boot.cause,
                                        c.digest(), c.error), 1)

    def on_config(self, cfg):
        n = self.cfg.apply_wire(cfg)
        if self.cfg.error:
            log.error("config", "config frame refused in part: %s", self.cfg.error)
            self.status |= _CONFIG_ERROR
        else:
            self.status &= ~_CONFIG_ERROR
        try:
            self.cfg.save()
        except OSError as e:
            log.exc("config", "save", e)
        s = self.cfg.values
        self.flood.configure(s)
        if self.traffic is not None:
            self.traffic.configure(s)
        log.info("config", "%d keys applied", n)
        self.hello()

    # -- tasks -------------------------------------------------------------------------

    async def _link_loop(self):
        i = self.sup.register("link", 2000)
        while True:
            try:
                self.link.service()
            except Exception as e:
                log.exc("link", "service", e)
                await asyncio.sleep_ms(1000)
            self.sup.beat(i)
            await asyncio.sleep_ms(_LINK_MS)

    async def _sleep_beating(self, i, ms):
        # Long waits in 1 s steps so the task keeps showing progress.
        end = time.ticks_add(time.ticks_ms(), ms)
        while True:
            self.sup.beat(i)
            left = time.ticks_diff(end, time.ticks_ms())
            if left <= 0:
                return
            await asyncio.sleep_ms(min(left, 1000))

    async def _flood_loop(self):
        i = self.sup.register("flood", 5000)
        tofs = [None] * 15
        while True:
            try:
                n = self.cfg.get("burst")
                self.temp.start()
                r = self.ranger
                gap = r.GAP_MS if r is not None else _PING_GAP_MS
                if r is not None:
                    r.begin()
                    await asyncio.sleep_ms(gap)
                for k in range(n):
                    tofs[k] = r.ping() if r is not None else None
                    self.sup.beat(i)
                    await asyncio.sleep_ms(gap)
                temp = self.temp.read_cc()
                self._flag(_TEMP_FAILED, temp is None)
                now = time.ticks_ms()
                stale = False
                last = self._temp
                if temp is not None:
                    self._temp = (temp, now)
                elif last is not None and time.ticks_diff(now, last[1]) < _TEMP_STALE_MS:
                    temp = last[0]          # air temperature changes slowly: keep the last
                    stale = True
                f = self.flood
                d = f.reading(now, tofs, n, temp, r.MIN_TOF_US if r is not None else 0)
                if stale:
                    d = (d[0], d[1], d[2], d[3] | messages.FLAG_NOTEMP, d[4])
                self._flag(_FLOOD_FAILED, d[3] & messages.FLAG_INVALID)
                t = self.clock.t()
                for a in f.alarms:
                    self.link.send(messages.Alarm, (t, a[0], a[1], a[2], a[3], a[4]), 1)
                    log.warn("flood", "alarm %d level %d mm depth %d mm", a[0], a[1], a[2])
                f.alarms.clear()
                self.link.send(messages.Flood, (t, d[0], d[1], d[2], d[3], d[4]))
                log.info("flood", "depth %d mm range %d mm flags 0x%x q %d mode %d", d[0],
                         d[1], d[3], d[4], f.mode)
                wait = f.interval_s() * 1000 - n * gap
            except Exception as e:
                log.exc("flood", "reading", e)
                self._flag(_FLOOD_FAILED, True)
                wait = 5000
            await self._sleep_beating(i, max(wait, 100))

    async def _traffic_loop(self):
        tr = self.traffic
        if tr is None:
            return
        i = self.sup.register("traffic", 3000)
        if self.replay is not None:
            ma, mb = self.replay.mags()
        else:
            from firmware import qmc5883l
            ma, mb = qmc5883l.make_magnetometers(self.board)
        a = [0, 0, 0]
        b = [0, 0, 0]
        start = time.ticks_ms()
        period = 1000 // self.cfg.get("mag_hz")
        beat = 0
        due = start          # the sample slots are kept on a fixed grid: a sleep that
        while True:          # overshoots does not slow the rate (50 Hz stays 50 Hz)
            now = time.ticks_ms()
            ga = self._mag(ma, a, _MAG_A_FAILED)
            gb = self._mag(mb, b, _MAG_B_FAILED)
            tr.sample(now, a if ga else None, b if gb else None)
            window = self.cfg.get("traffic_window_s")
            if time.ticks_diff(now, start) >= window * 1000:
                c = tr.report(now)
                # The window's start in node time, read now: right even if the clock was
                # set during the window (the first window after a boot).
                t_start = max(0, self.clock.t() - time.ticks_diff(now, start) // 1000)
                self.link.send(messages.Traffic, (t_start, window, c[0], c[1], c[2], c[3]))
                log.info("traffic", "%d vehicles, occupancy %d/1000, speed %s mm/s", c[0],
                         c[1], c[2])
                start = now
                period = 1000 // self.cfg.get("mag_hz")
            beat += 1
            if beat >= 10:
                beat = 0
                self.sup.beat(i)
            due = time.ticks_add(due, period)
            wait = time.ticks_diff(due, time.ticks_ms())
            if wait < -period:       # far behind (a long flash write): no burst to catch up
                due = time.ticks_ms()
            await asyncio.sleep_ms(max(wait, 0))

    def _mag(self, s, out, flags):
        # True if out holds a sample of magnetometer s (a new one, or the last one when the
        # sensor had nothing new: it runs at 200 Hz, faster than mag_hz, so that is rare).
        # flags: its status bit, set while it fails.
        if s is None:
            self.status |= flags
            return False
        try:
            s.read_mg(out)
            self.status &= ~flags
            return True
        except OSError:
            self.status |= flags
            return False

    async def _health_loop(self):
        i = self.sup.register("health", 5000)
        await self._sleep_beating(i, _FIRST_HEALTH_MS)
        while True:
            try:
                self.send_health()
            except Exception as e:
                log.exc("health", "report", e)
            await self._sleep_beating(i, self.cfg.get("health_s") * 1000)

    def send_health(self):
        gc.collect()
        free = gc.mem_free()
        sup = self.sup
        sup.heap_min = min(sup.heap_min, free)
        self._flag(_CLOCK_UNSYNCED, not self.clock.synced)
        lk = self.link
        self.link.send(messages.Health, (
            self.clock.t(), self.clock.uptime_s(), free, sup.heap_min, self.boot.resets,
            health.battery_mv(self.adc, self.board), self.store.pending(),
            self.store.dropped + lk.dropped, lk.counts, self.status))

    async def _watchdog_loop(self):
        self.sup.start()
        t0 = time.ticks_ms()
        while True:
            self.sup.check()
            if self.boot.check_stable(time.ticks_diff(time.ticks_ms(), t0)):
                log.info("boot", "stable in safe mode: resetting to run the full firmware")
                machine.reset()
            await asyncio.sleep_ms(1000)

    def _flag(self, flags, on):
        # Sets (on) or clears status bits.
        if on:
            self.status |= flags
        else:
            self.status &= ~flags

    async def main(self):
        # The loops as tasks, the watchdog's in this one. Not asyncio.gather: its module
        # would cost the heap a kilobyte. A task that dies stops beating and the watchdog
        # resets the node.
        task = asyncio.create_task
        task(self._link_loop())
        task(self._flood_loop())
        task(self._health_loop())
        if self.traffic is not None:
            task(self._traffic_loop())
        await self._watchdog_loop()


def run():
    # Entry point from /main.py. Anything that escapes is logged and the node resets (a
    # software reset counts towards the boot-loop limit that leads to safe mode).
    try:
        node = Node()
        node.start()
        asyncio.run(node.main())
    except KeyboardInterrupt:
        log.warn("node", "interrupted from the console")
        raise
    except Exception as e:
        log.exc("node", "fatal", e)
        time.sleep_ms(100)
        machine.reset()
