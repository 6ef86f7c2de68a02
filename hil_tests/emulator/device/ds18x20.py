# Stand-in for the ESP32's `ds18x20` on the emulated board: one DS18B20 on the board's
# ONEWIRE_PIN whose temperature comes from the world ("T <v>" -> "31.25" or "none").
# Like the real part: a conversion takes 750 ms and only then reaches the scratchpad; reading
# earlier returns the previous result (85.0 after power-on); 12-bit resolution (1/16 °C);
# an absent sensor answers no presence pulse (OneWireError on convert and read).

import time

import machine
from onewire import OneWireError

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_CONVERT_MS = const(750)
_ROM = b"\x28\x52\x0d\x51\x0e\x00\x00\x11"  # family 0x28 (DS18B20), serial, CRC-8
_S = [85.0, -1]  # scratchpad temperature, virtual ms when the running conversion started


def _temp(ow):
    # the world's air temperature now, or None when no sensor answers on this bus
    if ow.pin.id != machine._board().ONEWIRE_PIN:
        return None
    n = machine._ask(b"T")
    if not n or machine._R[0] == 110:  # "none"
        return None
    return float(machine._R[:n].decode())


class DS18X20:
    def __init__(self, onewire):
        self.ow = onewire

    def scan(self):
        return [] if _temp(self.ow) is None else [_ROM]

    def convert_temp(self):
        if _temp(self.ow) is None:
            raise OneWireError
        _S[1] = time._vus() // 1000

    def read_temp(self, rom):
        t = _temp(self.ow)
        if t is None:
            raise OneWireError
        if _S[1] >= 0 and time._vus() // 1000 - _S[1] >= _CONVERT_MS:
            _S[0] = round(t * 16) / 16
            _S[1] = -1
        return _S[0]
