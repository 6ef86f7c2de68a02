# Hardware-in-the-loop suite and the emulated board (see README.md).
