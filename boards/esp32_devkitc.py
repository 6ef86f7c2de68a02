# ESP32-DevKitC (V4) with an ESP32-WROOM-32 module: the pin map of a roadside node.
#
# Rules followed (checked on the host by boards/host_check.py):
# - GPIO 6-11 carry the module's SPI flash: never used.
# - Strapping pins 0, 2, 5, 12, 15 are left free, so nothing wired to them can change the
#   boot mode or the flash voltage (GPIO12 high at reset selects 1.8 V flash: no boot).
# - GPIO 34-39 are input-only (no output driver, no pull resistors): echo and ADC only.
# - GPIO 1 and 3 are UART0 on the USB bridge (REPL, flashing): left alone.
# - ADC2 is unusable while the radio runs, so the battery sits on an ADC1 pin (32-39).

NAME = "esp32-devkitc"
CHIP = "esp32"

# Frame link to the gateway on UART1 (any GPIO through the matrix). Not 16/17: those are
# UART2's default pins, and 9/10 (UART1's defaults) are flash pins, so both are given here.
LINK_UART = 1
LINK_TX = 23            # plain output, VSPI MOSI when SPI is unused (it is)
LINK_RX = 19            # plain input, VSPI MISO when SPI is unused
LINK_BAUD = 115200      # 11,520 B/s; field.md: losses reported only from 921600 up

# Flood ranger. Both sets of pins stay wired in the map so RANGER alone picks the sensor.
RANGER = "sr04t"
SR04T_TRIG = 18         # output; the 10 us trigger pulse (3.3 V is enough for the JSN-SR04T)
SR04T_ECHO = 34         # input-only is fine for echo; the 5 V echo needs a divider to 3.3 V
MB_UART = 2             # UART2: MicroPython also routes its TX to the default GPIO17 (no
MB_RX = 16              # tx=-1 before 1.28), so 17 stays unconnected; RX on UART2's own 16

# DS18B20 shaded air temperature (1-Wire, external 4.7 kOhm pull-up to 3.3 V).
ONEWIRE_PIN = 4         # bidirectional open-drain, not a strapping pin on the ESP32

# Two QMC5883L magnetometers along the lane (fixed address 0x0D, so one bus each).
MAG_A_I2C = 0
MAG_A_SCL = 22          # the usual ESP32 I2C pair 22/21
MAG_A_SDA = 21
MAG_B_I2C = 1
MAG_B_SCL = 26          # plain GPIOs (DAC2/DAC1 unused)
MAG_B_SDA = 25

# Battery (single Li-ion or LiFePO4 cell, <= 4.2 V) through a 1:2 divider: <= 2.1 V at the
# pin, inside the 11 dB attenuation range.
BATTERY_ADC = 35        # ADC1_CH7, input-only
BATTERY_DIVIDER = 2

# The DevKitC V4 has only a power LED; no user LED is fitted.
LED = None
