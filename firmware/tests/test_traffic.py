# Traffic from two magnetometers: counts, occupancy, speed, and the ways the field misleads
# (drift, noise, dips, a failed sensor, a stopped or parked vehicle), against a synthetic
# road: Gaussian bumps per axis on a fixed background, uniform noise from a small LCG
# (MicroPython has no `random` with CPython's API), sampled at 50 Hz.

import gc
import math

from firmware.traffic import Traffic

HZ = 50
PERIOD_MS = 1000 // HZ
D_MM = 2000
BASE_A = (210, -140, 430)       # background field at A and B, mG
BASE_B = (180, -120, 405)
MASK = 0x3FFFFFFF               # ticks_ms period
ON = 40
OFF = 20


def _settings(**kw):
    s = {"mag_on": ON, "mag_off": OFF, "mag_distance_mm": D_MM, "traffic_window_s": 60,
         "mag_hz": HZ}
    for k in kw:
        s[k] = kw[k]
    return s


class Lcg:
    # Park-Miller minimal standard generator: deterministic on both interpreters.
    def __init__(self, seed):
        self.x = seed

    def next(self, n):
        # Uniform int in 0..n-1.
        self.x = self.x * 48271 % 2147483647
        return self.x % n


def vehicle(t_ms, kmh, amp, b_scale=1.0, hold_ms=0, sigma_mm=1200):
    # One vehicle: its bump peaks over A at t_ms (or starts a stop there, for hold_ms) and
    # over B D_MM later; amp is its (x, y, z) peak deviation at A, B sees the axes permuted
    # and scaled by b_scale. Spatial extent sigma_mm becomes sigma in ms at this speed.
    v = kmh / 3.6                               # mm/ms
    sig = sigma_mm / v
    cb = t_ms + D_MM / v
    b = (amp[2] * b_scale, amp[0] * b_scale, amp[1] * b_scale)
    return (t_ms, cb, sig, hold_ms, amp, b, t_ms - 5 * sig, cb + hold_ms + 5 * sig, kmh)


def _bump(t, c, sig, hold):
    # Gaussian rise to 1 at c, flat for hold ms, Gaussian fall.
    if t > c + hold:
        c += hold
    elif t >= c:
        return 1.0
    u = (t - c) / sig
    return math.exp(-0.5 * u * u)


def _mag(v):
    return math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])


def presence(veh, on=ON, off=OFF):
    # True presence over A: rise through `on` to fall through `off` of the clean signal.
    m = _mag(veh[4])
    if m <= on:
        return None
    return (veh[0] - veh[2] * math.sqrt(2 * math.log(m / on)),
            veh[0] + veh[3] + veh[2] * math.sqrt(2 * math.log(m / off)))


def truth(vehicles, w0, w1):
    # (vehicles leaving A in [w0, w1), occupancy of A in [w0, w1) in ms).
    n = 0
    occ = 0.0
    for veh in vehicles:
        p = presence(veh)
        if p is None:
            continue
        if w0 <= p[1] < w1:
            n += 1
        lo = max(p[0], w0)
        hi = min(p[1], w1)
        if hi > lo:
            occ += hi - lo
    return n, occ


