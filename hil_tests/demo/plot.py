"""`python -m hil_tests.demo.plot CAPTURE.jsonl -o run.png`: a captured run as a PNG.

Three panels sharing the time axis (seconds on the nodes' clocks since the first reading, the
scenarios' virtual time): water depth per node with a marker per alarm (crossed, predicted,
cleared, rate) and the alarm levels, vehicles counted per traffic window, and the windows'
mean speed. Readings come from the ``.../data`` and ``.../alarm`` SenML packs of the capture
(hil_tests/rig/capture_file.py), each (node, boot, seq) once: QoS 1 may deliver twice.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from gateway.senml import SenmlError
from hil_tests.demo.model import Reading, readings
from hil_tests.demo.stack import SITES
from hil_tests.rig import capture_file

LABELS = {s.node: s.label for s in SITES}
ALARM_STYLE = {"crossed": ("^", "tab:red"), "predicted": ("D", "tab:orange"),
               "cleared": ("v", "tab:green"), "rate": ("s", "tab:purple")}


class PlotError(RuntimeError):
    """The capture holds nothing to plot; the message says what was found."""


@dataclass
class NodeSeries:
    """What is plotted for one node: (time s, value) pairs."""

    depth: list[tuple[float, float]] = field(default_factory=list)        # mm
    alarms: list[tuple[float, str, float]] = field(default_factory=list)  # t, kind, level mm
    count: list[tuple[float, float]] = field(default_factory=list)        # vehicles per window
    window_s: list[float] = field(default_factory=list)
    speed: list[tuple[float, float]] = field(default_factory=list)        # km/h


@dataclass
class Series:
    """Every node's series, times relative to t0 (Unix s of the first reading)."""

    t0: float
    nodes: dict[int, NodeSeries]
    messages: int
    duplicates: int


def unique_readings(messages: Iterable[tuple[str, bytes]]) -> tuple[list[Reading], int, int]:
    """Readings of the SenML topics, each (node, boot, seq) once: (readings, messages, dups)."""
    seen: set[tuple[int, float, float]] = set()
    out: list[Reading] = []
    count = dups = 0
    for topic, payload in messages:
        count += 1
        try:
            got = readings(topic, payload)
        except SenmlError:
            continue
        for r in got:
            boot, seq = r.num("boot"), r.num("seq")
            if boot is not None and seq is not None:
                key = (r.node, boot, seq)
                if key in seen:
                    dups += 1
                    continue
                seen.add(key)
            out.append(r)
    return out, count, dups


def series(messages: Iterable[tuple[str, bytes]]) -> Series:
    """The plotted series of a run's messages (topic, payload)."""
    got, count, dups = unique_readings(messages)
    if not got:
        raise PlotError(f"{count} messages and no SenML reading among them; capture a run "
                        "with python -m hil_tests.demo --capture run.jsonl")
    t0 = min(r.t for r in got)
    nodes: dict[int, NodeSeries] = {}
    for r in sorted(got, key=lambda r: r.t):
        s = nodes.setdefault(r.node, NodeSeries())
        t = r.t - t0
        match r.kind:
            case "flood":
                depth = r.num("depth")
                if depth is not None:
                    s.depth.append((t, depth * 1000.0))
            case "alarm":
                s.alarms.append((t, r.text("alarm"), (r.num("level") or 0.0) * 1000.0))
            case "traffic":
                s.count.append((t, r.num("count") or 0.0))
                s.window_s.append(r.num("window") or 0.0)
                speed = r.num("speed")
                if speed is not None:
                    s.speed.append((t, speed * 3.6))
            case _:
                pass
    return Series(t0, dict(sorted(nodes.items())), count, dups)


