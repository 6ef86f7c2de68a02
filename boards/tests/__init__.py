# Tests of the board pin maps and their host-side checker (CPython only).