class Road:
    # Drives a Traffic with samples of the synthetic road from simulated time 0 (ms).
    def __init__(self, tr, vehicles, noise=3, seed=7, tick0=0, drift=(0, 0, 0)):
        self.tr = tr
        self.vs = vehicles
        self.noise = noise
        self.rng = Lcg(seed)
        self.tick0 = tick0
        self.drift = drift          # mG per second, per axis, at both sensors
        self.t = 0                  # time of the next sample
        self.a_none = ()            # (from, to) intervals with A failed
        self.b_none = ()
        self.a = [0, 0, 0]
        self.b = [0, 0, 0]
        self.first = 0              # first vehicle that may still act

    def _failed(self, spans):
        for sp in spans:
            if sp[0] <= self.t < sp[1]:
                return True
        return False

    def step(self):
        t = self.t
        a = self.a
        b = self.b
        r = self.rng
        n = self.noise
        for k in range(3):
            dr = self.drift[k] * t / 1000
            a[k] = BASE_A[k] + dr
            b[k] = BASE_B[k] + dr
        vs = self.vs
        while self.first < len(vs) and vs[self.first][7] < t:
            self.first += 1
        i = self.first
        while i < len(vs) and vs[i][6] <= t:
            veh = vs[i]
            if t < veh[7]:
                ga = _bump(t, veh[0], veh[2], veh[3])
                gb = _bump(t, veh[1], veh[2], veh[3])
                for k in range(3):
                    a[k] += veh[4][k] * ga
                    b[k] += veh[5][k] * gb
            i += 1
        for k in range(3):
            a[k] = int(a[k] + 0.5) + r.next(2 * n + 1) - n
            b[k] = int(b[k] + 0.5) + r.next(2 * n + 1) - n
        self.tr.sample((self.tick0 + t) & MASK, None if self._failed(self.a_none) else a,
                       None if self._failed(self.b_none) else b)
        self.t = t + PERIOD_MS

    def run_to(self, t_ms):
        while self.t <= t_ms:
            self.step()

    def report(self, t_ms):
        # Samples up to t_ms, then closes the window at t_ms.
        self.run_to(t_ms)
        return self.tr.report((self.tick0 + t_ms) & MASK)


def _kmh(mms):
    return mms * 0.0036


def test_twenty_separated_vehicles_exact_count_occupancy_and_speed():
    """20 vehicles 3-8 s apart, 20-60 km/h: exact counts, occupancy +-5 pm, mean speed +-10 %."""
    r = Lcg(11)
    vs = []
    t = 3000
    for _ in range(20):
        amp = (r.next(301) - 150, r.next(301) - 150, 80 + r.next(160))
        vs.append(vehicle(t, 20 + r.next(41), amp, 0.6 + r.next(6) * 0.1,
                          sigma_mm=900 + r.next(601)))
        t += 3000 + r.next(5001)
    cut = (vs[9][0] + vs[10][0]) // 2       # a window boundary in the gap after vehicle 10
    end = vs[19][0] + 3000
    road = Road(Traffic(_settings()), vs)
    got = (road.report(cut), road.report(end))
    for k in range(2):
        w0, w1 = (0, cut) if k == 0 else (cut, end)
        n, occ = truth(vs, w0, w1)
        c, pm, speed, samples = got[k]
        assert c == n == 10, (k, c, n)
        assert abs(pm - occ * 1000 / (w1 - w0)) <= 5, (k, pm, occ)
        part = vs[0:10] if k == 0 else vs[10:20]
        mean = sum(veh[8] for veh in part) / len(part)
        assert abs(_kmh(speed) - mean) <= 0.1 * mean, (k, speed, mean)
        assert abs(samples - (w1 - w0) / PERIOD_MS) <= 1


def test_speed_within_ten_percent_at_20_40_60_kmh():
    """Each vehicle at 20, 40, 60 km/h, 2 m spacing, 50 Hz: speed within 10 %, B weaker than A."""
    for kmh in (20, 40, 60):
        r = Lcg(kmh)
        # Start the clock 10 s before ticks_ms wraps: the wrap must not matter.
        road = Road(Traffic(_settings()), [], tick0=MASK + 1 - 10000, seed=kmh)
        road.report(2000)
        for j in range(5):
            t0 = 2000 + 4000 * j
            amp = (r.next(201) - 100, r.next(201) - 100, 90 + r.next(150))
            road.vs.append(vehicle(t0 + 2000, kmh, amp, 0.5 + 0.1 * j))
            c, _, speed, _ = road.report(t0 + 4000)
            assert c == 1 and speed is not None, (kmh, j, c, speed)
            assert abs(_kmh(speed) - kmh) <= 0.1 * kmh, (kmh, j, _kmh(speed))


