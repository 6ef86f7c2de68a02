# Shared tests for firmware/flood.py: plain asserts, run by pytest and on MicroPython (64 KB).

import math

from firmware.flood import DRY, RECEDING, RISING, WET, Flood, tof_to_range_mm
from protocol.messages import (
    ALARM_CLEARED,
    ALARM_CROSSED,
    ALARM_PREDICTED,
    ALARM_RATE,
    FLAG_BLIP,
    FLAG_BOX,
    FLAG_GRADIENT,
    FLAG_INVALID,
    FLAG_MINRANGE,
    FLAG_NOECHO,
    FLAG_NOTEMP,
    FLAG_RANGE,
    FLAG_SHORT,
    FLAG_ZERO,
)

_H0 = 3000
_FILTERS = FLAG_RANGE | FLAG_BLIP | FLAG_BOX | FLAG_GRADIENT | FLAG_SHORT
_FAULTS = FLAG_ZERO | FLAG_MINRANGE | FLAG_NOECHO | FLAG_INVALID
_TOFS = [None] * 11


def _tof(range_mm, temp_cc=2000):
    # Round-trip time of flight in us for a range at an air temperature (test's own formula).
    c = 331.3 * math.sqrt(1 + temp_cc / 27315.0)
    return int(2000.0 * range_mm / c + 0.5)


_MIN_TOF = _tof(250)     # JSN-SR04T dead zone, 250 mm at 20 C


def _flood(**kw):
    s = {"h0_mm": _H0, "burst": 7, "levels_mm": [76, 200, 400], "lead_s": 600,
         "hysteresis_mm": 20, "rate_limit_ums": 1000, "dry_s": 300, "wet_s": 60,
         "rising_s": 15}
    s.update(kw)
    return Flood(s)


def _pings(f, t_ms, values, temp_cc=2000):
    for i in range(len(values)):
        _TOFS[i] = values[i]
    return f.reading(t_ms, _TOFS, len(values), temp_cc, _MIN_TOF)


def _feed(f, t_s, depth_mm):
    # Seven identical echoes for a water depth at 20 C.
    v = _tof(_H0 - depth_mm)
    for i in range(7):
        _TOFS[i] = v
    return f.reading(t_s * 1000, _TOFS, 7, 2000, _MIN_TOF)


def _dq(d):
    # (depth_mm, flags) of a reading
    return d[0], d[3]


def _kinds(f, level):
    return [a[0] for a in f.alarms if a[1] == level]


def test_compensation_3000mm_at_35c_vs_20c():
    """A 3000 mm range at 35 C is 3000 mm compensated and about 74 mm short assumed at 20 C."""
    t = _tof(3000, 3500)
    assert abs(tof_to_range_mm(t, 3500) - 3000) <= 1
    assert 70 <= 3000 - tof_to_range_mm(t, 2000) <= 78
    assert abs(tof_to_range_mm(_tof(1000), 2000) - 1000) <= 1
    f = _flood()
    d = _pings(f, 0, [t] * 7, 3500)
    assert abs(d[0]) <= 10 and abs(d[1] - 3000) <= 1 and d[2] == 3500 and d[3] == 0
    d = _pings(f, 15000, [t] * 7, 2000)     # same echo, cooler air: shorter range
    assert 70 <= 3000 - d[1] <= 78
    d = _pings(_flood(), 0, [t] * 7, None)
    assert d[3] == FLAG_NOTEMP and d[2] is None and 70 <= d[0] <= 78


def test_median_of_usable_pings():
    """The reading is the median of the echoes; a minority of faulty pings only lowers q."""
    f = _flood()
    r = [_tof(x) for x in (1000, 1010, 990, 2000, 1005, 995, 1003)]
    d = _pings(f, 0, r)
    assert abs(d[1] - 1003) <= 1 and d[0] == _H0 - d[1] and d[4] == 7 and d[3] == 0
    d = _pings(f, 15000, [_tof(1000), -1, _tof(1010), 0, _tof(990), _tof(1006), None])
    assert abs(d[1] - 1003) <= 1 and d[4] == 4 and d[3] == 0
    d = _pings(f, 30000, [_tof(1000), _tof(1010)])
    assert abs(d[1] - 1005) <= 1 and d[4] == 2


