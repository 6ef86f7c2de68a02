# Vehicle counting, occupancy and speed from two 3-axis magnetometers (A, then B downstream).
#
# Pure logic: the caller reads both sensors, passes the time and the two samples, and closes
# each window with report(). No machine, no time, no allocation per sample (ints only on the
# hot path; floats appear only at the rare threshold crossings and vehicle events).
#
# Per sensor (field.md, after Cheung & Varaiya's adaptive-threshold detector):
#   - baseline B per axis, learned as the mean of the first second of samples, then tracked by
#     an exponential forgetting factor 2**-k (time constant _BASE_TAU_S) only while IDLE and
#     not above mag_on: frozen while a vehicle is present, so a queue or a stopped car is not
#     absorbed. Stored as fixed point (mG << _FP) so the slow update keeps its fraction.
#   - e = |a - B|, the Euclidean length of the deviation vector; compared as e*e against
#     mag_on**2 / mag_off**2, so no square root per sample.
#   - IDLE -> VEHICLE after n_on consecutive samples with e > mag_on; VEHICLE -> IDLE after
#     n_off consecutive samples with e < mag_off (hysteresis: a dip between the thresholds
#     does not split one vehicle in two). Count on VEHICLE -> IDLE.
#   - Presence is back-dated to the threshold crossings, linearly interpolated between the
#     two samples around each crossing: it starts when e rose through mag_on (first sample of
#     the n_on run) and ends when e fell through mag_off (first sample of the n_off run).
#     Occupancy adds these intervals, split exactly at window boundaries.
# Count and occupancy come from A; from B instead when A missed more samples in the window
# than B and more than 1 % of them (a failed sensor gives None). One sensor per window, so a
# vehicle is never counted by both.
#
# Speed: each sensor gives one reference time per vehicle, the midpoint of its interpolated
# rise through mag_on and its last fall through mag_on. The midpoint does not move when a
# bump is scaled, so A and B agree even if B sits farther from the lane and sees a weaker
# signal (the onset alone would shift by a sample or more at 60 km/h). A and B reference
# times are paired in FIFO order; a pair is kept when dt = tB - tA gives 2..200 km/h for
# mag_distance_mm, otherwise the older unmatched event is dropped. Speed = mean of D / dt over
# the pairs made in the window, None if none (or if mag_distance_mm is 0).
#
# Long presence: a vehicle over a sensor for max_presence_s (default 300 s) is taken to be
# parked. Its presence up to then counts for occupancy, the sensor re-learns its baseline with
# the vehicle in place, and the old (empty-road) baseline is held. When the field later comes
# back within mag_off of that held baseline for n_off samples, the parked vehicle has left:
# it is counted then (once), and the held baseline is restored. A vehicle over a sensor
# during its first second is learned as background: up to max_presence_s of false occupancy
# follow, and that vehicle is not counted.
#
# Defaults (engineering choices, all configurable): mag_on 40 mG and mag_off 20 mG. The
# QMC5883L resolves about 2 mG; noise of +-3 mG per axis gives |noise| <= 5.2 mG, so mag_off
# is 4x the worst noise length and mag_on twice mag_off, while a car in the lane over or next
# to the sensor disturbs the ~500 mG Earth field by far more than 40 mG. Lower both for a
# sensor at the kerb of a far lane. n_on 3 and n_off 5 at 50 Hz (60 and 100 ms).
# Settings keys read (others ignored): mag_on, mag_off (mG), mag_distance_mm (default 2000;
# 0 = no speed), traffic_window_s (only exposed as .window_s: report() closes the window
# whenever it is called), n_on, n_off, sample_hz (or mag_hz; default 50), max_presence_s.
# Time: now_ms is time.ticks_ms() (wraps at 2**30); only differences are used, and every
# stored time is in ms since the start of the current window, so ints stay small. Samples
# are ints in mG; e*e stays a small int on the ESP32 up to |a - B| of about 18,900 mG.

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython; the ESP32 has micropython.const
        return x

import math

_FP = const(12)                 # baseline fixed point: mG << 12
_TICKS_MASK = const(0x3FFFFFFF)  # ticks_ms period 2**30
_TICKS_HALF = const(0x1FFFFFFF)  # a larger step means the clock went backwards: ignore it
_BASE_TAU_S = const(10)         # baseline time constant (forgetting factor ~ 1 / (10 s * hz))
_LEARN_S = const(1)             # initial baseline: mean of the first second of samples
_MISS_PCT = const(1)            # A may miss this % of samples before B is used instead
_FAIL_RUN = const(5)            # consecutive misses after which `present` follows B
_Q = const(4)                   # pending speed events per sensor
# Speed plausibility (brief): 2 km/h = 555.6 mm/s, 200 km/h = 55556 mm/s.
_V_MIN_MMS = 555.6
_V_MAX_MMS = 55556.0

