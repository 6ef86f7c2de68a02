"""The emulated board's console on a pty (console_pty=True), like an ESP32's USB serial.

Real pyserial and the real mpremote (command line and library) against the board's
interpreter: Ctrl-C into the REPL, raw REPL, files on the flash, soft reboots.
"""

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial
from mpremote.transport_serial import SerialTransport  # type: ignore[import-untyped]

from hil_tests.emulator.scenario import loads_scenario
from hil_tests.emulator.supervisor import Board, build_images

SCALE = 20.0
MPREMOTE = str(Path(sys.executable).with_name("mpremote"))

# A main.py that runs until interrupted, saying each second that it runs.
LOOP_MAIN = """\
import time
n = 0
while True:
    n += 1
    print('TICK', n)
    time.sleep_ms(1000)
"""


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """ROM image and device stand-ins, built once for these tests."""
    return build_images(tmp_path_factory.mktemp("images"))


@pytest.fixture
def board(images: tuple[Path, Path], tmp_path: Path) -> Iterator[Board]:
    """A board running LOOP_MAIN with its console on a pty; closed after the test."""
    rom, device = images
    scen = loads_scenario("duration_s = 36000\n[site]\nh0_mm = 3000\n", "quiet.toml")
    with Board(scen, {"node": 3}, state_dir=tmp_path / "state", time_scale=SCALE,
               main_py=LOOP_MAIN, rom=rom, device_dir=device, console_pty=True) as b:
        b.wait_for(r"^TICK 1$")
        yield b


def _read_until(port: serial.Serial, want: bytes, timeout_s: float = 30.0) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout_s
    while want not in got:
        if time.monotonic() > deadline:
            raise AssertionError(f"{want!r} not received; got {got[-300:]!r}")
        got += port.read(max(1, port.in_waiting))
    return got


def _mpremote(board: Board, *args: str) -> str:
    assert board.console_port is not None
    proc = subprocess.run([MPREMOTE, "connect", board.console_port, *args],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_default_board_has_no_console_port(images: tuple[Path, Path], tmp_path: Path) -> None:
    """Without console_pty the board has no console port and its console is still logged."""
    rom, device = images
    scen = loads_scenario("duration_s = 60\n[site]\nh0_mm = 3000\n", "quiet.toml")
    with Board(scen, {"node": 3}, state_dir=tmp_path, time_scale=SCALE, main_py=LOOP_MAIN,
               rom=rom, device_dir=device) as b:
        b.wait_for(r"^TICK 2$")
        assert b.console_port is None
    assert "TICK 2" in (tmp_path / "console.log").read_text()


def test_console_output_ctrl_c_and_repl(board: Board) -> None:
    """Output reaches the port and console.log; Ctrl-C interrupts main.py into a REPL that
    evaluates what is typed; Ctrl-D there reboots and runs main.py again."""
    assert board.console_port is not None
    with serial.Serial(board.console_port, 115200, timeout=0.5) as port:
        mark = board.mark()
        _read_until(port, b"TICK")
        port.write(b"\x03")
        _read_until(port, b">>> ")
        board.wait_for(r"KeyboardInterrupt", after=mark)
        port.write(b"print(6 * 7)\r")
        _read_until(port, b"42")
        port.write(b"\x04")
        _read_until(port, b"MPY: soft reboot")
        _read_until(port, b"TICK 1")
    boot = board.wait_boots(2)
    assert boot.cause == 1                # a soft reboot keeps the last reset cause
    assert board.boots[0].end == "soft reboot"
    assert "TICK" in board.console_path.read_text()


def test_mpremote_cli_exec_files_and_soft_reset(board: Board) -> None:
    """The real mpremote execs code, copies a file to flash, lists it, reads it back, and
    machine.soft_reset() reboots the board into the raw REPL without running main.py."""
    mark = board.mark()
    out = _mpremote(board, "exec", "print('sum', 20 + 22)")
    assert "sum 42" in out
    board.wait_for(r"soft reboot in the raw REPL", after=mark)   # mpremote's soft reset
    local = board.state_dir / "hello.txt"
    local.write_text("hello flash\n")
    out = _mpremote(board, "fs", "cp", str(local), ":hello.txt", "+", "fs", "ls", "+",
                    "fs", "cat", ":hello.txt")
    assert "hello.txt" in out and "hello flash" in out
    mark = board.mark()
    _mpremote(board, "exec", "import machine; machine.soft_reset()")
    board.wait_for(r"soft reboot in the raw REPL", after=mark)
    # 3 virtual seconds at the raw REPL: main.py would have ticked by now
    _mpremote(board, "resume", "exec", "import time; time.sleep_ms(3000)")
    assert not any(line.startswith("TICK") for line in board.lines[mark:])


def test_mpremote_library_survives_the_boards_reboot(board: Board) -> None:
    """mpremote as a library: raw REPL with soft reset, exec, a file on flash; then
    machine.reset() over the same port reboots the board and main.py runs again."""
    assert board.console_port is not None
    transport = SerialTransport(board.console_port, baudrate=115200)
    try:
        transport.enter_raw_repl(soft_reset=True)
        assert transport.exec("print(1 + 1)").strip() == b"2"
        transport.fs_writefile("/lib.txt", b"x" * 5000)
        assert transport.fs_readfile("/lib.txt") == b"x" * 5000
        mark = board.mark()
        transport.exec_raw_no_follow("import machine; machine.reset()")
    finally:
        transport.close()
    board.wait_for(r"reset cause 5 \(soft\)", after=mark)
    board.wait_for(r"^TICK 1$", after=mark)
