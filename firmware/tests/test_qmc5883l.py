# QMC5883L driver against a fake I2C bus holding the register map. Shared: runs under pytest
# and on MicroPython (plain asserts, no pytest features).

import gc

from firmware import qmc5883l
from firmware.qmc5883l import QMC5883L


class _I2C:
    # One QMC5883L at 0x0D (or none): 16 registers, chip id 0xFF, writes recorded.
    def __init__(self, present=True, chip_id=0xFF):
        self.present = present
        self.regs = bytearray(16)
        self.regs[0x0D] = chip_id
        self.writes = []

    def _ack(self, addr):
        if not self.present or addr != 0x0D:
            raise OSError(19)           # ENODEV, as machine.I2C reports a missing device

    def readfrom_mem_into(self, addr, reg, buf):
        self._ack(addr)
        for i in range(len(buf)):
            buf[i] = self.regs[reg + i]

    def writeto_mem(self, addr, reg, buf):
        self._ack(addr)
        self.writes.append((reg, bytes(buf)))
        for i in range(len(buf)):
            self.regs[reg + i] = buf[i]

    def sample(self, x, y, z, status=0x01):
        # Put raw counts in 0x00-0x05 (int16 little-endian) and the status in 0x06.
        for i, v in enumerate((x, y, z)):
            v &= 0xFFFF
            self.regs[2 * i] = v & 0xFF
            self.regs[2 * i + 1] = v >> 8
        self.regs[6] = status


class _Pin:
    def __init__(self, pin_id):
        self.id = pin_id


class _Machine:
    # machine.I2C(id, scl=Pin, sda=Pin, freq=...) hands out prepared buses by id.
    Pin = _Pin

    def __init__(self, buses):
        self.buses = buses
        self.opened = []

    def I2C(self, bus_id, scl=None, sda=None, freq=0):
        self.opened.append((bus_id, scl.id, sda.id, freq))
        if bus_id not in self.buses:
            raise ValueError("bad I2C id")
        return self.buses[bus_id]


class _Board:
    MAG_A_I2C = 0
    MAG_A_SCL = 22
    MAG_A_SDA = 21
    MAG_B_I2C = 1
    MAG_B_SCL = 26
    MAG_B_SDA = 25


def test_init_resets_then_configures_continuous_200hz_8g_osr512():
    """init() writes soft reset (0x0A=0x80), set/reset period (0x0B=0x01), control 0x09=0x1D."""
    bus = _I2C()
    QMC5883L(bus).init()
    assert bus.writes == [(0x0A, b"\x80"), (0x0B, b"\x01"), (0x09, b"\x1d")]
    ctrl = bus.regs[0x09]
    assert ctrl & 0x03 == 0x01          # continuous
    assert ctrl >> 2 & 0x03 == 0x03     # 200 Hz
    assert ctrl >> 4 & 0x03 == 0x01     # 8 G
    assert ctrl >> 6 == 0x00            # OSR 512


def test_init_raises_when_the_device_is_missing_or_foreign():
    """No device (ENODEV) or a chip id other than 0xFF makes init() raise OSError."""
    for bus in (_I2C(present=False), _I2C(chip_id=0x80)):
        try:
            QMC5883L(bus).init()
            raise AssertionError("init accepted a missing or foreign device")
        except OSError as e:
            assert e.args[0] == 19
        assert bus.writes == []


def test_read_mg_decodes_little_endian_int16_to_milligauss():
    """X=3000, Y=-3000, Z=-1 counts become 1000, -1000, 0 mG (3 counts per mG at 8 G)."""
    bus = _I2C()
    mag = QMC5883L(bus)
    mag.init()
    bus.sample(3000, -3000, -1)
    assert bus.regs[0:6] == bytearray(b"\xb8\x0b\x48\xf4\xff\xff")
    out = [0, 0, 0]
    assert mag.read_mg(out) is True
    assert out == [1000, -1000, 0]
    assert QMC5883L.LSB_PER_MG == 3