def test_fault_flags_and_majority_rule():
    """Zero, minimum range and no echo each flag an invalid reading when they dominate."""
    f = _flood()
    e = _tof(2000)
    d = _pings(f, 0, [0, 0, 0, 0, e, e, e])
    assert d[3] == FLAG_ZERO | FLAG_INVALID and d[0] == 0 and d[4] == 3
    assert abs(d[1] - 2000) <= 1
    d = _pings(f, 1000, [_MIN_TOF, _MIN_TOF + 20, _MIN_TOF - 300, _MIN_TOF, e, e, e])
    assert d[3] == FLAG_MINRANGE | FLAG_INVALID and d[0] == 0
    d = _pings(f, 2000, [-1] * 7)
    assert d[3] == FLAG_NOECHO | FLAG_INVALID and d[1] == 0 and d[4] == 0
    d = _pings(f, 3000, [-2] * 7)       # echo never rose: electrical, like a stuck 0
    assert d[3] == FLAG_ZERO | FLAG_INVALID
    d = _pings(f, 4000, [0, 0, -1, -1, e, e, e])     # tie between faults: zero first
    assert d[3] == FLAG_ZERO | FLAG_INVALID
    d = _pings(f, 5000, [-1, -1, -1, _MIN_TOF, _MIN_TOF, e, e])
    assert d[3] == FLAG_NOECHO | FLAG_INVALID
    d = _pings(f, 5500, [0, -1, -1, _MIN_TOF, e, e, e])    # the commonest fault wins
    assert d[3] == FLAG_NOECHO | FLAG_INVALID
    d = _pings(f, 6000, [None] * 7)
    assert d == (0, 0, 2000, FLAG_INVALID, 0)
    d = _pings(f, 7000, [None, None, None, 0, e, e, e])  # 3 echoes of 4 answers: valid
    assert d[3] == 0 and d[4] == 3 and abs(d[0] - 1000) <= 1


def test_range_filter():
    """Depth <= 10 mm is 0 unflagged; below -10 mm clamped and flagged; far below invalid."""
    f = _flood()
    assert _dq(_feed(f, 0, 7)) == (0, 0)
    assert _dq(_feed(f, 60, -6)) == (0, 0)
    assert _dq(_feed(f, 120, -40)) == (0, FLAG_RANGE)
    assert _dq(_feed(f, 180, -600)) == (0, FLAG_RANGE | FLAG_INVALID)
    assert _dq(_feed(f, 240, 11)) == (11, 0)
    g = _flood(h0_mm=None)      # not calibrated yet: range only
    d = _feed(g, 0, 100)
    assert d[3] == FLAG_INVALID and d[1] == _H0 - 100


def test_blip_filter_holds_a_spike_and_follows_a_confirmed_jump():
    """A one-reading spike is replaced by the previous value; a confirmed jump is followed."""
    f = _flood()
    for i in range(4):
        assert _feed(f, 60 * i, 100)[3] == 0
    d = _feed(f, 240, 900)
    assert d[0] == 100 and d[3] == FLAG_BLIP and f.interval_s() == 15
    assert f.alarms == []
    d = _feed(f, 255, 101)
    assert d[0] == 101 and d[3] == 0
    d = _feed(f, 315, 300)
    assert d[0] == 101 and d[3] == FLAG_BLIP
    d = _feed(f, 330, 305)
    assert d[0] == 305 and d[3] == 0 and _kinds(f, 200) == [ALARM_CROSSED]


