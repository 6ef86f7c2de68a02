"""Scenario files: what the emulated board's world does over time (TOML, read with tomllib).

A scenario gives the site geometry, the water depth and air temperature over time (piecewise
linear points), the vehicles passing the two magnetometers, sensor faults and power cuts.
`load_scenario(path)` reads and validates one into frozen dataclasses; every error names the
file, the key and the fix. hil_tests/README.md documents the format with an example.
"""

from __future__ import annotations

import itertools
import math
import random
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Defaults in one place (README.md lists them too).
DEFAULT_START_UTC = "2025-06-01T12:00:00Z"
DEFAULT_SEED = 0
DEFAULT_MAG_DISTANCE_MM = 1500.0
DEFAULT_BASELINE_A_MG = (180.0, -40.0, 420.0)     # a mid-latitude earth field, about 0.46 G
DEFAULT_BASELINE_B_MG = (175.0, -35.0, 425.0)
DEFAULT_NOISE_MG = 2.0
DEFAULT_RANGE_NOISE_MM = 2.0
DEFAULT_BATTERY_MV = 3900.0
DEFAULT_AIR_TEMP_C = 20.0
DEFAULT_LANE = 1
DEFAULT_DIRECTION = "ab"
DEFAULT_STREAM_MIN_GAP_S = 3.0
DEFAULT_STREAM_LENGTH_M = (3.8, 5.2)
DEFAULT_STREAM_SIGNATURE_MG = (150.0, 400.0)

DIRECTIONS = ("ab", "ba")
# Which fault kinds each sensor can show (see README.md for what each one does).
FAULT_KINDS: dict[str, tuple[str, ...]] = {
    "ranger": ("noecho", "obstruction", "zero", "stuck", "hang"),
    "temp": ("absent", "stuck"),
    "mag_a": ("absent", "zero", "stuck"),
    "mag_b": ("absent", "zero", "stuck"),
}

_TOP_KEYS = ("name", "duration_s", "start_utc", "seed", "site", "depth", "air_temp", "battery",
             "vehicles", "vehicle_stream", "faults", "power_cuts")


class ScenarioError(ValueError):
    """A scenario file is missing, unreadable or invalid; the message names file, key and fix."""


@dataclass(frozen=True)
class Site:
    """Where the node stands: true geometry, the earth field each magnetometer sees, battery."""

    h0_mm: float                                  # sensor height above the dry road (true H0)
    mag_distance_mm: float                        # magnetometer A to B along the lane
    baseline_a_mg: tuple[float, float, float]     # earth field at A, x y z in milligauss
    baseline_b_mg: tuple[float, float, float]
    noise_mg: float                               # standard deviation per axis per sample
    range_noise_mm: float                         # standard deviation of ranger readings
    battery_mv: float                             # battery voltage unless `battery` points say


@dataclass(frozen=True)
class Point:
    """One point of a piecewise linear curve: `value` at `t_s` seconds after the start."""

    t_s: float
    value: float


@dataclass(frozen=True)
class Vehicle:
    """One vehicle: its front reaches magnetometer A at `t_s` (B first when direction 'ba')."""

    t_s: float
    speed_kmh: float
    length_m: float
    signature_mg: float        # peak field deviation it causes at each magnetometer
    lane: int
    direction: str             # "ab": passes A then B; "ba": passes B then A
    origin: str                # "vehicles[3]" or "vehicle_stream[0]" (for messages and truth)


@dataclass(frozen=True)
class VehicleStream:
    """A deterministic stream of vehicles (rush hour): exponential gaps above a minimum."""

    start_s: float
    end_s: float
    mean_gap_s: float
    min_gap_s: float
    speed_kmh: tuple[float, float]
    length_m: tuple[float, float]
    signature_mg: tuple[float, float]
    lane: int
    direction: str
    seed: int


