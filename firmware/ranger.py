# Flood ranger drivers (JSN-SR04T, MaxBotix MB7389), the DS18B20 air temperature and the
# speed-of-sound compensation that joins them.
#
# Both rangers answer ping() with the round-trip time of flight in microseconds, so the flood
# logic compensates every reading the same way with tof_to_range_mm(tof_us, air_temp_cc):
#   tof > 0   a reading
#   0         electrical fault (FloodNet maintenance guide: "always 0 mm")
#   -1        no echo (weeds, dirt, beyond range; the MB7389 says 5000)
#   None      MB7389 only: no complete reading has arrived since the last ping
# MIN_TOF_US is the tof of the sensor's minimum range at 20 C: a reading at or near it means
# something sits in the dead zone (web, branch), not water.
#
# Hardware goes through the module globals machine, onewire and ds18x20 (and ticks_ms), so the
# shared tests can put small fakes there; the firmware never replaces them.

import math
from time import sleep_us, ticks_diff, ticks_ms

import machine
from micropython import const

try:
    import ds18x20
    import onewire
except ImportError:         # the bare unix port lacks both (the emulated board has them)
    onewire = None  # type: ignore[assignment]
    ds18x20 = None  # type: ignore[assignment]

# JSN-SR04T: a 10 us trigger; the echo stays high for the round trip, about 38 ms when
# nothing comes back. 35 ms is 6.0 m at 20 C, already beyond its 25-600 cm range.
_TRIG_US = const(10)
_ECHO_TIMEOUT_US = const(40000)
_NO_ECHO_US = const(35000)

# MB7389: free-running "R####\r" at 9600 8N1, about 6-7 per second, in mm computed with a
# fixed 343.4 m/s. tof_us = 2 * mm / 0.3434 mm/us = mm * 20000 / 3434.
_MB_BAUD = const(9600)
_MB_NO_ECHO_MM = const(5000)
_MB_CHUNK_B = const(32)
_MB_MAX_READS = const(128)      # 4 KB per ping at most; a backlog larger than that waits

# DS18B20
_CONVERSION_MS = const(750)     # from AirTemp.start() to read_cc()
_RESCAN_MS = const(60000)       # look for an absent sensor at most once a minute
_MAX_FAILS = const(3)           # consecutive bad reads before the sensor is searched afresh
_POWER_ON_CC = const(8500)      # scratchpad value before the first conversion (85.0 C)
_MIN_CC = const(-5500)          # DS18B20 measuring range -55..+125 C
_MAX_CC = const(12500)


def tof_to_range_mm(us, temp_cc=None):
    # Range in mm (rounded) for a round-trip time of flight of us, with the speed of sound at the
    # air temperature in hundredths of C (None: 20 C). c(T) = 331.3 * sqrt(1 + T / 273.15)
    # m/s, which is also mm per ms: range = tof_us * c / 2000. Single-precision floats (the
    # ESP32's) keep this within 0.01 mm up to 6 m. Fault and no-echo codes (<= 0) pass through.
    if us <= 0:
        return us
    t = 20.0 if temp_cc is None else temp_cc / 100
    c = 331.3 * math.sqrt(1.0 + t / 273.15)
    return int(us * c / 2000 + 0.5)


class SR04T:
    # JSN-SR04T (or AJ-SR04M) in trigger/echo mode. The echo is 5 V: divide it to 3.3 V.
    NAME = "sr04t"
    MIN_TOF_US = 1457       # 250 mm at 20 C: 2 * 250 / 343.21 mm per ms
    GAP_MS = 150            # between pings of a burst (FloodNet: 150 ms)

    def begin(self):
        # Before a burst: nothing to do, each ping triggers its own measurement.
        pass

    def __init__(self, tx, rx):
        # tx: the trigger pin number (out), rx: the echo pin number (in)
        pin = machine.Pin
        self._trig = pin(tx, pin.OUT, value=0)
        self._rx = pin(rx, pin.IN)

    def ping(self):
        # One measurement, blocking for up to 80 ms (40 ms for the echo to rise, 40 ms high).
        trig = self._trig
        trig.value(0)
        sleep_us(2)
        trig.value(1)
        sleep_us(_TRIG_US)
        trig.value(0)
        us = machine.time_pulse_us(self._rx, 1, _ECHO_TIMEOUT_US)
        if us == -2:            # the echo never rose: wiring or sensor fault
            return 0
        if us < 0 or us >= _NO_ECHO_US:     # -1: still high at the timeout
            return -1
        return us if us > 0 else 0


