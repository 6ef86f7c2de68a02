"""The board checker: shipped boards pass, and each rule fires with a message naming the fix."""

import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

import boards.esp32_devkitc
import boards.esp32s3_devkitc1
from boards import host_check
from boards.host_check import BOARDS, OUTPUTS, REQUIRED, check, check_all, load, main

REAL = ("esp32-devkitc", "esp32s3-devkitc1")


def _board(base: ModuleType = boards.esp32_devkitc, /, **changes: object) -> SimpleNamespace:
    """A copy of a shipped board's constants with some of them changed."""
    values = {name: getattr(base, name) for name in REQUIRED}
    values.update(changes)
    return SimpleNamespace(**values)


def _s3(**changes: object) -> SimpleNamespace:
    return _board(boards.esp32s3_devkitc1, **changes)


def _errors(board: object) -> list[str]:
    return check(board)[0]


def _warnings(board: object) -> list[str]:
    return check(board)[1]


def test_boards_lists_every_shipped_board() -> None:
    """BOARDS names each board module (with '-' for '_') and nothing else in the package."""
    assert set(BOARDS) == {"emulated", *REAL}


def test_load_maps_board_names_to_modules() -> None:
    """load('esp32-devkitc') is boards.esp32_devkitc, as the firmware's config spells it."""
    assert load("esp32-devkitc") is boards.esp32_devkitc
    assert load("esp32s3-devkitc1") is boards.esp32s3_devkitc1


def test_load_refuses_an_unknown_board() -> None:
    """An unknown name (or the checker itself) is refused with the list of known boards."""
    for name in ("esp32-wrover", "host-check", "tests"):
        with pytest.raises(ValueError, match="known boards: emulated, esp32-devkitc"):
            load(name)


@pytest.mark.parametrize("name", BOARDS)
def test_every_shipped_board_has_no_errors(name: str) -> None:
    """Each shipped board passes every rule, and NAME matches its module."""
    assert check_all([name])[name][0] == []


@pytest.mark.parametrize("name", REAL)
def test_real_boards_have_no_warnings(name: str) -> None:
    """The two DevKitC maps keep off strapping pins and UART0 entirely."""
    assert check(load(name))[1] == []


@pytest.mark.parametrize("name", REQUIRED)
def test_each_missing_name_is_an_error(name: str) -> None:
    """Dropping any required constant is reported by name with the kind it must hold."""
    board = _board()
    delattr(board, name)
    errors = _errors(board)
    assert len(errors) == 1
    label = "board" if name == "NAME" else "esp32-devkitc"   # no NAME: a generic label
    assert errors[0].startswith(f"{label}: {name} is missing; define it as ")


def test_wrong_types_are_errors() -> None:
    """A str pin, a bool pin, a float UART id and a number NAME are refused; LED may be None."""
    errors = _errors(_board(SR04T_TRIG="18", MB_RX=True, LINK_UART=1.0, LED=None))
    assert errors == [
        "esp32-devkitc: LINK_UART=1.0 has the wrong type; it must be an int",
        "esp32-devkitc: SR04T_TRIG='18' has the wrong type; it must be a GPIO number (int)",
        "esp32-devkitc: MB_RX=True has the wrong type; it must be a GPIO number (int)",
    ]
    assert _errors(_board(NAME=5))[0] == (
        "board: NAME=5 has the wrong type; it must be a str")
    assert _errors(_board(LED="2"))[0].endswith("it must be a GPIO number (int) or None")


def test_unknown_chip_ranger_and_bad_name_are_errors() -> None:
    """CHIP and RANGER must be known values; NAME must be the module name with '-'."""
    assert _errors(_board(CHIP="esp8266")) == [
        "esp32-devkitc: CHIP='esp8266' is unknown; use one of 'esp32', 'esp32s3', 'emulated'"]
    assert _errors(_board(RANGER="hcsr04")) == [
        "esp32-devkitc: RANGER='hcsr04' is unknown; use one of sr04t, mb7389"]
    assert _errors(_board(NAME="ESP32_DevKitC"))[0].startswith(
        "ESP32_DevKitC: NAME='ESP32_DevKitC' must be lower-case words joined by '-'")


def test_pin_missing_from_the_chip_is_an_error() -> None:
    """GPIO 24 does not exist on the ESP32, nor GPIO 22 or 49 on the ESP32-S3."""
    assert _errors(_board(ONEWIRE_PIN=24)) == [
        "esp32-devkitc: ONEWIRE_PIN=24 does not exist on the ESP32; "
        "choose an output-capable GPIO such as 4"]
    assert _errors(_s3(ONEWIRE_PIN=22))[0].startswith(
        "esp32s3-devkitc1: ONEWIRE_PIN=22 does not exist on the ESP32-S3")
    assert _errors(_s3(LINK_RX=49))[0].startswith(
        "esp32s3-devkitc1: LINK_RX=49 does not exist on the ESP32-S3")


@pytest.mark.parametrize("pin", range(6, 12))
def test_esp32_flash_pins_are_errors(pin: int) -> None:
    """GPIO 6-11 (the WROOM-32's SPI flash) are refused for any function."""
    assert _errors(_board(LINK_RX=pin)) == [
        f"esp32-devkitc: LINK_RX={pin} is wired to the SPI flash (GPIO 6-11 on ESP32-WROOM-32); "
        f"choose a GPIO such as 13"]


