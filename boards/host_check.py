"""Validates board pin maps (boards/<module>.py) against the chip's rules, on the host.

    python -m boards.host_check [BOARD ...]      # e.g. esp32-devkitc; default: every board

Errors (exit 1): a name missing or of the wrong type, a pin the chip lacks, a pin wired to
the flash, PSRAM, console or USB, an output on an input-only pin, a pin used twice, the
battery off ADC1, a bad UART or I2C id, two functions on one bus, an unusual baud rate.
Warnings: strapping pins, UART0 (the REPL), a latent clash the other RANGER would cause.
The emulated board is checked with the ESP32's rules (it stands in for an ESP32 DevKitC).
"""

import importlib
import pkgutil
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Final

Result = tuple[list[str], list[str]]


@dataclass(frozen=True)
class Chip:
    """What a chip allows: which GPIOs exist and which of them a board may not use."""

    label: str
    gpios: frozenset[int]
    reserved: Mapping[int, str]          # pin -> what it is wired to (refused)
    strapping: frozenset[int]
    input_only: frozenset[int]
    adc1: frozenset[int]
    adc1_text: str
    uarts: frozenset[int] = frozenset({0, 1, 2})
    i2cs: frozenset[int] = frozenset({0, 1})
    # The TX pin MicroPython's machine.UART(id, rx=...) claims when tx is not given (tx=-1
    # only arrived in MicroPython 1.28): UART1 -> 10, UART2 -> 17 on the ESP32 and ESP32-S3.
    uart_default_tx: Mapping[int, int] = field(default_factory=lambda: {1: 10, 2: 17})


def _reserved(groups: Mapping[str, range | tuple[int, ...]]) -> dict[int, str]:
    return {pin: why for why, pins in groups.items() for pin in pins}


ESP32: Final = Chip(
    label="ESP32",
    gpios=frozenset([*range(0, 20), 21, 22, 23, 25, 26, 27, *range(32, 40)]),
    reserved=_reserved({
        "the SPI flash (GPIO 6-11 on ESP32-WROOM-32)": range(6, 12),
        "UART0, the REPL and flashing port (GPIO 1 and 3)": (1, 3),
    }),
    strapping=frozenset({0, 2, 5, 12, 15}),
    input_only=frozenset(range(34, 40)),
    adc1=frozenset(range(32, 40)),
    adc1_text="GPIO 32-39",
)

ESP32S3: Final = Chip(
    label="ESP32-S3",
    gpios=frozenset([*range(0, 22), *range(26, 49)]),
    reserved=_reserved({
        "the SPI flash and quad PSRAM (GPIO 26-32)": range(26, 33),
        "the octal PSRAM of N8R8/N16R8 modules (GPIO 33-37)": range(33, 38),
        "the native USB port, MicroPython's REPL (GPIO 19 and 20)": (19, 20),
        "UART0 on the USB bridge (GPIO 43 and 44)": (43, 44),
    }),
    strapping=frozenset({0, 3, 45, 46}),
    input_only=frozenset(),
    adc1=frozenset(range(1, 11)),
    adc1_text="GPIO 1-10",
)

CHIPS: Final[Mapping[str, Chip]] = {"esp32": ESP32, "esp32s3": ESP32S3, "emulated": ESP32}
RANGERS: Final = ("sr04t", "mb7389")
BAUDS: Final = frozenset({9600, 19200, 38400, 57600, 115200, 230400, 460800})

# Every name a board module defines, with the kind of value it must hold.
STRINGS: Final = ("NAME", "CHIP", "RANGER")
INTS: Final = ("LINK_UART", "LINK_BAUD", "MB_UART", "MAG_A_I2C", "MAG_B_I2C")
PINS: Final = ("LINK_TX", "LINK_RX", "SR04T_TRIG", "SR04T_ECHO", "MB_RX", "ONEWIRE_PIN",
               "MAG_A_SCL", "MAG_A_SDA", "MAG_B_SCL", "MAG_B_SDA", "BATTERY_ADC")
OPTIONAL_PINS: Final = ("LED",)
NUMBERS: Final = ("BATTERY_DIVIDER",)
REQUIRED: Final = STRINGS + INTS + PINS + OPTIONAL_PINS + NUMBERS

# Pins the firmware drives (1-Wire and I2C lines are open-drain outputs, so they count).
OUTPUTS: Final = ("LINK_TX", "SR04T_TRIG", "LED", "ONEWIRE_PIN",
                  "MAG_A_SCL", "MAG_A_SDA", "MAG_B_SCL", "MAG_B_SDA")

_NAME_RE: Final = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*\Z")
_MISSING: Final = object()
_HERE: Final = Path(__file__).resolve().parent


