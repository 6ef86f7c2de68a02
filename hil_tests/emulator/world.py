"""The modelled world of one emulated board: sensor readings as pure functions of virtual time.

`World(scenario)` answers the board's world queries (hil_tests/README.md, "World queries"):
SR04T echo width, MB7389 reading, DS18B20 temperature, QMC5883L A/B raw counts, battery at the
ADC pin. Every answer depends only on the scenario, its seed and the virtual time in ms, so a
test can ask the same World for the exact value the board saw. The truth (water depth, air
temperature, when each vehicle passes each magnetometer) is exposed for tests to compare with.
"""

from __future__ import annotations

import math
import struct
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import datetime, timedelta

from hil_tests.emulator.scenario import Point, Scenario

# JSN-SR04T (field notes: 25-600 cm; no echo ~38 ms; stuck-low echo -> time_pulse_us -2).
SR04T_MIN_MM = 250.0
SR04T_MAX_MM = 6000.0
SR04T_NOECHO_US = 38000
SR04T_FAULT = -2
# MaxBotix MB7389: mm at a fixed 20 C speed of sound; 300 = minimum, 5000 = no echo, 0 = fault.
MB_SOUND_M_S = 343.4
MB_MIN_MM = 300
MB_MAX_MM = 5000
# QMC5883L at the 8 G range: 3000 LSB/G = 3 LSB per milligauss.
MAG_LSB_PER_MG = 3.0
INT16_MIN = -32768
INT16_MAX = 32767
DS18B20_STEP_C = 1.0 / 16.0

_SENSORS = ("ranger", "temp", "mag_a", "mag_b")
_MASK64 = (1 << 64) - 1
# Noise channels (any distinct integers): one per sensor and axis.
_CH_ECHO = 1
_CH_MB = 2
_CH_MAG = {"a": 10, "b": 20}
MAG_SLOTS_MAX = 64               # samples one b"g" query may ask for
_MAG_SLOT = struct.Struct("<Bhhh")
_MAG_ABSENT = bytes(_MAG_SLOT.size)
_CH_DIR = 30
_TAIL_SIGMAS = 6.0                        # a bump further than this from its centre is 0


def sound_speed_m_s(temp_c: float) -> float:
    """Speed of sound in air: c(T) = 331.3 * sqrt(1 + T / 273.15) m/s."""
    return 331.3 * math.sqrt(1.0 + temp_c / 273.15)


def echo_width_us(range_mm: float, temp_c: float) -> float:
    """Round-trip time of flight in µs for a target range_mm away in air at temp_c."""
    return 2000.0 * range_mm / sound_speed_m_s(temp_c)


def _mix(x: int) -> int:
    """SplitMix64 finaliser: a well-spread 64-bit hash of x."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def channel_key(seed: int, channel: int) -> int:
    """The hash key of one noise channel of one seed."""
    return _mix(_mix(seed & _MASK64) ^ channel)


def normals(key: int, v_ms: int) -> tuple[float, float]:
    """Two independent standard normal deviates fixed by (channel key, v_ms) (Box-Muller)."""
    h = _mix(key ^ (v_ms & _MASK64))
    r = math.sqrt(-2.0 * math.log(((h >> 32) + 1) / 4294967296.0))
    a = (h & 0xFFFFFFFF) * (2.0 * math.pi / 4294967296.0)
    return r * math.cos(a), r * math.sin(a)


def uniform(key: int, n: int) -> float:
    """A uniform deviate in [0, 1) fixed by (channel key, n)."""
    return (_mix(key ^ (n & _MASK64)) >> 11) / 9007199254740992.0


class _Curve:
    """Piecewise linear curve over virtual ms; constant before the first and after the last."""

    def __init__(self, points: tuple[Point, ...], default: float) -> None:
        self.ts = [p.t_s * 1000.0 for p in points] or [0.0]
        self.vs = [p.value for p in points] or [default]

    def at(self, v_ms: float) -> float:
        ts, vs = self.ts, self.vs
        i = bisect_right(ts, v_ms)
        if i == 0:
            return vs[0]
        if i == len(ts):
            return vs[-1]
        t0, t1 = ts[i - 1], ts[i]
        return vs[i - 1] + (vs[i] - vs[i - 1]) * (v_ms - t0) / (t1 - t0)


@dataclass(frozen=True)
class Passage:
    """Truth for one vehicle: when its front and centre pass each magnetometer (seconds)."""

    index: int                 # position in scenario.vehicles
    origin: str
    front_a_s: float
    front_b_s: float
    centre_a_s: float
    centre_b_s: float
    leave_a_s: float           # its rear passes A
    leave_b_s: float
    speed_kmh: float
    length_m: float
    signature_mg: float
    lane: int
    direction: str


class _Bumps:
    """The vehicles' field bumps at one magnetometer, sorted by centre time for bisection."""

    def __init__(self, items: list[tuple[float, float, tuple[float, float, float]]]) -> None:
        items.sort(key=lambda b: b[0])
        self.centres = [b[0] for b in items]
        self.inv_sigma = [1.0 / b[1] for b in items]
        self.vectors = [b[2] for b in items]
        self.reach = max((b[1] for b in items), default=0.0) * _TAIL_SIGMAS

    def at(self, v_ms: float) -> tuple[float, float, float]:
        lo = bisect_left(self.centres, v_ms - self.reach)
        hi = bisect_right(self.centres, v_ms + self.reach)
        x = y = z = 0.0
        for i in range(lo, hi):
            d = (v_ms - self.centres[i]) * self.inv_sigma[i]
            if -_TAIL_SIGMAS < d < _TAIL_SIGMAS:
                g = math.exp(-0.5 * d * d)
                vx, vy, vz = self.vectors[i]
                x += vx * g
                y += vy * g
                z += vz * g
        return x, y, z