@dataclass(frozen=True)
class Fault:
    """A sensor fault from `t_s` (included) to `until_s` (excluded)."""

    sensor: str                # ranger | temp | mag_a | mag_b
    kind: str                  # noecho | obstruction | zero | absent | stuck | hang
    t_s: float
    until_s: float


@dataclass(frozen=True)
class PowerCut:
    """Power lost at `t_s` for `off_s` seconds (virtual): RTC memory lost, reboot power-on."""

    t_s: float
    off_s: float


@dataclass(frozen=True)
class Scenario:
    """A validated scenario; `vehicles` holds the listed and the expanded stream vehicles."""

    name: str
    duration_s: float
    start_utc: datetime        # the UTC instant the scenario's t = 0 stands for
    seed: int                  # seeds the sensor noise
    site: Site
    depth: tuple[Point, ...]
    air_temp: tuple[Point, ...]
    battery: tuple[Point, ...]
    vehicles: tuple[Vehicle, ...]
    streams: tuple[VehicleStream, ...]
    faults: tuple[Fault, ...]
    power_cuts: tuple[PowerCut, ...]
    source: str                # the file it came from, for messages


class _Table:
    """Reads one TOML table, checking types and ranges; errors name file, key and fix."""

    def __init__(self, source: str, where: str, data: object) -> None:
        self.source = source
        self.where = where
        if not isinstance(data, Mapping):
            raise self.error("", f"expected a table, got {_kind(data)}",
                             "write it as [table] or { key = value }")
        self.data: Mapping[str, Any] = data
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def error(self, name: str, problem: str, fix: str) -> ScenarioError:
        key = self.key(name) if name else self.where
        return ScenarioError(f"{self.source}: {key}: {problem}; {fix}")

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str) -> object:
        self.used.add(name)
        return self.data.get(name)

    def number(self, name: str, default: float | None = None, *, low: float | None = None,
               high: float | None = None, positive: bool = False, unit: str = "") -> float:
        value = self.raw(name)
        if value is None:
            if default is None:
                raise self.error(name, "missing", f"add `{name} = <number{unit}>`")
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"expected a number, got {_kind(value)}",
                             f"write `{name} = <number{unit}>`")
        number = float(value)
        if not math.isfinite(number):
            raise self.error(name, f"{value} is not finite", "give a finite number")
        if positive and number <= 0:
            raise self.error(name, f"must be > 0, got {value}", "give a positive number")
        if low is not None and number < low:
            raise self.error(name, f"must be >= {low:g}, got {value}",
                             f"give a value of at least {low:g}")
        if high is not None and number > high:
            raise self.error(name, f"must be <= {high:g}, got {value}",
                             f"give a value of at most {high:g}")
        return number

    def integer(self, name: str, default: int, *, low: int | None = None) -> int:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"expected an integer, got {_kind(value)}",
                             f"write `{name} = <integer>`")
        if low is not None and value < low:
            raise self.error(name, f"must be >= {low}, got {value}", f"give at least {low}")
        return value

    def choice(self, name: str, choices: Sequence[str], default: str | None = None,
               what: str = "allowed") -> str:
        value = self.raw(name)
        if value is None and default is not None:
            return default
        if value is None:
            raise self.error(name, "missing", f"add `{name} = \"{choices[0]}\"` (one of "
                             f"{', '.join(choices)})")
        if not isinstance(value, str) or value not in choices:
            raise self.error(name, f"{value!r} is not {what}", f"use one of {', '.join(choices)}")
        return value

    def vector(self, name: str, default: tuple[float, ...], size: int) -> tuple[float, ...]:
        value = self.raw(name)
        if value is None:
            return default
        if (not isinstance(value, list) or len(value) != size
                or any(isinstance(v, bool) or not isinstance(v, int | float) for v in value)):
            raise self.error(name, f"expected {size} numbers, got {value!r}",
                             f"write `{name} = [{', '.join(['<number>'] * size)}]`")
        return tuple(float(v) for v in value)

    def span(self, name: str, default: tuple[float, float] | None,
             unit: str) -> tuple[float, float]:
        if not self.has(name) and default is None:
            self.raw(name)
            raise self.error(name, "missing", f"add `{name} = [<min {unit}>, <max {unit}>]`")
        low, high = self.vector(name, default or (0.0, 0.0), 2)
        if not 0 < low <= high:
            raise self.error(name, f"[{low:g}, {high:g}] is not a range of positive values",
                             f"write `{name} = [<min {unit}>, <max {unit}>]` with 0 < min <= max")
        return low, high

    def done(self) -> None:
        extra = sorted(set(self.data) - self.used)
        if extra:
            hint = ""
            if self.where and extra[0] in _TOP_KEYS:
                hint = " (in TOML a key written after a [table] header belongs to that table: " \
                       "move top-level keys above the first header)"
            raise self.error(extra[0], "unknown key",
                             f"remove it or use one of {', '.join(sorted(self.used))}{hint}")


