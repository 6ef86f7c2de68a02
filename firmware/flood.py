# Flood depth from one burst of ultrasonic pings: faults, median, filters, rate, alarms.
#
# Pure logic: the caller pings, reads the air temperature and passes the time in ms (it may
# be time.ticks_ms(): differences are taken modulo 2**30, so gaps must stay under 12 days).
#
#   f = Flood(settings)                  # dict: h0_mm, burst, levels_mm, lead_s, hysteresis_mm,
#                                        #       rate_limit_ums, dry_s, wet_s, rising_s
#   d = f.reading(now_ms, tofs, n, temp_cc, min_tof_us)
#       -> (depth_mm, range_mm, temp_cc, flags, q), the flood message's fields (SPEC 5.3)
#   f.alarms                             # (kind, level_mm, depth_mm, rate_ums, eta_s or None)
#   f.interval_s(), f.mode, f.rate_ums
#
# One reading, step by step:
# 1. Pings. tof > 0 us is an echo; 0 (or another negative code) is the stuck-0 electrical
#    fault, -1 no echo, None no answer at all; an echo at or below the ranger's minimum-range
#    tof (+ _MINRANGE_TOL_US) is an obstruction in the dead zone (FloodNet maintenance guide).
#    Majority rule: the usable echoes must be a strict majority of the pings that answered,
#    which is when the median of the whole burst (FloodNet's reading) is an echo too. Then
#    the reading is their median and a minority of faulty pings is only visible in q.
#    Otherwise the reading is invalid (depth 0) and carries the flag of the commonest fault;
#    ties go to zero, then minrange, then noecho (the more certain diagnosis first).
# 2. range = median tof * c(T) / 2, c(T) = 331.3 * sqrt(1 + T / 273.15) m/s
#    (ranger.tof_to_range_mm); no temperature: 20 C and flag notemp. The median of the tofs
#    is the tof of the median range (the map is linear in tof), and ranger's float maths
#    runs only when the temperature changes: the scale is cached as mm per 100 ms.
# 3. depth = H0 - range, then FloodNet's filters (field.md), each with its own flag:
#    range     depth <= 10 mm is dry (0). A depth below -10 mm (the road looks farther than
#              H0) is clamped to 0 and flagged; below -250 mm (more than a temperature error
#              can explain at 6 m) it is no depth at all: invalid. depth > H0 needs a range
#              <= 0, which only a broken conversion gives: invalid as well.
#    blip      causal one-reading look-back: a jump of more than _BLIP_MM from the last
#              accepted depth is held (the reading reports the previous value, flag blip) and
#              the next reading is taken at rising_s. If that one agrees with the jump (within
#              _BLIP_MM) the change is real and followed; if not, the held sample was a spike.
#    box       a confirmed jump up from dry whose two samples are flat (within _BOX_TOL_MM,
#              and rising less than a quarter of the rate the jump implies) is an object
#              (parked car, bin): report 0, flag box, while readings stay on that plateau.
#    gradient  a rise from the last accepted depth faster than 4.23 mm/s (10 in/min, FloodNet;
#              Hurricane Ida rose about 0.76 mm/s) is not water: keep reporting the last
#              accepted depth, flag gradient, until the rise over the elapsed time is
#              plausible or the reading comes back.
#    short     a wet episode of at most 2 readings between dry ones is flagged on the dry
#              reading that ends it (a causal filter cannot know earlier that it was short).
# 4. Rate of rise: least squares over the accepted depths of the last 5 minutes (at least 3
#    points spanning 2 minutes, else "not known" and 0; the window widens to 3 * wet_s),
#    integer maths, in um/s.
# 5. Alarms, once per episode each, at the reading that raises them (SPEC 5.4.2):
#    crossed   depth >= level and not already crossed. The state re-arms only below
#              level - hysteresis, so this is exactly "previous < level <= now"; after a boot
#              or a new level the first reading above it raises it too.
#    predicted depth < level, rate >= _RISING_UMS and depth + rate * lead_s >= level;
#              eta_s = (level - depth) / rate.
#    cleared   a crossed level once depth < level - hysteresis (or dry); a predicted level
#              that was not reached once the water stops rising (rate <= 0) below
#              level - hysteresis, or is dry.
#    rate      rate >= rate_limit_ums (level 0); re-arms silently below half the limit.
# 6. Mode and sampling: wet and rising (or rate not known yet) -> RISING (rising_s); falling
#    -> RECEDING (wet_s); otherwise WET (wet_s), with a 2:1 hysteresis on _RISING_UMS. Dry
#    readings after water keep RECEDING until 10 min without water, then DRY (dry_s).
#    Singapore PUB polls every 10 min dry and 2 min in rain (field.md).
#
# Allocation per reading: the returned tuple; the float maths of one conversion when the
# temperature changed; an alarm tuple when one is raised. Buffers (sort buffer, history
# ring, per-level states) are made up front or on configure().

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython; the ESP32 has micropython.const
        return x