# Per-sensor state: one list each, indexed by these slots.
_ST = const(0)      # 0 IDLE, 1 VEHICLE
_RUN = const(1)     # consecutive samples above mag_on (IDLE) / below mag_off (VEHICLE)
_BX = const(2)      # baseline, mG << _FP (sums of raw samples while learning)
_BY = const(3)
_BZ = const(4)
_PE2 = const(5)     # e*e of the previous sample
_LRN = const(6)     # samples still to learn; 0 = detecting
_LN = const(7)      # samples in the current learning
_TON = const(8)     # interpolated rise through mag_on that started the current run
_ONS = const(9)     # onset of the present vehicle
_FALL = const(10)   # last interpolated fall through mag_on of the present vehicle
_TOFF = const(11)   # interpolated fall through mag_off that started the current run
_SEG = const(12)    # start of the presence still to add to occupancy
_DL = const(13)     # int: time at which a presence becomes "parked"
_OCC = const(14)    # occupancy this window, ms
_CNT = const(15)    # vehicles this window
_MISS = const(16)   # None samples this window
_MRUN = const(17)   # consecutive None samples
_CNTD = const(18)   # 1: the present vehicle was already counted (at a window boundary)
_HOLD = const(19)   # 1: an empty-road baseline is held (a parked vehicle was learned)
_OX = const(20)     # held baseline, mG
_OY = const(21)
_OZ = const(22)
_ORUN = const(23)   # consecutive samples within mag_off of the held baseline
_SLOTS = const(24)


def _get(settings, key, default, lo, hi):
    # (value, "") or (clamped value, reason) for one setting.
    v = settings.get(key, default)
    try:
        v = int(v)
    except (TypeError, ValueError):
        return default, "%s must be an int" % key
    if v < lo or v > hi:
        return (lo if v < lo else hi), "%s must be %d..%d" % (key, lo, hi)
    return v, ""


def _pop(q, qn, k):
    # Drops the oldest pending speed event of sensor k.
    for j in range(_Q - 1):
        q[j] = q[j + 1]
    qn[k] -= 1