def _kind(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


def _array(top: _Table, name: str) -> list[object]:
    value = top.raw(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise top.error(name, f"expected an array of tables, got {_kind(value)}",
                        f"write each entry as [[{name}]]")
    return value


def _points(top: _Table, name: str, unit_key: str, *, low: float | None = None,
            high: float | None = None) -> tuple[Point, ...]:
    """Reads [[name]] tables {t_s, unit_key} or [t_s, value] pairs, times strictly rising."""
    points: list[Point] = []
    for i, entry in enumerate(_array(top, name)):
        where = f"{name}[{i}]"
        item = entry
        if isinstance(entry, list):
            if (len(entry) != 2 or any(isinstance(v, bool) or not isinstance(v, int | float)
                                       for v in entry)):
                raise ScenarioError(f"{top.source}: {where}: expected [t_s, {unit_key}], got "
                                    f"{entry!r}; write a pair of numbers")
            item = {"t_s": entry[0], unit_key: entry[1]}
        table = _Table(top.source, where, item)
        t_s = table.number("t_s", low=0.0, unit=" s")
        value = table.number(unit_key, low=low, high=high)
        table.done()
        if points and t_s <= points[-1].t_s:
            raise table.error("t_s", f"{t_s:g} is not after the previous point's "
                              f"{points[-1].t_s:g}", "list points in rising time order")
        points.append(Point(t_s, value))
    return tuple(points)


def _site(top: _Table) -> Site:
    if not top.has("site"):
        top.raw("site")
        raise top.error("site", "missing", "add a [site] table with at least `h0_mm = <mm>`")
    t = _Table(top.source, "site", top.raw("site"))
    a = t.vector("baseline_a_mg", DEFAULT_BASELINE_A_MG, 3)
    b = t.vector("baseline_b_mg", DEFAULT_BASELINE_B_MG, 3)
    site = Site(
        h0_mm=t.number("h0_mm", low=300.0, high=10000.0, unit=" mm"),
        mag_distance_mm=t.number("mag_distance_mm", DEFAULT_MAG_DISTANCE_MM, low=100.0,
                                 high=20000.0),
        baseline_a_mg=(a[0], a[1], a[2]),
        baseline_b_mg=(b[0], b[1], b[2]),
        noise_mg=t.number("noise_mg", DEFAULT_NOISE_MG, low=0.0, high=1000.0),
        range_noise_mm=t.number("range_noise_mm", DEFAULT_RANGE_NOISE_MM, low=0.0, high=500.0),
        battery_mv=t.number("battery_mv", DEFAULT_BATTERY_MV, low=0.0, high=20000.0),
    )
    t.done()
    return site


def _vehicle(source: str, where: str, item: object, duration_s: float) -> Vehicle:
    t = _Table(source, where, item)
    vehicle = Vehicle(
        t_s=t.number("t_s", low=0.0, high=duration_s, unit=" s"),
        speed_kmh=t.number("speed_kmh", low=1.0, high=300.0, unit=" km/h"),
        length_m=t.number("length_m", low=0.5, high=40.0, unit=" m"),
        signature_mg=t.number("signature_mg", low=0.0, high=20000.0, unit=" mG"),
        lane=t.integer("lane", DEFAULT_LANE, low=1),
        direction=t.choice("direction", DIRECTIONS, DEFAULT_DIRECTION),
        origin=where,
    )
    t.done()
    return vehicle


def _stream(source: str, where: str, item: object, duration_s: float, seed: int) -> VehicleStream:
    t = _Table(source, where, item)
    start_s = t.number("start_s", low=0.0, high=duration_s, unit=" s")
    end_s = t.number("end_s", low=0.0, high=duration_s, unit=" s")
    if end_s <= start_s:
        raise t.error("end_s", f"{end_s:g} is not after start_s = {start_s:g}",
                      "give an end after the start")
    min_gap_s = t.number("min_gap_s", DEFAULT_STREAM_MIN_GAP_S, positive=True)
    mean_gap_s = t.number("mean_gap_s", positive=True, unit=" s")
    if mean_gap_s < min_gap_s:
        raise t.error("mean_gap_s", f"{mean_gap_s:g} is below min_gap_s = {min_gap_s:g}",
                      "give a mean gap at least the minimum gap")
    stream = VehicleStream(
        start_s=start_s, end_s=end_s, mean_gap_s=mean_gap_s, min_gap_s=min_gap_s,
        speed_kmh=t.span("speed_kmh", None, "km/h"),
        length_m=t.span("length_m", DEFAULT_STREAM_LENGTH_M, "m"),
        signature_mg=t.span("signature_mg", DEFAULT_STREAM_SIGNATURE_MG, "mG"),
        lane=t.integer("lane", DEFAULT_LANE, low=1),
        direction=t.choice("direction", DIRECTIONS, DEFAULT_DIRECTION),
        seed=t.integer("seed", seed),
    )
    t.done()
    return stream


def expand_stream(stream: VehicleStream, origin: str = "vehicle_stream") -> tuple[Vehicle, ...]:
    """The stream's vehicles; the same stream always gives the same list (rng.random only)."""
    rng = random.Random(stream.seed)

    def pick(span: tuple[float, float]) -> float:
        return span[0] + rng.random() * (span[1] - span[0])

    out: list[Vehicle] = []
    t = stream.start_s
    extra = stream.mean_gap_s - stream.min_gap_s
    while True:
        t += stream.min_gap_s - extra * math.log(1.0 - rng.random())
        if t > stream.end_s:
            break
        out.append(Vehicle(t_s=round(t, 3), speed_kmh=round(pick(stream.speed_kmh), 1),
                           length_m=round(pick(stream.length_m), 2),
                           signature_mg=round(pick(stream.signature_mg)),
                           lane=stream.lane, direction=stream.direction, origin=origin))
    return tuple(out)


def _fault(source: str, where: str, item: object, duration_s: float) -> Fault:
    t = _Table(source, where, item)
    sensor = t.choice("sensor", tuple(FAULT_KINDS))
    kind = t.choice("kind", FAULT_KINDS[sensor], what=f"a fault sensor {sensor} can have")
    t_s = t.number("t_s", low=0.0, high=duration_s, unit=" s")
    until_s = t.number("until_s", unit=" s")
    if until_s <= t_s:
        raise t.error("until_s", f"{until_s:g} is not after t_s = {t_s:g}",
                      "give the time the fault clears, after it starts")
    t.done()
    return Fault(sensor, kind, t_s, until_s)


def _power_cut(source: str, where: str, item: object, duration_s: float) -> PowerCut:
    t = _Table(source, where, item)
    cut = PowerCut(t_s=t.number("t_s", low=0.0, high=duration_s, unit=" s"),
                   off_s=t.number("off_s", positive=True, unit=" s"))
    t.done()
    return cut


def _start_utc(top: _Table) -> datetime:
    value = top.raw("start_utc")
    if value is None:
        value = DEFAULT_START_UTC
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise top.error("start_utc", f"{value!r} is not an ISO 8601 date-time",
                            "write it like \"2025-06-01T12:00:00Z\"") from exc
    if not isinstance(value, datetime):
        raise top.error("start_utc", f"expected a date-time, got {_kind(value)}",
                        "write it like \"2025-06-01T12:00:00Z\"")
    if value.tzinfo is None:
        raise top.error("start_utc", "has no UTC offset",
                        "append Z (UTC), like \"2025-06-01T12:00:00Z\"")
    return value.astimezone(UTC)


def parse_scenario(data: Mapping[str, Any], source: str = "<scenario>") -> Scenario:
    """Validates a decoded TOML document; `source` names it in error messages."""
    top = _Table(source, "", data)
    name = top.raw("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise top.error("name", f"expected a non-empty string, got {name!r}",
                        "write `name = \"flash_flood\"`")
    duration_s = top.number("duration_s", positive=True, unit=" s")
    seed = top.integer("seed", DEFAULT_SEED)
    start_utc = _start_utc(top)
    site = _site(top)
    depth = _points(top, "depth", "mm", low=0.0, high=site.h0_mm - 1.0)
    air_temp = _points(top, "air_temp", "c", low=-55.0, high=125.0)
    battery = _points(top, "battery", "mv", low=0.0, high=20000.0)
    vehicles = [_vehicle(source, f"vehicles[{i}]", item, duration_s)
                for i, item in enumerate(_array(top, "vehicles"))]
    streams: list[VehicleStream] = []
    for i, item in enumerate(_array(top, "vehicle_stream")):
        stream = _stream(source, f"vehicle_stream[{i}]", item, duration_s, seed + 1 + i)
        streams.append(stream)
        vehicles.extend(expand_stream(stream, f"vehicle_stream[{i}]"))
    vehicles.sort(key=lambda v: v.t_s)
    faults = [_fault(source, f"faults[{i}]", item, duration_s)
              for i, item in enumerate(_array(top, "faults"))]
    for i, f in enumerate(faults):
        for j, g in enumerate(faults[:i]):
            if f.sensor == g.sensor and f.t_s < g.until_s and g.t_s < f.until_s:
                raise ScenarioError(
                    f"{source}: faults[{i}]: overlaps faults[{j}] on sensor {f.sensor} "
                    f"({f.t_s:g}-{f.until_s:g} s and {g.t_s:g}-{g.until_s:g} s); windows on "
                    "one sensor must not overlap")
    cuts = sorted((_power_cut(source, f"power_cuts[{i}]", item, duration_s)
                   for i, item in enumerate(_array(top, "power_cuts"))), key=lambda c: c.t_s)
    for a, b in itertools.pairwise(cuts):
        if b.t_s < a.t_s + a.off_s:
            raise ScenarioError(
                f"{source}: power_cuts: the cut at {b.t_s:g} s starts while the one at "
                f"{a.t_s:g} s is still off (off_s = {a.off_s:g}); space them further apart")
    top.done()
    return Scenario(
        name=name.strip() if isinstance(name, str) else Path(source).stem,
        duration_s=duration_s, start_utc=start_utc, seed=seed, site=site, depth=depth,
        air_temp=air_temp, battery=battery, vehicles=tuple(vehicles), streams=tuple(streams),
        faults=tuple(faults), power_cuts=tuple(cuts), source=source)


def loads_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Parses and validates scenario TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: not valid TOML ({exc}); fix the syntax there") from exc
    return parse_scenario(data, source)


def load_scenario(path: Path) -> Scenario:
    """Reads and validates a scenario file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read ({exc.strerror}); give the path of a scenario "
                            "file, e.g. hil_tests/scenarios/flash_flood.toml") from exc
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{path}: not UTF-8 text; save it as UTF-8") from exc
    return loads_scenario(text, str(path))
