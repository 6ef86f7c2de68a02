# The scenario-replay driver on a small hand-made replay file: echo physics, noise, fault
# windows, a vehicle's bumps, battery, bad files. The clock is firmware.replay's module
# global ticks_ms, set by each test. Shared: runs under pytest and on MicroPython.
# (test_host_replay.py checks real scenarios against hil_tests' World.)

import gc
import json
import math
import struct

from firmware import replay
from firmware.ranger import tof_to_range_mm
from firmware.tests.scratch import fresh, wipe

_NOW = [0]


class _Board:
    BATTERY_DIVIDER = 2


replay.ticks_ms = lambda: _NOW[0]

DATA = {
    "v": 1, "name": "unit", "seed": 5, "h0": 3000000, "rn": 2000, "mn": 2000,
    "ga": [180, -40, 420], "gb": [175, -35, 425],
    "depth": [0, 0, 100000, 400000], "air": [0, 20000, 100000, 40000],
    "bat": [0, 3900, 100000, 3500],
    "flt": [0, 1, 10000, 20000, 0, 2, 20000, 30000, 0, 3, 30000, 40000, 0, 4, 60000, 70000,
            1, 5, 40000, 44000, 1, 4, 45000, 50000, 3, 5, 80000, 90000, 2, 3, 80000, 85000,
            2, 4, 90000, 95000],
    "veh": [50000, 50200, 100, 60, 0, 300],
}
_ORDER = ("v", "name", "seed", "h0", "rn", "mn", "ga", "gb", "depth", "air", "bat", "flt")


def _file(data):
    # as hil_tests/emulator/replay_file.encode writes it: a JSON list, veh as int32 LE
    veh = data["veh"]
    head = [data[k] for k in _ORDER] + [len(veh)]
    return json.dumps(head).encode() + b"\n" + struct.pack("<%di" % len(veh), *veh)


def _with(**kw):
    d = {}
    for k in DATA:
        d[k] = kw[k] if k in kw else DATA[k]
    return d


def _replay(data=None, text=None):
    d = fresh("replay")
    try:
        with open(d + "/replay.json", "wb") as f:
            f.write(text if text is not None else _file(data or DATA))
        return replay.Replay(d + "/replay.json", 0, _Board)
    finally:
        wipe(d)


def _at(ms):
    _NOW[0] = ms


def test_echo_gives_the_range_at_the_air_temperature():
    """Range from each echo, compensated with the replayed DS18B20, is h0 - depth within
    3 sd of the noise, at 20 to 40 C and 0 to 400 mm."""
    rp = _replay()
    for ms in (0, 5000, 51000, 55000, 75000, 99000, 120000):
        _at(ms)
        assert rp.start()
        cc = rp.read_cc()
        truth = 20 + 20 * min(ms, 100000) / 100000
        assert abs(cc / 100 - truth) <= 0.04, (ms, cc)
        depth = 400 * min(ms, 100000) / 100000
        got = tof_to_range_mm(rp.ping(), cc)
        assert abs(got - (3000 - depth)) <= 7, (ms, got, depth)


def test_noise_is_deterministic_with_the_scenario_sd():
    """2000 readings: mean within 0.2 mm, sd within 15 % of the 2 mm; the same ms gives
    the same reading."""
    rp = _replay(_with(depth=[0, 0], air=[0, 20000]))
    n = s1 = s2 = 0
    for ms in range(0, 100000, 50):
        if 10000 <= ms < 40000 or 60000 <= ms < 70000:
            continue
        _at(ms)
        v = tof_to_range_mm(rp.ping(), 2000) - 3000
        n += 1
        s1 += v
        s2 += v * v
    mean = s1 / n
    sd = math.sqrt(s2 / n - mean * mean)
    assert abs(mean) <= 0.2 and 1.7 <= sd <= 2.3, (mean, sd)
    _at(777)
    a = rp.ping()
    assert rp.ping() == a


def test_ranger_and_temperature_faults_in_their_windows():
    """noecho -1, obstruction the 250 mm minimum, zero 0, stuck the last reading; the
    DS18B20 absent then stuck; all end with their windows."""
    rp = _replay()
    _at(9999)
    assert rp.ping() > 0
    for ms, want in ((10000, -1), (19999, -1), (20000, 1456), (30000, 0), (39999, 0)):
        _at(ms)
        assert rp.ping() == want, ms
    _at(59999)
    last = rp.ping()
    for ms in (60000, 65000, 69999):
        _at(ms)
        assert rp.ping() == last
    _at(70000)
    assert rp.ping() != last
    _at(40000)
    assert not rp.start() and rp.read_cc() is None
    _at(44000)
    assert rp.start() and rp.read_cc() is not None
    _at(44999)
    before = rp.start() and rp.read_cc()
    _at(49000)
    assert rp.start() and rp.read_cc() == before
    _at(50000)
    assert rp.read_cc() != before


