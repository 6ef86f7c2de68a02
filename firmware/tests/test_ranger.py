# Ranger drivers, air temperature and speed-of-sound compensation, against small fakes of
# machine, onewire and ds18x20 installed in firmware.ranger's module globals. Shared: runs
# under pytest and on MicroPython (plain asserts, no pytest features).

import gc

from firmware import ranger


class _Pin:
    OUT = 1
    IN = 0
    PULL_UP = 2

    def __init__(self, pin_id, mode=-1, pull=-1, value=None):
        self.id = pin_id
        self.mode = mode
        self.levels = []            # every level written, construction's value included
        if value is not None:
            self.levels.append(value)

    def value(self, v=None):
        if v is None:
            return 0
        self.levels.append(v)
        return None


class _Uart:
    # Non-blocking like machine.UART(timeout=0): readinto gives what has arrived or None.
    def __init__(self, uart_id, **kw):
        self.id = uart_id
        self.kw = kw
        self.data = bytearray()
        self.pos = 0

    def feed(self, data):
        self.data.extend(data)

    def readinto(self, buf):
        n = min(len(buf), len(self.data) - self.pos)
        if n <= 0:
            return None
        for i in range(n):
            buf[i] = self.data[self.pos + i]
        self.pos += n
        return n


class _Machine:
    Pin = _Pin

    def __init__(self, pulses=()):
        self.pulses = list(pulses)
        self.pulse_calls = []
        self.uart = None

    def time_pulse_us(self, pin, level, timeout_us):
        self.pulse_calls.append((pin.id, level, timeout_us))
        return self.pulses.pop(0)

    def UART(self, uart_id, **kw):
        self.uart = _Uart(uart_id, **kw)
        return self.uart


class _DS:
    # A DS18X20 on a bus: roms found by scan(); read_temp pops the next value (an
    # exception instance is raised instead).
    def __init__(self, roms, temps=()):
        self.roms = roms
        self.temps = list(temps)
        self.scans = 0
        self.converts = 0

    def scan(self):
        self.scans += 1
        return list(self.roms)

    def convert_temp(self):
        if not self.roms:
            raise OSError(19)       # stands in for onewire.OneWireError: no presence pulse
        self.converts += 1

    def read_temp(self, rom):
        assert rom == self.roms[0]
        v = self.temps.pop(0)
        if isinstance(v, Exception):
            raise v
        return v


class _OneWireMods:
    # Stands in for both the onewire and the ds18x20 modules.
    def __init__(self, ds):
        self.ds = ds

    def OneWire(self, pin):
        return pin

    def DS18X20(self, ow):
        assert isinstance(ow, _Pin)
        return self.ds


_ROM = b"\x28\x01\x02\x03\x04\x05\x06\x07"


def _install(fake_machine, ds=None, clock=None):
    # Put fakes into ranger's globals; returns what to hand back to _restore.
    saved = (ranger.machine, ranger.onewire, ranger.ds18x20, ranger.ticks_ms)
    ranger.machine = fake_machine
    mods = None if ds is None else _OneWireMods(ds)
    ranger.onewire = mods
    ranger.ds18x20 = mods
    if clock is not None:
        ranger.ticks_ms = clock
    return saved


def _restore(saved):
    ranger.machine, ranger.onewire, ranger.ds18x20, ranger.ticks_ms = saved


def _mb(*chunks):
    m = _Machine()
    saved = _install(m)
    try:
        mb = ranger.MB7389(2, 16)
    finally:
        _restore(saved)
    for c in chunks:
        m.uart.feed(c)
    return mb, m.uart


def test_sr04t_pulses_the_trigger_and_returns_the_echo_width():
    """ping() drives trigger low-high-low, times the echo high (40 ms timeout) and returns it."""
    m = _Machine([17482])
    saved = _install(m)
    try:
        s = ranger.SR04T(18, 34)
        assert s.ping() == 17482
    finally:
        _restore(saved)
    assert s._trig.id == 18 and s._trig.mode == _Pin.OUT
    assert s._rx.id == 34 and s._rx.mode == _Pin.IN
    assert s._trig.levels == [0, 0, 1, 0]
    assert m.pulse_calls == [(34, 1, 40000)]


