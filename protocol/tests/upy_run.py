# Runs test_* functions of the named modules on MicroPython (no pytest there).
#   micropython -X heapsize=64k -m protocol.tests.upy_run protocol.tests.test_cbor ...
# Prints PASS/FAIL per test, the lowest free heap seen between tests, and a closing line
# "N passed, M failed"; exits 1 if anything failed.

import gc
import sys


def main(names):
    passed = 0
    failed = 0
    gc.collect()
    low = gc.mem_free()
    for name in names:
        __import__(name)
        mod = sys.modules[name]
        for attr in sorted(dir(mod)):
            if not attr.startswith("test_"):
                continue
            gc.collect()
            try:
                getattr(mod, attr)()
                passed += 1
                print("PASS", name + "." + attr)
            except Exception as e:
                failed += 1
                print("FAIL", name + "." + attr)
                sys.print_exception(e)
            gc.collect()
            low = min(low, gc.mem_free())
    print("heap: lowest free between tests %d bytes" % low)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
