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
# ring, per-level states) are made up front or on configure(). The filters' scalar state
# lives in one list (slots _ACC...) rather than a dozen attributes: every attribute name
# costs the node a qstr-pool entry and an instance-dict slot.

from array import array

from micropython import const

from firmware.ranger import tof_to_range_mm
from protocol import messages

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
_TIMING = const(("lead_s", "hysteresis_mm", "rate_limit_ums", "dry_s", "wet_s", "rising_s"))
_IDLE = const(0)                 # per-level alarm state
_PRED = const(1)
_CROSS = const(2)
# Flood._s slots
_ACC = const(0)         # last accepted depth (the filters' reference), None: none yet
_ACC_T = const(1)       # its time
_CAND = const(2)        # jump held by the blip filter, waiting for confirmation, or None
_CAND_T = const(3)      # its time
_BOX = const(4)         # plateau depth of a box (object), -1: none
_GRAD = const(5)        # holding against a too-fast rise
_HI = const(6)          # history ring: next slot
_HN = const(7)          # history ring: entries held
_KT = const(8)          # temperature of the cached conversion, None: none yet
_KR = const(9)          # mm per _KREF_TOF_US at that temperature
_RATE_OK = const(10)    # rate_ums is known
_RAISED = const(11)     # the rate alarm is raised
_WET_T = const(12)      # time of the last wet reading
_WET_RUN = const(13)    # wet readings in a row


def _dt(a, b):
    # Milliseconds from b to a, times taken modulo 2**30 (ticks_ms or any monotonic ms). A
    # clock that went backwards reads as a very long gap: old history drops out of windows.
    return (a - b) & _TICKS_MASK


def _ums(n, ms):
    # Rate in um/s of n mm over ms, in 0.1 s steps (stays within small ints).
    return n * 10000 // max(1, ms // 100)


