"""The world model: sensor readings follow the physics and the faults, exactly and repeatably."""

import math
import statistics
import struct
from pathlib import Path

import pytest

from hil_tests.emulator.scenario import Scenario, load_scenario, loads_scenario
from hil_tests.emulator.world import (
    MB_SOUND_M_S,
    SR04T_NOECHO_US,
    World,
    echo_width_us,
    sound_speed_m_s,
)

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
QUIET_SITE = ("[site]\nh0_mm = 3000\nmag_distance_mm = 1500\nnoise_mg = 0\nrange_noise_mm = 0\n"
              "baseline_a_mg = [100, -50, 400]\nbaseline_b_mg = [110, -40, 390]\n"
              "battery_mv = 3900\n")


def _world(top: str = "", tail: str = "", seed: int = 0) -> World:
    """A noiseless 100 s world with the given top-level keys and trailing tables."""
    text = f"duration_s = 100\nseed = {seed}\n{top}\n{QUIET_SITE}\n{tail}"
    return World(loads_scenario(text, "test.toml"))


def _noisy(seed: int) -> Scenario:
    return loads_scenario(f"duration_s = 100\nseed = {seed}\n[site]\nh0_mm = 3000\n")


def test_speed_of_sound() -> None:
    """c(T) = 331.3 * sqrt(1 + T / 273.15): 331.3 m/s at 0 C, about 343.2 at 20 C."""
    assert sound_speed_m_s(0.0) == 331.3
    assert sound_speed_m_s(20.0) == pytest.approx(343.21, abs=0.01)
    assert sound_speed_m_s(35.0) == pytest.approx(331.3 + 0.606 * 35, abs=1.0)


def test_echo_width_is_time_of_flight() -> None:
    """The SR04T echo is the round trip at the air temperature's speed of sound."""
    w = _world("air_temp = [[0, 30.0]]\ndepth = [[0, 0], [100, 1000]]")
    assert w.echo_us(0) == round(2000 * 3000 / sound_speed_m_s(30.0))
    assert w.echo_us(50_000) == round(echo_width_us(2500.0, 30.0))
    assert w.echo_us(100_000) == round(echo_width_us(2000.0, 30.0))
    assert w.echo_us(500_000) == w.echo_us(100_000)            # flat after the last point


def test_echo_dead_zone_and_beyond_range() -> None:
    """Closer than 250 mm reads as the 250 mm minimum; beyond 6 m there is no echo."""
    w = _world("depth = [[0, 2900]]")
    assert w.echo_us(0) == round(2000 * 250 / MB_SOUND_M_S) == 1456
    far = World(loads_scenario("duration_s = 9\n[site]\nh0_mm = 7000\nrange_noise_mm = 0\n"))
    assert far.echo_us(0) == SR04T_NOECHO_US


def test_ranger_faults() -> None:
    """noecho, obstruction, zero and stuck change both rangers' readings inside their window."""
    faults = "".join(
        f'[[faults]]\nsensor = "ranger"\nkind = "{k}"\nt_s = {t}\nuntil_s = {t + 10}\n'
        for k, t in (("noecho", 10), ("obstruction", 30), ("zero", 50), ("stuck", 70)))
    w = _world("depth = [[0, 0], [100, 1000]]", faults)
    assert (w.echo_us(15_000), w.mb7389_mm(15_000)) == (38000, 5000)
    assert (w.echo_us(35_000), w.mb7389_mm(35_000)) == (1456, 300)
    assert (w.echo_us(55_000), w.mb7389_mm(55_000)) == (-2, 0)
    assert w.echo_us(75_000) == w.echo_us(79_999) == w.echo_us(69_999) != w.echo_us(80_000)
    assert w.mb7389_mm(75_000) == w.mb7389_mm(69_999)
    assert w.echo_us(9_999) == round(echo_width_us(w.range_mm(9.999), 20.0))
    assert w.fault("ranger", 10_000) == "noecho" and w.fault("ranger", 20_000) is None


def test_mb7389_reads_at_fixed_speed_of_sound() -> None:
    """MB7389 mm = time of flight * 343.4 / 2; converting back with c(T) gives the range."""
    w = _world("air_temp = [[0, 35.0]]\ndepth = [[0, 500]]")
    mm = w.mb7389_mm(0)
    assert mm == round(2500 * MB_SOUND_M_S / sound_speed_m_s(35.0))
    assert mm * sound_speed_m_s(35.0) / MB_SOUND_M_S == pytest.approx(2500, abs=1)
    assert mm < 2500                      # hot air: sound is faster, the fixed-c reading is short
    assert _world("depth = [[0, 2800]]").mb7389_mm(0) == 300
    big = World(loads_scenario("duration_s = 9\n[site]\nh0_mm = 5500\nrange_noise_mm = 0\n"))
    assert big.mb7389_mm(0) == 5000