def _is_int(value: object) -> bool:
    # bool is an int subclass on CPython (not on MicroPython): refuse it either way.
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(name: str) -> str:
    if name in STRINGS:
        return "a str"
    if name in PINS:
        return "a GPIO number (int)"
    if name in OPTIONAL_PINS:
        return "a GPIO number (int) or None"
    if name in NUMBERS:
        return "a number >= 1 (int or float)"
    return "an int"


def _well_typed(name: str, value: object) -> bool:
    if name in STRINGS:
        return isinstance(value, str) and value != ""
    if name in OPTIONAL_PINS:
        return value is None or _is_int(value)
    if name in NUMBERS:
        return _is_int(value) or isinstance(value, float)
    return _is_int(value)


def _suggest(chip: Chip, used: set[int], *, output: bool = False, adc1: bool = False) -> str:
    """A free pin with no caveats that would fit, for the fix in a message."""
    for pin in sorted(chip.gpios):
        if (pin in used or pin in chip.reserved or pin in chip.strapping
                or (output and pin in chip.input_only) or (adc1 and pin not in chip.adc1)):
            continue
        return f"such as {pin}"
    return "(none left free: free one first)"


def check(board: object) -> Result:
    """(errors, warnings) for one board module or any object with the same attributes."""
    raw_name = getattr(board, "NAME", None)
    b = raw_name if isinstance(raw_name, str) and raw_name else getattr(board, "__name__", "board")
    errors: list[str] = []
    warnings: list[str] = []
    v: dict[str, object] = {}

    for name in REQUIRED:
        value = getattr(board, name, _MISSING)
        if value is _MISSING:
            errors.append(f"{b}: {name} is missing; define it as {_kind(name)}")
        elif not _well_typed(name, value):
            errors.append(f"{b}: {name}={value!r} has the wrong type; it must be {_kind(name)}")
        else:
            v[name] = value

    board_name = v.get("NAME")
    if isinstance(board_name, str) and not _NAME_RE.match(board_name):
        errors.append(f"{b}: NAME={board_name!r} must be lower-case words joined by '-', the "
                      f"module name with '_' as '-' (e.g. 'esp32-devkitc')")
    ranger = v.get("RANGER")
    if isinstance(ranger, str) and ranger not in RANGERS:
        errors.append(f"{b}: RANGER={ranger!r} is unknown; use one of {', '.join(RANGERS)}")
    baud = v.get("LINK_BAUD")
    if isinstance(baud, int) and baud not in BAUDS:
        errors.append(f"{b}: LINK_BAUD={baud} is not a usual rate; use one of "
                      f"{', '.join(map(str, sorted(BAUDS)))} (115200 unless measured)")
    divider = v.get("BATTERY_DIVIDER")
    if isinstance(divider, int | float) and not divider >= 1:
        errors.append(f"{b}: BATTERY_DIVIDER={divider!r} must be >= 1 (battery volts per volt "
                      f"at the pin; 1 without a divider, 2 for a 1:2 divider)")

    chip_name = v.get("CHIP")
    chip = CHIPS.get(chip_name) if isinstance(chip_name, str) else None
    if chip is None:
        if chip_name is not None:
            errors.append(f"{b}: CHIP={chip_name!r} is unknown; use one of "
                          f"{', '.join(repr(c) for c in CHIPS)}")
        return errors, warnings

    _check_pins(b, chip, v, errors, warnings)
    _check_buses(b, chip, v, errors, warnings)
    return errors, warnings


def _pins(v: Mapping[str, object]) -> dict[str, int]:
    return {n: p for n in PINS + OPTIONAL_PINS if isinstance(p := v.get(n), int)}


def _check_pins(b: str, chip: Chip, v: Mapping[str, object],
                errors: list[str], warnings: list[str]) -> None:
    pins = _pins(v)
    used = set(pins.values())
    for name, pin in pins.items():
        out = name in OUTPUTS
        adc = name == "BATTERY_ADC"
        fix = _suggest(chip, used, output=out, adc1=adc)
        what = "an output-capable GPIO" if out else "an ADC1 GPIO" if adc else "a GPIO"
        if pin not in chip.gpios:
            errors.append(f"{b}: {name}={pin} does not exist on the {chip.label}; "
                          f"choose {what} {fix}")
        elif pin in chip.reserved:
            errors.append(f"{b}: {name}={pin} is wired to {chip.reserved[pin]}; "
                          f"choose {what} {fix}")
        elif out and pin in chip.input_only:
            errors.append(f"{b}: {name}={pin} is input-only; choose {what} {fix}")
        elif adc and pin not in chip.adc1:
            errors.append(f"{b}: {name}={pin} is not an ADC1 pin (ADC2 fails while the radio "
                          f"is on); choose one of {chip.adc1_text} {fix}")
        elif pin in chip.strapping:
            warnings.append(f"{b}: {name}={pin} is a strapping pin (read at reset); make sure "
                            f"its wiring cannot change the boot mode, or move it to {what} {fix}")

    by_pin: dict[int, list[str]] = {}
    for name, pin in pins.items():
        by_pin.setdefault(pin, []).append(name)
    for pin, names in sorted(by_pin.items()):
        if len(names) > 1:
            errors.append(f"{b}: GPIO {pin} is used by {' and '.join(names)}; give each its "
                          f"own pin, e.g. move {names[-1]} to a GPIO {_suggest(chip, used)}")


