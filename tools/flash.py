"""`roadside flash`: erase the chip and write a MicroPython image, with esptool as a library.

Two esptool calls, as MicroPython's ESP32 instructions give them:

    esptool --chip esp32 --port /dev/ttyUSB0 --before default-reset erase-flash
    esptool --chip esp32 --port /dev/ttyUSB0 --baud 460800 --before default-reset \
        write-flash 0x1000 ESP32_GENERIC-v1.29.bin

(0x1000 on the ESP32, 0x0 on the ESP32-S3). Before that the image is checked: an ESP image
(magic 0xE9) built for the --chip given (the chip id in its extended header).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import serial

from tools import ports
from tools.errors import ToolError

OFFSET = {"esp32": 0x1000, "esp32s3": 0x0}
CHIP_ID = {0: "esp32", 2: "esp32s2", 5: "esp32c3", 9: "esp32s3", 12: "esp32c2", 13: "esp32c6"}
IMAGE_MAGIC = 0xE9
MIN_IMAGE_B = 64 * 1024
BAUD = 460800
Esptool = Callable[[list[str]], object]


def check_image(path: Path, chip: str) -> bytes:
    """The image's bytes; a ToolError if it is not an image for chip."""
    if chip not in OFFSET:
        raise ToolError(f"--chip {chip}: use esp32 or esp32s3")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ToolError(f"--firmware {path}: cannot read it ({exc}); download the .bin "
                        "from https://micropython.org/download/ESP32_GENERIC/") from exc
    if len(data) < MIN_IMAGE_B or data[0] != IMAGE_MAGIC:
        raise ToolError(f"--firmware {path}: not an ESP32 firmware image (no 0xE9 header or "
                        "under 64 KB); take the .bin, not the .elf or .uf2, from "
                        "micropython.org/download")
    built_for = CHIP_ID.get(int.from_bytes(data[12:14], "little"), "another chip")
    if built_for != chip:
        raise ToolError(f"wrong chip: {path.name} is built for {built_for}, not --chip {chip}; "
                        f"use the image for {chip} (ESP32_GENERIC for esp32, "
                        "ESP32_GENERIC_S3 for esp32s3) or the right --chip")
    return data


def esptool_calls(port: str, firmware: Path, chip: str, *, baud: int = BAUD,
                  before: str = "default-reset",
                  connect_attempts: int | None = None) -> list[list[str]]:
    """The esptool argument lists flash() runs, in order."""
    common = ["--chip", chip, "--port", port]
    if connect_attempts is not None:
        common += ["--connect-attempts", str(connect_attempts)]
    return [
        [*common, "--before", before, "erase-flash"],
        [*common, "--baud", str(baud), "--before", before, "write-flash",
         hex(OFFSET[chip]), str(firmware)],
    ]


def _esptool_main(argv: list[str]) -> object:
    import esptool  # type: ignore[import-untyped]  # noqa: PLC0415 - heavy, only to flash

    return esptool.main(argv)


def flash(port: str, firmware: Path, chip: str, *, baud: int = BAUD,
          before: str = "default-reset", connect_attempts: int | None = None,
          run: Esptool = _esptool_main,
          say: Callable[[str], None] = print) -> None:
    """Checks the image and the port, then erases and writes; errors as ToolErrors."""
    check_image(firmware, chip)
    path = ports.check(port)
    from esptool.util import FatalError  # type: ignore[import-untyped]  # noqa: PLC0415

    for argv, what in zip(esptool_calls(path, firmware, chip, baud=baud, before=before,
                                                connect_attempts=connect_attempts),
                          ("erasing the flash", "writing MicroPython"), strict=True):
        say(f"flash: {what} (esptool {' '.join(argv)})")
        try:
            run(argv)
        except FatalError as exc:
            text = str(exc)
            if "Wrong chip" in text or "This chip is" in text:
                raise ToolError(f"wrong chip on {path}: {text.splitlines()[0]} Pass the "
                                "--chip it names (and its firmware image)") from exc
            if "connect" in text.lower():
                raise ToolError(f"no ESP32 bootloader answered on {path} ({text.splitlines()[0]})"
                                ": hold BOOT while pressing EN (or check that this is the "
                                "board's USB port and the cable carries data)") from exc
            raise ToolError(f"esptool failed on {path}: {text}") from exc
        except (serial.SerialException, OSError) as exc:
            raise ToolError(f"{path}: the serial line failed during {what} ({exc}); "
                            "replug the board and retry") from exc