class MB7389:
    # MaxBotix MB7389 (HRXL-MaxSonar-WRMT) serial output on a UART RX pin. Non-blocking: the
    # sensor free-runs, ping() drains what has arrived and keeps the newest complete reading.
    # Only RX is wired; MicroPython may still route the UART's default TX pin (see the boards).
    NAME = "mb7389"
    MIN_TOF_US = 1747       # its minimum reading, 300 mm, at its 343.4 m/s
    GAP_MS = 170            # it reads 6-7 times a second: each ping waits for a fresh one

    def __init__(self, id, rx):
        # id: the UART, rx: its RX pin number
        self.uart = machine.UART(id, baudrate=_MB_BAUD, rx=rx, rxbuf=256, timeout=0)
        self._buf = bytearray(_MB_CHUNK_B)
        # [digits seen since an 'R' (-1 outside a reading), their value so far]: a line may
        # straddle two pings
        self._s = [-1, 0]

    def begin(self):
        # Before a burst: throw away what waited in the receive buffer. After a sleep longer
        # than the buffer holds (256 B = 42 readings = 6 s) the UART has dropped the newest
        # bytes, not the oldest: what is left is stale and would be the burst's first ping.
        while self.uart.readinto(self._buf):
            pass
        self._s[0] = -1

    def ping(self):
        # The tof of the newest complete "R####\r" received since the last call, or None.
        # Anything else (the power-on banner, line noise, a short or long number) is skipped.
        uart = self.uart
        buf = self._buf
        ndig, acc = self._s
        mm = -1
        for _ in range(_MB_MAX_READS):
            n = uart.readinto(buf)
            if not n:
                break
            for i in range(n):
                ch = buf[i]
                if ch == 0x52:                          # 'R' opens a reading
                    ndig = 0
                    acc = 0
                elif 0 <= ndig < 4 and 0x30 <= ch <= 0x39:
                    acc = acc * 10 + ch - 0x30
                    ndig += 1
                elif ch == 0x0D and ndig == 4:          # CR closes exactly four digits
                    mm = acc
                    ndig = -1
                else:
                    ndig = -1
            if n < _MB_CHUNK_B:
                break
        self._s[0] = ndig
        self._s[1] = acc
        if mm < 0:
            return None
        if mm == 0:
            return 0
        if mm >= _MB_NO_ECHO_MM:
            return -1
        return (mm * 20000 + 1717) // 3434


class AirTemp:
    # DS18B20 on a 1-Wire pin (powered, not parasitic; 4.7 kOhm pull-up), shaded air.
    # start() begins a conversion; read_cc(), _CONVERSION_MS later, gives hundredths of C or
    # None. Never raises: without a sensor the node measures uncompensated (20 C).
    def __init__(self, pin):
        # pin: the 1-Wire pin number
        self._rom = None
        self._scan_ms = None    # when the bus was last searched, None: never
        self._fails = 0
        self._pending = False
        ds = None
        try:
            ds = ds18x20.DS18X20(onewire.OneWire(machine.Pin(pin)))
        except Exception:       # no driver or no such pin
            pass
        self._ds = ds

    def start(self):
        # True when a conversion was started. An absent sensor is looked for again at most
        # every _RESCAN_MS; the first one found on the bus is used.
        self._pending = False
        ds = self._ds
        if ds is None:
            return False
        try:
            if self._rom is None:
                now = ticks_ms()
                if self._scan_ms is not None and ticks_diff(now, self._scan_ms) < _RESCAN_MS:
                    return False
                self._scan_ms = now
                roms = ds.scan()
                if not roms:
                    return False
                self._rom = roms[0]
                self._fails = 0
            ds.convert_temp()
            self._pending = True
            return True
        except Exception:       # onewire.OneWireError: no presence pulse
            self._fail()
            return False

    def read_cc(self):
        # The conversion start() began, in hundredths of C; None if none was started, on a
        # bus or CRC error, out of range, or 85.00 C: the power-on scratchpad value, which
        # also comes back after a brown-out reset of the sensor (shaded air never gets there).
        ds = self._ds
        if not self._pending or ds is None:
            return None
        self._pending = False
        try:
            t = ds.read_temp(self._rom)
            cc = None if t is None else round(t * 100)
        except Exception:       # "CRC error", OneWireError
            cc = None
        if cc is None or cc == _POWER_ON_CC or cc < _MIN_CC or cc > _MAX_CC:
            self._fail()
            return None
        self._fails = 0
        return cc

    def _fail(self):
        self._fails += 1
        if self._fails >= _MAX_FAILS:
            self._rom = None    # search the bus again (rate-limited by start)
            self._fails = 0


def make_ranger(board):
    # The driver the board module's RANGER names, on its pins.
    kind = board.RANGER
    if kind == "sr04t":
        return SR04T(board.SR04T_TRIG, board.SR04T_ECHO)
    if kind == "mb7389":
        return MB7389(board.MB_UART, board.MB_RX)
    raise ValueError("board RANGER %r: expected 'sr04t' or 'mb7389'" % (kind,))
