"""CPython only: the replay driver on files made from real scenarios, against hil_tests' World
(the truth the emulated board answers from) at the same scenario times."""

import math
from pathlib import Path

import pytest

from firmware import replay
from firmware.ranger import tof_to_range_mm
from hil_tests.emulator.replay_file import replay_json
from hil_tests.emulator.scenario import load_scenario
from hil_tests.emulator.world import SR04T_NOECHO_US, World

SCENARIOS = Path(__file__).resolve().parents[2] / "hil_tests" / "scenarios"


class _Clock:
    """Scenario ms for the driver's ticks_ms."""

    ms = 0

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    c = _Clock()
    monkeypatch.setattr(replay, "ticks_ms", c)
    return c


class _Board:
    BATTERY_DIVIDER = 2


def _load(name: str, tmp_path: Path) -> tuple[replay.Replay, World]:
    scen = load_scenario(SCENARIOS / f"{name}.toml")
    path = tmp_path / "replay.json"
    path.write_bytes(replay_json(scen))
    return replay.Replay(str(path), 0, _Board), World(scen)


def _sr04t(echo_us: int) -> int:
    """What ranger.SR04T.ping makes of the World's echo width."""
    return 0 if echo_us == -2 else -1 if echo_us >= 35000 else echo_us


@pytest.mark.parametrize("name", ["flash_flood", "hot_afternoon", "receding", "faults"])
def test_depth_temperature_battery_and_ranger_faults_follow_the_world(
        name: str, tmp_path: Path, clock: _Clock) -> None:
    """Every 0.997 s: depth from the echo within 4 sd of the water, the DS18B20 as the
    World's, the battery to the uV, and each ranger and temp fault where the World has it."""
    rp, world = _load(name, tmp_path)
    sd = world.scenario.site.range_noise_mm
    for ms in range(0, round(world.scenario.duration_s * 1000), 997):
        clock.ms = ms
        kind = world.fault("ranger", ms)
        tof = rp.ping()
        if kind in (None, "hang"):
            cc = rp.read_cc() if rp.start() else None
            if cc is None:          # DS18B20 absent: compensate with the true air
                cc = round(world.air_temp_c(ms / 1000) * 100)
            got = tof_to_range_mm(tof, cc)
            assert abs(got - world.range_mm(ms / 1000)) <= 4 * sd + 1, (ms, got)
        elif kind != "stuck":
            assert tof == _sr04t(world.echo_us(ms)) or (kind == "obstruction" and tof == 1456), \
                (ms, kind, tof)
        rp.start()
        temp = world.temp_c(ms)
        cc = rp.read_cc()
        assert (cc is None) == (temp is None), (ms, cc, temp)
        if temp is not None and cc is not None:
            assert abs(cc - temp * 100) <= 1, (ms, cc, temp)
        assert abs(rp.read_uv() - world.battery_uv(ms)) <= 1
    assert _sr04t(SR04T_NOECHO_US) == -1


@pytest.mark.parametrize("name", ["rain_traffic", "faults", "rush_hour"])
def test_vehicles_pass_a_then_b_when_the_world_has_them(
        name: str, tmp_path: Path, clock: _Clock) -> None:
    """Per vehicle: the field deviation peaks within 20 ms + sd / 4 of its centre passing each
    magnetometer (B first for "ba"), within 3.5 sd + 2 mG of the World's field there; faults
    (absent, zero, stuck) where the World has them."""
    rp, world = _load(name, tmp_path)
    noise = world.scenario.site.noise_mg
    mags = dict(zip("ab", rp.mags(), strict=True))
    out = [0, 0, 0]
    for p in world.passages:
        for which, centre_s in (("a", p.centre_a_s), ("b", p.centre_b_s)):
            c_ms = round(centre_s * 1000)
            if world.fault("mag_" + which, c_ms) is not None:
                continue
            base = world.mag_field_mg(which, -1000.0)
            best = (0.0, 0)
            for ms in range(c_ms - 400, c_ms + 400, 10):
                clock.ms = ms
                assert mags[which].read_mg(out)
                truth = world.mag_field_mg(which, ms / 1000)
                assert all(abs(out[i] - truth[i]) <= 3.5 * noise + 2 for i in range(3)), \
                    (p.origin, which, ms, out, truth)
                dev = math.dist(out, base)
                best = max(best, (dev, ms))
            # a slow vehicle's flat peak: noise moves the highest sample by a part of its sd
            sd_ms = p.length_m / 4 / (p.speed_kmh / 3600)
            assert abs(best[1] - c_ms) <= 20 + sd_ms / 4, (p.origin, which, best, c_ms)
    for f in world.scenario.faults:
        if not f.sensor.startswith("mag"):
            continue
        m = mags[f.sensor[-1]]
        seen: list[tuple[int, ...] | None] = []
        for ms in range(round(f.t_s * 1000), round(f.until_s * 1000), 250):
            clock.ms = ms
            try:
                m.read_mg(out)
                seen.append(tuple(out))
            except OSError:
                seen.append(None)
        want = {"absent": {None}, "zero": {(0, 0, 0)}}.get(f.kind)
        assert set(seen) == want if want else len(set(seen)) == 1, (f, set(seen))
