# Boot sequence of the emulated board: `micropython -X heapsize=H -m emboot`, run from the
# directory of compiled stand-ins (see the emulator contract).
#  1. import the stand-ins, so the firmware's `import machine` etc. find them in sys.modules,
#     and make asynctask asyncio's `_asyncio` (tasks on the virtual clock);
#  2. read the ROM image (ROADSIDE_ROM: /protocol, /firmware, /boards as .mpy) into one
#     buffer, the "flash-mapped" ROM, and mount it at /rom;
#  3. mount the LittleFS flash file (ROADSIDE_FLASH) at "/" in place of the host's root,
#     formatting a blank flash and copying the provisioning files (ROADSIDE_PROVISION) on it;
#  4. sys.path as on an ESP32 with a ROMFS, cwd "/";
#  5. ROADSIDE_HEAP_PROBE=1: print "HEAP <bytes in use>" and exit 0; otherwise run /boot.py and
#     /main.py from the flash like the ESP32 does, and afterwards (or after a traceback) sit
#     at the "REPL" forever: only the watchdog or the supervisor gets the board out.
#     With the console on a tty (ROADSIDE_CONSOLE, the supervisor's console_pty, which also
#     passes -i): the interpreter's real REPL follows main.py (or its Ctrl-C), exit 0
#     (Ctrl-D, machine.soft_reset(), sys.exit()) is a soft reboot; "soft"/"raw": this boot
#     is one, printed as on an ESP32; "raw" (from the raw REPL) skips main.py.
# Module-level code on purpose: each function would stay on the heap for the whole run.

import time  # noqa: I001 - first: select and asyncio import the virtual clock
import select  # noqa: F401
import machine
import onewire  # noqa: F401
import ds18x20  # noqa: F401
import asynctask
import gc
import os
import sys
import vfs

from micropython import const

_BLOCK_B = const(4096)
_DIR = const(0x4000)

# asyncio (frozen, imported later by the firmware) takes its Task and TaskQueue from here.
sys.modules["_asyncio"] = asynctask


class _Flash:
    # LittleFS block device on the flash file; the unix port's file writes are unbuffered
    # (write(2) at once), so a SIGKILL leaves exactly what a power cut would
    def __init__(self, f, blocks):
        self.f = f
        self.blocks = blocks

    def readblocks(self, n, buf, off=0):
        self.f.seek(n * _BLOCK_B + off)
        self.f.readinto(buf)

    def writeblocks(self, n, buf, off=0):
        self.f.seek(n * _BLOCK_B + off)
        self.f.write(buf)

    def ioctl(self, op, arg):
        # 4: block count, 5: block size; init, sync and erase (LittleFS needs no erased
        # state) succeed
        return self.blocks if op == 4 else _BLOCK_B if op == 5 else 0


_p = os.getenv("ROADSIDE_ROM")
_rom = bytearray(os.stat(_p)[6])  # the largest allocation first, before the heap fragments
with open(_p, "rb") as _f:
    _f.readinto(_rom)
vfs.mount(vfs.VfsRom(_rom), "/rom")

_p = os.getenv("ROADSIDE_FLASH")
_flash = _Flash(open(_p, "r+b"), os.stat(_p)[6] // _BLOCK_B)  # noqa: SIM115 - mounted for good
try:
    _fs = vfs.VfsLfs2(_flash)
except OSError:
    vfs.VfsLfs2.mkfs(_flash)
    _fs = vfs.VfsLfs2(_flash)
    _p = os.getenv("ROADSIDE_PROVISION")
    _todo = [""] if _p else []
    _b = bytearray(512)
    while _todo:
        _d = _todo.pop()
        for _e in os.ilistdir(_p + _d):
            _n = _d + "/" + _e[0]
            if _e[1] == _DIR:
                _fs.mkdir(_n)
                _todo.append(_n)
                continue
            with open(_p + _n, "rb") as _f, _fs.open(_n, "wb") as _g:
                while True:
                    _k = _f.readinto(_b)
                    if not _k:
                        break
                    _g.write(_b, 0, _k)
    del _todo, _b
vfs.umount("/")
vfs.mount(_fs, "/")
os.chdir("/")
sys.path[:] = ["", ".frozen", "/rom", "/lib"]
del _p

_con = os.getenv("ROADSIDE_CONSOLE")
if _con:
    machine.soft_reset = lambda: sys.exit(0)
    if _con != "1":
        print("MPY: soft reboot\r")  # \r\n as the ESP32 prints it (mpremote waits for it)

gc.collect()
if os.getenv("ROADSIDE_HEAP_PROBE") == "1":
    print("HEAP %d" % gc.mem_alloc())
    sys.exit(0)

for _p in ("boot.py",) if _con == "raw" else ("boot.py", "main.py"):
    try:
        with open(_p) as _f:
            _src = _f.read()
    except OSError:
        continue
    try:
        exec(_src, {"__name__": "__main__"})
    except SystemExit:
        raise  # machine.reset() / deepsleep(): the supervisor restarts the board
    except BaseException as _e:
        sys.print_exception(_e)
    _src = None
    gc.collect()
while not _con:
    time.sleep(3600)
