"""The supervisor runs an emulated board like silicon: link pty, resets, watchdog, power, cleanup.

These tests boot the real device stand-ins (hil_tests/emulator/device, rom.py) with a small
main.py of their own (not the firmware) that obeys commands sent over the link UART.
"""

import math
import os
import re
import select
import signal
import subprocess
import sys
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil_tests.emulator import run
from hil_tests.emulator.scenario import Scenario, loads_scenario
from hil_tests.emulator.supervisor import HEAP_BUDGET_B, Board, BoardError, build_images
from hil_tests.emulator.world import echo_width_us

ROOT = Path(__file__).resolve().parents[3]
SCALE = 20.0

# The board's program: prints a BOOT line (reset cause, boots counted on flash, RTC memory),
# then obeys one command per line from the link UART.
TEST_MAIN = """\
import machine, time, struct
import boards.emulated as bd
u = machine.UART(bd.LINK_UART, baudrate=bd.LINK_BAUD, tx=bd.LINK_TX, rx=bd.LINK_RX,
                 rxbuf=256, timeout=0)
cause = machine.reset_cause()
rtc = machine.RTC()
mem = bytes(rtc.memory())
try:
    with open('/boots.txt') as f:
        n = int(f.read())
except OSError:
    n = 0
n += 1
with open('/boots.txt', 'w') as f:
    f.write(str(n))
rtc.memory(b'rtc-boot-%d' % n)
print('BOOT cause=%d flash_boots=%d rtc=%s' % (cause, n, mem.decode() or '-'))
u.write(b'READY %d\\n' % cause)

def sensors():
    trig = machine.Pin(bd.SR04T_TRIG, machine.Pin.OUT)
    echo = machine.Pin(bd.SR04T_ECHO, machine.Pin.IN)
    trig.off()
    time.sleep_us(2)
    trig.on()
    time.sleep_us(10)
    trig.off()
    e = machine.time_pulse_us(echo, 1, 40000)
    import onewire, ds18x20
    ds = ds18x20.DS18X20(onewire.OneWire(machine.Pin(bd.ONEWIRE_PIN)))
    roms = ds.scan()
    ds.convert_temp()
    time.sleep_ms(750)
    t = ds.read_temp(roms[0])
    m = []
    for bus, scl, sda in ((bd.MAG_A_I2C, bd.MAG_A_SCL, bd.MAG_A_SDA),
                          (bd.MAG_B_I2C, bd.MAG_B_SCL, bd.MAG_B_SDA)):
        i2c = machine.I2C(bus, scl=machine.Pin(scl), sda=machine.Pin(sda), freq=400000)
        i2c.writeto_mem(0x0D, 0x0B, b'\\x01')
        i2c.writeto_mem(0x0D, 0x09, b'\\x1d')    # continuous, 200 Hz, 8 G
        time.sleep_ms(20)
        m.extend(struct.unpack('<hhh', i2c.readfrom_mem(0x0D, 0x00, 6)))
    adc = machine.ADC(machine.Pin(bd.BATTERY_ADC))
    adc.atten(machine.ADC.ATTN_11DB)
    return 'SENS %d %s %d %d %d %d %d %d %d' % tuple([e, repr(t)] + m + [adc.read_uv()])

wdt = None
feed = True
buf = b''
while True:
    d = u.read()
    if d:
        buf += d
    while b'\\n' in buf:
        i = buf.index(b'\\n')
        line = buf[:i]
        buf = buf[i + 1:]
        cmd = line.split(b' ')
        if cmd[0] == b'echo':
            u.write(b'ECHO ' + line[5:] + b'\\n')
        elif cmd[0] == b'reset':
            machine.reset()
        elif cmd[0] == b'wdt':
            wdt = machine.WDT(timeout=int(cmd[1]))
            u.write(b'WDT\\n')
        elif cmd[0] == b'starve':
            feed = False
            print('starving the watchdog')
        elif cmd[0] == b'sleep':
            machine.deepsleep(int(cmd[1]))
        elif cmd[0] == b'sensors':
            u.write(sensors().encode() + b'\\n')
    if wdt is not None and feed:
        wdt.feed()
    time.sleep_ms(20)
"""

