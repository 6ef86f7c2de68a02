# Protocol tests. Every test_*.py here except the ones marked "CPython only" runs unchanged
# on CPython (pytest) and on the MicroPython unix port (upy_run.py, 64 KB heap), so they use
# plain asserts and nothing from pytest.
