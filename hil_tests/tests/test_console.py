"""The board's console through pytest-embedded (2.9.3, pinned): the same tests run on an
emulated board's console pty (default) and on a real ESP32's USB serial (--port
/dev/ttyUSB0).

Here the `port` fixture of pytest-embedded is overridden: without --port it starts an
emulated board with a console pty and returns that pty's path, which pytest-embedded's
`serial` service opens with serial_for_url exactly as it opens /dev/ttyUSB0.

pyserial flushes the input on open, so what the board printed before is gone: a test that
wants the boot text resets the board once the port is open (`reset`: the emulated board's
reset, or the EN pulse on RTS that esptool gives an ESP32 dev board).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pytest_embedded.dut import Dut  # type: ignore[import-untyped]  # no py.typed

from hil_tests.emulator.run import node_config
from hil_tests.emulator.scenario import load_scenario
from hil_tests.emulator.supervisor import Board

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


@pytest.fixture
def embedded_services() -> str:
    """pytest-embedded's serial service (pyserial on the port)."""
    return "serial"


@pytest.fixture
def emulated(request: pytest.FixtureRequest, artifacts: Path) -> Iterator[Board | None]:
    """The emulated board behind the console port; None with --port (a real board)."""
    if request.config.getoption("port", None):
        yield None
        return
    rom, device = request.getfixturevalue("board_images")
    scen = load_scenario(SCENARIOS / "rain_traffic.toml")
    with Board(scen, node_config(scen, 5, "emulated", bytes(range(32))), console_pty=True,
               state_dir=artifacts / "node-5", time_scale=5.0, rom=rom,
               device_dir=device) as board:
        yield board


@pytest.fixture
def port(request: pytest.FixtureRequest, emulated: Board | None) -> str:
    """The console port: --port as given (a real board), else the emulated board's pty."""
    if emulated is None:
        return str(request.config.getoption("port"))
    assert emulated.console_port is not None
    return emulated.console_port


@pytest.fixture
def reset(dut: Dut, emulated: Board | None) -> Callable[[], None]:
    """Resets the board behind the open console port (its boot text follows)."""
    def pulse_en() -> None:
        ser = dut.serial.proc          # the pyserial port: RTS drives EN on a dev board
        ser.dtr = False
        ser.rts = True
        time.sleep(0.1)
        ser.rts = False
    return pulse_en if emulated is None else emulated.reset


def test_console_shows_the_node_booting_and_reading(
        dut: Dut, reset: Callable[[], None]) -> None:
    """After a boot the console names node, boot, firmware and board, then flood readings."""
    reset()
    found = dut.expect(rb"node (\d+) boot (\d+) fw (\S+) board (\S+);", timeout=60)
    assert int(found.group(1)) > 0 and int(found.group(2)) >= 1
    dut.expect(rb"flood: depth -?\d+ mm range \d+ mm", timeout=60)


def test_ctrl_c_gives_the_repl(dut: Dut, reset: Callable[[], None]) -> None:
    """Ctrl-C stops main.py into MicroPython's REPL, which evaluates what is typed."""
    reset()
    dut.expect(rb"node \d+ boot \d+", timeout=60)
    dut.write(b"\x03")
    dut.expect(rb">>> ", timeout=30)
    dut.write(b"print(6 * 7)\r\n")
    dut.expect(rb"42", timeout=30)
