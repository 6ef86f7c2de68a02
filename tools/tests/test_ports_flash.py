"""Port aliases and port errors; `roadside flash` up to the exact esptool calls it makes."""

from __future__ import annotations

import os
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from tools import cli, flash, ports
from tools.errors import ToolError


@pytest.fixture
def pty_port() -> Iterator[str]:
    """A pty with nobody behind it: a serial port where no chip answers."""
    master, slave = os.openpty()
    tty.setraw(slave)
    yield os.ttyname(slave)
    os.close(slave)
    os.close(master)


def _image(tmp_path: Path, chip_id: int) -> Path:
    """An image file with an ESP image header for chip_id (0 ESP32, 9 ESP32-S3)."""
    head = bytes([0xE9, 3, 2, 0x20]) + bytes(4) + bytes(4) + chip_id.to_bytes(2, "little")
    path = tmp_path / f"fw-{chip_id}.bin"
    path.write_bytes(head + bytes(128 * 1024 - len(head)))
    return path


def test_aliases_name_usb_ports() -> None:
    """u0 is /dev/ttyUSB0, a3 /dev/ttyACM3; a path passes unchanged."""
    assert ports.resolve("u0") == "/dev/ttyUSB0"
    assert ports.resolve("a3") == "/dev/ttyACM3"
    assert ports.resolve("/dev/pts/5") == "/dev/pts/5"
    assert ports.resolve("u") == "u"


def test_missing_port_names_the_fix() -> None:
    """A port that does not exist says to plug the board in and how to list ports."""
    with pytest.raises(ToolError, match=r"/dev/ttyUSB97 does not exist: plug the board in"):
        ports.check("u97")


def test_busy_port_is_refused(pty_port: str) -> None:
    """A port another program holds exclusively is reported busy, naming who might hold it."""
    with (serial.Serial(pty_port, 115200, exclusive=True),
          pytest.raises(ToolError, match=r"is busy: another program has it open")):
        ports.check(pty_port)
    assert ports.check(pty_port) == pty_port


def test_flash_makes_the_exact_esptool_calls(tmp_path: Path, pty_port: str) -> None:
    """Erase, then write at the chip's offset: the argument lists given to esptool.main."""
    calls: list[list[str]] = []
    for chip, chip_id, offset in (("esp32", 0, "0x1000"), ("esp32s3", 9, "0x0")):
        image = _image(tmp_path, chip_id)
        calls.clear()
        flash.flash(pty_port, image, chip, run=calls.append, say=lambda _: None)
        assert calls == [
            ["--chip", chip, "--port", pty_port, "--before", "default-reset", "erase-flash"],
            ["--chip", chip, "--port", pty_port, "--baud", "460800", "--before",
             "default-reset", "write-flash", offset, str(image)],
        ]


def test_flash_refuses_an_image_for_the_wrong_chip(tmp_path: Path, pty_port: str) -> None:
    """An ESP32-S3 image with --chip esp32 is refused before esptool is called."""
    calls: list[list[str]] = []
    with pytest.raises(ToolError, match=r"wrong chip: fw-9.bin is built for esp32s3"):
        flash.flash(pty_port, _image(tmp_path, 9), "esp32", run=calls.append)
    assert calls == []


def test_flash_refuses_what_is_not_an_image(tmp_path: Path, pty_port: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """An .elf (or anything without the 0xE9 header) is one line naming the .bin to take."""
    elf = tmp_path / "firmware.elf"
    elf.write_bytes(b"\x7fELF" + bytes(100_000))
    assert cli.main(["flash", "--port", pty_port, "--firmware", str(elf), "--chip",
                     "esp32"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("roadside: --firmware") and "take the .bin" in err
    assert "\n" not in err


def test_real_esptool_on_a_port_without_a_bootloader(tmp_path: Path, pty_port: str) -> None:
    """The real esptool finds no chip on the port: one error telling to hold BOOT."""
    with pytest.raises(ToolError, match=r"no ESP32 bootloader answered .* hold BOOT"):
        flash.flash(pty_port, _image(tmp_path, 0), "esp32", before="no-reset",
                    connect_attempts=1, say=lambda _: None)
