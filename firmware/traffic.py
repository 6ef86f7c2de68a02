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
# Defaults (engineering choices, configurable): mag_on 40 mG and mag_off 20 mG. The
# QMC5883L resolves about 2 mG; noise of +-3 mG per axis gives |noise| <= 5.2 mG, so mag_off
# is 4x the worst noise length and mag_on twice mag_off, while a car in the lane over or next
# to the sensor disturbs the ~500 mG Earth field by far more than 40 mG. Lower both for a
# sensor at the kerb of a far lane. n_on 3 and n_off 5 (_N_ON, _N_OFF: 60 and 100 ms at
# 50 Hz) are fixed.
# Settings keys read (others ignored): mag_on, mag_off (mG), mag_distance_mm (default 2000;
# 0 = no speed), traffic_window_s (only exposed as .window_s: report() closes the window
# whenever it is called), mag_hz (default 50), max_presence_s.
# Time: sample() and report() take time.ticks_ms() (wraps at 2**30); only differences are
# used, and every stored time is in ms since the start of the current window, so ints stay
# small. Samples are ints in mG; e*e stays a small int on the ESP32 up to |a - B| of about
# 18,900 mG.
# State lives in a few lists indexed by const slots (per sensor _ST..., settings _K_...,
# window _W_...) rather than in two dozen attributes: every attribute name costs the node a
# qstr-pool entry and an instance-dict slot.

import math

from micropython import const

_FP = const(12)                 # baseline fixed point: mG << 12
_TICKS_MASK = const(0x3FFFFFFF)  # ticks_ms period 2**30
_TICKS_HALF = const(0x1FFFFFFF)  # a larger step means the clock went backwards: ignore it
_BASE_TAU_S = const(10)         # baseline time constant (forgetting factor ~ 1 / (10 s * hz))
_LEARN_S = const(1)             # initial baseline: mean of the first second of samples
_MISS_PCT = const(1)            # A may miss this % of samples before B is used instead
_FAIL_RUN = const(5)            # consecutive misses after which `present` follows B
_Q = const(4)                   # pending speed events per sensor
_N_ON = const(3)                # samples above mag_on that start a vehicle (60 ms at 50 Hz)
_N_OFF = const(5)               # samples below mag_off that end it (100 ms at 50 Hz)
# Speed plausibility (brief): 2 km/h = 555.6 mm/s, 200 km/h = 55556 mm/s.
_V_MIN_MMS = const(555.6)
_V_MAX_MMS = const(55556.0)

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
_QN = const(24)     # pending speed events (reference times in Traffic._q)
_SLOTS = const(25)

# Settings (Traffic._k), as configure() derives them.
_K_ON = const(0)        # mag_on, mG
_K_OFF = const(1)       # mag_off, mG
_K_ON2 = const(2)       # their squares, compared with e*e
_K_OFF2 = const(3)
_K_DIST = const(4)      # mag_distance_mm, 0: no speed
_K_CAP = const(5)       # max_presence_s in ms
_K_SHIFT = const(6)     # baseline forgetting factor 2**-shift
_K_LEARN = const(7)     # samples of a learning
_K_DTMIN = const(8)     # plausible A -> B times, ms
_K_DTMAX = const(9)

# The window (Traffic._w).
_W_LAST = const(0)      # ticks_ms of the previous sample, None: none yet
_W_T = const(1)         # ms from the window start to the previous sample
_W_N = const(2)         # samples this window
_W_VSUM = const(3)      # sum of paired speeds this window, mm/s
_W_VN = const(4)        # and their number


def _get(cfg, key, default, lo, hi):
    # (value, "") or (clamped value, reason) for one setting.
    v = cfg.get(key, default)
    try:
        v = int(v)
    except (TypeError, ValueError):
        return default, "%s must be an int" % key
    if v < lo or v > hi:
        return (lo if v < lo else hi), "%s must be %d..%d" % (key, lo, hi)
    return v, ""


def _pop(q, s):
    # Drops the oldest pending speed event q[0] of sensor state s.
    for j in range(_Q - 1):
        q[j] = q[j + 1]
    s[_QN] -= 1


def _cross(a, b, x, t, d):
    # Time at which e passed x between the previous sample (at t, e*e = a) and this one
    # (at t + d, e*e = b).
    p = math.sqrt(a)
    den = math.sqrt(b) - p
    if den == 0:
        return float(t + d)
    f = (x - p) / den
    if f < 0:
        f = 0.0
    elif f > 1:
        f = 1.0
    return t + f * d


