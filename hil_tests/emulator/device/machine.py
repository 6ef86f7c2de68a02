# Stand-in for the ESP32's `machine` on the emulated board: same names, arguments and errors
# as on an ESP32. The sensors answer from the supervisor's world over one AF_UNIX connection
# (ROADSIDE_WORLD), one ASCII line each way ("E 1234\n" -> "5830\n", see the emulator
# contract; the magnetometers fetch _MK samples per query, in binary); the board module
# named in ROADSIDE_BOARD (default "emulated", from the ROM) says which pin or bus is which
# sensor. Resets exit with a code the supervisor turns into a restart: 70 machine.reset(),
# 71 machine.deepsleep() (wake time in $ROADSIDE_RTC.wake).

import hashlib
import os
import select
import socket
import struct
import sys
import termios
import time

import vfs
from micropython import const

_ENODEV = const(19)
_EIO = const(5)
_RTC_MAX_B = const(2048)
_QMC_ADDR = const(0x0D)
_EXIT_RESET = const(70)
_EXIT_DEEPSLEEP = const(71)
_POLLIN = const(1)
_POLLOUT = const(4)
_POLLBAD = const(0x18)  # POLLERR | POLLHUP
_MB_PERIOD_MS = const(2000)  # MB7389: 13 readings per 2000 ms (6.5 per second)
_MB_PER = const(13)
# Magnetometer samples fetched per world query (and per sensor): one round trip to the
# supervisor per 48 sample slots (240 ms at 200 Hz) instead of one per slot. A round trip
# costs a wake-up of two processes, 0.03 to 1.5 ms on a loaded 2-core VM (measured): at 20x
# that was up to 30 virtual ms per sample, and the 50 Hz traffic loop fell to 25 Hz.
_MK = const(48)
_MREC = const(7)  # per slot: present (0/1), then x, y, z as int16 little-endian (8 G counts)

# Reset causes (same numbers as the ESP32 port and SPEC 5.4.5).
PWRON_RESET = const(1)
HARD_RESET = const(2)
WDT_RESET = const(3)
DEEPSLEEP_RESET = const(4)
SOFT_RESET = const(5)

_cause = int(os.getenv("ROADSIDE_RESET_CAUSE") or "1")
_rtc_path = os.getenv("ROADSIDE_RTC")
# The host filesystem stays reachable through this unmounted VFS object after emboot has
# mounted the flash at "/" (RTC memory file, deep-sleep wake file).
_host = vfs.VfsPosix()

# The world connection and its preallocated request/reply lines.
_Q = bytearray(48)
_R = bytearray(48)
_ONE = bytearray(1)
_V = [0, 0, 0]  # integers parsed from the last reply
_W = None
_p = os.getenv("ROADSIDE_WORLD")
if _p:
    _W = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    _W.connect(struct.pack("H", socket.AF_UNIX) + _p.encode() + b"\0")
del _p

_bd = None  # board module
_trig = 0  # SR04T trigger: 0 idle, 1 high, 2 pulsed (armed for one echo)
_files = {}  # UART id -> host pty file, opened once per boot
_MREG = (bytearray(16), bytearray(16))  # QMC5883L A and B registers
_MREG[0][13] = _MREG[1][13] = 0xFF  # chip id
_MT = [-1, -1]  # virtual ms of the latched sample,
_MRD = [0, 0]  # of the last data read,
_MP = [False, False]  # present at the latched sample
_MC = [-1, -1, -1, -1]  # fetched slots per sensor: first slot's virtual ms, slot period
_MB = bytearray(2 * (_MK * _MREC + 1))  # both sensors' fetched slots, each + newline
_MBV = (memoryview(_MB)[:_MK * _MREC + 1], memoryview(_MB)[_MK * _MREC + 1:])


def _board():
    global _bd  # noqa: PLW0603 - a module-level cache is the MicroPython idiom
    if _bd is None:
        name = "boards." + (os.getenv("ROADSIDE_BOARD") or "emulated").replace("-", "_")
        __import__(name)
        _bd = sys.modules[name]
    return _bd


def _dec(i, x):
    # writes " <x>" (x >= 0, decimal) into the request line at i; returns the end index
    _Q[i] = 32
    i += 1
    j = i
    while True:
        _Q[j] = 48 + x % 10
        x //= 10
        j += 1
        if not x:
            break
    k = j - 1
    while i < k:
        _Q[i], _Q[k] = _Q[k], _Q[i]
        i += 1
        k -= 1
    return j