from array import array

from firmware.ranger import tof_to_range_mm
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

# Modes (public: the main loop logs them)
DRY = const(0)
WET = const(1)
RISING = const(2)
RECEDING = const(3)

_T20_CC = const(2000)            # 20 C assumed without a temperature (flag notemp)
_KREF_TOF_US = const(100000)     # range = tof * range(100 ms) / 100 ms: 0.2 mm at 6 m, and
                                 # 35 ms * 18 m stays a small int (< 2**30) on the ESP32
_MINRANGE_TOL_US = const(30)     # ~5 mm: a reading this close to the minimum range is it
_DRY_MM = const(10)              # FloodNet range filter: depth <= 10 mm is dry
_NEG_INVALID_MM = const(250)     # beyond -250 mm the range is no road: invalid
_BLIP_MM = const(60)             # > Ida's 0.76 mm/s over one 60 s wet interval (46 mm)
_BOX_TOL_MM = const(10)          # a car roof or a bin lid reads flat within this
_GRADIENT_UMS = const(4230)      # FloodNet gradient filter: 10 in/min is not water
_RISING_UMS = const(50)          # rising/falling threshold, ~4 sigma of the rate's noise
_RATE_WINDOW_S = const(300)      # least-squares window ("last few minutes")
_RATE_MIN_N = const(3)           # points needed for a rate at all
_RATE_MIN_SPAN_S = const(120)    # and the time they span: 3 points 30 s apart with +-2 mm
                                 # noise give +-130 um/s, enough for false predictions
_HIST_N = const(24)              # history ring: 5 min at rising_s 15 fits
_QUIET_MS = const(600000)        # 10 min of dry readings before DRY
_TICKS_MASK = const(0x3FFFFFFF)  # time.ticks_ms() period 2**30 on MicroPython
_TIMING = ("lead_s", "hysteresis_mm", "rate_limit_ums", "dry_s", "wet_s", "rising_s")
_IDLE = const(0)                 # per-level alarm state
_PRED = const(1)
_CROSS = const(2)


def _dt(a, b):
    # Milliseconds from b to a, times taken modulo 2**30 (ticks_ms or any monotonic ms). A
    # clock that went backwards reads as a very long gap: old history drops out of windows.
    return (a - b) & _TICKS_MASK


def _ums(d_mm, dt_ms):
    # Rate in um/s of d_mm over dt_ms, in 0.1 s steps (stays within small ints).
    return d_mm * 10000 // max(1, dt_ms // 100)


