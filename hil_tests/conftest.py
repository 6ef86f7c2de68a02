"""Fixtures and options of the HIL suite (hil_tests/tests): emulated boards by default, real
ESP32 boards with pytest-embedded's ``--port``.

Options (pytest-embedded's own: ``--port /dev/ttyUSB0`` the board's USB console, ``--count N``
several boards, ``|``-separated values):

- ``--link-port /dev/ttyUSB1``: the USB-UART adapter on each real board's link UART (the port
  the gateway opens); ``--node-id 7``: the node id provisioned on each; ``--node-keys FILE``:
  the gateway's keys file (``<node> <64 hex digits>`` per line).
- ``--artifacts DIR`` (default ``hil_tests/artifacts``): each run gets ``run-<stamp>/`` with
  ``junit.xml`` (board output in system-out) and one folder per test (console logs, link hex
  captures and fault seeds, the gateway's log, ``mqtt.jsonl``); the last 20 runs are kept.

Markers: ``emulated`` (needs the emulated board: power cuts, stalled tasks, virtual time),
``hardware`` (needs real boards), ``world`` (outcomes against the modelled world). On real
boards a world test's ``rig.add_board(node, scenario, ...)`` takes the next real board
instead: its console gets ``/replay.json`` and ``"replay"`` in ``/config.json`` (mpremote,
``Rig.add_replayed``), it is reset and runs the scenario on the firmware's replay driver at
1x, and the rig keeps a World for the truth.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _pytest.junitxml import LogXML, xml_key

from gateway.tests.brokers import BrokerNotInstalledError, mosquitto
from hil_tests.emulator.supervisor import BoardError, build_images, micropython_path
from hil_tests.rig.stack import RealBoard, Rig

HERE = Path(__file__).resolve().parent
KEEP_RUNS = 20
_RUN_KEY = pytest.StashKey[Path]()

HARDWARE_HINT = ("plug in an ESP32 running the firmware (USB console on the laptop, link UART "
                 "on a USB-UART adapter) and run: pytest hil_tests/tests --port /dev/ttyUSB0 "
                 "--link-port /dev/ttyUSB1 --node-id 7 --node-keys keys.txt "
                 "(hil_tests/README.md, The rig)")
EMULATED_HINT = "emulated-only (power cuts, stalled tasks, virtual time): run without --port"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("roadside-hil", "Roadside HIL suite (hil_tests/)")
    group.addoption("--link-port", default=None,
                    help="real boards: link UART adapter(s), e.g. /dev/ttyUSB1 ('|' between)")
    group.addoption("--node-id", default=None, help="real boards: node id(s) ('|' between)")
    group.addoption("--node-keys", default=None,
                    help="real boards: keys file, '<node> <64 hex digits>' per line")
    group.addoption("--artifacts", default=str(HERE / "artifacts"),
                    help="folder for each run's artefacts (default hil_tests/artifacts)")


def pytest_configure(config: pytest.Config) -> None:
    for line in ("emulated: needs the emulated board (skipped with --port)",
                 "hardware: needs real ESP32 boards (--port, --link-port)",
                 "world: outcomes against the modelled world (real boards: replay driver)"):
        config.addinivalue_line("markers", line)
    if hasattr(config, "workerinput"):
        return
    root = Path(config.getoption("artifacts"))
    run = root / time.strftime(f"run-%Y%m%d-%H%M%S-{os.getpid()}", time.gmtime())
    config.stash[_RUN_KEY] = run
    if not config.option.xmlpath and xml_key not in config.stash \
            and not config.option.collectonly:
        # JUnit XML of every run, board output included (junit_logging = system-out).
        xml = LogXML(str(run / "junit.xml"), config.option.junitprefix,
                     config.getini("junit_suite_name"), "system-out")
        config.stash[xml_key] = xml
        config.pluginmanager.register(xml, "roadside-hil-junitxml")


def pytest_unconfigure(config: pytest.Config) -> None:
    run = config.stash.get(_RUN_KEY, None)
    if run is None or not run.parent.is_dir():
        return
    runs = sorted(p for p in run.parent.glob("run-*") if p.is_dir())
    for old in runs[:-KEEP_RUNS]:
        shutil.rmtree(old, ignore_errors=True)


def hardware(config: pytest.Config) -> bool:
    return bool(config.getoption("port", None))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    real = hardware(config)
    for item in items:
        if real and item.get_closest_marker("emulated"):
            item.add_marker(pytest.mark.skip(reason=EMULATED_HINT))
        elif not real and item.get_closest_marker("hardware"):
            item.add_marker(pytest.mark.skip(reason="hardware-only: " + HARDWARE_HINT))


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """This test's artefact folder: <artifacts>/run-<stamp>/<test id>/."""
    run = request.config.stash.get(_RUN_KEY, None) or Path(request.config.getoption("artifacts"))
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid.split("::", 1)[-1])[:80]
    folder = run / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def board_images(request: pytest.FixtureRequest) -> tuple[Path, Path]:
    """The ROM image and compiled stand-ins, built once per run (emulated boards)."""
    try:
        micropython_path()
    except BoardError as exc:
        pytest.skip(str(exc))
    run = request.config.stash.get(_RUN_KEY, None) or Path(request.config.getoption("artifacts"))
    return build_images(run / "images")


