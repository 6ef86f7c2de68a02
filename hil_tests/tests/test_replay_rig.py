"""The real-board path of world tests, proved on an emulated board treated as a real one: its
console pty stands for /dev/ttyUSB0 and its link pty for the USB-UART adapter. The rig copies
the replay file and config over the console with mpremote, resets the board, and the outcomes
on MQTT follow the World placed in time by the node's uptime alone."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from hil_tests.emulator.run import node_config
from hil_tests.emulator.scenario import load_scenario
from hil_tests.emulator.supervisor import Board
from hil_tests.rig.stack import RealBoard, Rig
from hil_tests.tests.test_scenarios import SCENARIOS, _depths_follow

pytestmark = [pytest.mark.world, pytest.mark.emulated]


def test_a_board_on_its_console_is_given_a_scenario_and_replays_it(
        rig: Rig, board_images: tuple[Path, Path], artifacts: Path) -> None:
    """mpremote writes /replay.json and the config on a running board, resets it, and its
    flood readings on MQTT follow the scenario's water within 5 mm, flagged status_replay."""
    scen = load_scenario(SCENARIOS / "flash_flood.toml")
    key = secrets.token_bytes(32)
    rom, device = board_images
    with Board(scen, {**node_config(scen, 9, "emulated", key), "traffic": 0}, console_pty=True,
               time_scale=40, state_dir=artifacts / "node-9", rom=rom,
               device_dir=device) as board:
        board.wait_for(r"node 9 boot 1")
        assert board.console_port is not None
        n = rig.add_replayed(RealBoard(9, board.console_port, board.host_port, key), scen,
                             health_s=30, dry_s=60)
        assert n.world is not None and n.replay
        with rig:
            rig.wait_scenario_s(9, 330, timeout_s=120)
            ups = rig.uplinks(9)
        assert any("SENSORS REPLAYED" in line for line in board.lines)
    healths = [u for u in ups if u.kind == "health"]
    assert healths and all(u.fields.get("status_replay") is True for u in healths)
    assert _depths_follow(rig, 9, ups) >= 5
    assert max(u.num("depth") for u in ups if u.kind == "flood" and "depth" in u.fields) > 0.1