class Traffic:
    def __init__(self, settings):
        self._sa = [0] * _SLOTS
        self._sb = [0] * _SLOTS
        self._q = ([0.0] * _Q, [0.0] * _Q)   # reference times of unpaired vehicles, A and B
        self._qn = [0, 0]
        self._last = None       # now_ms of the previous sample
        self._t = 0             # ms from the window start to the previous sample
        self._n = 0             # samples this window
        self._vsum = 0.0        # sum of paired speeds this window, mm/s
        self._vn = 0
        self.configure(settings)
        for s in (self._sa, self._sb):
            s[_LRN] = self._learn_n
            s[_LN] = self._learn_n

    def configure(self, settings):
        # Applies the settings at once, keeping baselines, vehicles in progress and the
        # window's counts. Never raises: a bad value is clamped and named in the returned
        # text ("" when every value was fine); mag_off >= mag_on gives mag_off = mag_on // 2.
        err = ""
        on, e = _get(settings, "mag_on", 40, 2, 30000)
        err = err or e
        off, e = _get(settings, "mag_off", 20, 1, 30000)
        err = err or e
        if off >= on:
            off = on // 2
            err = err or "mag_off must be below mag_on"
        hz, e = _get(settings, "sample_hz" if "sample_hz" in settings else "mag_hz", 50, 1,
                     1000)
        err = err or e
        self._n_on, e = _get(settings, "n_on", 3, 1, 1000)
        err = err or e
        self._n_off, e = _get(settings, "n_off", 5, 1, 1000)
        err = err or e
        self._dist, e = _get(settings, "mag_distance_mm", 2000, 0, 100000)
        err = err or e
        self.window_s, e = _get(settings, "traffic_window_s", 60, 1, 86400)
        err = err or e
        cap, e = _get(settings, "max_presence_s", 300, 1, 86400)
        err = err or e
        self._on = on
        self._off = off
        self._on2 = on * on
        self._off2 = off * off
        self._cap_ms = cap * 1000
        sh = 0
        while (1 << sh) < _BASE_TAU_S * hz:
            sh += 1
        self._shift = sh
        self._learn_n = min(max(_LEARN_S * hz, 8), 255)
        d = self._dist
        self._dt_min = d * 1000.0 / _V_MAX_MMS if d else 0.0
        self._dt_max = d * 1000.0 / _V_MIN_MMS if d else 0.0
        return err

    @property
    def present(self):
        # True while a vehicle is over A (over B while A is failing or still learning).
        s = self._sa
        if s[_MRUN] >= _FAIL_RUN or s[_LRN]:
            s = self._sb
        return s[_ST] == 1

    def sample(self, now_ms, a, b):
        # One magnetometer sample from each sensor (x, y, z mG, or None), taken at now_ms.
        last = self._last
        d = 0
        if last is not None:
            d = (now_ms - last) & _TICKS_MASK
            if d > _TICKS_HALF:
                d = 0
        self._last = now_ms
        tp = self._t
        t = tp + d
        self._t = t
        self._n += 1
        on2 = self._on2
        off2 = self._off2
        for i in range(2):
            if i:
                s = self._sb
                v = b
            else:
                s = self._sa
                v = a
            if v is None:
                s[_MISS] += 1
                s[_MRUN] += 1
                continue
            s[_MRUN] = 0
            x = v[0]
            y = v[1]
            z = v[2]
            if s[_LRN]:
                self._learn(s, x, y, z)
                continue
            bx = s[_BX]
            by = s[_BY]
            bz = s[_BZ]
            dx = x - (bx >> _FP)
            dy = y - (by >> _FP)
            dz = z - (bz >> _FP)
            e2 = dx * dx + dy * dy + dz * dz
            pe2 = s[_PE2]
            s[_PE2] = e2
            run = s[_RUN]
            if s[_ST] == 0:
                if e2 > on2:
                    if run == 0:
                        s[_TON] = self._cross(pe2, e2, self._on, tp, t)
                    run += 1
                    if run >= self._n_on:
                        # IDLE -> VEHICLE, back-dated to the rise that started the run.
                        on = s[_TON]
                        s[_ST] = 1
                        s[_ONS] = on
                        s[_FALL] = on
                        s[_SEG] = on if on > 0 else 0
                        s[_DL] = int(on) + self._cap_ms
                        s[_ORUN] = 0
                        run = 0
                else:
                    run = 0
                    sh = self._shift
                    s[_BX] = bx + (((x << _FP) - bx) >> sh)
                    s[_BY] = by + (((y << _FP) - by) >> sh)
                    s[_BZ] = bz + (((z << _FP) - bz) >> sh)
                s[_RUN] = run
                continue
            if e2 < off2:
                if run == 0:
                    s[_TOFF] = self._cross(pe2, e2, self._off, tp, t)
                run += 1
            else:
                run = 0
            s[_RUN] = run
            if pe2 > on2 and e2 <= on2:
                s[_FALL] = self._cross(pe2, e2, self._on, tp, t)
            if run >= self._n_off:
                self._leave(s, i, 0)
                continue
            if s[_HOLD]:
                self._held(s, i, x, y, z)
            if t > s[_DL] and s[_ST]:
                self._park(s, t)

    def _cross(self, pe2, e2, thr, tp, t):
        # Time at which e passed thr between the previous sample (tp) and this one (t).
        p = math.sqrt(pe2)
        den = math.sqrt(e2) - p
        if den == 0:
            return float(t)
        f = (thr - p) / den
        if f < 0:
            f = 0.0
        elif f > 1:
            f = 1.0
        return tp + f * (t - tp)

    def _learn(self, s, x, y, z):
        # Accumulates a baseline sample; the mean becomes the baseline after the last one.
        s[_BX] += x
        s[_BY] += y
        s[_BZ] += z
        n = s[_LRN] - 1
        s[_LRN] = n
        if n == 0:
            ln = s[_LN]
            s[_BX] = (s[_BX] << _FP) // ln
            s[_BY] = (s[_BY] << _FP) // ln
            s[_BZ] = (s[_BZ] << _FP) // ln
            s[_ST] = 0
            s[_RUN] = 0
            s[_PE2] = 0

    def _leave(self, s, i, restore):
        # VEHICLE -> IDLE: count, occupancy up to the fall through mag_off, speed event.
        # restore: a parked vehicle left (see _held); its occupancy ended at the re-learning.
        s[_ST] = 0
        s[_RUN] = 0
        if not restore and s[_TOFF] > s[_SEG]:
            s[_OCC] += s[_TOFF] - s[_SEG]
        if s[_CNTD]:
            s[_CNTD] = 0
        else:
            s[_CNT] += 1
        if restore:
            s[_BX] = s[_OX] << _FP
            s[_BY] = s[_OY] << _FP
            s[_BZ] = s[_OZ] << _FP
            s[_HOLD] = 0
            s[_PE2] = 0
            return
        if not self._dist:
            return
        q = self._q[i]
        if self._qn[i] == _Q:
            _pop(q, self._qn, i)
        q[self._qn[i]] = (s[_ONS] + s[_FALL]) * 0.5
        self._qn[i] += 1
        self._pair()

    def _pair(self):
        # FIFO pairing of A and B reference times within the plausible speed range.
        qa = self._q[0]
        qb = self._q[1]
        qn = self._qn
        while qn[0] and qn[1]:
            dt = qb[0] - qa[0]
            if dt >= self._dt_min:
                if dt <= self._dt_max:
                    self._vsum += self._dist * 1000.0 / dt
                    self._vn += 1
                    _pop(qb, qn, 1)
                _pop(qa, qn, 0)         # paired, or A saw a vehicle that B missed
            else:
                _pop(qb, qn, 1)         # B with no A before it, or impossibly fast

    def _held(self, s, i, x, y, z):
        # A parked vehicle was learned: has the field come back to the empty-road baseline?
        dx = x - s[_OX]
        dy = y - s[_OY]
        dz = z - s[_OZ]
        if dx * dx + dy * dy + dz * dz < self._off2:
            s[_ORUN] += 1
            if s[_ORUN] >= self._n_off:
                self._leave(s, i, 1)
        else:
            s[_ORUN] = 0

    def _park(self, s, t):
        # Present for max_presence_s: keep the occupancy so far, hold the empty-road baseline
        # (the first one, if vehicles park on top of each other) and learn the field anew.
        # The vehicle is counted when it leaves (_held).
        if t > s[_SEG]:
            s[_OCC] += t - s[_SEG]
        if not s[_HOLD]:
            s[_HOLD] = 1
            s[_OX] = s[_BX] >> _FP
            s[_OY] = s[_BY] >> _FP
            s[_OZ] = s[_BZ] >> _FP
        s[_BX] = s[_BY] = s[_BZ] = 0
        s[_ST] = 0
        s[_RUN] = 0
        s[_ORUN] = 0
        s[_LRN] = s[_LN] = self._learn_n

    def report(self, now_ms):
        # Closes the window at now_ms and starts the next one.
        # Returns (count, occupancy_pm, speed_mms or None, samples).
        w = self._t
        if self._last is not None:
            d = (now_ms - self._last) & _TICKS_MASK
            if d <= _TICKS_HALF:
                w += d
        for s in (self._sa, self._sb):
            if s[_LRN]:
                continue
            if s[_ST]:
                end = w
                if s[_RUN]:
                    # Falling through mag_off when the window closed: the vehicle left in
                    # this window (if it comes back above mag_off it is not counted again).
                    end = s[_TOFF]
                    if not s[_CNTD]:
                        s[_CNT] += 1
                        s[_CNTD] = 1
                if end > s[_SEG]:
                    s[_OCC] += end - s[_SEG]
                s[_SEG] = 0
            elif s[_RUN] and s[_TON] < w:
                # Rising through mag_on: the presence from the rise belongs to this window.
                s[_OCC] += w - (s[_TON] if s[_TON] > 0 else 0)
        sa = self._sa
        sb = self._sb
        n = self._n
        use = sa
        if sa[_MISS] > sb[_MISS] and sa[_MISS] * 100 > n * _MISS_PCT:
            use = sb
        count = use[_CNT]
        pm = 0
        if w > 0:
            pm = min(int(use[_OCC] * 1000 / w + 0.5), 1000)
        speed = None
        if self._vn:
            speed = int(self._vsum / self._vn + 0.5)
        # Next window: times become relative to its start (now_ms).
        for s in (sa, sb):
            s[_CNT] = 0
            s[_OCC] = 0
            s[_MISS] = 0
            s[_TON] -= w
            s[_ONS] -= w
            s[_FALL] -= w
            s[_TOFF] -= w
            s[_DL] -= w
        for k in range(2):
            q = self._q[k]
            for j in range(self._qn[k]):
                q[j] -= w
        self._t -= w
        self._n = 0
        self._vsum = 0.0
        self._vn = 0
        return count, pm, speed, n