QUIET = """\
duration_s = 600
air_temp = [[0, 25.0]]
depth = [[0, 300]]
{top}
[site]
h0_mm = 3000
noise_mg = 0
range_noise_mm = 0
baseline_a_mg = [100, -50, 400]
baseline_b_mg = [110, -40, 390]
battery_mv = 3900
{tail}
"""


def _scenario(top: str = "", tail: str = "") -> Scenario:
    return loads_scenario(QUIET.format(top=top, tail=tail), "test.toml")


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """ROM image and device stand-ins, built once for the whole session."""
    try:
        return build_images(tmp_path_factory.mktemp("images"))
    except ImportError as exc:
        pytest.skip(f"device side missing ({exc}): hil_tests/emulator/rom.py and device/")


class Port:
    """The gateway's end of the link: the pty slave opened raw, like /dev/ttyUSB0."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)
        self.buf = b""

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def expect(self, pattern: bytes, timeout_s: float = 30.0) -> re.Match[bytes]:
        """Reads until pattern (regex) appears; what precedes and the match are consumed."""
        rx = re.compile(pattern, re.S)
        deadline = time.monotonic() + timeout_s
        while not (m := rx.search(self.buf)):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} not received; got {self.buf[-200:]!r}")
            if select.select([self.fd], [], [], min(left, 0.5))[0]:
                self.buf += os.read(self.fd, 4096)
        self.buf = self.buf[m.end():]
        return m

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def board(images: tuple[Path, Path], tmp_path: Path) -> Iterator[Board]:
    """A started board running TEST_MAIN on the quiet world; always closed after the test."""
    rom, device = images
    with Board(_scenario(), {"node": 7}, state_dir=tmp_path / "state", time_scale=SCALE,
               main_py=TEST_MAIN, rom=rom, device_dir=device) as b:
        yield b


# Not named `port`: pytest-embedded's autouse fixture asks for `port`, so a module fixture of
# that name would start a board for every test here (one outlived emulate's Ctrl-C test:
# it was this fixture's, not emulate's).
@pytest.fixture
def link(board: Board) -> Iterator[Port]:
    """The host end of the board's link, opened after boot 1 said READY."""
    p = Port(board.host_port)
    board.wait_for(r"^BOOT cause=1 ")
    yield p
    p.close()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_heap_probe_sets_the_budget(board: Board) -> None:
    """The heap probe measures O and the board runs with H = budget + O, rounded to 1 KiB."""
    assert board.heap_overhead_b is not None and board.heap_overhead_b > 0
    assert board.heap_b == math.ceil((HEAP_BUDGET_B + board.heap_overhead_b) / 1024) * 1024
    board.wait_for(r"^BOOT cause=1 flash_boots=1 rtc=-$")
    log = board.console_path.read_text()
    assert f"overhead O = {board.heap_overhead_b} B" in log
    assert re.search(r"^\[ +\d+\.\d{3}\] BOOT cause=1", log, re.M)   # virtual time prefix


def test_host_port_carries_bytes_both_ways(board: Board, link: Port) -> None:
    """Bytes written to host_port reach the firmware's UART and its replies come back raw."""
    link.write(b"echo hello board\n")
    assert link.expect(rb"ECHO (.*?)\n").group(1) == b"hello board"
    raw = bytes([0x03, 0x04, 0x11, 0x13, 0x0D, 0x7F, 0x00, 0xFF])  # ^C ^D XON XOFF CR DEL
    link.write(b"echo " + raw + b"\n")
    assert link.expect(rb"ECHO (.*?)\n").group(1) == raw


def test_sensors_read_the_world(board: Board, link: Port) -> None:
    """SR04T, DS18B20, both QMC5883L and the battery ADC read what the world says."""
    link.write(b"sensors\n")
    m = link.expect(rb"SENS (.*?)\n")
    echo, temp, ax, ay, az, bx, by, bz, uv = m.group(1).split()
    w = board.world
    assert int(echo) == w.echo_us(0) == round(echo_width_us(2700.0, 25.0))
    assert float(temp) == 25.0
    assert [int(v) for v in (ax, ay, az)] == [300, -150, 1200]
    assert [int(v) for v in (bx, by, bz)] == [330, -120, 1170]
    assert int(uv) == 1_950_000


