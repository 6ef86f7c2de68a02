"""Scenario files: the examples load, streams expand deterministically, errors name key and fix."""

import itertools
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hil_tests.emulator.scenario import (
    ScenarioError,
    Vehicle,
    VehicleStream,
    expand_stream,
    load_scenario,
    loads_scenario,
)

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
MINIMAL = 'duration_s = 60\n[site]\nh0_mm = 3000\n'


def _error(text: str) -> str:
    with pytest.raises(ScenarioError) as info:
        loads_scenario(text, "test.toml")
    return str(info.value)


def test_examples_load() -> None:
    """Every scenario file is valid; the three examples say what their names promise."""
    names = {p.stem: load_scenario(p) for p in SCENARIOS.glob("*.toml")}
    assert {"flash_flood", "rush_hour", "faults"} <= set(names)
    flood = names["flash_flood"]
    assert flood.duration_s == 900
    assert [(p.t_s, p.value) for p in flood.depth][:3] == [(0, 0), (120, 0), (720, 400)]
    assert len(flood.vehicles) >= 3
    rush = names["rush_hour"]
    assert rush.duration_s == 600 and not rush.depth and len(rush.vehicles) > 40
    assert all(20 <= v.speed_kmh <= 60 for v in rush.vehicles)
    faults = names["faults"]
    kinds = {(f.sensor, f.kind) for f in faults.faults}
    assert {("ranger", "noecho"), ("ranger", "obstruction"), ("ranger", "zero"),
            ("temp", "absent")} <= kinds
    assert len(faults.power_cuts) == 1


def test_minimal_scenario_takes_defaults() -> None:
    """Only duration and h0 are required; the rest has documented defaults."""
    s = loads_scenario(MINIMAL, "test.toml")
    assert s.name == "test"
    assert s.seed == 0
    assert s.start_utc == datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    assert s.site.h0_mm == 3000 and s.site.mag_distance_mm == 1500
    assert s.site.noise_mg == 2.0 and s.site.range_noise_mm == 2.0
    assert s.depth == () and s.vehicles == () and s.faults == () and s.power_cuts == ()


def test_points_as_pairs_or_tables() -> None:
    """depth given as [t_s, mm] pairs equals depth given as [[depth]] tables."""
    pairs = loads_scenario('duration_s = 60\ndepth = [[0, 0], [30, 100]]\n'
                           '[site]\nh0_mm = 3000\n')
    tables = loads_scenario(MINIMAL + '[[depth]]\nt_s = 0\nmm = 0\n[[depth]]\nt_s = 30\n'
                            'mm = 100\n')
    assert pairs.depth == tables.depth


def test_start_utc_forms() -> None:
    """start_utc may be a TOML date-time or an ISO 8601 string; both become UTC."""
    a = loads_scenario('start_utc = 2025-01-02T03:04:05+02:00\n' + MINIMAL)
    b = loads_scenario('start_utc = "2025-01-02T01:04:05Z"\n' + MINIMAL)
    assert a.start_utc == b.start_utc == datetime(2025, 1, 2, 1, 4, 5, tzinfo=UTC)


def test_stream_is_deterministic_and_spaced() -> None:
    """A stream expands to the same vehicles every time, within its window and gap bounds."""
    stream = VehicleStream(10.0, 500.0, 8.0, 3.0, (20.0, 60.0), (3.8, 5.2), (150.0, 400.0),
                           1, "ab", 5)
    first = expand_stream(stream)
    assert first == expand_stream(stream)
    assert first != expand_stream(VehicleStream(**{**vars(stream), "seed": 6}))
    assert all(10.0 < v.t_s <= 500.0 for v in first)
    assert all(b.t_s - a.t_s >= 3.0 - 0.002 for a, b in itertools.pairwise(first))
    assert all(20 <= v.speed_kmh <= 60 and 3.8 <= v.length_m <= 5.2 for v in first)


def test_stream_and_listed_vehicles_merge_sorted() -> None:
    """Listed vehicles and stream vehicles come out as one list sorted by time."""
    s = loads_scenario(MINIMAL + '[[vehicles]]\nt_s = 30\nspeed_kmh = 40\nlength_m = 4\n'
                       'signature_mg = 200\n[[vehicle_stream]]\nstart_s = 0\nend_s = 60\n'
                       'mean_gap_s = 5\nspeed_kmh = [30, 40]\n')
    times = [v.t_s for v in s.vehicles]
    assert times == sorted(times)
    assert Vehicle(30.0, 40.0, 4.0, 200.0, 1, "ab", "vehicles[0]") in s.vehicles
    assert any(v.origin == "vehicle_stream[0]" for v in s.vehicles)