def test_drift_and_noise_alone_count_nothing():
    """A 60 mG drift over 2 minutes plus +-3 mG noise: no vehicle, no occupancy, no speed."""
    tr = Traffic(_settings())
    road = Road(tr, [], drift=(0.5, -0.3, 0.4), seed=3)
    assert road.report(60000) == (0, 0, None, 3001)
    assert road.report(120000) == (0, 0, None, 3000)


def test_dip_between_thresholds_is_one_vehicle():
    """A dip below mag_on but not mag_off is one vehicle; with mag_off near mag_on it splits."""
    # Two bumps of 100 mG 936 ms apart (sigma 240 ms): the sum dips to ~30 mG between them,
    # below 39 mG for about 12 samples.
    vs = []
    for j in range(3):
        t = 3000 + 6000 * j
        vs.append(vehicle(t, 18, (60, 0, 80), sigma_mm=1200))
        vs.append(vehicle(t + 936, 18, (60, 0, 80), sigma_mm=1200))
    for off, want in ((OFF, 3), (ON - 1, 6)):
        road = Road(Traffic(_settings(mag_off=off)), vs, seed=5)
        assert road.report(20000)[0] == want, (off, want)


def test_failed_sensor_b_counts_from_a_without_speed():
    """B always None: every vehicle counted from A, occupancy from A, speed None."""
    vs = [vehicle(3000 + 4000 * j, 30 + 5 * j, (0, 120, 90)) for j in range(6)]
    road = Road(Traffic(_settings()), vs)
    road.b_none = ((0, 10 ** 9),)
    c, pm, speed, _ = road.report(26000)
    tn, occ = truth(vs, 0, 26000)
    assert (c, speed) == (6, None) and tn == 6
    assert abs(pm - occ * 1000 / 26000) <= 5


def test_sensor_a_failing_for_a_window_counts_from_b_once():
    """A None through the second window: B counts it, speed None there; A takes over again after."""
    vs = [vehicle(3000 + 4000 * j, 40, (100, -60, 50)) for j in range(15)]
    tr = Traffic(_settings())
    road = Road(tr, vs)
    road.a_none = ((20000, 40000),)
    counts = []
    for w in (20000, 40000, 62000):
        c, _, speed, _ = road.report(w)
        counts.append(c)
        assert (speed is None) == (w == 40000), (w, speed)
    assert counts == [5, 5, 5], counts
    # present follows B while A is failing.
    road.a_none = ((0, 10 ** 9),)
    road.vs = [vehicle(65000, 40, (100, -60, 50))]
    road.first = 0
    road.run_to(65000 + 180)        # B is 180 ms behind A at 40 km/h
    assert tr.present
    road.run_to(67000)
    assert not tr.present


