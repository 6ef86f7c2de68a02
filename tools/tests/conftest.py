"""Emulated boards for the tools' tests: the real firmware, its console on a pty."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mpremote.romfs import make_romfs  # type: ignore[import-untyped]

from hil_tests.bench import BenchGateway
from hil_tests.emulator.scenario import loads_scenario
from hil_tests.emulator.supervisor import Board, build_images

SCALE = 10.0
KEY = bytes(range(32))
H0_MM = 2650
QUIET = ("duration_s = 36000\nstart_utc = \"2026-06-01T12:00:00Z\"\n{top}\n[site]\n"
         f"h0_mm = {H0_MM}\n" "{tail}")
MakeBoard = Callable[..., Board]


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """ROM image (the firmware as .mpy) and the device stand-ins, built once."""
    return build_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def blank_rom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty ROMFS: a board with MicroPython only, as after `roadside flash`."""
    base = tmp_path_factory.mktemp("blank")
    (base / "empty").mkdir()
    with contextlib.redirect_stdout(io.StringIO()):
        image = bytes(make_romfs(str(base / "empty"), mpy_cross=False))
    (base / "rom.img").write_bytes(image)
    return base / "rom.img"


def node_config(node: int = 7, key: bytes | None = KEY, **extra: object) -> dict[str, object]:
    """A provisioned node's /config.json."""
    cfg: dict[str, object] = {"node": node, "site": "test", "board": "emulated",
                              "key": key.hex() if key else "", "h0_mm": H0_MM}
    cfg.update(extra)
    return cfg


@pytest.fixture
def make_board(images: tuple[Path, Path], tmp_path: Path) -> Iterator[MakeBoard]:
    """Starts boards (console on a pty) that are all closed after the test."""
    boards: list[Board] = []

    def make(config: dict[str, object] | None = None, *, top: str = "", tail: str = "",
             rom: Path | None = None, **kw: object) -> Board:
        scen = loads_scenario(QUIET.format(top=top, tail=tail), "test.toml")
        b = Board(scen, node_config() if config is None else config,
                  state_dir=tmp_path / f"board{len(boards)}", time_scale=SCALE,
                  rom=rom or images[0], device_dir=images[1], console_pty=True,
                  **kw)  # type: ignore[arg-type]
        boards.append(b)
        b.start()
        return b

    yield make
    for b in boards:
        b.close()


def gateway(board: Board, keys: dict[int, bytes] | None = None) -> BenchGateway:
    """A bench gateway on the board's link: it acks and time-syncs the node."""
    return BenchGateway(board.host_port, keys={7: KEY} if keys is None else keys,
                        clock_ms=board.now_ms, utc_ms=lambda: int(1.78e12 + board.now_ms()))