def _learn(s, v):
    # Accumulates a baseline sample v (x, y, z); the mean becomes the baseline after the
    # last one.
    s[_BX] += v[0]
    s[_BY] += v[1]
    s[_BZ] += v[2]
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


class Traffic:
    # cfg: the settings dict (config.Config.values)
    def __init__(self, cfg):
        # sensors A and B; reference times of their unpaired vehicles
        self._s = ([0] * _SLOTS, [0] * _SLOTS)  # type: tuple
        self._q = ([0.0] * _Q, [0.0] * _Q)
        self._k = [0] * 10  # type: list
        self._w = [None, 0, 0, 0.0, 0]  # type: list
        self.configure(cfg)
        for s in self._s:
            s[_LRN] = self._k[_K_LEARN]
            s[_LN] = s[_LRN]

    def configure(self, cfg):
        # Applies the settings at once, keeping baselines, vehicles in progress and the
        # window's counts. Never raises: a bad value is clamped and named in the returned
        # text ("" when every value was fine); mag_off >= mag_on gives mag_off = mag_on // 2.
        k = self._k
        err = ""
        on, e = _get(cfg, "mag_on", 40, 2, 30000)
        err = err or e
        off, e = _get(cfg, "mag_off", 20, 1, 30000)
        err = err or e
        if off >= on:
            off = on // 2
            err = err or "mag_off must be below mag_on"
        hz, e = _get(cfg, "mag_hz", 50, 1, 1000)
        err = err or e
        d, e = _get(cfg, "mag_distance_mm", 2000, 0, 100000)
        err = err or e
        self.window_s, e = _get(cfg, "traffic_window_s", 60, 1, 86400)
        err = err or e
        cap, e = _get(cfg, "max_presence_s", 300, 1, 86400)
        err = err or e
        k[_K_ON] = on
        k[_K_OFF] = off
        k[_K_ON2] = on * on
        k[_K_OFF2] = off * off
        k[_K_CAP] = cap * 1000
        sh = 0
        while (1 << sh) < _BASE_TAU_S * hz:
            sh += 1
        k[_K_SHIFT] = sh
        k[_K_LEARN] = min(max(_LEARN_S * hz, 8), 255)
        k[_K_DIST] = d
        k[_K_DTMIN] = d * 1000.0 / _V_MAX_MMS if d else 0.0
        k[_K_DTMAX] = d * 1000.0 / _V_MIN_MMS if d else 0.0
        return err

    @property
    def present(self):
        # True while a vehicle is over A (over B while A is failing or still learning).
        s = self._s[0]
        if s[_MRUN] >= _FAIL_RUN or s[_LRN]:
            s = self._s[1]
        return s[_ST] == 1

    def sample(self, ms, a, b):
        # One magnetometer sample from each sensor (x, y, z mG, or None), taken at ms
        # (ticks_ms).
        w = self._w
        k = self._k
        last = w[_W_LAST]
        d = 0
        if last is not None:
            d = (ms - last) & _TICKS_MASK
            if d > _TICKS_HALF:
                d = 0
        w[_W_LAST] = ms
        tp = w[_W_T]
        t = tp + d
        w[_W_T] = t
        w[_W_N] += 1
        on2 = k[_K_ON2]
        off2 = k[_K_OFF2]
        for i in range(2):
            s = self._s[i]
            v = b if i else a
            if v is None:
                s[_MISS] += 1
                s[_MRUN] += 1
                continue
            s[_MRUN] = 0
            if s[_LRN]:
                _learn(s, v)
                continue
            x = v[0]
            y = v[1]
            z = v[2]
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
                        s[_TON] = _cross(pe2, e2, k[_K_ON], tp, d)
                    run += 1
                    if run >= _N_ON:
                        # IDLE -> VEHICLE, back-dated to the rise that started the run.
                        on = s[_TON]
                        s[_ST] = 1
                        s[_ONS] = on
                        s[_FALL] = on
                        s[_SEG] = on if on > 0 else 0
                        s[_DL] = int(on) + k[_K_CAP]
                        s[_ORUN] = 0
                        run = 0
                else:
                    run = 0
                    sh = k[_K_SHIFT]
                    s[_BX] = bx + (((x << _FP) - bx) >> sh)
                    s[_BY] = by + (((y << _FP) - by) >> sh)
                    s[_BZ] = bz + (((z << _FP) - bz) >> sh)
                s[_RUN] = run
                continue
            if e2 < off2:
                if run == 0:
                    s[_TOFF] = _cross(pe2, e2, k[_K_OFF], tp, d)
                run += 1
            else:
                run = 0
            s[_RUN] = run
            if pe2 > on2 and e2 <= on2:
                s[_FALL] = _cross(pe2, e2, k[_K_ON], tp, d)
            if run >= _N_OFF:
                self._leave(s, i)
                continue
            if s[_HOLD]:
                # A parked vehicle was learned: has the field come back to the empty-road
                # baseline? Then it has left: count it and restore that baseline.
                dx = x - s[_OX]
                dy = y - s[_OY]
                dz = z - s[_OZ]
                if dx * dx + dy * dy + dz * dz < off2:
                    s[_ORUN] += 1
                    if s[_ORUN] >= _N_OFF:
                        s[_ST] = 0
                        s[_RUN] = 0
                        if s[_CNTD]:
                            s[_CNTD] = 0
                        else:
                            s[_CNT] += 1
                        s[_BX] = s[_OX] << _FP
                        s[_BY] = s[_OY] << _FP
                        s[_BZ] = s[_OZ] << _FP
                        s[_HOLD] = 0
                        s[_PE2] = 0
                else:
                    s[_ORUN] = 0
            if t > s[_DL] and s[_ST]:
                self._park(s, t)

    def _leave(self, s, i):
        # VEHICLE -> IDLE: count, occupancy up to the fall through mag_off, speed event, and
        # FIFO pairing of A and B reference times within the plausible speed range.
        s[_ST] = 0
        s[_RUN] = 0
        if s[_TOFF] > s[_SEG]:
            s[_OCC] += s[_TOFF] - s[_SEG]
        if s[_CNTD]:
            s[_CNTD] = 0
        else:
            s[_CNT] += 1
        k = self._k
        if not k[_K_DIST]:
            return
        q = self._q[i]
        if s[_QN] == _Q:
            _pop(q, s)
        q[s[_QN]] = (s[_ONS] + s[_FALL]) * 0.5
        s[_QN] += 1
        sa, sb = self._s
        qa, qb = self._q
        w = self._w
        while sa[_QN] and sb[_QN]:
            dt = qb[0] - qa[0]
            if dt >= k[_K_DTMIN]:
                if dt <= k[_K_DTMAX]:
                    w[_W_VSUM] += k[_K_DIST] * 1000.0 / dt
                    w[_W_VN] += 1
                    _pop(qb, sb)
                _pop(qa, sa)            # paired, or A saw a vehicle that B missed
            else:
                _pop(qb, sb)            # B with no A before it, or impossibly fast

    def _park(self, s, t):
        # Present for max_presence_s: keep the occupancy so far, hold the empty-road baseline
        # (the first one, if vehicles park on top of each other) and learn the field anew.
        # The vehicle is counted when it leaves (sample, while _HOLD).
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
        s[_LRN] = s[_LN] = self._k[_K_LEARN]

    def report(self, ms):
        # Closes the window at ms (ticks_ms) and starts the next one.
        # Returns (count, occupancy_pm, speed_mms or None, samples).
        wd = self._w
        w = wd[_W_T]
        if wd[_W_LAST] is not None:
            d = (ms - wd[_W_LAST]) & _TICKS_MASK
            if d <= _TICKS_HALF:
                w += d
        sa, sb = self._s
        for s in (sa, sb):
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
        n = wd[_W_N]
        use = sa
        if sa[_MISS] > sb[_MISS] and sa[_MISS] * 100 > n * _MISS_PCT:
            use = sb
        count = use[_CNT]
        pm = 0
        if w > 0:
            pm = min(int(use[_OCC] * 1000 / w + 0.5), 1000)
        speed = None
        if wd[_W_VN]:
            speed = int(wd[_W_VSUM] / wd[_W_VN] + 0.5)
        # Next window: times become relative to its start (ms).
        for i in range(2):
            s = self._s[i]
            s[_CNT] = 0
            s[_OCC] = 0
            s[_MISS] = 0
            s[_TON] -= w
            s[_ONS] -= w
            s[_FALL] -= w
            s[_TOFF] -= w
            s[_DL] -= w
            q = self._q[i]
            for j in range(s[_QN]):
                q[j] -= w
        wd[_W_T] -= w
        wd[_W_N] = 0
        wd[_W_VSUM] = 0.0
        wd[_W_VN] = 0
        return count, pm, speed, n