def test_box_filter_reports_an_object_as_dry():
    """A flat plateau jumping up from dry (a parked car) reads 0 flagged box until it leaves."""
    f = _flood()
    for i in range(3):
        _feed(f, 300 * i, 0)
    assert _dq(_feed(f, 900, 1500)) == (0, FLAG_BLIP)
    assert _dq(_feed(f, 915, 1502)) == (0, FLAG_BOX)
    assert f.alarms == [] and f.mode == DRY and f.interval_s() == 300
    assert _dq(_feed(f, 1215, 1497)) == (0, FLAG_BOX)
    assert _dq(_feed(f, 1515, 1501)) == (0, FLAG_BOX)
    assert f.alarms == []
    assert _dq(_feed(f, 1815, 2)) == (0, 0)
    # water rising fast from dry is confirmed still rising: not a box
    assert _feed(f, 2115, 150)[3] == FLAG_BLIP
    d = _feed(f, 2130, 157)
    assert _dq(d) == (157, 0) and _kinds(f, 76) == [ALARM_CROSSED]


def test_gradient_filter_does_not_follow_a_rise_faster_than_water():
    """A confirmed rise above 4.23 mm/s is held at the last depth until it becomes plausible."""
    f = _flood()
    for i in range(4):
        _feed(f, 60 * i, 100)
    assert _dq(_feed(f, 240, 600)) == (100, FLAG_BLIP)
    t = 240
    held = 0
    d = None
    while True:
        t += 15
        d = _feed(f, t, 600)
        if d[3] != FLAG_GRADIENT:
            break
        assert d[0] == 100 and f.interval_s() == 15 and _kinds(f, 200) == []
        held += 1
    # 500 mm from the last accepted reading at t=180 is plausible after 500/4.23 = 118 s
    assert held >= 3 and _dq(d) == (600, 0) and t - 180 >= 118 and t - 180 <= 135
    assert _kinds(f, 200) == [ALARM_CROSSED] and _kinds(f, 400) == [ALARM_CROSSED]


def test_short_filter_flags_the_end_of_a_brief_wet_episode():
    """One or two wet readings between dry ones flag the dry reading ending them; three do not."""
    f = _flood()
    flags = [_feed(f, 60 * i, v)[3] for i, v in enumerate((0, 0, 30, 35, 0, 0, 30, 0))]
    assert flags == [0, 0, 0, 0, FLAG_SHORT, 0, 0, FLAG_SHORT]
    g = _flood()
    flags = [_feed(g, 60 * i, v)[3] for i, v in enumerate((0, 30, 35, 40, 0))]
    assert flags == [0, 0, 0, 0, 0]


def _hydro(t):
    # A clean flood hydrograph, depth mm at t s: dry 30 min, 0.1 mm/s for 10 min, 0.5 mm/s
    # to 300 mm, 20 min flat, -0.5 mm/s back to dry, dry 40 min.
    if t < 1800:
        return 0
    if t < 2400:
        return (t - 1800) // 10
    if t < 2880:
        return 60 + (t - 2400) // 2
    if t < 4080:
        return 300
    if t < 4680:
        return 300 - (t - 4080) // 2
    return 0


def _run_hydrograph():
    # Drives the reading times by interval_s(); returns ([(t, mode) at each change], flags
    # ORed, alarms).
    f = _flood()
    t = 0
    k = 0
    modes = []
    fl = 0
    alarms = []
    want = {DRY: 300, WET: 60, RECEDING: 60, RISING: 15}
    while t < 7000:
        noise = (k * 7) % 5 - 2     # +-2 mm, deterministic
        d = _feed(f, t, _hydro(t) + noise)
        fl |= d[3]
        alarms.extend(f.alarms)
        if not modes or modes[-1][1] != f.mode:
            modes.append((t, f.mode))
        assert f.interval_s() == want[f.mode]
        t += f.interval_s()
        k += 1
    return modes, fl, alarms


def test_hydrograph_sampling_modes():
    """Through a flood the node samples dry -> rising -> wet -> receding -> dry at set intervals."""
    modes, _, _ = _run_hydrograph()
    assert [m for _, m in modes] == [DRY, RISING, WET, RECEDING, DRY]
    # dry again from t = 4680 s; DRY only after 10 quiet minutes (the last wet reading is
    # at most one wet_s earlier)
    assert 4680 + 600 - 60 <= modes[-1][0] <= 4680 + 600 + 60