def test_sr04t_maps_fault_and_no_echo():
    """-2 (echo never rose) -> 0 fault; -1 or a pulse >= 35000 us -> -1 no echo."""
    pulses = [-2, -1, 38000, 35000, 34999, 1457, 0]
    expect = [0, -1, -1, -1, 34999, 1457, 0]
    m = _Machine(pulses)
    saved = _install(m)
    try:
        s = ranger.SR04T(18, 34)
        got = [s.ping() for _ in expect]
    finally:
        _restore(saved)
    assert got == expect, got


def test_names_and_minimum_tofs():
    """MIN_TOF_US is the minimum range at 20 C: 250 mm (SR04T), the 300 mm reading (MB7389)."""
    assert ranger.SR04T.NAME == "sr04t" and ranger.MB7389.NAME == "mb7389"
    assert ranger.tof_to_range_mm(ranger.SR04T.MIN_TOF_US, 2000) == 250
    assert ranger.SR04T.MIN_TOF_US == 1457           # 2 * 250 / 343.2146 mm/ms = 1456.8
    mb, _ = _mb(b"R0300\r")
    assert mb.ping() == ranger.MB7389.MIN_TOF_US == 1747   # 600 / 0.3434 = 1747.2


def test_mb7389_opens_its_uart_at_9600_non_blocking():
    """The UART is opened on MB_UART with RX on MB_RX, 9600 baud, timeout 0."""
    _, uart = _mb()
    assert uart.id == 2
    assert uart.kw["baudrate"] == 9600 and uart.kw["rx"] == 16 and uart.kw["timeout"] == 0
    assert "tx" not in uart.kw


def test_mb7389_converts_mm_at_343_4_back_to_tof():
    """R#### mm become tof = 2 * mm / 0.3434 mm/us, rounded (hand-computed values)."""
    for mm, tof in ((1000, 5824), (1234, 7187), (2000, 11648), (3000, 17472),
                    (4999, 29115)):
        mb, _ = _mb(b"R%04d\r" % mm)
        assert mb.ping() == tof, mm


def test_mb7389_fault_and_no_echo_readings():
    """R0000 -> 0 (fault); R5000 and above -> -1 (no echo); R0300 -> the minimum tof."""
    for line, want in ((b"R0000\r", 0), (b"R5000\r", -1), (b"R9999\r", -1),
                       (b"R0300\r", 1747)):
        mb, _ = _mb(line)
        assert mb.ping() == want, line


def test_mb7389_returns_none_until_a_complete_reading_arrives():
    """No bytes, or only part of a line, gives None; the line completes on a later ping."""
    mb, uart = _mb()
    assert mb.ping() is None
    uart.feed(b"R30")
    assert mb.ping() is None
    uart.feed(b"00")
    assert mb.ping() is None
    uart.feed(b"\rR2")
    assert mb.ping() == 17472
    assert mb.ping() is None            # nothing new since: no stale repeat


def test_mb7389_keeps_the_newest_of_many_readings():
    """With a backlog (600 bytes, several UART reads), ping() returns the last reading."""
    backlog = b"".join(b"R%04d\r" % (1000 + i) for i in range(100))
    mb, uart = _mb(backlog)
    assert mb.ping() == (1099 * 20000 + 1717) // 3434
    assert uart.pos == len(backlog)


def test_mb7389_begin_discards_the_stale_backlog_and_half_lines():
    """begin() drops what waited in the buffer (stale after a sleep), half a line included."""
    mb, uart = _mb(b"R1000\rR1001\rR10")
    mb.begin()
    assert mb.ping() is None
    uart.feed(b"02\rR2000\r")            # the tail of the dropped line is not a reading
    assert mb.ping() == (2000 * 20000 + 1717) // 3434