def test_window_boundary_splits_occupancy_and_counts_once():
    """A boundary anywhere across a vehicle splits its occupancy right and counts it once."""
    veh = vehicle(4000, 20, (0, 0, 150), sigma_mm=1500)
    p = presence(veh)
    rise = (int(p[0]) // PERIOD_MS + 1) * PERIOD_MS     # first sample above mag_on
    fall = (int(p[1]) // PERIOD_MS + 1) * PERIOD_MS     # first sample below mag_off
    # Boundaries: before it, in the n_on run after the rise, inside, in the n_off run after
    # the fall, after it.
    for cut in (2500, rise + 10, 4200, fall + 30, fall + 500):
        road = Road(Traffic(_settings()), [veh], noise=0)
        c1, pm1 = road.report(cut)[0:2]
        c2, pm2 = road.report(8000)[0:2]
        assert c1 + c2 == 1, (cut, c1, c2)
        assert c1 == (1 if cut > p[1] else 0), (cut, c1)
        t1 = truth([veh], 0, cut)[1]
        t2 = truth([veh], cut, 8000)[1]
        assert abs(pm1 - t1 * 1000 / cut) <= 2, (cut, pm1, t1)
        assert abs(pm2 - t2 * 1000 / (8000 - cut)) <= 2, (cut, pm2, t2)


def test_configure_mid_run_changes_thresholds_without_relearning():
    """mag_on raised mid-run ignores small vehicles only; a bad pair is repaired and named."""
    small = (40, 30, 50)            # ~75 mG
    big = (150, 100, 200)
    vs = [vehicle(3000 + 3000 * j, 40, small if j % 2 == 0 else big) for j in range(12)]
    tr = Traffic(_settings())
    road = Road(tr, vs)
    assert road.report(16500)[0] == 5            # vehicles 0..4, all counted
    road.run_to(18000)                           # vehicle 5 (big) is passing A
    assert tr.present
    assert tr.configure(_settings(mag_on=100, mag_off=50, traffic_window_s=30)) == ""
    assert tr.window_s == 30
    assert road.report(25500)[0] == 2            # vehicles 5, 7; small 6 ignored
    assert tr.configure(_settings(mag_on=30, mag_off=30)) == "mag_off must be below mag_on"
    c, _, speed, _ = road.report(40000)          # vehicles 8..11, mag_off repaired to 15
    assert c == 4 and speed is not None


def test_reverse_direction_gives_no_speed():
    """Vehicles reaching B before A (dt < 0) are counted but never paired into a speed."""
    vs = []
    for j in range(4):
        veh = vehicle(3000 + 5000 * j, 40, (90, 90, 0))
        vs.append((veh[1], veh[0]) + veh[2:])   # swap the A and B times
    c, _, speed, _ = Road(Traffic(_settings()), vs).report(23000)
    assert (c, speed) == (4, None)


def test_stopped_vehicle_counted_once_with_baseline_frozen():
    """A vehicle stopped 40 s over both sensors: present, counted once, the next one counted."""
    stop = vehicle(3000, 10, (70, -50, 60), hold_ms=40000)
    after = vehicle(50000, 40, (70, -50, 60))
    tr = Traffic(_settings())
    road = Road(tr, [stop, after])
    road.run_to(42000)
    assert tr.present
    c, pm = road.report(47000)[0:2]
    occ = truth([stop], 0, 47000)[1]
    assert c == 1 and abs(pm - occ * 1000 / 47000) <= 5, (c, pm, occ)
    assert not tr.present
    assert road.report(53000)[0] == 1            # the next vehicle, not a phantom


def test_parked_vehicle_relearned_after_cap_and_counted_when_it_leaves():
    """Past max_presence_s the field is re-learned; the parked car is counted once on leaving."""
    park = vehicle(3000, 10, (0, 90, 90), hold_ms=20000)
    after = vehicle(30000, 40, (0, 90, 90))
    tr = Traffic(_settings(max_presence_s=5))
    road = Road(tr, [park, after])
    road.run_to(15000)
    assert not tr.present                        # re-learned as background
    c, pm = road.report(27000)[0:2]
    assert c == 1, c                             # counted once, when it left
    assert abs(pm - 5000 * 1000 / 27000) <= 5, pm   # occupancy until the re-learning
    assert road.report(33000)[0] == 1            # held baseline restored: next car counted


def test_sample_allocates_nothing_on_micropython():
    """On MicroPython, sample() on a quiet road allocates no heap (CPython: nothing to measure)."""
    if not hasattr(gc, "mem_alloc"):
        return
    tr = Traffic(_settings())
    a = [200, -100, 400]
    b = [190, -90, 410]
    rng = Lcg(9)
    for k in range(100):                        # past the learning second
        tr.sample(k * 20, a, b)
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        for k in range(100, 600):
            a[0] = 200 + rng.next(7) - 3
            b[2] = 410 + rng.next(7) - 3
            tr.sample(k * 20, a, b)
        used = gc.mem_alloc() - before
    finally:
        gc.enable()
    assert used == 0, used