def test_hydrograph_clean_water_fires_no_filter_and_each_alarm_once():
    """Clean flood data sets no filter or fault flag, and raises each alarm once in order."""
    _, fl, alarms = _run_hydrograph()
    assert fl & (_FILTERS | _FAULTS) == 0
    got = [(a[0], a[1]) for a in alarms]
    for lv in (76, 200):
        assert [k for k, x in got if x == lv] == [ALARM_PREDICTED, ALARM_CROSSED, ALARM_CLEARED]
    # 400 mm is predicted while rising 0.5 mm/s, never reached, withdrawn once the rise stops
    assert [k for k, x in got if x == 400] == [ALARM_PREDICTED, ALARM_CLEARED]
    assert ALARM_RATE not in [k for k, _ in got]
    for a in alarms:
        if a[0] == ALARM_PREDICTED:
            assert a[2] < a[1] and a[4] is not None and a[4] > 0 and a[3] >= 50


def test_crossing_alarm_at_the_exact_reading():
    """The crossed alarm is raised at the reading where prev < level <= now, never before."""
    f = _flood(levels_mm=[76])
    seq = (40, 50, 60, 68, 72, 75, 76, 79, 77)
    at = []
    for i in range(len(seq)):
        _feed(f, 60 * i, seq[i])
        if ALARM_CROSSED in _kinds(f, 76):
            at.append(i)
            assert f.alarms[-1] == (ALARM_CROSSED, 76, 76, f.rate_ums, None)
    assert at == [6]


