# Roadside node firmware (MicroPython, ESP32). See firmware/README.md.
VERSION = "0.2.0"
