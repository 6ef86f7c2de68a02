# The emulated board: the ESP32-WROOM-32 DevKitC pin map, run on the MicroPython unix port
# by hil_tests/emulator (its stand-ins for machine, onewire and ds18x20 read this module to
# know which pin or bus is which sensor). Same names as every board module.

NAME = "emulated"
CHIP = "emulated"

# Frame link to the gateway (a pty on the host).
LINK_UART = 1
LINK_TX = 23
LINK_RX = 19
LINK_BAUD = 115200

# Flood ranger: JSN-SR04T on trigger/echo by default; MB7389 on UART 2 when RANGER = "mb7389".
RANGER = "sr04t"
SR04T_TRIG = 18
SR04T_ECHO = 34
MB_UART = 2
MB_RX = 16

# DS18B20 shaded air temperature (1-Wire).
ONEWIRE_PIN = 4

# Two QMC5883L magnetometers along the lane (fixed address 0x0D, so one bus each).
MAG_A_I2C = 0
MAG_A_SCL = 22
MAG_A_SDA = 21
MAG_B_I2C = 1
MAG_B_SCL = 26
MAG_B_SDA = 25

# Battery through a 1:2 divider on an ADC1 pin.
BATTERY_ADC = 35
BATTERY_DIVIDER = 2

LED = None
