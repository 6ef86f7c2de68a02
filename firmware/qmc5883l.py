# QMC5883L three-axis magnetometer (I2C, fixed address 0x0D) for vehicle detection.
#
# Register map (QST QMC5883L datasheet):
#   0x00-0x05  X, Y, Z as little-endian int16
#   0x06       status: bit0 DRDY (new data; cleared by reading the data), bit1 OVL (a value
#              outside the range), bit2 DOR (a sample was skipped: we read too slowly)
#   0x09       control 1: mode bits 1:0 (01 continuous), ODR bits 3:2 (11 = 200 Hz),
#              RNG bits 5:4 (01 = 8 G), OSR bits 7:6 (00 = 512)
#   0x0A       control 2: bit7 soft reset
#   0x0B       set/reset period (0x01 recommended)
#   0x0D       chip id, reads 0xFF
# At 8 G the sensitivity is 3000 LSB/G, i.e. 3 counts per milligauss; a car passing over a
# road sensor changes the field by tens to hundreds of mG, far inside the range.
#
# The bus comes in from outside (QMC5883L(i2c)), so the shared tests drive a fake one;
# make_magnetometers() builds the two buses from the board module through `machine`.

from time import sleep_ms

import machine
from micropython import const

_ADDR = const(0x0D)
_REG_DATA = const(0x00)
_REG_STATUS = const(0x06)
_REG_CTRL1 = const(0x09)
_REG_CTRL2 = const(0x0A)
_REG_PERIOD = const(0x0B)
_REG_CHIP_ID = const(0x0D)

_CHIP_ID = const(0xFF)
_SOFT_RESET = const(0x80)
_PERIOD = const(0x01)
# Continuous (0x01) | 200 Hz (0x0C) | 8 G (0x10) | OSR 512 (0x00)
_CTRL1 = const(0x1D)
_RESET_MS = const(1)            # power-on/reset time is 350 us (datasheet)

_ST_DRDY = const(0x01)
_ENODEV = const(19)
_I2C_HZ = const(400000)


class QMC5883L:
    LSB_PER_MG = 3              # counts per milligauss at the 8 G range
    DRDY = 0x01                 # status bits, for callers reading .status
    OVL = 0x02
    DOR = 0x04

    def __init__(self, i2c, addr=_ADDR):
        self.i2c = i2c
        self.addr = addr
        self._buf = bytearray(6)    # X, Y, Z
        self._b = bytearray(1)      # one register
        self.status = 0             # the status byte of the last read_mg()

    def init(self):
        # Reset and start continuous 200 Hz sampling at 8 G, OSR 512. Raises OSError when
        # nothing answers (ENODEV from the bus) or the chip id is not a QMC5883L's.
        i2c = self.i2c
        addr = self.addr
        reg = self._b
        i2c.readfrom_mem_into(addr, _REG_CHIP_ID, reg)
        if reg[0] != _CHIP_ID:
            raise OSError(_ENODEV)
        reg[0] = _SOFT_RESET
        i2c.writeto_mem(addr, _REG_CTRL2, reg)
        sleep_ms(_RESET_MS)
        reg[0] = _PERIOD
        i2c.writeto_mem(addr, _REG_PERIOD, reg)
        reg[0] = _CTRL1
        i2c.writeto_mem(addr, _REG_CTRL1, reg)

    def read_mg(self, out):
        # Fill out[0..2] (a list or array of 3) with X, Y, Z in milligauss, rounded to the
        # nearest; False (out untouched) when no new sample is ready. Allocates nothing;
        # a bus error (OSError) propagates so the caller can count and re-init.
        i2c = self.i2c
        reg = self._b
        i2c.readfrom_mem_into(self.addr, _REG_STATUS, reg)
        st = reg[0]
        self.status = st
        if not st & _ST_DRDY:
            return False
        d = self._buf
        i2c.readfrom_mem_into(self.addr, _REG_DATA, d)
        for i in range(3):
            v = d[2 * i] | (d[2 * i + 1] << 8)
            if v & 0x8000:
                v -= 0x10000
            out[i] = (v + 1) // 3   # nearest mG: (v + 1) // 3 rounds n/3 for any sign
        return True


def make_magnetometers(board):
    # (a, b): the board's two magnetometers, each initialised on its own bus, or None for
    # one that is missing or fails to start. Never raises.
    mags = [None, None]  # type: list
    for i in range(2):
        try:
            if i:
                bus, scl, sda = board.MAG_B_I2C, board.MAG_B_SCL, board.MAG_B_SDA
            else:
                bus, scl, sda = board.MAG_A_I2C, board.MAG_A_SCL, board.MAG_A_SDA
            pin = machine.Pin
            mag = QMC5883L(machine.I2C(bus, scl=pin(scl), sda=pin(sda), freq=_I2C_HZ))
            mag.init()
            mags[i] = mag
        except Exception:
            pass
    return mags[0], mags[1]