def test_temperature_quantised_and_absent() -> None:
    """DS18B20 reads the air temperature in 1/16 C steps; absent gives None; stuck holds."""
    w = _world("air_temp = [[0, 20.0], [100, 30.0]]",
               '[[faults]]\nsensor = "temp"\nkind = "absent"\nt_s = 40\nuntil_s = 50\n'
               '[[faults]]\nsensor = "temp"\nkind = "stuck"\nt_s = 60\nuntil_s = 90\n')
    assert w.temp_c(0) == 20.0
    t = w.temp_c(33_000)
    assert t is not None and (t * 16) == int(t * 16) and abs(t - 23.3) <= 1 / 32
    assert w.temp_c(45_000) is None and w.answer(b"T 45000") == b"none"
    assert w.temp_c(85_000) == w.temp_c(59_999) == 26.0
    assert w.answer(b"T 33000") == repr(t).encode()


def test_magnetometer_baseline_in_counts() -> None:
    """With no vehicle each magnetometer reads its earth field at 3 counts per mG."""
    w = _world()
    assert w.mag_raw("a", 1234) == (300, -150, 1200)
    assert w.mag_raw("b", 1234) == (330, -120, 1170)
    assert w.answer(b"G a 1234") == b"300 -150 1200"


def test_vehicle_bump_at_a_then_b() -> None:
    """A vehicle's bump peaks at its centre over A, then over B mag_distance / speed later."""
    w = _world("", "[[vehicles]]\nt_s = 20\nspeed_kmh = 36\nlength_m = 4\nsignature_mg = 300\n")
    (p,) = w.passages
    assert p.front_a_s == 20 and p.centre_a_s == pytest.approx(20.2)
    assert p.front_b_s == pytest.approx(20.15) and p.centre_b_s == pytest.approx(20.35)
    assert p.leave_a_s == pytest.approx(20.4)

    def deviation(which: str, v_ms: int) -> float:
        raw = w.mag_raw(which, v_ms)
        base = w.mag_raw(which, 0)
        assert raw is not None and base is not None
        return math.dist(raw, base) / 3.0

    assert deviation("a", 20_200) == pytest.approx(300, abs=1)
    assert deviation("b", 20_350) == pytest.approx(300, abs=1)
    assert deviation("b", 20_200) < 100                 # B has not seen it yet
    assert deviation("a", 19_000) == 0 and deviation("a", 21_500) == 0
    peak_a = max(range(19_000, 22_000), key=lambda t: deviation("a", t))
    peak_b = max(range(19_000, 22_000), key=lambda t: deviation("b", t))
    assert abs(peak_a - 20_200) <= 5 and abs(peak_b - 20_350) <= 5   # counts are integers


def test_vehicle_against_the_lane() -> None:
    """direction = "ba": the vehicle passes B before A."""
    w = _world("", "[[vehicles]]\nt_s = 20\nspeed_kmh = 36\nlength_m = 4\nsignature_mg = 300\n"
               'direction = "ba"\n')
    (p,) = w.passages
    assert p.centre_b_s < p.centre_a_s
    assert p.centre_a_s - p.centre_b_s == pytest.approx(0.15)


def test_magnetometer_faults_and_clamp() -> None:
    """absent -> None (OSError 19 on the board), zero -> 0 0 0, counts clamp at int16."""
    w = _world("", '[[faults]]\nsensor = "mag_b"\nkind = "absent"\nt_s = 10\nuntil_s = 20\n'
               '[[faults]]\nsensor = "mag_a"\nkind = "zero"\nt_s = 10\nuntil_s = 20\n'
               '[[faults]]\nsensor = "mag_a"\nkind = "stuck"\nt_s = 30\nuntil_s = 40\n'
               "[[vehicles]]\nt_s = 35\nspeed_kmh = 36\nlength_m = 4\nsignature_mg = 300\n"
               "[[vehicles]]\nt_s = 60\nspeed_kmh = 36\nlength_m = 4\nsignature_mg = 15000\n")
    assert w.mag_raw("b", 15_000) is None and w.answer(b"G b 15000") == b"none"
    assert w.mag_raw("a", 15_000) == (0, 0, 0)
    assert w.mag_raw("a", 35_200) == w.mag_raw("a", 0)        # stuck: misses the vehicle
    assert w.mag_raw("b", 35_350) != w.mag_raw("b", 0)
    big = w.mag_raw("a", 60_200)
    assert big is not None and 32767 in big