class World:
    """Answers world queries for one scenario; pure functions of (scenario, seed, v_ms)."""

    def __init__(self, scenario: Scenario, battery_divider: float = 2.0) -> None:
        if battery_divider <= 0:
            raise ValueError(f"battery_divider must be > 0, got {battery_divider}")
        self.scenario = scenario
        self.battery_divider = battery_divider
        site = scenario.site
        self._seed = scenario.seed
        self._keys = {ch: channel_key(scenario.seed, ch)
                      for ch in (_CH_ECHO, _CH_MB, *_CH_MAG.values(),
                                 *(c + 1 for c in _CH_MAG.values()))}
        self._depth = _Curve(scenario.depth, 0.0)
        self._temp = _Curve(scenario.air_temp, 20.0)
        self._battery = _Curve(scenario.battery, site.battery_mv)
        self._faults: dict[str, list[tuple[float, float, str]]] = {s: [] for s in _SENSORS}
        self._hung: set[float] = set()     # hang windows whose one hung read happened
        for f in scenario.faults:
            self._faults[f.sensor].append((f.t_s * 1000.0, f.until_s * 1000.0, f.kind))
        self._baseline = {"a": site.baseline_a_mg, "b": site.baseline_b_mg}
        self.passages = self._passages()
        bumps: dict[str, list[tuple[float, float, tuple[float, float, float]]]] = {
            "a": [], "b": []}
        for p in self.passages:
            speed_m_ms = p.speed_kmh / 3600.0              # km/h -> m per ms
            sigma_ms = (p.length_m / 4.0) / speed_m_ms     # Gaussian in position, sd = L / 4
            vec = self._direction(p.index, p.signature_mg)
            bumps["a"].append((p.centre_a_s * 1000.0, sigma_ms, vec))
            bumps["b"].append((p.centre_b_s * 1000.0, sigma_ms, vec))
        self._bumps = {k: _Bumps(v) for k, v in bumps.items()}

    # ----- truth -------------------------------------------------------------------------

    def depth_mm(self, t_s: float) -> float:
        """True water depth on the road at t_s."""
        return self._depth.at(t_s * 1000.0)

    def range_mm(self, t_s: float) -> float:
        """True distance from the ranger to the water (or the dry road) at t_s."""
        return self.scenario.site.h0_mm - self._depth.at(t_s * 1000.0)

    def air_temp_c(self, t_s: float) -> float:
        """True air temperature at t_s (what sets the speed of sound)."""
        return self._temp.at(t_s * 1000.0)

    def battery_mv(self, t_s: float) -> float:
        """True battery voltage at t_s."""
        return self._battery.at(t_s * 1000.0)

    def utc(self, t_s: float) -> datetime:
        """The UTC instant virtual t_s stands for."""
        return self.scenario.start_utc + timedelta(seconds=t_s)

    def fault(self, sensor: str, v_ms: float) -> str | None:
        """The fault kind active on sensor (ranger|temp|mag_a|mag_b) at v_ms, or None."""
        for start, end, kind in self._faults[sensor]:
            if start <= v_ms < end:
                return kind
        return None

    def passages_between(self, t0_s: float, t1_s: float) -> list[Passage]:
        """Vehicles whose centre passes magnetometer A in [t0_s, t1_s)."""
        return [p for p in self.passages if t0_s <= p.centre_a_s < t1_s]

    def _passages(self) -> tuple[Passage, ...]:
        d_m = self.scenario.site.mag_distance_mm / 1000.0
        out = []
        for i, v in enumerate(self.scenario.vehicles):
            speed = v.speed_kmh / 3.6
            ab = d_m / speed if v.direction == "ab" else -d_m / speed
            half = v.length_m / 2.0 / speed
            out.append(Passage(
                index=i, origin=v.origin, front_a_s=v.t_s, front_b_s=v.t_s + ab,
                centre_a_s=v.t_s + half, centre_b_s=v.t_s + ab + half,
                leave_a_s=v.t_s + 2 * half, leave_b_s=v.t_s + ab + 2 * half,
                speed_kmh=v.speed_kmh, length_m=v.length_m, signature_mg=v.signature_mg,
                lane=v.lane, direction=v.direction))
        return tuple(out)

    def _direction(self, index: int, size: float) -> tuple[float, float, float]:
        """A vehicle's deviation vector: mostly vertical (z), a seeded tilt, length = size."""
        key = channel_key(self._seed, _CH_DIR)
        x = 0.2 + 0.3 * uniform(key, 2 * index)
        y = 0.6 * uniform(key, 2 * index + 1) - 0.3
        n = math.sqrt(x * x + y * y + 1.0)
        return size * x / n, size * y / n, size / n

    # ----- sensor models (what the board reads) ------------------------------------------

    def _noisy_range(self, channel: int, v_ms: int) -> float:
        noise = self.scenario.site.range_noise_mm
        r = self.scenario.site.h0_mm - self._depth.at(v_ms)
        return r + noise * normals(self._keys[channel], v_ms)[0] if noise else r

    def _echo(self, v_ms: int) -> int:
        r = self._noisy_range(_CH_ECHO, v_ms)
        if r < SR04T_MIN_MM:
            return round(2000.0 * SR04T_MIN_MM / MB_SOUND_M_S)
        if r > SR04T_MAX_MM:
            return SR04T_NOECHO_US
        return round(echo_width_us(r, self._temp.at(v_ms)))

    def echo_us(self, v_ms: int) -> int:
        """JSN-SR04T echo pulse width in µs for a trigger at v_ms, or -2 (no pulse at all)."""
        kind = self.fault("ranger", v_ms)
        if kind is None or kind == "hang":
            return self._echo(v_ms)
        if kind == "noecho":
            return SR04T_NOECHO_US
        if kind == "obstruction":
            return round(2000.0 * SR04T_MIN_MM / MB_SOUND_M_S)
        if kind == "zero":
            return SR04T_FAULT
        return self._echo(self._stuck_at("ranger", v_ms))

    def _mb(self, v_ms: int) -> int:
        r = self._noisy_range(_CH_MB, v_ms)
        mm = round(r * MB_SOUND_M_S / sound_speed_m_s(self._temp.at(v_ms)))
        return min(MB_MAX_MM, max(MB_MIN_MM, mm))

    def mb7389_mm(self, v_ms: int) -> int:
        """MB7389 reading at v_ms: mm at 343.4 m/s, 300..5000; 0 on an electrical fault."""
        kind = self.fault("ranger", v_ms)
        if kind is None or kind == "hang":
            return self._mb(v_ms)
        if kind == "noecho":
            return MB_MAX_MM
        if kind == "obstruction":
            return MB_MIN_MM
        if kind == "zero":
            return 0
        return self._mb(self._stuck_at("ranger", v_ms))

    def temp_c(self, v_ms: int) -> float | None:
        """DS18B20 reading at v_ms (1/16 °C steps), or None while the sensor is absent."""
        kind = self.fault("temp", v_ms)
        if kind == "absent":
            return None
        t = v_ms if kind is None else self._stuck_at("temp", v_ms)
        return round(self._temp.at(t) / DS18B20_STEP_C) * DS18B20_STEP_C

    def _mag(self, which: str, v_ms: int) -> tuple[int, int, int]:
        bx, by, bz = self._baseline[which]
        dx, dy, dz = self._bumps[which].at(v_ms)
        noise = self.scenario.site.noise_mg
        if noise:
            ch = _CH_MAG[which]
            nx, ny = normals(self._keys[ch], v_ms)
            nz = normals(self._keys[ch + 1], v_ms)[0]
            bx += noise * nx
            by += noise * ny
            bz += noise * nz
        k = MAG_LSB_PER_MG
        return (min(INT16_MAX, max(INT16_MIN, round((bx + dx) * k))),
                min(INT16_MAX, max(INT16_MIN, round((by + dy) * k))),
                min(INT16_MAX, max(INT16_MIN, round((bz + dz) * k))))

    def mag_raw(self, which: str, v_ms: int) -> tuple[int, int, int] | None:
        """QMC5883L `which` ("a" or "b") raw x, y, z at v_ms (8 G range), or None if absent."""
        sensor = "mag_" + which
        kind = self.fault(sensor, v_ms)
        if kind is None:
            return self._mag(which, v_ms)
        if kind == "absent":
            return None
        if kind == "zero":
            return 0, 0, 0
        return self._mag(which, self._stuck_at(sensor, v_ms))

    def mag_field_mg(self, which: str, t_s: float) -> tuple[float, float, float]:
        """True field at magnetometer `which` at t_s: baseline plus vehicles, no noise."""
        bx, by, bz = self._baseline[which]
        dx, dy, dz = self._bumps[which].at(t_s * 1000.0)
        return bx + dx, by + dy, bz + dz

    def battery_uv(self, v_ms: int) -> int:
        """Battery voltage at the ADC pin in µV (after the board's divider)."""
        return round(self._battery.at(v_ms) * 1000.0 / self.battery_divider)

    def _stuck_at(self, sensor: str, v_ms: int) -> int:
        """A stuck sensor repeats its last reading before the fault began."""
        for start, end, _ in self._faults[sensor]:
            if start <= v_ms < end:
                return math.ceil(start) - 1
        return v_ms

    # ----- the query protocol ------------------------------------------------------------

    def stall_ms(self, request: bytes) -> float:
        """Virtual ms a query goes unanswered: the first ranger read (E, M) inside a `hang`
        fault window blocks until the window ends, as a hung driver call stalls the firmware
        (later reads in the window, after the watchdog's reset, answer at once)."""
        parts = request.split()
        if len(parts) != 2 or parts[0] not in (b"E", b"M"):
            return 0.0
        try:
            v_ms = int(parts[1])
        except ValueError:
            return 0.0
        for start, end, kind in self._faults["ranger"]:
            if kind == "hang" and start <= v_ms < end and start not in self._hung:
                self._hung.add(start)
                return float(end - v_ms)
        return 0.0

    def _mag_slots(self, parts: list[bytes]) -> bytes:
        """b"g a <v_ms> <period_ms> <count>": count samples of magnetometer a (or b) from v_ms
        on, period_ms apart; 7 binary bytes each (present 0/1, then x, y, z as int16
        little-endian), so the reply has a fixed length and may contain newline bytes."""
        which, v_ms, per, count = parts[1], int(parts[2]), int(parts[3]), int(parts[4])
        if which not in (b"a", b"b") or per < 1 or not 1 <= count <= MAG_SLOTS_MAX:
            raise ValueError
        out = bytearray()
        for i in range(count):
            xyz = self.mag_raw(which.decode(), v_ms + i * per)
            out += _MAG_ABSENT if xyz is None else _MAG_SLOT.pack(1, *xyz)
        return bytes(out)

    def answer(self, request: bytes) -> bytes:
        """Reply to one query line (without its newline), e.g. b"G a 1200" -> b"540 -120 1260".

        W (watchdog) is the supervisor's business, not the world's: it is refused here.
        """
        parts = request.split()
        try:
            op = parts[0]
            if op == b"G":
                if parts[1] not in (b"a", b"b"):
                    raise ValueError
                xyz = self.mag_raw(parts[1].decode(), int(parts[2]))
                return b"none" if xyz is None else b"%d %d %d" % xyz
            if op == b"g":
                return self._mag_slots(parts)
            v_ms = int(parts[1])
            if op == b"E":
                return b"%d" % self.echo_us(v_ms)
            if op == b"M":
                return b"%d" % self.mb7389_mm(v_ms)
            if op == b"T":
                t = self.temp_c(v_ms)
                return b"none" if t is None else repr(t).encode()
            if op == b"B":
                return b"%d" % self.battery_uv(v_ms)
        except (IndexError, ValueError, KeyError):
            pass
        return b"err bad query " + request[:40]