class Flood:
    # cfg: the settings dict (config.Config.values)
    def __init__(self, cfg):
        self._buf = [0] * 7
        # history ring of accepted readings: time (ms mod 2**30) at 2i, depth (mm) at 2i + 1
        self._h = array("i", [0] * (2 * _HIST_N))
        self._s = [None, 0, None, 0, -1, False, 0, 0, None, 0, False, False, 0, 0]  # type: list
        self.levels_mm = []
        self._lvl = bytearray(0)                # _IDLE / _PRED / _CROSS per level
        self.h0_mm = None
        self.alarms = []
        self.mode = DRY
        self.rate_ums = 0
        for k in _TIMING:
            if cfg.get(k) is None:
                raise ValueError("%s missing" % k)
        self.lead_s = cfg["lead_s"]
        self.hysteresis_mm = cfg["hysteresis_mm"]
        self.rate_limit_ums = cfg["rate_limit_ums"]
        self.dry_s = cfg["dry_s"]
        self.wet_s = cfg["wet_s"]
        self.rising_s = cfg["rising_s"]
        self.configure(cfg)

    def configure(self, cfg):
        # Full or partial settings; missing keys keep their value. A new H0 changes what
        # every stored depth means: history and filters restart (mode and alarms stay, the
        # next reading re-evaluates them). Alarm states follow their level's value.
        g = cfg.get
        h0 = g("h0_mm", self.h0_mm)
        if h0 is not None and h0 <= 0:
            raise ValueError("h0_mm must be > 0")
        new = list(g("levels_mm", self.levels_mm))
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
        if h0 != self.h0_mm:
            self.h0_mm = h0
            s = self._s
            s[_ACC] = s[_CAND] = None
            s[_ACC_T] = s[_CAND_T] = s[_HN] = 0
            s[_BOX] = -1
            s[_GRAD] = False
        n = g("burst", len(self._buf))
        if n > len(self._buf):
            self._buf = [0] * n
        if new != self.levels_mm:
            old = self.levels_mm
            st = bytearray(len(new))
            for i in range(len(new)):
                for j in range(len(old)):
                    if old[j] == new[i]:
                        st[i] = self._lvl[j]
            self.levels_mm = new
            self._lvl = st

    def interval_s(self):
        # Seconds to the next reading: confirm a held jump quickly, else by mode.
        s = self._s
        if s[_CAND] is not None or s[_GRAD] or self.mode == RISING:
            return self.rising_s
        return self.dry_s if self.mode == DRY else self.wet_s

    def reading(self, t, values, n, temp_cc, us):
        # t: now in ms; values[0:n]: the burst's ping results (ranger codes); us: the
        # ranger's minimum-range tof (MIN_TOF_US). Returns (depth_mm, range_mm, temp_cc,
        # flags, q).
        m = messages
        s = self._s
        now = t & _TICKS_MASK
        self.alarms.clear()
        buf = self._buf
        if n > len(buf):
            buf = self._buf = [0] * n
        # 1. classify the pings; insertion-sort the echoes into the preallocated buffer
        q = nz = nmin = necho = nmiss = 0
        lim = (us or 0) + _MINRANGE_TOL_US
        for i in range(n):
            v = values[i]
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
            flags = m.FLAG_NOTEMP
            tc = _T20_CC
        # 2. median tof -> compensated range
        rng = 0
        if q:
            h = q >> 1
            mid = buf[h] if q & 1 else (buf[h - 1] + buf[h] + 1) >> 1
            if tc != s[_KT]:
                s[_KT] = tc
                s[_KR] = tof_to_range_mm(_KREF_TOF_US, tc)
            rng = (mid * s[_KR] + _KREF_TOF_US // 2) // _KREF_TOF_US
        if q * 2 <= n - nmiss:
            if nz and nz >= nmin and nz >= necho:
                flags |= m.FLAG_ZERO
            elif nmin and nmin >= necho:
                flags |= m.FLAG_MINRANGE
            elif necho:
                flags |= m.FLAG_NOECHO
            return 0, rng, temp_cc, flags | m.FLAG_INVALID, q
        if self.h0_mm is None:     # not calibrated: the range alone helps the technician
            return 0, rng, temp_cc, flags | m.FLAG_INVALID, q
        # 3. depth and the range filter
        d = self.h0_mm - rng
        if rng <= 0 or d < -_NEG_INVALID_MM:
            return 0, rng, temp_cc, flags | m.FLAG_RANGE | m.FLAG_INVALID, q
        if d <= _DRY_MM:
            if d < -_DRY_MM:
                flags |= m.FLAG_RANGE
            d = 0
        # blip, box, gradient: rep is what this reading reports; accepted: rep is a measurement
        acc = s[_ACC]
        rep = d
        accepted = True
        if s[_BOX] >= 0 and abs(d - s[_BOX]) <= _BOX_TOL_MM:
            flags |= m.FLAG_BOX
            rep = 0
        else:
            s[_BOX] = -1
            c = s[_CAND]
            s[_CAND] = None
            if acc is not None:
                confirmed = c is not None and abs(d - c) <= _BLIP_MM
                if abs(d - acc) > _BLIP_MM and not confirmed and not s[_GRAD]:
                    s[_CAND] = d
                    s[_CAND_T] = now
                    flags |= m.FLAG_BLIP
                    rep = acc
                    accepted = False
                elif (confirmed and c is not None and acc == 0 and c > 0
                      and abs(d - c) <= _BOX_TOL_MM
                      and 4 * _ums(abs(d - c), _dt(now, s[_CAND_T]))
                      < _ums(c, _dt(s[_CAND_T], s[_ACC_T]))):
                    s[_BOX] = d
                    flags |= m.FLAG_BOX
                    rep = 0
                elif _ums(d - acc, _dt(now, s[_ACC_T])) > _GRADIENT_UMS:
                    s[_GRAD] = True
                    flags |= m.FLAG_GRADIENT
                    rep = acc
                    accepted = False
                else:
                    s[_GRAD] = False
        # 4. history and rate
        if accepted:
            s[_ACC] = rep
            s[_ACC_T] = now
            i = s[_HI]
            self._h[2 * i] = now
            self._h[2 * i + 1] = rep
            s[_HI] = (i + 1) % _HIST_N
            if s[_HN] < _HIST_N:
                s[_HN] += 1
            self._rate(now)
        # short filter
        if rep > 0:
            s[_WET_RUN] += 1
            s[_WET_T] = now
        else:
            if 0 < s[_WET_RUN] <= 2:
                flags |= m.FLAG_SHORT
            s[_WET_RUN] = 0
        # 5. alarms
        self._alarm(rep)
        # 6. mode
        r = self.rate_ums
        mode = self.mode
        if rep > 0:
            if not s[_RATE_OK] or r >= _RISING_UMS:
                mode = RISING
            elif r <= -_RISING_UMS:
                mode = RECEDING
            elif not ((mode == RISING and r >= _RISING_UMS // 2)
                      or (mode == RECEDING and r <= -_RISING_UMS // 2)):
                mode = WET
        elif mode != DRY:
            mode = DRY if _dt(now, s[_WET_T]) >= _QUIET_MS else RECEDING
        self.mode = mode
        return rep, rng, temp_cc, flags, q

    def _rate(self, t):
        # Least-squares slope of depth against time over the window, newest first. x is the
        # age in s; centring on the integer means keeps the sums small.
        h = self._h
        s = self._s
        win = max(_RATE_WINDOW_S, 3 * self.wet_s)
        k = sx = sy = span = 0
        i = s[_HI]
        for _ in range(s[_HN]):
            i = (i - 1) % _HIST_N
            x = (_dt(t, h[2 * i]) + 500) // 1000
            if x > win:
                break
            k += 1
            sx += x
            sy += h[2 * i + 1]
            span = x
        s[_RATE_OK] = False
        self.rate_ums = 0
        if k < _RATE_MIN_N or span < _RATE_MIN_SPAN_S:
            return
        cx = sx // k
        cy = sy // k
        sxx = sxy = ax = ay = 0
        i = s[_HI]
        for _ in range(k):
            i = (i - 1) % _HIST_N
            dx = (_dt(t, h[2 * i]) + 500) // 1000 - cx
            dy = h[2 * i + 1] - cy
            sxx += dx * dx
            sxy += dx * dy
            ax += dx
            ay += dy
        sxx -= ax * ax // k
        sxy -= ax * ay // k
        if sxx <= 0:
            return
        # x counts backwards in time: the rise is minus the slope against x
        self.rate_ums = -(sxy * 1000 // sxx)
        s[_RATE_OK] = True

    def _alarm(self, d):
        m = messages
        s = self._s
        out = self.alarms
        r = self.rate_ums
        ok = s[_RATE_OK]
        lim = self.rate_limit_ums
        if lim > 0:
            if not s[_RAISED] and ok and r >= lim:
                out.append((m.ALARM_RATE, 0, d, r, None))
                s[_RAISED] = True
            elif s[_RAISED] and r < lim // 2:
                s[_RAISED] = False
        levels = self.levels_mm
        st = self._lvl
        low = self.hysteresis_mm
        for i in range(len(levels)):
            lv = levels[i]
            x = st[i]
            if d >= lv:
                if x != _CROSS:
                    out.append((m.ALARM_CROSSED, lv, d, r, None))
                    st[i] = _CROSS
            elif x == _CROSS:
                if d < lv - low or d == 0:
                    out.append((m.ALARM_CLEARED, lv, d, r, None))
                    st[i] = _IDLE
            elif x == _PRED:
                if d == 0 or (d < lv - low and r <= 0):
                    out.append((m.ALARM_CLEARED, lv, d, r, None))
                    st[i] = _IDLE
            elif ok and r >= _RISING_UMS and d * 1000 + r * self.lead_s >= lv * 1000:
                out.append((m.ALARM_PREDICTED, lv, d, r, (lv - d) * 1000 // r))
                st[i] = _PRED