def test_battery_at_the_pin() -> None:
    """The ADC pin sees the battery through the board's divider, in µV."""
    w = _world()
    assert w.battery_uv(0) == 1_950_000
    assert World(w.scenario, battery_divider=3.0).battery_uv(0) == 1_300_000
    sag = _world("battery = [[0, 4000], [100, 3000]]")
    assert sag.battery_uv(50_000) == 1_750_000 and sag.battery_mv(50.0) == 3500


def test_noise_is_seeded_and_sized() -> None:
    """Noise repeats for the same seed, changes with it, and has about the asked size."""
    a, b, c = World(_noisy(1)), World(_noisy(1)), World(_noisy(2))
    times = range(0, 20_000, 7)
    assert [a.echo_us(t) for t in times] == [b.echo_us(t) for t in times]
    assert [a.echo_us(t) for t in times] != [c.echo_us(t) for t in times]
    ranges = [a.mb7389_mm(t) * sound_speed_m_s(20.0) / MB_SOUND_M_S for t in times]
    assert 1.5 < statistics.stdev(ranges) < 2.6                   # 2 mm asked
    assert abs(statistics.mean(ranges) - 3000) < 0.5
    xs = [a.mag_raw("a", t)[0] / 3 for t in times]  # type: ignore[index]
    assert 1.6 < statistics.stdev(xs) < 2.4                        # 2 mG asked


def test_truth_matches_the_example() -> None:
    """The flash flood's truth: dry for 2 minutes, 400 mm at 12 minutes, cars listed."""
    w = World(load_scenario(SCENARIOS / "flash_flood.toml"))
    assert w.depth_mm(60) == 0 and w.depth_mm(420) == 200 and w.depth_mm(720) == 400
    assert w.range_mm(720) == 2600
    assert w.utc(60).isoformat() == "2025-09-02T16:01:00+00:00"
    assert [p.origin for p in w.passages_between(0, 100)] == ["vehicles[0]", "vehicles[1]"]


def test_magnetometer_slots_in_binary() -> None:
    """g a|b <v> <period> <n>: n samples period ms apart, 7 bytes each; absent ones zero."""
    w = _world("[[faults]]\nsensor = \"mag_b\"\nkind = \"absent\"\nt_s = 15\nuntil_s = 16\n",
               "[[vehicles]]\nt_s = 1\nspeed_kmh = 36\nlength_m = 4\nsignature_mg = 300\n")
    got = w.answer(b"g a 900 5 64")
    assert len(got) == 64 * 7
    for i in range(64):
        xyz = w.mag_raw("a", 900 + 5 * i)
        assert xyz is not None and struct.unpack_from("<Bhhh", got, 7 * i) == (1, *xyz)
    got = w.answer(b"g b 14990 5 4")
    xyz = w.mag_raw("b", 14990)
    assert xyz is not None and got[:7] == struct.pack("<Bhhh", 1, *xyz)
    assert got[14:] == bytes(14)                  # 15000 and 15005: absent


@pytest.mark.parametrize("request_line", [b"", b"X 1", b"E", b"E soon", b"G c 5", b"G a",
                                          b"W 1 1000", b"g c 1 5 4", b"g a 1 5 0",
                                          b"g a 1 5 65", b"g a 1 0 4", b"g a 1 5"])
def test_bad_queries_get_err(request_line: bytes) -> None:
    """Malformed or unknown queries (and W, the supervisor's) get an `err` reply."""
    assert _world().answer(request_line).startswith(b"err ")


def test_query_replies() -> None:
    """E, M, T, G, B replies are plain ASCII numbers."""
    w = _world("air_temp = [[0, 31.25]]")
    assert w.answer(b"E 10") == b"%d" % w.echo_us(10)
    assert w.answer(b"M 10") == b"%d" % w.mb7389_mm(10)
    assert w.answer(b"T 10") == b"31.25"
    assert w.answer(b"B 10") == b"1950000"
    assert w.answer(b"G b 10") == b"330 -120 1170"