def test_a_vehicle_bumps_a_then_b_and_faults_hold():
    """The bump peaks at its centre at A, 200 ms later at B, about 306 mG; the baseline
    within noise elsewhere; mag faults: absent raises, zero reads 0, stuck repeats."""
    rp = _replay()
    a, b = rp.mags()
    out = [0, 0, 0]
    peak = [[0, 0], [0, 0]]
    for ms in range(49000, 51500, 20):
        _at(ms)
        for k, m in ((0, a), (1, b)):
            assert m.read_mg(out)
            base = DATA["gb" if k else "ga"]
            dev = math.sqrt(sum((out[i] - base[i]) ** 2 for i in range(3)))
            if dev > peak[k][0]:
                peak[k] = [dev, ms]
    assert abs(peak[0][1] - 50000) <= 40 and abs(peak[1][1] - 50200) <= 40, peak
    assert 295 <= peak[0][0] <= 318 and 295 <= peak[1][0] <= 318, peak
    _at(30000)
    a.read_mg(out)
    assert all(abs(out[i] - DATA["ga"][i]) <= 10 for i in range(3)), out
    _at(80000)
    assert a.read_mg(out) and out == [0, 0, 0]
    try:
        b.read_mg(out)
        raise AssertionError("absent B answered")
    except OSError:
        pass
    _at(89999)
    a.read_mg(out)
    stuck = list(out)
    _at(92000)
    a.read_mg(out)
    assert out == stuck
    _at(95000)
    assert b.read_mg(out) and out != stuck


def _allocated(mags, t0, t1):
    # heap bytes taken by reading every magnetometer every 20 ms from t0 to t1 (0 where gc
    # does not count: CPython)
    if not hasattr(gc, "mem_alloc"):
        return 0
    out = [0, 0, 0]
    _at(t0)
    for m in mags:
        m.read_mg(out)
    gc.collect()
    before = gc.mem_alloc()
    for ms in range(t0, t1, 20):
        _at(ms)
        for m in mags:
            m.read_mg(out)
    return gc.mem_alloc() - before


def test_magnetometer_reads_allocate_nothing():
    """read_mg in the traffic loop's hot path takes no heap (MicroPython's gc counts)."""
    a, _ = _replay().mags()
    assert _allocated([a], 49000, 51000) == 0


def test_many_vehicles_are_read_from_the_file_as_the_road_passes():
    """40 vehicles (more than the 16 of the window read from flash): at each centre the
    field is the baseline plus that vehicle's bump exactly (no noise, no overlap), at A and
    B alike, also after time went back; the reads allocate nothing across window reads."""
    veh = []
    for k in range(40):
        ca = 10000 + 1000 * k
        veh += [ca, ca + 200, 100, 10 + k, -k, 300 + k]
    rp = _replay(_with(veh=veh, mn=0, flt=[]))
    a, b = rp.mags()
    out = [0, 0, 0]

    def check(k):
        ca = 10000 + 1000 * k
        _at(ca)
        assert a.read_mg(out) and out == [180 + 10 + k, -40 - k, 420 + 300 + k], (k, out)
        _at(ca + 200)
        assert b.read_mg(out) and out == [175 + 10 + k, -35 - k, 425 + 300 + k], (k, out)

    for k in range(40):
        check(k)
    for k in (3, 30, 7):                  # back in time: the window is read again
        check(k)
    assert _allocated([a, b], 9000, 52000) == 0


def test_battery_follows_its_curve_behind_the_divider():
    """read_uv is the battery mV behind the board's divider of 2."""
    rp = _replay()
    for ms, mv in ((0, 3900), (50000, 3700), (200000, 3500)):
        _at(ms)
        assert abs(rp.read_uv() * 2 // 1000 - mv) <= 1, (ms, rp.read_uv())


def test_bad_files_raise_for_main_to_report():
    """No file: OSError; not JSON, another version, a cut array or file: ValueError."""
    try:
        replay.Replay("/nonexistent/replay.json", 0, _Board)
        raise AssertionError("opened a missing file")
    except OSError:
        pass
    for text in (b"{nope\n", _file(_with(v=2)), _file(_with(veh=[1, 2])),
                 _file(_with(depth=[0])), _file(DATA)[:-4]):
        try:
            _replay(text=text)
            raise AssertionError("accepted " + repr(text[:40]))
        except ValueError:
            pass