@pytest.fixture
def rig(artifacts: Path, request: pytest.FixtureRequest) -> Iterator[Rig]:
    """An unstarted `Rig` in the test's artefact folder: add boards, then start it (or use
    it as a context manager). Closed at teardown; on failure the console tails are printed
    (they go to the JUnit XML's system-out)."""
    try:
        mosquitto(artifacts / "probe-broker", persistence=False).stop()
    except BrokerNotInstalledError as exc:
        pytest.skip(str(exc))
    shutil.rmtree(artifacts / "probe-broker", ignore_errors=True)
    real = None
    if hardware(request.config):
        images = None
        consoles = _split(request.config.getoption("port"), _count(request.config), "--port")
        real = [RealBoard(n, console, link, key) for (n, link, key), console
                in zip(_real_boards(request.config), consoles, strict=True)]
    else:
        images = request.getfixturevalue("board_images")
    r = Rig(artifacts, images=images, real=real)
    yield r
    r.close()
    for n in r.nodes.values():
        if n.board is not None:
            print(f"--- node {n.node}: {n.board.console_path}, boots {n.board.boots_by_cause}")
            print("\n".join(n.board.lines[-30:]))
    log = artifacts / "gateway" / "gateway.log"
    if log.exists():
        tail = log.read_text(errors="replace").splitlines()[-30:]
        print(f"--- gateway log {log}\n" + "\n".join(tail))


def _split(value: str | None, count: int, what: str) -> list[str]:
    parts = [] if value is None else value.split("|")
    if len(parts) == 1 and count > 1:
        parts *= count
    if len(parts) != count:
        pytest.fail(f"{what}: give {count} values separated by '|' (one per --count board)")
    return parts


def _keys(path: str | None) -> dict[int, bytes]:
    if path is None:
        pytest.fail("--node-keys FILE: the keys of the real boards ('<node> <hex>' per line)")
    keys = {}
    for line in Path(path).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            node, key = line.split()
            keys[int(node)] = bytes.fromhex(key)
    return keys


def _count(config: pytest.Config) -> int:
    return int(config.getoption("count", 1) or 1)


@pytest.fixture
def real_boards(request: pytest.FixtureRequest) -> list[tuple[int, str, bytes]]:
    """Real boards given on the command line: (node id, link port, key) each."""
    if not hardware(request.config):
        pytest.skip("hardware-only: " + HARDWARE_HINT)
    return _real_boards(request.config)


def _real_boards(config: pytest.Config) -> list[tuple[int, str, bytes]]:
    count = _count(config)
    links = _split(config.getoption("link_port"), count, "--link-port")
    ids = [int(x) for x in _split(config.getoption("node_id"), count, "--node-id")]
    keys = _keys(config.getoption("node_keys"))
    missing = [n for n in ids if n not in keys]
    if missing:
        pytest.fail(f"--node-keys: no key for node(s) {missing}; add '<node> <hex>' lines")
    return [(n, link, keys[n]) for n, link in zip(ids, links, strict=True)]