@pytest.mark.parametrize(("text", "needles"), [
    ("duration_s = 60\n", ["test.toml: site: missing", "h0_mm"]),
    ("[site]\nh0_mm = 3000\n", ["duration_s: missing", "duration_s = <number s>"]),
    (MINIMAL + "depht = 3\n", ["site.depht: unknown key", "h0_mm"]),
    (MINIMAL + "depth = [[0, 0]]\n", ["site.depth: unknown key", "move top-level keys"]),
    ("duration_s = 60\ncolour = 1\n[site]\nh0_mm = 3000\n", ["colour: unknown key"]),
    ('duration_s = "long"\n[site]\nh0_mm = 3000\n', ["duration_s: expected a number"]),
    ("duration_s = -1\n[site]\nh0_mm = 3000\n", ["duration_s: must be > 0"]),
    ("duration_s = 60\n[site]\nh0_mm = 100\n", ["site.h0_mm: must be >= 300"]),
    ("duration_s = 60\n[site]\nh0_mm = 3000\nbaseline_a_mg = [1, 2]\n",
     ["site.baseline_a_mg: expected 3 numbers"]),
    ("duration_s = 60\ndepth = [[0, 0], [0, 5]]\n[site]\nh0_mm = 3000\n",
     ["depth[1].t_s", "rising time order"]),
    ("duration_s = 60\ndepth = [[0, 3000]]\n[site]\nh0_mm = 3000\n",
     ["depth[0].mm: must be <= 2999"]),
    ("duration_s = 60\ndepth = [[0]]\n[site]\nh0_mm = 3000\n", ["depth[0]: expected [t_s, mm]"]),
    ('start_utc = "2025-01-01T00:00:00"\n' + MINIMAL, ["start_utc: has no UTC offset", "Z"]),
    ('start_utc = "soon"\n' + MINIMAL, ["start_utc", "ISO 8601"]),
    (MINIMAL + '[[faults]]\nsensor = "temp"\nkind = "noecho"\nt_s = 1\nuntil_s = 2\n',
     ["faults[0].kind: 'noecho' is not a fault sensor temp can have", "absent, stuck"]),
    (MINIMAL + '[[faults]]\nsensor = "wind"\nkind = "zero"\nt_s = 1\nuntil_s = 2\n',
     ["faults[0].sensor", "ranger, temp, mag_a, mag_b"]),
    (MINIMAL + '[[faults]]\nsensor = "ranger"\nkind = "zero"\nt_s = 5\nuntil_s = 5\n',
     ["faults[0].until_s: 5 is not after t_s = 5"]),
    (MINIMAL + '[[faults]]\nsensor = "ranger"\nkind = "zero"\nt_s = 5\nuntil_s = 9\n'
     '[[faults]]\nsensor = "ranger"\nkind = "noecho"\nt_s = 8\nuntil_s = 12\n',
     ["faults[1]: overlaps faults[0] on sensor ranger"]),
    (MINIMAL + "[[power_cuts]]\nt_s = 10\noff_s = 10\n[[power_cuts]]\nt_s = 15\noff_s = 1\n",
     ["power_cuts", "still off"]),
    (MINIMAL + "[[power_cuts]]\nt_s = 10\noff_s = 0\n", ["power_cuts[0].off_s: must be > 0"]),
    (MINIMAL + "[[vehicles]]\nt_s = 10\nspeed_kmh = 0\nlength_m = 4\nsignature_mg = 1\n",
     ["vehicles[0].speed_kmh: must be >= 1"]),
    (MINIMAL + "[[vehicles]]\nt_s = 99\nspeed_kmh = 30\nlength_m = 4\nsignature_mg = 1\n",
     ["vehicles[0].t_s: must be <= 60"]),
    (MINIMAL + '[[vehicles]]\nt_s = 9\nspeed_kmh = 30\nlength_m = 4\nsignature_mg = 1\n'
     'direction = "up"\n', ["vehicles[0].direction", "ab, ba"]),
    (MINIMAL + "[[vehicle_stream]]\nstart_s = 0\nend_s = 50\nmean_gap_s = 2\n"
     "speed_kmh = [20, 30]\n", ["vehicle_stream[0].mean_gap_s: 2 is below min_gap_s = 3"]),
    (MINIMAL + "[[vehicle_stream]]\nstart_s = 0\nend_s = 50\nmean_gap_s = 9\n",
     ["vehicle_stream[0].speed_kmh: missing"]),
    (MINIMAL + "[[vehicle_stream]]\nstart_s = 0\nend_s = 50\nmean_gap_s = 9\n"
     "speed_kmh = [60, 20]\n", ["vehicle_stream[0].speed_kmh", "0 < min <= max"]),
    ("duration_s = = 3\n", ["test.toml: not valid TOML", "line 1"]),
])
def test_invalid_scenarios_name_the_key(text: str, needles: list[str]) -> None:
    """Each invalid scenario fails with a message naming the file, the key and the fix."""
    message = _error(text)
    assert message.startswith("test.toml: ")
    for needle in needles:
        assert needle in message, message


def test_missing_file_names_path(tmp_path: Path) -> None:
    """A missing file is named, with an example of a good path."""
    with pytest.raises(ScenarioError, match=r"nope\.toml: cannot read.*flash_flood\.toml"):
        load_scenario(tmp_path / "nope.toml")


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    """Errors from load_scenario carry the file's path."""
    path = tmp_path / "bad.toml"
    path.write_text(MINIMAL + "[[faults]]\nsensor = 'ranger'\nkind = 'absent'\nt_s = 1\n"
                    "until_s = 2\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value).startswith(f"{path}: faults[0].kind:")