def _query(pre, v, arg, arg2=-1):
    # Writes one world query line: `pre`, the virtual ms `v` (now if < 0), then arg and arg2
    # where >= 0.
    i = len(pre)
    for k in range(i):
        _Q[k] = pre[k]
    i = _dec(i, v if v >= 0 else time._vus() // 1000)
    if arg >= 0:
        i = _dec(i, arg)
    if arg2 >= 0:
        i = _dec(i, arg2)
    _Q[i] = 10
    _W.write(_Q, 0, i + 1)


def _ask(pre, arg=-1, v=-1):
    # One world query, allocation-free: `pre` (b"E", b"G a"...), the virtual ms `v` (now by
    # default) and `arg` if >= 0; returns the reply's length in _R (0 without a world).
    # The query's wall time is left out of the virtual clock (time.lag): the supervisor's
    # latency is the emulator's, not the board's. A sensor that hangs answers "h<ms>" first:
    # the board then blocks for those virtual ms, as a hung driver call would.
    if _W is None:
        return 0
    t0 = time._t.ticks_us()
    _query(pre, v, arg)
    n = 0
    while True:
        if not _W.readinto(_ONE):
            raise OSError(_EIO)  # the supervisor went away
        b = _ONE[0]
        if b != 10:
            if n < len(_R):
                _R[n] = b
                n += 1
            continue
        time.lag_since(t0)
        if n and _R[0] == 104 and _ints(n) == 1:  # b"h"
            time.sleep_ms(_V[0])
            t0 = time._t.ticks_us()
            n = 0
            continue
        return n


def _ints(n):
    # Parses up to three signed integers of the reply _R[:n] into _V; returns how many
    # ("none" -> 0).
    c, x, neg, dig = 0, 0, False, False
    for i in range(n + 1):
        b = _R[i] if i < n else 32
        if 48 <= b <= 57:
            x = x * 10 + b - 48
            dig = True
        elif b == 45:
            neg = True
        else:
            if dig:
                _V[c] = -x if neg else x
                c += 1
                if c == 3:
                    break
            x, neg, dig = 0, False, False
    return c


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_DOWN = 1
    PULL_UP = 2

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        self._mode = mode
        self._pull = pull
        self._v = 0
        if value is not None:
            self.value(value)

    def value(self, v=None):
        global _trig  # noqa: PLW0603
        if v is None:
            if self._mode == 3 or self._mode == 7:
                return self._v
            # nothing drives an input here: it floats low unless pulled up
            return 1 if self._pull == 2 else 0
        self._v = 1 if v else 0
        if self.id == _board().SR04T_TRIG:
            if self._v:
                _trig = 1
            elif _trig == 1:
                _trig = 2  # falling edge ends the trigger pulse: the SR04T pings

    __call__ = value

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


def time_pulse_us(pin, pulse_level, timeout_us=1000000):
    # The SR04T's echo after a trigger pulse; any other pin never pulses. Blocks for the
    # pulse's (virtual) duration like the real busy-wait.
    global _trig  # noqa: PLW0603
    w = -2
    if _trig == 2 and pulse_level == 1 and pin.id == _board().SR04T_ECHO:
        _trig = 0
        if _ints(_ask(b"E")):
            w = _V[0]
    if w < 0:
        w = -2  # timed out waiting for the pulse to start
    elif w >= timeout_us:
        w = -1  # timed out during the pulse
    time.sleep_us(w if w >= 0 else timeout_us)
    return w


def _mslot(s, t, per):
    # Offset in _MB of magnetometer s's sample at virtual ms t (a multiple of per), fetched
    # with the next _MK - 1 slots when not held yet; -1 without a world.
    if _W is None:
        return -1
    k = s + s
    j = (t - _MC[k]) // per
    if _MC[k + 1] != per or t < _MC[k] or j >= _MK:
        t0 = time._t.ticks_us()
        _query(b"g a" if s == 0 else b"g b", t, per, _MK)
        if _W.readinto(_MBV[s]) != len(_MBV[s]):
            raise OSError(_EIO)  # the supervisor went away
        time.lag_since(t0)
        _MC[k] = t
        _MC[k + 1] = per
        j = 0
    return s * len(_MBV[0]) + j * _MREC


def _qmc(s, addr, reg, buf, wr):
    # One transaction at `addr` on the bus of QMC5883L `s` (0 = A, 1 = B, -1: none there).
    # Continuous mode samples every ODR period (the world's 8 G counts at the sample time;
    # times 4 in the 2 G range, saturating with OVL).
    if s < 0 or addr != _QMC_ADDR:
        raise OSError(_ENODEV)
    r = _MREG[s]
    cont = r[9] & 3 == 1
    per = (100, 20, 10, 5)[(r[9] >> 2) & 3] if cont else 10
    t = time._vus() // 1000 // per * per
    if t != _MT[s]:
        _MT[s] = t
        j = _mslot(s, t, per)
        _MP[s] = j >= 0 and _MB[j] == 1
        if _MP[s] and cont:
            m = 4 if r[9] & 0x30 == 0 else 1
            ovl = 0
            for i in range(3):
                v = _MB[j + 1 + 2 * i] | (_MB[j + 2 + 2 * i] << 8)
                if v & 0x8000:
                    v -= 0x10000
                x = max(-32768, min(32767, v * m))
                if x != v * m:
                    ovl = 2
                r[2 * i] = x & 255
                r[2 * i + 1] = (x >> 8) & 255
            r[6] = (r[6] & 1) | ovl
    if not _MP[s]:
        raise OSError(_ENODEV)
    if cont and t > _MRD[s]:
        # DRDY: a sample newer than the last data read; DOR: a whole sample went unread
        r[6] = (r[6] & 2) | 1 | (4 if t - _MRD[s] > per else 0)
    if wr:
        for i in range(len(buf)):
            a = (reg + i) & 15
            if a == 10 and buf[i] & 0x80:
                r[6] = r[9] = r[10] = 0  # soft reset
            elif a == 9 or a == 10 or a == 11:
                r[a] = buf[i]
        _MT[s] = -1  # the next transaction samples in the new mode
        _MRD[s] = time._vus() // 1000
        return
    for i in range(len(buf)):
        a = (reg + i) & 15
        buf[i] = r[a]
        if a < 6:
            _MRD[s] = t
            r[6] &= 2


class I2C:
    def __init__(self, id, scl=None, sda=None, freq=400000, timeout=50000):
        b = _board()
        self._s = 0 if id == b.MAG_A_I2C else 1 if id == b.MAG_B_I2C else -1

    def scan(self):
        try:
            _qmc(self._s, _QMC_ADDR, 9, _ONE, False)
            return [_QMC_ADDR]
        except OSError:
            return []

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        _qmc(self._s, addr, memaddr, buf, False)

    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        buf = bytearray(nbytes)
        _qmc(self._s, addr, memaddr, buf, False)
        return bytes(buf)

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        _qmc(self._s, addr, memaddr, buf, True)


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3

    def __init__(self, pin, atten=0):
        self._id = pin.id if isinstance(pin, Pin) else pin
        self._a = atten

    def atten(self, a):
        self._a = a

    def read_uv(self):
        # the battery pin reads the world; the input saturates at the attenuation's top
        uv = 0
        if self._id == _board().BATTERY_ADC and _ints(_ask(b"B")):
            uv = _V[0]
        return max(0, min(uv, (950000, 1250000, 1750000, 3100000)[self._a]))


class UART:
    # Receive: a ring of `rxbuf` bytes filled, at most at the baud's pace, from the pty
    # master of ROADSIDE_UART<id>_FD, or from modelled MB7389 readings on the board's MB_UART
    # (when RANGER is "mb7389"); bytes that find the ring full are lost (counted in _lost).
    # Transmit: written to the pty at once; a full tx buffer blocks in virtual time.
    def __init__(self, id, baudrate=115200, bits=8, parity=None, stop=1, tx=-1, rx=-1,
                 txbuf=256, rxbuf=256, timeout=0, timeout_char=0, **kw):
        b = _board()
        self._rate = baudrate // 10  # bytes per virtual second
        self._buf = bytearray(rxbuf)
        self._h = 0  # ring: index of the oldest byte, bytes held, bytes lost
        self._n = 0
        self._lost = 0
        self._txn = txbuf
        self._tx = 0  # virtual µs when the tx buffer will be empty
        now = time._vus()
        self._t = now  # virtual µs of the last fill
        self._f = None
        self._mb = -1  # MB7389 readings emitted (-1: not an MB7389)
        if id == b.MB_UART and b.RANGER == "mb7389":
            self._mb = 0
            self._t0 = now // 1000
            return
        f = _files.get(id)
        if f is None:
            fd = os.getenv("ROADSIDE_UART%d_FD" % id)
            if fd:
                fd = int(fd)
                termios.setraw(fd)
                f = _files[id] = open(fd, "r+b")  # noqa: SIM115 - open for the whole boot
        if f is not None:
            self._f = f
            self._p = select._s.poll()
            self._p.register(f, _POLLIN | _POLLOUT)

    def _ev(self):
        # poll events of the pty now (ipoll allocates nothing)
        for _, e in self._p.ipoll(0):
            return e
        return 0

    def _put(self, b):
        if self._n < len(self._buf):
            self._buf[(self._h + self._n) % len(self._buf)] = b
            self._n += 1
        else:
            self._lost += 1

    def _fill(self):
        now = time._vus()
        if self._mb >= 0:
            k = (now // 1000 - self._t0) * _MB_PER // _MB_PERIOD_MS
            while self._mb < k:
                self._mb += 1
                if len(self._buf) - self._n < 6:
                    self._lost += 6 * (k - self._mb + 1)
                    self._mb = k
                    break
                v = 0
                if _ints(_ask(b"M", -1, self._t0 + self._mb * _MB_PERIOD_MS // _MB_PER)):
                    v = max(0, min(_V[0], 9999))
                self._put(82)  # "R####\r"
                d = 1000
                while d:
                    self._put(48 + v // d % 10)
                    d //= 10
                self._put(13)
        elif self._f is not None:
            k = (now - self._t) * self._rate // 1000000
            got = 0
            while got < k and self._ev() & (_POLLIN | _POLLBAD) == _POLLIN:
                self._f.readinto(_ONE)
                self._put(_ONE[0])
                got += 1
            if got < k:
                self._t = now  # line idle: no backlog builds up
            else:
                self._t += got * 1000000 // self._rate

    def any(self):
        self._fill()
        return self._n

    def readinto(self, buf, nbytes=-1):
        self._fill()
        m = min(len(buf) if nbytes < 0 else nbytes, len(buf), self._n)
        if not m:
            return None
        h = self._h
        size = len(self._buf)
        for i in range(m):
            buf[i] = self._buf[(h + i) % size]
        self._h = (h + m) % size
        self._n -= m
        return m

    def read(self, nbytes=-1):
        self._fill()
        if nbytes < 0 or nbytes > self._n:
            nbytes = self._n
        if not nbytes:
            return None
        buf = bytearray(nbytes)
        self.readinto(buf)
        return bytes(buf)

    def write(self, buf):
        n = len(buf)
        now = time._vus()
        q = (self._tx - now) * self._rate // 1000000 if self._tx > now else 0
        if q + n > self._txn:
            time.sleep_us((q + n - self._txn) * 1000000 // self._rate)
            now = time._vus()
        self._tx = max(self._tx, now) + n * 1000000 // self._rate
        if self._f is not None and self._ev() & (_POLLOUT | _POLLBAD) == _POLLOUT:
            self._f.write(buf)
        return n


class WDT:
    # creation and every feed tell the supervisor the new deadline (virtual now + timeout)
    def __init__(self, id=0, timeout=5000):
        self._ms = timeout
        self.feed()

    def feed(self):
        _ask(b"W", self._ms)


class RTC:
    # RTC memory lives in the file ROADSIDE_RTC (deleted by the supervisor on power loss)
    def memory(self, data=None):
        if data is None:
            try:
                with _host.open(_rtc_path, "rb") as f:
                    return f.read()
            except OSError:
                return b""
        if len(data) > _RTC_MAX_B:
            raise ValueError("buffer too long")
        with _host.open(_rtc_path, "wb") as f:
            f.write(data)


def reset_cause():
    return _cause


def reset():
    raise SystemExit(_EXIT_RESET)


def deepsleep(ms=0):
    # no timeout: sleep "forever" (no wake source but the supervisor)
    wake = time._vus() // 1000 + (ms if ms > 0 else 1 << 40)
    with _host.open(_rtc_path + ".wake", "w") as f:
        f.write("%d\n" % wake)
    raise SystemExit(_EXIT_DEEPSLEEP)


def unique_id():
    # 6 bytes like the ESP32's MAC, stable for one board: derived from its flash file
    return hashlib.sha256(os.getenv("ROADSIDE_FLASH") or "").digest()[:6]