def _check_buses(b: str, chip: Chip, v: Mapping[str, object],
                 errors: list[str], warnings: list[str]) -> None:
    ids = sorted(chip.uarts)
    for name in ("LINK_UART", "MB_UART"):
        uart = v.get(name)
        if isinstance(uart, int) and uart not in chip.uarts:
            errors.append(f"{b}: {name}={uart} does not exist on the {chip.label}; "
                          f"use one of {', '.join(map(str, ids))}")
        elif uart == 0:
            warnings.append(f"{b}: {name}=0 is UART0, the REPL console; use UART 1 or 2")
    link, mb = v.get("LINK_UART"), v.get("MB_UART")
    if isinstance(link, int) and link == mb:
        errors.append(f"{b}: LINK_UART and MB_UART are both {link}; the ranger needs a UART "
                      f"of its own (e.g. LINK_UART=1, MB_UART=2)")

    # machine.UART(MB_UART, rx=MB_RX) also claims the UART's default TX pin.
    tx = chip.uart_default_tx.get(mb) if isinstance(mb, int) else None
    if tx is not None:
        holders = [n for n, p in _pins(v).items() if p == tx]
        bad = chip.reserved.get(tx)
        if holders or bad:
            clash = f"wired to {bad}" if bad else "also used by " + " and ".join(holders)
            msg = (f"{b}: MB_UART={mb} makes MicroPython route that UART's TX to GPIO {tx}, "
                   f"{clash}; keep GPIO {tx} free or put the MB7389 on another UART")
            if v.get("RANGER") == "mb7389":
                errors.append(msg)
            else:
                warnings.append(msg + " (only if RANGER becomes 'mb7389')")

    for name in ("MAG_A_I2C", "MAG_B_I2C"):
        bus = v.get(name)
        if isinstance(bus, int) and bus not in chip.i2cs:
            errors.append(f"{b}: {name}={bus} does not exist on the {chip.label}; "
                          f"use 0 or 1")
    a, c = v.get("MAG_A_I2C"), v.get("MAG_B_I2C")
    if isinstance(a, int) and a == c:
        errors.append(f"{b}: MAG_A_I2C and MAG_B_I2C are both {a}; both QMC5883L answer at "
                      f"0x0D, so each needs its own bus (MAG_A_I2C=0, MAG_B_I2C=1)")


def _discover() -> tuple[str, ...]:
    mods = (m.name for m in pkgutil.iter_modules([str(_HERE)]))
    return tuple(sorted(m.replace("_", "-") for m in mods
                        if not m.startswith(("_", "host_")) and m != "tests"))


# Board names as the firmware's config spells them ("esp32-devkitc" -> boards.esp32_devkitc).
BOARDS: Final[tuple[str, ...]] = _discover()


def load(name: str) -> ModuleType:
    """The board module for a board name ("esp32-devkitc" -> boards.esp32_devkitc)."""
    if name not in BOARDS:
        raise ValueError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}")
    return importlib.import_module("boards." + name.replace("-", "_"))


def check_all(names: tuple[str, ...] | list[str] = BOARDS) -> dict[str, Result]:
    """(errors, warnings) per board name; also checks NAME matches the module's name."""
    results: dict[str, Result] = {}
    for name in names:
        module = load(name)
        errors, warnings = check(module)
        declared = getattr(module, "NAME", None)
        if isinstance(declared, str) and declared != name:
            errors.append(f"{name}: NAME={declared!r} does not match its module "
                          f"boards/{name.replace('-', '_')}.py; set NAME = {name!r}")
        results[name] = (errors, warnings)
    return results


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if any(a.startswith("-") for a in args):
        print(__doc__)
        return 0 if set(args) <= {"-h", "--help"} else 2
    try:
        results = check_all(args or BOARDS)
    except ValueError as exc:
        print(f"error: {exc}")
        return 1
    failed = 0
    for name, (errors, warnings) in results.items():
        state = f"{len(errors)} error(s)" if errors else "ok"
        print(f"{name}: {state}, {len(warnings)} warning(s)")
        for e in errors:
            print(f"  error: {e}")
        for w in warnings:
            print(f"  warning: {w}")
        failed += bool(errors)
    print(f"{len(results) - failed} of {len(results)} boards pass")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