def test_mb7389_skips_garbage_banner_and_malformed_lines():
    """The power-on banner, noise bytes, 3- and 5-digit numbers and bare CRs are ignored."""
    noise = (b"HRXL-MaxSonar-WRMT\rPN:MB7389\rCopyright 2011-2012\rMaxBotix Inc.\r"
             b"RoHS 1.8b 0124 ab\r\x00\xff\x52\x52R2000\rR123\rR12345\rR\r\rR12x4\r#")
    mb, uart = _mb(noise)
    assert mb.ping() == 11648           # R2000 was the last well-formed reading
    uart.feed(b"\x80R1000")             # partial: still nothing new
    assert mb.ping() is None
    uart.feed(b"7\r")                   # five digits: rejected
    assert mb.ping() is None
    uart.feed(b"R1000\r")
    assert mb.ping() == 5824


def test_mb7389_ping_allocates_nothing():
    """Draining and parsing reuses the preallocated buffer (checked where gc.mem_alloc exists)."""
    mb, _ = _mb(b"R2000\r" * 30)
    if not hasattr(gc, "mem_alloc"):
        assert mb.ping() == 11648
        return
    gc.collect()
    before = gc.mem_alloc()
    tof = mb.ping()
    after = gc.mem_alloc()
    assert tof == 11648
    assert after == before, after - before


def test_tof_to_range_at_20_and_35_c():
    """The same tof reads 76 mm longer at 35 C than at 20 C (field.md: ~+25 mm per +5 C)."""
    # 3000 mm at 20 C: c = 331.3 * sqrt(293.15 / 273.15) = 343.2146 m/s, tof = 17482 us.
    assert ranger.tof_to_range_mm(17482, 2000) == 3000
    assert ranger.tof_to_range_mm(17482, None) == 3000
    # At 35 C: c = 351.8859 m/s, 17482 * 351.8859 / 2000 = 3075.8 mm.
    assert ranger.tof_to_range_mm(17482, 3500) == 3076
    # At -10 C: c = 325.1790 -> 2842.4 mm; at 60 C: c = 365.8817 -> 3198.2 mm.
    assert ranger.tof_to_range_mm(17482, -1000) == 2842
    assert ranger.tof_to_range_mm(17482, 6000) == 3198


def test_tof_to_range_at_the_extremes():
    """6 m at -10 C (36903 us) and at 60 C (32797 us) come back as 6000 mm; 6 us is 1 mm."""
    assert ranger.tof_to_range_mm(36903, -1000) == 6000
    assert ranger.tof_to_range_mm(32797, 6000) == 6000
    assert ranger.tof_to_range_mm(6, 2000) == 1


def test_tof_to_range_within_1_mm_over_the_field_range():
    """Over 0-6000 mm and -10..60 C the result is within 1 mm of the exact range."""
    for t_c in range(-10, 61, 5):
        c_mm_per_us = 0.3313 * (1 + t_c / 273.15) ** 0.5
        for mm in range(100, 6001, 350):
            tof = int(2 * mm / c_mm_per_us + 0.5)
            exact = tof * c_mm_per_us / 2
            got = ranger.tof_to_range_mm(tof, t_c * 100)
            assert abs(got - exact) <= 0.5 + 1e-6, (t_c, mm, got, exact)
            assert abs(got - mm) <= 1, (t_c, mm, got)


def test_tof_to_range_passes_fault_codes_through():
    """0 (fault) and -1 (no echo) come back unchanged, whatever the temperature."""
    assert ranger.tof_to_range_mm(0, 2500) == 0
    assert ranger.tof_to_range_mm(-1, None) == -1


def test_air_temp_reads_hundredths_of_a_degree():
    """start() then read_cc() gives rounded hundredths, negative values included."""
    ds = _DS([_ROM], [21.0625, -10.0625, 0.5])
    saved = _install(_Machine(), ds)
    try:
        at = ranger.AirTemp(4)
        got = []
        for _ in range(3):
            assert at.start() is True
            got.append(at.read_cc())
    finally:
        _restore(saved)
    assert got == [2106, -1006, 50], got
    assert ds.scans == 1 and ds.converts == 3


