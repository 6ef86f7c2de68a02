# Host tests of the emulated board: scenario loader, world model, supervisor (CPython only).
