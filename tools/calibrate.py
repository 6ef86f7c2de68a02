"""`roadside calibrate`: the sensor's height above the dry road, h0, measured by the node.

The node pings N times with its own ranger driver (firmware/selftest.py `ranges`, air
temperature compensated). The readings must all echo, sit within the sensor's reach and
agree within the tolerance; their median is h0. After the technician confirms (or --yes),
h0_mm is written into the node's /config.json, which the node validates.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from tools.errors import ToolError
from tools.node import NodeSession
from tools.provision import CONFIG, write_config

MIN_MM = 300                          # firmware/config.py: h0_mm 300..6000
MAX_MM = 6000


@dataclass
class Calibration:
    """The dry ranges and what they say."""

    ranges_mm: list[int]
    temp_cc: int | None
    h0_mm: int
    spread_mm: int


def measure(node: NodeSession, count: int) -> tuple[list[int], int | None]:
    """count ranges from the node's ranger, and the air temperature used (None: none)."""
    out = node.run(f"from firmware import selftest\nselftest.ranges({count})")
    ranges: list[int] = []
    temp: int | None = None
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "RANGE":
            ranges.append(int(parts[1]))
        elif len(parts) == 2 and parts[0] == "TEMP" and parts[1] != "none":
            temp = int(parts[1])
    if len(ranges) != count:
        raise ToolError(f"{node.port}: the node gave {len(ranges)} ranges of {count}; "
                        f"its output:\n{out.strip()}")
    return ranges, temp


def judge(ranges: list[int], temp: int | None, tolerance_mm: int) -> Calibration:
    """The calibration, or a ToolError saying what is wrong with the readings."""
    bad = [r for r in ranges if r <= 0]
    if bad:
        what = "no echo" if -1 in bad else "wiring fault (echo never rose)"
        raise ToolError(f"{len(bad)} of {len(ranges)} pings failed ({what}); check the "
                        "sensor's cable and that nothing but the road is below it, then retry")
    spread = max(ranges) - min(ranges)
    if spread > tolerance_mm:
        raise ToolError(f"the ranges disagree by {spread} mm (more than {tolerance_mm}): "
                        f"{' '.join(map(str, ranges))}; something moves below the sensor "
                        "(traffic, water, a loose mount): wait for a clear dry road and retry")
    h0 = round(statistics.median(ranges))
    if not MIN_MM <= h0 <= MAX_MM:
        raise ToolError(f"h0 {h0} mm is outside {MIN_MM}..{MAX_MM} mm: mount the sensor "
                        "between 0.3 and 6 m above the road")
    return Calibration(ranges, temp, h0, spread)


def write_h0(node: NodeSession, h0_mm: int) -> None:
    """Sets h0_mm in the node's /config.json, keeping everything else."""
    raw = node.read_file(CONFIG)
    try:
        cfg = json.loads(raw) if raw else None
    except ValueError:
        cfg = None
    if not isinstance(cfg, dict):
        raise ToolError(f"{node.port}: the node has no valid /config.json; run roadside "
                        "provision first")
    cfg["h0_mm"] = h0_mm
    write_config(node, cfg)


def calibrate(node: NodeSession, count: int, tolerance_mm: int,
              confirm: Callable[[Calibration], bool]) -> Calibration | None:
    """Measures, judges, asks; writes h0 if confirmed (None if not)."""
    ranges, temp = measure(node, count)
    cal = judge(ranges, temp, tolerance_mm)
    if not confirm(cal):
        return None
    write_h0(node, cal.h0_mm)
    return cal
