"""Scenario outcomes as they reach MQTT: the real firmware on emulated boards, through the
null-modem relay, the real gateway and Mosquitto, decoded from SenML.

Times: the gateway sets a node's clock at its hello; the board's virtual clock runs
time_scale times faster, so `Rig.scenario_s` maps a node's time stamp back to the scenario's
virtual seconds through that hello.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hil_tests.rig.stack import Rig
from hil_tests.rig.uplinks import Uplink

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"

pytestmark = [pytest.mark.world, pytest.mark.emulated]


def _synced(ups: list[Uplink], kind: str) -> list[Uplink]:
    return [u for u in ups if u.kind == kind and "unsynced" not in u.fields]


def test_flash_flood_depths_and_alarms_on_mqtt(rig: Rig) -> None:
    """0 to 400 mm in 10 minutes: depths within 5 mm of the water, a crossing alarm per level
    within 20 s of the water reaching it, the 200 mm level predicted over a minute ahead."""
    rig.time_scale = 40.0
    n = rig.add_board(1, SCENARIOS / "flash_flood.toml", traffic=0, levels_mm=[76, 200],
                      dry_s=60)
    assert n.board is not None and n.world is not None
    with rig:
        n.board.wait_until_ms(900_000, timeout_s=180)
        rig.wait_drained(1)
        ups = rig.uplinks(1)
    floods = _synced(ups, "flood")
    assert len(floods) >= 30, f"only {len(floods)} flood readings"
    clean = [u for u in floods if u.num("flags") == 0]
    assert len(clean) >= 0.8 * len(floods)
    for u in clean:
        s = rig.scenario_s(u)
        truth = n.world.depth_mm(s)
        assert abs(u.num("depth") * 1000 - truth) <= 5, (s, u.fields, truth)
    alarms = _synced(ups, "alarm")
    for level in (76, 200):
        crossing_s = 120.0 + level * 600.0 / 400.0
        crossed = [a for a in alarms if a.text("alarm") == "crossed"
                   and round(a.num("level") * 1000) == level]
        assert len(crossed) == 1, [a.fields for a in alarms]
        late = rig.scenario_s(crossed[0]) - crossing_s
        assert -2 <= late <= 20, f"crossed {level} mm {late:.0f} s after the water did"
        if level == 200:
            predicted = [a for a in alarms if a.text("alarm") == "predicted"
                         and round(a.num("level") * 1000) == level]
            assert len(predicted) == 1, [a.fields for a in alarms]
            assert rig.scenario_s(predicted[0]) < crossing_s - 60
            assert predicted[0].num("eta") > 0
    acc = rig.account()
    assert not any(acc.missing.values()) and not acc.conflicts, acc.summary()