def test_air_temp_needs_a_started_conversion():
    """read_cc() without start(), or twice after one start(), gives None."""
    ds = _DS([_ROM], [20.0])
    saved = _install(_Machine(), ds)
    try:
        at = ranger.AirTemp(4)
        assert at.read_cc() is None
        at.start()
        assert at.read_cc() == 2000
        assert at.read_cc() is None
    finally:
        _restore(saved)


def test_air_temp_rejects_power_on_value_errors_and_out_of_range():
    """85.00 C, a CRC exception, None and values beyond -55..125 C give None, never raise."""
    # A good read between them keeps the sensor (three failures in a row would drop it).
    ds = _DS([_ROM], [85.0, Exception("CRC error"), 21.0, None, 127.9375, 20.0,
                     -55.5, 22.5])
    saved = _install(_Machine(), ds)
    try:
        at = ranger.AirTemp(4)
        got = []
        for _ in range(8):
            assert at.start() is True
            got.append(at.read_cc())
    finally:
        _restore(saved)
    assert got == [None, None, 2100, None, None, 2000, None, 2250], got


def test_air_temp_rescans_for_an_absent_sensor_once_a_minute():
    """No sensor: start() is False and the bus is scanned again only after 60 s."""
    now = [1000]
    ds = _DS([])
    saved = _install(_Machine(), ds, lambda: now[0])
    try:
        at = ranger.AirTemp(4)
        assert at.start() is False and at.read_cc() is None
        assert ds.scans == 1
        now[0] += 59999
        assert at.start() is False
        assert ds.scans == 1
        ds.roms = [_ROM]                 # plugged in
        ds.temps = [19.5]
        assert at.start() is False       # not looked for yet
        now[0] += 1
        assert at.start() is True
        assert ds.scans == 2
        assert at.read_cc() == 1950
    finally:
        _restore(saved)


def test_air_temp_searches_again_after_three_failures():
    """Three bad reads in a row drop the sensor; the next start() scans the bus again."""
    now = [0]
    ds = _DS([_ROM], [OSError(19), OSError(19), OSError(19), 18.0])
    saved = _install(_Machine(), ds, lambda: now[0])
    try:
        at = ranger.AirTemp(4)
        for _ in range(3):
            assert at.start() is True
            assert at.read_cc() is None
        assert ds.scans == 1
        assert at.start() is False       # last scan was just now: wait for the minute
        now[0] += 60000
        assert at.start() is True
        assert ds.scans == 2
        assert at.read_cc() == 1800
    finally:
        _restore(saved)


def test_air_temp_without_a_1wire_driver_never_raises():
    """With no onewire/ds18x20 modules (unix port) AirTemp works and reads None."""
    saved = _install(_Machine(), None)
    try:
        at = ranger.AirTemp(4)
        assert at.start() is False
        assert at.read_cc() is None
    finally:
        _restore(saved)


class _Board:
    RANGER = "sr04t"
    SR04T_TRIG = 18
    SR04T_ECHO = 34
    MB_UART = 2
    MB_RX = 16


def test_make_ranger_follows_the_board():
    """RANGER picks SR04T on SR04T_TRIG/ECHO or MB7389 on MB_UART/MB_RX; others are refused."""
    m = _Machine()
    saved = _install(m)
    try:
        s = ranger.make_ranger(_Board)
        assert isinstance(s, ranger.SR04T)
        assert s._trig.id == 18 and s._rx.id == 34
        _Board.RANGER = "mb7389"
        assert isinstance(ranger.make_ranger(_Board), ranger.MB7389)
        assert m.uart.id == 2 and m.uart.kw["rx"] == 16
        _Board.RANGER = "hcsr04"
        try:
            ranger.make_ranger(_Board)
            raise AssertionError("accepted RANGER hcsr04")
        except ValueError as e:
            assert "hcsr04" in str(e)
    finally:
        _Board.RANGER = "sr04t"
        _restore(saved)
