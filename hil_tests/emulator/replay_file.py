"""Replay files: a scenario (TOML) as the compact JSON the firmware's replay driver reads.

MicroPython has no tomllib, so the host converts: ``replay_json(scenario)`` gives the bytes
of ``/replay.json`` for a board whose ``/config.json`` says ``"replay": "/replay.json"``
(firmware/replay.py). Every number is an integer (no floats to box on the board's heap):
curves in ms and um / milli-C / mV, vehicles as their bumps at magnetometers A and B (the
World's passages and deviation vectors), faults as codes. hil_tests/README.md ("Replay
files") documents the format.

    python -m hil_tests.emulator.replay_file hil_tests/scenarios/flash_flood.toml -o replay.json
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path

from hil_tests.emulator.scenario import Point, Scenario, ScenarioError, load_scenario
from hil_tests.emulator.world import World

VERSION = 1
PATH_ON_BOARD = "/replay.json"
# The board parses the JSON line in one go at boot (its lists on the heap); the vehicles
# stay on flash and are read 16 at a time, so only the flash bounds them.
MAX_HEAD_BYTES = 4096
MAX_BYTES = 256 * 1024              # 10,900 vehicles, an eighth of the 2 MB flash
SENSOR_CODES = {"ranger": 0, "temp": 1, "mag_a": 2, "mag_b": 3}
KIND_CODES = {"noecho": 1, "obstruction": 2, "zero": 3, "stuck": 4, "absent": 5, "hang": 6}


class ReplayFileError(ValueError):
    """A scenario that cannot become a replay file; the message names the fix."""


def _curve(points: tuple[Point, ...], scale: float, default: float) -> list[int]:
    pts = points or (Point(0.0, default),)
    out: list[int] = []
    for p in pts:
        out += [round(p.t_s * 1000.0), round(p.value * scale)]
    return out


def replay_data(scenario: Scenario) -> dict[str, object]:
    """The replay file's content (format version 1; `encode` makes the file of it)."""
    world = World(scenario)
    site = scenario.site
    veh: list[int] = []
    for p in sorted(world.passages, key=lambda q: q.centre_a_s):
        sd_ms = max(1, round(p.length_m / 4.0 / (p.speed_kmh / 3600.0)))
        vec = world._direction(p.index, p.signature_mg)     # the World's own seeded tilt
        veh += [round(p.centre_a_s * 1000.0), round(p.centre_b_s * 1000.0), sd_ms,
                *(round(c) for c in vec)]
    flt: list[int] = []
    for f in scenario.faults:
        flt += [SENSOR_CODES[f.sensor], KIND_CODES[f.kind], round(f.t_s * 1000.0),
                round(f.until_s * 1000.0)]
    return {
        "v": VERSION, "name": scenario.name[:32], "seed": scenario.seed & 0x3FFFFFFF,
        "h0": round(site.h0_mm * 1000.0), "rn": round(site.range_noise_mm * 1000.0),
        "mn": round(site.noise_mg * 1000.0),
        "ga": [round(c) for c in site.baseline_a_mg], "gb": [round(c) for c in site.baseline_b_mg],
        "depth": _curve(scenario.depth, 1000.0, 0.0),
        "air": _curve(scenario.air_temp, 1000.0, 20.0),
        "bat": _curve(scenario.battery, 1.0, site.battery_mv),
        "flt": flt, "veh": veh,
    }


# The order of the file's JSON line (firmware/replay.py reads it by position).
HEADER = ("v", "name", "seed", "h0", "rn", "mn", "ga", "gb", "depth", "air", "bat", "flt")


def encode(content: dict[str, object]) -> bytes:
    """A replay file: one JSON list (HEADER's values, then how many int32s follow), then
    the vehicles as little-endian int32s."""
    veh = content["veh"]
    assert isinstance(veh, list)
    head = [content[k] for k in HEADER] + [len(veh)]
    return (json.dumps(head, separators=(",", ":")).encode() + b"\n"
            + struct.pack(f"<{len(veh)}i", *veh))


def replay_json(scenario: Scenario) -> bytes:
    """The bytes of /replay.json for the scenario; ReplayFileError if too large."""
    data = encode(replay_data(scenario))
    head = data.index(b"\n")
    if head > MAX_HEAD_BYTES:
        raise ReplayFileError(
            f"{scenario.source}: the curves and faults of its replay file take {head} bytes, "
            f"more than the {MAX_HEAD_BYTES} a board parses at boot; give its curves fewer "
            "points")
    if len(data) > MAX_BYTES:
        raise ReplayFileError(
            f"{scenario.source}: its replay file would be {len(data)} bytes, more than the "
            f"{MAX_BYTES} it may take of the board's flash; shorten its vehicle streams")
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hil_tests.emulator.replay_file",
                                 description="Converts a scenario to the firmware's replay file.")
    ap.add_argument("scenario", type=Path, help="e.g. hil_tests/scenarios/flash_flood.toml")
    ap.add_argument("-o", "--output", type=Path, default=Path("replay.json"),
                    help="where to write it (default replay.json); copy it to the board's "
                         f"{PATH_ON_BOARD}")
    args = ap.parse_args(argv)
    try:
        data = replay_json(load_scenario(args.scenario))
    except (ScenarioError, ReplayFileError) as exc:
        print(f"replay_file: {exc}", file=sys.stderr)
        return 1
    args.output.write_bytes(data)
    print(f"wrote {args.output} ({len(data)} bytes); copy it to the board as {PATH_ON_BOARD} "
          f"and set \"replay\": \"{PATH_ON_BOARD}\" in its /config.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
