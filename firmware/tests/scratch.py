# Scratch directories for the shared tests (CPython and MicroPython have no tempfile in
# common): $TMPDIR or /tmp, a fresh name each time, emptied by wipe().

import os


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def wipe(path):
    # Removes a directory tree made by the tests.
    if not _exists(path):
        return
    for name in os.listdir(path):
        p = path + "/" + name
        if os.stat(p)[0] & 0x4000:
            wipe(p)
        else:
            os.remove(p)
    os.rmdir(path)


def fresh(tag):
    base = os.getenv("TMPDIR") or "/tmp"
    i = 0
    while True:
        path = "%s/roadside-%s-%s-%d" % (base, tag, os.urandom(3).hex(), i)
        if not _exists(path):
            os.mkdir(path)
            return path
        i += 1