def test_read_mg_rounds_to_the_nearest_milligauss_at_the_limits():
    """Full scale +32767 and -32768 counts are 10922 and -10923 mG; 2 and -2 counts are +-1."""
    bus = _I2C()
    mag = QMC5883L(bus)
    out = [0, 0, 0]
    bus.sample(32767, -32768, 2)
    assert mag.read_mg(out) and out == [10922, -10923, 1]
    bus.sample(-2, 1, -4)
    assert mag.read_mg(out) and out == [-1, 0, -1]


def test_read_mg_without_drdy_returns_false_and_leaves_out_alone():
    """Status DRDY clear means no new sample: False, the output untouched."""
    bus = _I2C()
    mag = QMC5883L(bus)
    bus.sample(300, 300, 300, status=0x00)
    out = [7, 8, 9]
    assert mag.read_mg(out) is False
    assert out == [7, 8, 9]


def test_read_mg_keeps_the_status_flags():
    """OVL and DOR come back in .status alongside DRDY."""
    bus = _I2C()
    mag = QMC5883L(bus)
    bus.sample(1, 2, 3, status=QMC5883L.DRDY | QMC5883L.OVL | QMC5883L.DOR)
    out = [0, 0, 0]
    assert mag.read_mg(out)
    assert mag.status == 0x07


def test_read_mg_fills_an_array():
    """A preallocated array('h') works as the output as well as a list."""
    from array import array
    bus = _I2C()
    mag = QMC5883L(bus)
    out = array("h", [0, 0, 0])
    bus.sample(-300, 600, 900)
    assert mag.read_mg(out)
    assert list(out) == [-100, 200, 300]


def test_read_mg_raises_oserror_when_the_device_goes_missing():
    """A device that stops answering raises OSError(19) from read_mg()."""
    bus = _I2C()
    mag = QMC5883L(bus)
    mag.init()
    bus.present = False
    try:
        mag.read_mg([0, 0, 0])
        raise AssertionError("read_mg read from a missing device")
    except OSError as e:
        assert e.args[0] == 19


def test_read_mg_allocates_nothing():
    """Reading reuses the driver's buffers (checked where gc.mem_alloc exists)."""
    bus = _I2C()
    mag = QMC5883L(bus)
    bus.sample(-3000, 3000, 30)
    out = [0, 0, 0]
    mag.read_mg(out)
    if not hasattr(gc, "mem_alloc"):
        return
    gc.collect()
    before = gc.mem_alloc()
    for _ in range(20):
        mag.read_mg(out)
    after = gc.mem_alloc()
    assert out == [-1000, 1000, 10]
    assert after == before, after - before


def test_make_magnetometers_opens_both_buses_from_the_board():
    """Each magnetometer gets its own bus (id, SCL, SDA from the board) at 400 kHz, initialised."""
    a_bus, b_bus = _I2C(), _I2C()
    m = _Machine({0: a_bus, 1: b_bus})
    saved = qmc5883l.machine
    qmc5883l.machine = m
    try:
        a, b = qmc5883l.make_magnetometers(_Board)
    finally:
        qmc5883l.machine = saved
    assert m.opened == [(0, 22, 21, 400000), (1, 26, 25, 400000)]
    assert a is not None and b is not None
    assert a_bus.regs[0x09] == 0x1D and b_bus.regs[0x09] == 0x1D


def test_make_magnetometers_gives_none_for_a_failed_one():
    """A missing device, a bad bus id or a board without the names give None; nothing raises."""
    m = _Machine({0: _I2C(present=False), 1: _I2C()})
    saved = qmc5883l.machine
    qmc5883l.machine = m
    try:
        a, b = qmc5883l.make_magnetometers(_Board)
        assert a is None and b is not None
        m.buses = {0: _I2C()}
        a, b = qmc5883l.make_magnetometers(_Board)
        assert a is not None and b is None
        assert qmc5883l.make_magnetometers(object()) == (None, None)
    finally:
        qmc5883l.machine = saved