class Flood:
    def __init__(self, settings):
        self._buf = [0] * 7
        self._ht = array("i", [0] * _HIST_N)    # history ring: times (ms mod 2**30)
        self._hd = array("i", [0] * _HIST_N)    # and accepted depths (mm)
        self._hi = 0                            # next slot
        self._hn = 0                            # entries held
        self.levels = []
        self._lvl = bytearray(0)                # _IDLE / _PRED / _CROSS per level
        self.h0 = None
        self._kt = None                         # temperature of the cached conversion
        self._kr = 0                            # mm per _KREF_TOF_US at that temperature
        self.alarms = []
        self.mode = DRY
        self.rate_ums = 0
        self._rate_ok = False
        self._rate_raised = False
        self._wet_t = 0
        self._wet_run = 0
        self._reset_filters()
        for k in _TIMING:
            if settings.get(k) is None:
                raise ValueError("%s missing" % k)
        self.lead_s = settings["lead_s"]
        self.hysteresis_mm = settings["hysteresis_mm"]
        self.rate_limit_ums = settings["rate_limit_ums"]
        self.dry_s = settings["dry_s"]
        self.wet_s = settings["wet_s"]
        self.rising_s = settings["rising_s"]
        self.configure(settings)

    def _reset_filters(self):
        self._acc = None      # last accepted depth (the filters' reference), None: none yet
        self._acc_t = 0
        self._cand = None     # jump held by the blip filter, waiting for confirmation
        self._cand_t = 0
        self._box = -1        # plateau depth of a box (object), -1: none
        self._grad = False    # holding against a too-fast rise
        self._hn = 0

    def configure(self, settings):
        # Full or partial settings; missing keys keep their value. A new H0 changes what
        # every stored depth means: history and filters restart (mode and alarms stay, the
        # next reading re-evaluates them). Alarm states follow their level's value.
        g = settings.get
        h0 = g("h0_mm", self.h0)
        if h0 is not None and h0 <= 0:
            raise ValueError("h0_mm must be > 0")
        new = list(g("levels_mm", self.levels))
        for i in range(1, len(new)):
            if new[i] <= new[i - 1]:
                raise ValueError("levels_mm must ascend")
        for k in _TIMING:
            if g(k, 0) is None:
                raise ValueError("%s missing" % k)
        # checked: apply
        self.lead_s = g("lead_s", self.lead_s)
        self.hysteresis_mm = g("hysteresis_mm", self.hysteresis_mm)
        self.rate_limit_ums = g("rate_limit_ums", self.rate_limit_ums)
        self.dry_s = g("dry_s", self.dry_s)
        self.wet_s = g("wet_s", self.wet_s)
        self.rising_s = g("rising_s", self.rising_s)
        if h0 != self.h0:
            self.h0 = h0
            self._reset_filters()
        n = g("burst", len(self._buf))
        if n > len(self._buf):
            self._buf = [0] * n
        if new != self.levels:
            old = self.levels
            st = bytearray(len(new))
            for i in range(len(new)):
                for j in range(len(old)):
                    if old[j] == new[i]:
                        st[i] = self._lvl[j]
            self.levels = new
            self._lvl = st

    def interval_s(self):
        # Seconds to the next reading: confirm a held jump quickly, else by mode.
        if self._cand is not None or self._grad or self.mode == RISING:
            return self.rising_s
        return self.dry_s if self.mode == DRY else self.wet_s

    def reading(self, now_ms, tofs, n, temp_cc, min_tof_us):
        now = now_ms & _TICKS_MASK
        self.alarms.clear()
        buf = self._buf
        if n > len(buf):
            buf = self._buf = [0] * n
        # 1. classify the pings; insertion-sort the echoes into the preallocated buffer
        q = nz = nmin = necho = nmiss = 0
        lim = (min_tof_us or 0) + _MINRANGE_TOL_US
        for i in range(n):
            v = tofs[i]
            if v is None:
                nmiss += 1
            elif v == -1:
                necho += 1
            elif v <= 0:
                nz += 1
            elif v <= lim:
                nmin += 1
            else:
                j = q
                while j and buf[j - 1] > v:
                    buf[j] = buf[j - 1]
                    j -= 1
                buf[j] = v
                q += 1
        flags = 0
        tc = temp_cc
        if tc is None:
            flags = FLAG_NOTEMP
            tc = _T20_CC
        # 2. median tof -> compensated range
        rng = 0
        if q:
            h = q >> 1
            m = buf[h] if q & 1 else (buf[h - 1] + buf[h] + 1) >> 1
            if tc != self._kt:
                self._kt = tc
                self._kr = tof_to_range_mm(_KREF_TOF_US, tc)
            rng = (m * self._kr + _KREF_TOF_US // 2) // _KREF_TOF_US
        if q * 2 <= n - nmiss:
            if nz and nz >= nmin and nz >= necho:
                flags |= FLAG_ZERO
            elif nmin and nmin >= necho:
                flags |= FLAG_MINRANGE
            elif necho:
                flags |= FLAG_NOECHO
            return 0, rng, temp_cc, flags | FLAG_INVALID, q
        if self.h0 is None:     # not calibrated: the range alone helps the technician
            return 0, rng, temp_cc, flags | FLAG_INVALID, q
        # 3. depth and the range filter
        d = self.h0 - rng
        if rng <= 0 or d < -_NEG_INVALID_MM:
            return 0, rng, temp_cc, flags | FLAG_RANGE | FLAG_INVALID, q
        if d <= _DRY_MM:
            if d < -_DRY_MM:
                flags |= FLAG_RANGE
            d = 0
        # blip, box, gradient: rep is what this reading reports; accepted: rep is a measurement
        acc = self._acc
        rep = d
        accepted = True
        if self._box >= 0 and abs(d - self._box) <= _BOX_TOL_MM:
            flags |= FLAG_BOX
            rep = 0
        else:
            self._box = -1
            c = self._cand
            self._cand = None
            if acc is not None:
                confirmed = c is not None and abs(d - c) <= _BLIP_MM
                if abs(d - acc) > _BLIP_MM and not confirmed and not self._grad:
                    self._cand = d
                    self._cand_t = now
                    flags |= FLAG_BLIP
                    rep = acc
                    accepted = False
                elif (confirmed and c is not None and acc == 0 and c > 0
                      and abs(d - c) <= _BOX_TOL_MM
                      and 4 * _ums(abs(d - c), _dt(now, self._cand_t))
                      < _ums(c, _dt(self._cand_t, self._acc_t))):
                    self._box = d
                    flags |= FLAG_BOX
                    rep = 0
                elif _ums(d - acc, _dt(now, self._acc_t)) > _GRADIENT_UMS:
                    self._grad = True
                    flags |= FLAG_GRADIENT
                    rep = acc
                    accepted = False
                else:
                    self._grad = False
        # 4. history and rate
        if accepted:
            self._acc = rep
            self._acc_t = now
            i = self._hi
            self._ht[i] = now
            self._hd[i] = rep
            self._hi = (i + 1) % _HIST_N
            if self._hn < _HIST_N:
                self._hn += 1
            self._rate(now)
        # short filter
        if rep > 0:
            self._wet_run += 1
            self._wet_t = now
        else:
            if 0 < self._wet_run <= 2:
                flags |= FLAG_SHORT
            self._wet_run = 0
        # 5. alarms
        self._alarm(rep)
        # 6. mode
        r = self.rate_ums
        mode = self.mode
        if rep > 0:
            if not self._rate_ok or r >= _RISING_UMS:
                mode = RISING
            elif r <= -_RISING_UMS:
                mode = RECEDING
            elif not ((mode == RISING and r >= _RISING_UMS // 2)
                      or (mode == RECEDING and r <= -_RISING_UMS // 2)):
                mode = WET
        elif mode != DRY:
            mode = DRY if _dt(now, self._wet_t) >= _QUIET_MS else RECEDING
        self.mode = mode
        return rep, rng, temp_cc, flags, q

    def _rate(self, now):
        # Least-squares slope of depth against time over the window, newest first. x is the
        # age in s; centring on the integer means keeps the sums small.
        ht = self._ht
        hd = self._hd
        win = max(_RATE_WINDOW_S, 3 * self.wet_s)
        k = sx = sy = span = 0
        i = self._hi
        for _ in range(self._hn):
            i = (i - 1) % _HIST_N
            x = (_dt(now, ht[i]) + 500) // 1000
            if x > win:
                break
            k += 1
            sx += x
            sy += hd[i]
            span = x
        if k < _RATE_MIN_N or span < _RATE_MIN_SPAN_S:
            self.rate_ums = 0
            self._rate_ok = False
            return
        cx = sx // k
        cy = sy // k
        sxx = sxy = ax = ay = 0
        i = self._hi
        for _ in range(k):
            i = (i - 1) % _HIST_N
            dx = (_dt(now, ht[i]) + 500) // 1000 - cx
            dy = hd[i] - cy
            sxx += dx * dx
            sxy += dx * dy
            ax += dx
            ay += dy
        sxx -= ax * ax // k
        sxy -= ax * ay // k
        if sxx <= 0:
            self.rate_ums = 0
            self._rate_ok = False
            return
        # x counts backwards in time: the rise is minus the slope against x
        self.rate_ums = -(sxy * 1000 // sxx)
        self._rate_ok = True

    def _alarm(self, d):
        out = self.alarms
        r = self.rate_ums
        ok = self._rate_ok
        lim = self.rate_limit_ums
        if lim > 0:
            if not self._rate_raised and ok and r >= lim:
                out.append((ALARM_RATE, 0, d, r, None))
                self._rate_raised = True
            elif self._rate_raised and r < lim // 2:
                self._rate_raised = False
        levels = self.levels
        st = self._lvl
        low = self.hysteresis_mm
        for i in range(len(levels)):
            lv = levels[i]
            s = st[i]
            if d >= lv:
                if s != _CROSS:
                    out.append((ALARM_CROSSED, lv, d, r, None))
                    st[i] = _CROSS
            elif s == _CROSS:
                if d < lv - low or d == 0:
                    out.append((ALARM_CLEARED, lv, d, r, None))
                    st[i] = _IDLE
            elif s == _PRED:
                if d == 0 or (d < lv - low and r <= 0):
                    out.append((ALARM_CLEARED, lv, d, r, None))
                    st[i] = _IDLE
            elif ok and r >= _RISING_UMS and d * 1000 + r * self.lead_s >= lv * 1000:
                out.append((ALARM_PREDICTED, lv, d, r, (lv - d) * 1000 // r))
                st[i] = _PRED