def test_predicted_alarm_before_crossing_on_steady_rise():
    """A 0.5 mm/s rise from dry is predicted well before 400 mm with lead_s 600, eta consistent."""
    f = _flood(levels_mm=[400])
    t = 0
    pred = None
    cross = None
    while t < 3000 and cross is None:
        depth = max(0, (t - 1200) // 2)
        d = _feed(f, t, depth)
        for a in f.alarms:
            if a[0] == ALARM_PREDICTED:
                assert pred is None
                pred = (t, a)
            if a[0] == ALARM_CROSSED:
                cross = (t, a)
                assert d[0] >= 400 and d[0] - 400 <= 8
        t += f.interval_s()
    assert pred is not None and cross is not None
    tp, a = pred
    assert a[2] < 400 and 450 <= a[3] <= 550
    # the water reaches 400 mm when the prediction said, and at least lead_s / 2 after it
    assert abs(a[4] - (400 - a[2]) * 2) <= 40 and cross[0] - tp >= 300
    assert abs((tp + a[4]) - cross[0]) <= 40


def test_hysteresis_no_chatter_and_rearm():
    """Noise of +-5 mm around a level raises it once; it clears below level - 20 and re-arms."""
    f = _flood(levels_mm=[200], hysteresis_mm=20)
    seq = [150, 170, 190] + [200 + (5 if i % 2 else -5) + (i % 3) for i in range(30)]
    seq += [170, 165, 168, 205]
    got = []
    for i in range(len(seq)):
        _feed(f, 60 * i, seq[i])
        got.extend(k for k in _kinds(f, 200))
        if i == 32:
            assert got.count(ALARM_CROSSED) == 1 and ALARM_CLEARED not in got
    assert got[-3:] == [ALARM_CROSSED, ALARM_CLEARED, ALARM_CROSSED]
    assert got.count(ALARM_PREDICTED) <= 1


def test_rate_alarm_once_per_episode():
    """A rise faster than rate_limit_ums raises one rate alarm, again only below half the limit."""
    f = _flood(levels_mm=[], rate_limit_ums=1000)
    t = 0
    depth = 100
    got = []
    # um/s for 20 readings 15 s apart each; 800 um/s lies inside the hysteresis band
    for phase in (0, 2000, 800, 2000, 0, 0, 2000):
        for _ in range(20):
            depth += phase * 15 // 1000
            _feed(f, t, depth)
            for a in f.alarms:
                assert a[0] == ALARM_RATE and a[1] == 0 and a[3] >= 1000 and a[4] is None
                got.append((phase, t))
            t += 15
    assert len(got) == 2 and got[0][0] == 2000 and got[1][0] == 2000
    assert 15 * 20 < got[0][1] < 15 * 40 and got[1][1] >= 15 * 120


def test_no_repeated_alarms_on_a_long_plateau():
    """Depth staying above every level raises each crossed alarm once, at the first reading."""
    f = _flood()
    n = 0
    for i in range(40):
        _feed(f, 60 * i, 450 + (i * 5) % 7 - 3)
        if i == 0:
            assert [a[0:2] for a in f.alarms] == [(ALARM_CROSSED, 76), (ALARM_CROSSED, 200),
                                                   (ALARM_CROSSED, 400)]
        n += len(f.alarms)
    assert n == 3 and f.mode == WET


def test_configure_mid_run():
    """configure() keeps the alarm state of kept levels, arms new ones, and applies new values."""
    f = _flood()
    for i in range(5):
        _feed(f, 60 * i, 250)
    assert f.mode == WET and f.interval_s() == 60
    f.configure({"levels_mm": [100, 200], "dry_s": 600, "wet_s": 30, "burst": 11})
    d = _feed(f, 300, 251)
    assert f.alarms == [(ALARM_CROSSED, 100, 251, f.rate_ums, None)] and d[3] == 0
    assert f.interval_s() == 30
    d = _pings(f, 330, [_tof(_H0 - 250)] * 11)
    assert d[4] == 11 and abs(d[0] - 250) <= 1 and f.alarms == []
    f.configure({"h0_mm": _H0 + 100})       # re-calibrated: same range, 100 mm deeper
    d = _feed(f, 360, 250)
    assert _dq(d) == (350, 0) and f.alarms == []
    _feed(f, 420, -80)      # 20 mm under the new H0: a confirmed fall clears both
    _feed(f, 435, -80)
    assert [a[0:2] for a in f.alarms] == [(ALARM_CLEARED, 100), (ALARM_CLEARED, 200)]
    f.configure({"h0_mm": _H0, "levels_mm": [76, 200, 400], "dry_s": 300, "wet_s": 60})
    for i in range(12):
        _feed(f, 500 + 60 * i, 0)
    assert f.mode == DRY and f.interval_s() == 300


def test_settings_are_checked():
    """Missing keys and unordered levels are refused with the key named."""
    for bad in ({"levels_mm": [200, 76]}, {"h0_mm": 0}):
        try:
            _flood(**bad)
            raise AssertionError("accepted %r" % bad)
        except ValueError as e:
            assert ("levels_mm" in str(e)) or ("h0_mm" in str(e))
    f = _flood()
    try:
        f.configure({"dry_s": 999, "levels_mm": [5, 4]})
        raise AssertionError("accepted unordered levels")
    except ValueError:
        assert f.interval_s() == 300 and f.levels_mm == [76, 200, 400]     # nothing applied
    try:
        Flood({"h0_mm": 3000, "burst": 7, "levels_mm": [76]})
        raise AssertionError("accepted missing keys")
    except ValueError as e:
        assert "missing" in str(e)


def test_rate_across_ticks_wrap():
    """The rate of rise is right when ticks_ms wraps at 2**30 between readings."""
    f = _flood(levels_mm=[])
    t0 = (1 << 30) - 150000
    for i in range(20):
        v = _tof(_H0 - (100 + i * 15 // 2))
        for j in range(7):
            _TOFS[j] = v
        d = f.reading((t0 + 15000 * i) & 0x3FFFFFFF, _TOFS, 7, 2000, _MIN_TOF)
        assert d[3] == 0 and d[0] == 100 + i * 15 // 2
    assert 480 <= f.rate_ums <= 520 and f.mode == RISING