def test_machine_reset_restarts_soft(board: Board, link: Port) -> None:
    """machine.reset() restarts with cause 5; flash and RTC memory survive it."""
    link.write(b"reset\n")
    boot = board.wait_boots(2)
    assert boot.cause == 5
    board.wait_for(r"^BOOT cause=5 flash_boots=2 rtc=rtc-boot-1$")
    assert board.boots[0].end.startswith("exit 70")


def test_watchdog_bite_restarts_with_cause_3(board: Board, link: Port) -> None:
    """A watchdog fed then starved is bitten: restart with cause 3, RTC memory kept."""
    link.write(b"wdt 2000\n")
    link.expect(rb"WDT\n")
    board.wait_until_ms(board.now_ms() + 3000)       # fed for 3 s: longer than its timeout
    assert len(board.boots) == 1
    link.write(b"starve\n")
    boot = board.wait_boots(2)
    assert boot.cause == 3
    assert board.boots[0].end == "watchdog"
    board.wait_for(r"^BOOT cause=3 flash_boots=2 rtc=rtc-boot-1$")


def test_power_cut_clears_rtc_keeps_flash(board: Board, link: Port) -> None:
    """A power cut restarts with cause 1 after the off time; RTC memory lost, flash kept."""
    board.powercut(off_s=2.0)
    assert board.pid is None and board.state == "off"
    boot = board.wait_boots(2)
    assert boot.cause == 1
    assert boot.start_ms >= board.boots[0].end_ms + 2000  # type: ignore[operator]
    board.wait_for(r"^BOOT cause=1 flash_boots=2 rtc=-$")


def test_hard_reset(board: Board, link: Port) -> None:
    """Board.reset() (EN) restarts at once with cause 2, RTC memory kept."""
    board.reset()
    assert board.wait_boots(2).cause == 2
    board.wait_for(r"^BOOT cause=2 flash_boots=2 rtc=rtc-boot-1$")


def test_deep_sleep_wakes_with_cause_4(board: Board, link: Port) -> None:
    """machine.deepsleep(ms) ends the boot; the board wakes with cause 4 at the wake time."""
    link.write(b"sleep 3000\n")
    boot = board.wait_boots(2)
    first = board.boots[0]
    assert boot.cause == 4 and first.wake_ms is not None
    assert boot.start_ms >= first.wake_ms
    board.wait_for(r"^BOOT cause=4 flash_boots=2 rtc=rtc-boot-1$")


def test_scenario_power_cut(images: tuple[Path, Path], tmp_path: Path) -> None:
    """A scripted power cut kills the board at its time and powers it on after off_s."""
    rom, device = images
    scen = _scenario(tail="[[power_cuts]]\nt_s = 4\noff_s = 3\n")
    with Board(scen, {"node": 7}, state_dir=tmp_path, time_scale=SCALE, main_py=TEST_MAIN,
               rom=rom, device_dir=device) as b:
        boot = b.wait_boots(2)
        assert boot.cause == 1 and boot.start_ms >= 7000
        assert b.boots[0].end == "power cut"
        assert b.boots_by_cause == {1: 2}
        b.wait_for(r"^BOOT cause=1 flash_boots=2 rtc=-$")


def test_flash_persists_across_boards(images: tuple[Path, Path], tmp_path: Path) -> None:
    """A state dir reused by a new Board keeps its flash: the boot count goes on."""
    rom, device = images
    for n in (1, 2):
        with Board(_scenario(), {"node": 7}, state_dir=tmp_path, time_scale=SCALE,
                   main_py=TEST_MAIN, rom=rom, device_dir=device) as b:
            b.wait_for(rf"^BOOT cause=1 flash_boots={n} ")
    assert (tmp_path / "flash.bin").stat().st_size == 2 * 1024 * 1024
    assert (tmp_path / "console.log").exists()