def test_s3_flash_psram_usb_and_console_pins_are_errors() -> None:
    """On the S3: 26-32 flash, 33-37 octal PSRAM, 19/20 USB, 43/44 UART0 are all refused."""
    for pin, why in ((30, "the SPI flash and quad PSRAM"), (35, "the octal PSRAM"),
                     (19, "the native USB port"), (44, "UART0 on the USB bridge")):
        errors = _errors(_s3(MAG_B_SDA=pin))
        assert len(errors) == 1, pin
        assert errors[0].startswith(
            f"esp32s3-devkitc1: MAG_B_SDA={pin} is wired to {why}"), errors


def test_esp32_console_pins_are_errors() -> None:
    """GPIO 1 and 3 (UART0, the REPL and flashing port) are refused on the ESP32."""
    assert "wired to UART0, the REPL" in _errors(_board(SR04T_ECHO=3))[0]


@pytest.mark.parametrize("name", OUTPUTS)
def test_input_only_pins_are_refused_for_outputs(name: str) -> None:
    """Every driven pin (trigger, link TX, LED, 1-Wire, I2C) refuses GPIO 34-39 on the ESP32."""
    board = _board(**{name: 39})
    free = 4 if name == "ONEWIRE_PIN" else 13        # the lowest free pin with no caveats
    assert _errors(board) == [
        f"esp32-devkitc: {name}=39 is input-only; choose an output-capable GPIO such as {free}"]


def test_input_only_message_names_board_constant_and_fix() -> None:
    """The message reads as in the brief: board, constant=value, the problem, a free pin."""
    assert _errors(_board(SR04T_TRIG=34, SR04T_ECHO=36)) == [
        "esp32-devkitc: SR04T_TRIG=34 is input-only; "
        "choose an output-capable GPIO such as 13"]


def test_input_only_pins_are_fine_for_inputs() -> None:
    """Echo, link RX, MB7389 RX and the ADC may sit on input-only pins."""
    assert check(_board(SR04T_ECHO=36, LINK_RX=39, MB_RX=34, BATTERY_ADC=35)) == ([], [])


def test_a_pin_used_twice_is_an_error() -> None:
    """Two functions on one GPIO are refused, naming both."""
    assert _errors(_board(MAG_B_SDA=21)) == [
        "esp32-devkitc: GPIO 21 is used by MAG_A_SDA and MAG_B_SDA; give each its own pin, "
        "e.g. move MAG_B_SDA to a GPIO such as 13"]
    assert _errors(_board(LED=4))[0].startswith(
        "esp32-devkitc: GPIO 4 is used by ONEWIRE_PIN and LED")


def test_battery_must_be_on_adc1() -> None:
    """An ADC2 or non-ADC pin for the battery is refused, with the ADC1 range as the fix."""
    assert _errors(_board(BATTERY_ADC=27)) == [
        "esp32-devkitc: BATTERY_ADC=27 is not an ADC1 pin (ADC2 fails while the radio is on); "
        "choose one of GPIO 32-39 such as 32"]
    assert "choose one of GPIO 1-10 such as 1" in _errors(_s3(BATTERY_ADC=11))[0]


def test_strapping_pins_are_warned_not_refused() -> None:
    """ESP32 0, 2, 5, 12, 15 and S3 0, 3, 45, 46 give a warning each and no error."""
    errors, warnings = check(_board(SR04T_TRIG=5, LED=2, ONEWIRE_PIN=15, LINK_RX=12))
    assert errors == []
    assert [w.split(" is ")[0] for w in warnings] == [
        "esp32-devkitc: LINK_RX=12", "esp32-devkitc: SR04T_TRIG=5",
        "esp32-devkitc: ONEWIRE_PIN=15", "esp32-devkitc: LED=2"]
    assert warnings[1] == (
        "esp32-devkitc: SR04T_TRIG=5 is a strapping pin (read at reset); make sure its wiring "
        "cannot change the boot mode, or move it to an output-capable GPIO such as 4")
    errors, warnings = check(_s3(LED=46, ONEWIRE_PIN=0, LINK_RX=3, MAG_B_SCL=45))
    assert errors == []
    assert len(warnings) == 4


def test_emulated_chip_uses_esp32_rules() -> None:
    """CHIP 'emulated' refuses the ESP32's flash and input-only pins and warns on strapping."""
    errors, warnings = check(_board(CHIP="emulated", NAME="emulated", LINK_RX=7,
                                    SR04T_TRIG=35, BATTERY_ADC=36, LED=0))
    assert errors == [
        "emulated: LINK_RX=7 is wired to the SPI flash (GPIO 6-11 on ESP32-WROOM-32); "
        "choose a GPIO such as 13",
        "emulated: SR04T_TRIG=35 is input-only; choose an output-capable GPIO such as 13",
    ]
    assert warnings[0].startswith("emulated: LED=0 is a strapping pin")


