"""Tests of hil_tests/emulator/replay_file.py: what a board can take, and the refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil_tests.emulator import replay_file
from hil_tests.emulator.scenario import load_scenario

TRAFFIC = """
name = "jam"
duration_s = {duration}
start_utc = "2025-09-03T07:30:00Z"
seed = 3
{curve}
[site]
h0_mm = 3200

[[vehicle_stream]]
start_s = 5
end_s = {end}
mean_gap_s = 3.0
min_gap_s = 2.0
speed_kmh = [20, 60]
length_m = [3.8, 5.2]
signature_mg = [150, 400]
seed = 7
"""


def _scenario(tmp_path: Path, duration: int, curve: str = "") -> Path:
    path = tmp_path / "jam.toml"
    path.write_text(TRAFFIC.format(duration=duration, end=duration - 10, curve=curve))
    return path


def test_a_day_of_traffic_fits_since_the_vehicles_stay_on_flash(tmp_path: Path) -> None:
    """Two hours of a vehicle every 3 s: more than the 16 KB the whole file was once bound
    to, fine now that only its JSON line is parsed at boot."""
    sc = load_scenario(_scenario(tmp_path, 7200))
    data = replay_file.replay_json(sc)
    assert len(data) > 16384 and data.index(b"\n") < replay_file.MAX_HEAD_BYTES


def test_too_many_vehicles_or_curve_points_are_refused_naming_the_fix(tmp_path: Path) -> None:
    """Past the flash share: shorten the vehicle streams; a JSON line past what a board
    parses: fewer curve points."""
    with pytest.raises(replay_file.ReplayFileError, match="shorten its vehicle streams"):
        replay_file.replay_json(load_scenario(_scenario(tmp_path, 200_000)))
    points = ", ".join(f"[{t}, {20 + t % 7}.5]" for t in range(0, 600, 1))
    with pytest.raises(replay_file.ReplayFileError, match="give its curves fewer points"):
        replay_file.replay_json(load_scenario(_scenario(tmp_path, 600,
                                                        f"air_temp = [{points}]")))