def test_close_leaves_no_process(images: tuple[Path, Path], tmp_path: Path) -> None:
    """Leaving the with block kills every process the board started, process groups too."""
    rom, device = images
    with Board(_scenario(), {"node": 7}, state_dir=tmp_path, time_scale=SCALE,
               main_py=TEST_MAIN, rom=rom, device_dir=device) as b:
        b.wait_for(r"^BOOT ")
        pid = b.pid
        assert pid is not None and not _gone(pid)
        pids = b.pids
    assert len(pids) == 2                                  # probe and boot 1
    assert all(_gone(p) for p in pids)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert b.state == "closed"


def test_crash_loop_declares_the_board_dead(tmp_path: Path) -> None:
    """An interpreter that keeps dying is restarted with power-on, then declared dead."""
    fake = tmp_path / "micropython"
    fake.write_text('#!/bin/sh\n[ "$ROADSIDE_HEAP_PROBE" = 1 ] && { echo "HEAP 1000"; exit 0; }\n'
                    'echo "crash $ROADSIDE_RESET_CAUSE"; exit 9\n')
    fake.chmod(0o755)
    rom = tmp_path / "rom.img"
    rom.write_bytes(b"")
    with Board(_scenario(), {"node": 7}, state_dir=tmp_path / "s", time_scale=SCALE,
               rom=rom, device_dir=tmp_path, micropython=fake) as b:
        with pytest.raises(BoardError, match="crashes in a row"):
            b.wait_boots(99)
        assert b.state == "dead"
        assert b.boots_by_cause == {1: 5}
        assert all(boot.exit_code == 9 for boot in b.boots)
        b.powercut(off_s=0.1)                              # a power cycle revives it
        b.wait_boots(6)


def test_probe_failure_is_reported(tmp_path: Path) -> None:
    """A board whose heap probe fails raises BoardError with the console's tail."""
    fake = tmp_path / "micropython"
    fake.write_text("#!/bin/sh\necho 'ImportError: no module named emboot'\nexit 1\n")
    fake.chmod(0o755)
    rom = tmp_path / "rom.img"
    rom.write_bytes(b"")
    board = Board(_scenario(), {"node": 7}, state_dir=tmp_path / "s", rom=rom,
                  device_dir=tmp_path, micropython=fake)
    with pytest.raises(BoardError, match=r"heap probe failed \(exit 1\)[\s\S]*emboot"):
        board.start()
    assert board.state == "closed"


def test_invalid_scenario_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`roadside emulate` with an invalid scenario exits 1 naming the file and the key."""
    bad = tmp_path / "bad.toml"
    bad.write_text("duration_s = 60\n[site]\nh0_mm = 3000\nspeed = 3\n")
    assert run.main(["--scenario", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: site.speed: unknown key" in err


def _board_processes(state: Path) -> list[int]:
    """Processes running with this state dir's RTC file in their environment."""
    needle = f"ROADSIDE_RTC={state / 'rtc.bin'}".encode() + b"\0"
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                env = (entry / "environ").read_bytes()
            except OSError:
                continue
            if needle in env:
                out.append(int(entry.name))
    return out


# Ctrl-C must work even when this test runs in a background job (which ignores SIGINT).
_EMULATE = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from hil_tests.emulator.run import main; sys.exit(main(sys.argv[1:]))")


def test_emulate_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    """`emulate` prints the serial path, and Ctrl-C stops it with exit 130 and no process left."""
    scen = tmp_path / "s.toml"
    scen.write_text(QUIET.format(top="", tail=""))
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-c", _EMULATE, "--scenario", str(scen), "--time-scale", "20",
         "--state-dir", str(state)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert re.fullmatch(r"serial: /dev/pts/\d+\n", first), first
        assert os.path.exists(first.split()[1])
        deadline = time.monotonic() + 30
        while not _board_processes(state):
            assert time.monotonic() < deadline and proc.poll() is None, "no board process"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "interrupted" in err
        assert _board_processes(state) == []
    finally:
        if proc.poll() is None:                    # failed: stop it as politely as it allows
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in _board_processes(state):
            os.kill(pid, signal.SIGKILL)