def test_uart_ids_must_exist_and_differ() -> None:
    """UART ids 0-2 only; the link and the MB7389 need different UARTs; UART0 is warned."""
    assert _errors(_board(LINK_UART=3)) == [
        "esp32-devkitc: LINK_UART=3 does not exist on the ESP32; use one of 0, 1, 2"]
    assert _errors(_board(MB_UART=1, LINK_UART=1))[0] == (
        "esp32-devkitc: LINK_UART and MB_UART are both 1; the ranger needs a UART of its own "
        "(e.g. LINK_UART=1, MB_UART=2)")
    assert _warnings(_board(LINK_UART=0, MB_UART=2)) == [
        "esp32-devkitc: LINK_UART=0 is UART0, the REPL console; use UART 1 or 2"]


def test_mb7389_uart_default_tx_pin_must_stay_free() -> None:
    """UART2 claims GPIO17 for TX: an error with the MB7389 fitted, a warning otherwise."""
    msg = ("esp32-devkitc: MB_UART=2 makes MicroPython route that UART's TX to GPIO 17, also "
           "used by LINK_TX; keep GPIO 17 free or put the MB7389 on another UART")
    assert _errors(_board(LINK_TX=17, RANGER="mb7389")) == [msg]
    assert _warnings(_board(LINK_TX=17, RANGER="sr04t")) == [
        msg + " (only if RANGER becomes 'mb7389')"]
    # UART1's default TX is GPIO10, a flash pin on the WROOM-32.
    errors = _errors(_board(MB_UART=1, LINK_UART=2, RANGER="mb7389"))
    assert errors == [
        "esp32-devkitc: MB_UART=1 makes MicroPython route that UART's TX to GPIO 10, wired to "
        "the SPI flash (GPIO 6-11 on ESP32-WROOM-32); keep GPIO 10 free or put the MB7389 on "
        "another UART"]


def test_i2c_ids_must_exist_and_differ() -> None:
    """I2C ids 0-1 only, and the two QMC5883L (both at 0x0D) need different buses."""
    assert _errors(_board(MAG_B_I2C=2)) == [
        "esp32-devkitc: MAG_B_I2C=2 does not exist on the ESP32; use 0 or 1"]
    assert _errors(_board(MAG_B_I2C=0)) == [
        "esp32-devkitc: MAG_A_I2C and MAG_B_I2C are both 0; both QMC5883L answer at 0x0D, so "
        "each needs its own bus (MAG_A_I2C=0, MAG_B_I2C=1)"]


def test_link_baud_must_be_a_usual_rate() -> None:
    """921600 (losses reported) and odd rates are refused; 9600-460800 standard rates pass."""
    for baud in (921600, 115201, 0):
        assert _errors(_board(LINK_BAUD=baud))[0].startswith(
            f"esp32-devkitc: LINK_BAUD={baud} is not a usual rate; use one of 9600, 19200"), baud
    for baud in (9600, 115200, 460800):
        assert _errors(_board(LINK_BAUD=baud)) == [], baud


def test_battery_divider_must_be_at_least_one() -> None:
    """A divider below 1 (or NaN) is refused; 1, 2 and 3.2 are accepted."""
    for divider in (0, 0.5, float("nan")):
        assert _errors(_board(BATTERY_DIVIDER=divider))[0].startswith(
            f"esp32-devkitc: BATTERY_DIVIDER={divider!r} must be >= 1"), divider
    for divider in (1, 2, 3.2):
        assert _errors(_board(BATTERY_DIVIDER=divider)) == [], divider


def test_check_all_refuses_a_name_that_does_not_match_its_module(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The firmware loads boards by NAME, so NAME must match the module's file name."""
    monkeypatch.setattr(boards.esp32_devkitc, "NAME", "esp32-devkit")
    errors = check_all(["esp32-devkitc"])["esp32-devkitc"][0]
    assert errors == [
        "esp32-devkitc: NAME='esp32-devkit' does not match its module boards/esp32_devkitc.py; "
        "set NAME = 'esp32-devkitc'"]


def test_main_passes_the_shipped_boards(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m boards.host_check` exits 0 and says every board passes."""
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "esp32-devkitc: ok, 0 warning(s)" in out
    assert out.rstrip().endswith(f"{len(BOARDS)} of {len(BOARDS)} boards pass")


def test_main_exits_1_on_an_error(monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A board with an error makes the command print it and exit 1; so does an unknown name."""
    monkeypatch.setattr(boards.esp32_devkitc, "LED", 6)
    assert main(["esp32-devkitc"]) == 1
    out = capsys.readouterr().out
    assert "  error: esp32-devkitc: LED=6 is wired to the SPI flash" in out
    assert out.rstrip().endswith("0 of 1 boards pass")
    assert main(["nope"]) == 1
    assert "error: unknown board 'nope'" in capsys.readouterr().out


def test_module_runs_as_a_script() -> None:
    """`python -m boards.host_check esp32-devkitc` runs from the repository root, exit 0."""
    root = Path(host_check.__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "boards.host_check", "esp32-devkitc"],
                          cwd=root, capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == "esp32-devkitc: ok, 0 warning(s)\n1 of 1 boards pass\n"