def figure(data: Series, labels: Mapping[int, str] | None = None,
           title: str = "Roadside demo run") -> Figure:
    """The figure: depth with alarms, vehicles per window, mean speed."""
    labels = LABELS if labels is None else labels
    fig, (ax_d, ax_c, ax_s) = plt.subplots(
        3, 1, figsize=(11, 9), sharex=True, height_ratios=(3, 2, 2), layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    levels: set[float] = set()
    width = {n: (max(s.window_s) if s.window_s else 60.0) for n, s in data.nodes.items()}
    n_nodes = max(len(data.nodes), 1)
    for i, (node, s) in enumerate(data.nodes.items()):
        color = colors[i % len(colors)]
        name = f"node {node}" + (f" {labels[node]}" if node in labels else "")
        if s.depth:
            # Dry streets all read 0 mm: a dash pattern per node keeps each line visible.
            ax_d.plot([t for t, _ in s.depth], [d for _, d in s.depth],
                      ("-", "--", ":", "-.")[i % 4], color=color, lw=2, label=name,
                      gid=f"depth-{node}")
        placed: list[float] = []
        for t, kind, level in s.alarms:
            marker, mcolor = ALARM_STYLE.get(kind, ("o", "black"))
            y = next((d for td, d in reversed(s.depth) if td <= t), level)
            ax_d.plot([t], [y], marker, color=mcolor, ms=10, mec="black",
                      zorder=6 if kind == "crossed" else 5, gid=f"alarm-{node}-{kind}")
            # Alarms raised together (a crossing and a prediction) get stacked labels.
            nearby = sum(1 for p in placed if abs(p - t) < 20.0)
            placed.append(t)
            ax_d.annotate(f"{kind} {level:.0f} mm", (t, y), textcoords="offset points",
                          xytext=(8, -4 - 12 * nearby), fontsize=8, color=mcolor,
                          va="top")
            levels.add(level)
        if s.count:
            # Bars side by side within each window (one slot per node), starting at its t.
            w = width[node] / n_nodes * 0.9
            ax_c.bar([t + i * width[node] / n_nodes for t, _ in s.count],
                     [c for _, c in s.count], width=w, align="edge", color=color, label=name,
                     gid=f"count-{node}")
        if s.speed:
            ax_s.plot([t for t, _ in s.speed], [v for _, v in s.speed], "o-", color=color,
                      ms=4, label=name, gid=f"speed-{node}")
    for level in sorted(levels):
        ax_d.axhline(level, color="grey", ls=":", lw=1)
        ax_d.annotate(f"{level:.0f} mm", (0, level), textcoords="offset points",
                      xytext=(2, 2), fontsize=8, color="grey")
    handles = [Line2D([], [], marker=m, color=c, ls="", mec="black", label=f"alarm {k}")
               for k, (m, c) in ALARM_STYLE.items()
               if any(kind == k for s in data.nodes.values() for _, kind, _ in s.alarms)]
    ax_d.legend(handles=ax_d.get_legend_handles_labels()[0] + handles, loc="upper left",
                fontsize=9)
    ax_d.set_ylabel("water depth (mm)")
    ax_d.set_ylim(bottom=min(-10.0, ax_d.get_ylim()[0]))
    ax_d.set_title(title)
    # The nodes' colours are those of the depth panel's legend.
    ax_c.set_ylabel("vehicles per window")
    ax_c.set_ylim(0, max([c for s in data.nodes.values() for _, c in s.count], default=1) * 1.15)
    ax_s.set_ylabel("mean speed (km/h)")
    ax_s.set_xlabel("time since the first reading (s, node clocks: the scenarios' time)")
    ax_s.set_ylim(bottom=0)
    # Room on the right for the labels of the last alarms.
    last = max((t for s in data.nodes.values() for t, _ in s.depth), default=0.0)
    ax_s.set_xlim(right=last * 1.08 + 10)
    for ax in (ax_d, ax_c, ax_s):
        ax.grid(True, alpha=0.3)
    return fig


def plot(capture: Path, out: Path) -> Series:
    """Reads a capture file, writes the PNG; returns what it plotted."""
    data = series((m.topic, m.payload) for m in capture_file.read(capture))
    fig = figure(data, title=f"Roadside demo run: {capture.name}")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hil_tests.demo.plot",
        description="Plot depth, alarms and traffic of a captured demo run as a PNG.")
    parser.add_argument("capture", type=Path,
                        help="JSONL capture, e.g. from python -m hil_tests.demo --capture "
                             "run.jsonl")
    parser.add_argument("-o", "--output", type=Path, default=Path("run.png"),
                        help="PNG to write (run.png)")
    args = parser.parse_args(argv)
    try:
        data = plot(args.capture, args.output)
    except (OSError, capture_file.CaptureFileError, PlotError) as exc:
        print(f"plot: {exc}", file=sys.stderr)
        return 1
    readings_n = sum(len(s.depth) + len(s.count) + len(s.alarms) for s in data.nodes.values())
    print(f"plot: {args.output} from {data.messages} messages ({readings_n} readings of "
          f"{len(data.nodes)} nodes, {data.duplicates} duplicates skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
