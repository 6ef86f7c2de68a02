# ESP32-S3-DevKitC-1 (ESP32-S3-WROOM-1/-1U, any flash/PSRAM option): the pin map of a node.
#
# Rules followed (checked on the host by boards/host_check.py):
# - GPIO 26-32 carry the SPI flash and quad PSRAM: never used. GPIO 33-37 carry octal PSRAM
#   on the N8R8/N16R8 modules: avoided too, so one map fits every DevKitC-1 variant.
# - Strapping pins 0, 3, 45, 46 are left free.
# - GPIO 19/20 are the native USB port (MicroPython's REPL), 43/44 UART0 on the USB bridge.
# - GPIO 38 (v1.1) and 48 (v1.0) drive the on-board WS2812 RGB LED: left alone.
# - The S3 has no input-only pins; ADC1 is GPIO 1-10 (ADC2 fails while the radio runs).

NAME = "esp32s3-devkitc1"
CHIP = "esp32s3"

# Frame link to the gateway on UART1, both pins given (UART1's default TX is GPIO10).
LINK_UART = 1
LINK_TX = 11
LINK_RX = 12
LINK_BAUD = 115200      # 11,520 B/s; field.md: losses reported only from 921600 up

# Flood ranger: this build carries the MaxBotix MB7389; the JSN-SR04T pins stay mapped.
RANGER = "mb7389"
SR04T_TRIG = 13         # output; the 10 us trigger pulse
SR04T_ECHO = 14         # the 5 V echo needs a divider to 3.3 V
MB_UART = 2             # UART2: MicroPython also routes its TX to the default GPIO17 (no
MB_RX = 16              # tx=-1 before 1.28), so 17 stays unconnected; RX on UART2's own 16

# DS18B20 shaded air temperature (1-Wire, external 4.7 kOhm pull-up to 3.3 V).
ONEWIRE_PIN = 18

# Two QMC5883L magnetometers along the lane (fixed address 0x0D, so one bus each).
MAG_A_I2C = 0
MAG_A_SCL = 9           # the pair Espressif's S3 examples use (SDA 8, SCL 9)
MAG_A_SDA = 8
MAG_B_I2C = 1
MAG_B_SCL = 42          # JTAG pins MTMS/MTDI are plain GPIOs: the S3 debugs over USB
MAG_B_SDA = 41

# Battery (single Li-ion or LiFePO4 cell, <= 4.2 V) through a 1:2 divider: <= 2.1 V at the
# pin, inside the 11 dB attenuation range.
BATTERY_ADC = 1         # ADC1_CH0
BATTERY_DIVIDER = 2

# The only LED on the board is the addressable RGB one, which a plain Pin cannot drive.
LED = None
