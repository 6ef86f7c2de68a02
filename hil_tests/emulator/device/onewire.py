# Stand-in for the ESP32's `onewire` on the emulated board. Only the bus object the
# ds18x20 stand-in needs: which pin it is on. A bus without a device raises OneWireError,
# as the real driver does when no presence pulse answers a reset.


class OneWireError(Exception):
    pass


class OneWire:
    SEARCH_ROM = 0xF0
    MATCH_ROM = 0x55
    SKIP_ROM = 0xCC

    def __init__(self, pin):
        self.pin = pin
