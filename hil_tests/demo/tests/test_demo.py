"""`python -m hil_tests.demo` as a real subprocess: what it shows, how it stops, what it plots.

Each run is the whole demo: own Mosquitto, the real gateway process, three emulated boards
running the firmware, the dashboard in its non-interactive mode (stdout is a pipe). Every
process the demo starts inherits a tag in its environment, so the test finds them all in
/proc (also ones that would have escaped their process group) and checks none is left.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.patches import Rectangle

from gateway.senml import decode_pack
from gateway.tests.brokers import process_group
from hil_tests.demo import plot, pybroker
from hil_tests.rig import capture_file

ROOT = Path(__file__).resolve().parents[3]
TAG_VAR = "DEMO_TEST_TAG"           # not ROADSIDE_*: the board supervisor drops those
GUARD_S = 120.0
SCALE = 12                         # the flooding street crosses 76 mm at about t+160 s


_MOSQUITTO = shutil.which("mosquitto") or os.access("/usr/sbin/mosquitto", os.X_OK)
pytestmark = pytest.mark.skipif(
    not _MOSQUITTO and not pybroker.available(),
    reason="no MQTT broker for the demo: sudo apt-get install mosquitto (or make sysdeps), "
           f"or {pybroker.INSTALL_HINT}")


def _tagged(tag: str) -> list[int]:
    """Live processes whose environment holds TAG_VAR=tag."""
    want = f"{TAG_VAR}={tag}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if want in env.split(b"\0") and stat[stat.rindex(")") + 2] != "Z":
            pids.append(int(entry.name))
    return pids


@dataclass
class DemoRun:
    """The demo subprocess and its output lines as they arrive."""

    proc: subprocess.Popen[str]
    tag: str
    lines: list[str] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def wait_line(self, pattern: str, timeout_s: float = GUARD_S) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while True:
                for line in self.lines:
                    if m := rx.search(line):
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    tail = "\n".join(self.lines[-30:])
                    raise AssertionError(f"no line matching {pattern!r}; output ends:\n{tail}")
                self.cond.wait(min(left, 0.5))

    @property
    def text(self) -> str:
        with self.cond:
            return "\n".join(self.lines)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


def _start(*args: str, terminal: bool = False) -> DemoRun:
    """The demo on a pipe, or with `terminal` on a real pty of 150x40 (the live dashboard)."""
    tag = uuid.uuid4().hex
    env = {**os.environ, TAG_VAR: tag, "PYTHONPATH": str(ROOT)}
    if terminal:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 150, 0, 0))
        proc = subprocess.Popen(
            [sys.executable, "-m", "hil_tests.demo", *args], cwd=ROOT, env=env, text=True,
            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
    else:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hil_tests.demo", *args], cwd=ROOT, env=env, text=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
    run = DemoRun(proc, tag)

    def add(text: str) -> None:
        with run.cond:
            run.lines.extend(_ANSI.sub("", text).splitlines())
            run.cond.notify_all()

    def read_pipe() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            add(line)
        add("")

    def read_pty() -> None:
        rest = b""
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:                 # EIO: every holder of the slave side is gone
                data = b""
            if not data:
                break
            *done, rest = (rest + data).split(b"\n")
            for line in done:
                add(line.decode(errors="replace"))
        add(rest.decode(errors="replace"))
        os.close(master)

    threading.Thread(target=read_pty if terminal else read_pipe, daemon=True).start()
    return run


def _cleanup(run: DemoRun) -> None:
    """Whatever a failed test left: the demo's group and every tagged process, SIGKILLed."""
    if run.proc.poll() is None:
        os.killpg(run.proc.pid, signal.SIGKILL)
        run.proc.wait()
    for pid in _tagged(run.tag):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DemoRun, Path]]:
    """One demo run of 26 s at 12x (about 300 virtual s) with a capture file, ended by itself."""
    capture = tmp_path_factory.mktemp("demo") / "run.jsonl"
    run = _start("--duration", "26", "--time-scale", str(SCALE), "--every", "3",
                 "--capture", str(capture))
    try:
        run.proc.wait(GUARD_S)
        yield run, capture
    finally:
        _cleanup(run)


def test_the_demo_shows_all_three_nodes_and_the_flood_alarm(
        finished: tuple[DemoRun, Path]) -> None:
    """A timed run ends by itself (exit 0) with data of all three nodes and a flood alarm."""
    run, _ = finished
    text = run.text
    assert run.proc.returncode == 0, text[-3000:]
    # The flooding street crossed the first level (76 mm) and the demo said so at once.
    m = re.search(r"ALARM node 1 \(flooding street\): crossed 76 mm, depth (\d+) mm", text)
    assert m, text[-3000:]
    assert 76 <= int(m.group(1)) < 150
    last = {n: [ln for ln in run.lines if f"] node {n} (" in ln][-1] for n in (1, 2, 3)}
    depth_1 = re.search(r"depth (\d+) mm", last[1])
    assert depth_1 and int(depth_1.group(1)) > 76, last[1]
    for n in (2, 3):
        assert "depth 0 mm" in last[n] and "alarm none" in last[n], last[n]
    # Traffic: the busy road counted far more vehicles than the dry street.
    totals = {n: int(re.findall(r"total (\d+)\)", last[n])[-1]) for n in (2, 3)}
    assert totals[2] >= 20 and totals[3] <= 5, totals
    for n in (1, 2, 3):
        assert re.search(r"battery \d\.\d\d V", last[n]), last[n]
    gw = [ln for ln in run.lines if "] gateway: queue" in ln][-1]
    assert "mqtt up" in gw and re.search(r"frames [1-9]\d* accepted, 0 refused", gw), gw
    links = [ln for ln in run.lines if "] link /dev/pts/" in ln][-3:]
    assert len(links) == 3 and all(": open," in ln for ln in links), links
    assert "every process ended" in run.lines[-1]
    assert _tagged(run.tag) == []


def test_ctrl_c_on_the_live_dashboard_stops_everything() -> None:
    """On a terminal the live dashboard draws; SIGINT mid-run: exit 130, no process left."""
    run = _start("--time-scale", "10", terminal=True)
    try:
        groups_line = run.wait_line(r"demo: running; process groups (.*)")
        groups = {k: int(v) for k, v in re.findall(r"(\S+)=(\d+)", groups_line.group(1))}
        assert set(groups) == {"broker", "gateway", "node-1", "node-2", "node-3"}, groups
        # The table's row for the flooding street with a depth, and the gateway panel.
        run.wait_line(r"1 flooding street\s*│\s*\d+ mm \(t\+\d+ s\)")
        run.wait_line(r"gateway: queue \d+ routine .* mqtt up")
        run.wait_line(r"link /dev/pts/\d+ \(node 3\): open")
        alive = _tagged(run.tag)
        # The demo itself, Mosquitto, the gateway and the three boards (at least).
        assert len(alive) >= 6, alive
        assert all(process_group(g) for g in groups.values()), groups
        os.kill(run.proc.pid, signal.SIGINT)
        assert run.proc.wait(60) == 130, run.text[-3000:]
        run.wait_line(r"every process ended", timeout_s=10)
        assert {k: process_group(g) for k, g in groups.items()} == {k: [] for k in groups}
        assert _tagged(run.tag) == []
    finally:
        _cleanup(run)


@pytest.mark.parametrize("after", [r"demo: broker: ", r"demo: node 1: board pid"])
def test_sigterm_while_starting_up_stops_what_was_started(after: str) -> None:
    """SIGTERM while the gateway or later boards still start: exit 130, no process left."""
    run = _start("--time-scale", "10")
    try:
        run.wait_line(after)
        os.kill(run.proc.pid, signal.SIGTERM)
        assert run.proc.wait(60) == 130, run.text[-3000:]
        run.wait_line(r"SIGTERM received, stopping", timeout_s=10)
        assert _tagged(run.tag) == []
    finally:
        _cleanup(run)


def test_a_gateway_that_dies_ends_the_demo_with_its_log() -> None:
    """The gateway SIGKILLed mid-run: the demo says so with its log, exits 1, leaves nothing."""
    run = _start("--time-scale", "10", "--every", "1")
    try:
        groups_line = run.wait_line(r"demo: running; process groups (.*)")
        gateway = int(re.findall(r"gateway=(\d+)", groups_line.group(1))[0])
        run.wait_line(r"\] gateway: queue .* mqtt up")
        os.killpg(gateway, signal.SIGKILL)
        assert run.proc.wait(60) == 1, run.text[-3000:]
        run.wait_line(r"demo: the gateway exited; its log ends:", timeout_s=10)
        assert _tagged(run.tag) == []
    finally:
        _cleanup(run)


def _decoded(path: Path) -> dict[int, list[tuple[float, float]]]:
    """Depth (mm) per node straight from the capture's packs, each (node, boot, seq) once,
    with its raw SenML time: read apart from the plot's own decoding."""
    seen = set()
    out: dict[int, list[tuple[float, float]]] = {}
    for msg in capture_file.read(path):
        if not msg.topic.endswith(("/data", "/alarm")):
            continue
        recs = decode_pack(msg.payload)
        group: dict[str, object] = {}
        for rec in [*recs, {"n": "x:type", "t": 0.0}]:
            name = str(rec["n"])
            if name.endswith(":type"):
                if group.get("type") == "flood" and "depth" in group:
                    key = (group["node"], group["boot"], group["seq"])
                    if key not in seen:
                        seen.add(key)
                        out.setdefault(int(str(group["node"])), []).append(
                            (float(str(group["t"])), float(str(group["depth"])) * 1000))
                group = {"type": rec.get("vs"), "t": rec["t"],
                         "node": name.split(":")[-2] if name.count(":") >= 4 else "?"}
            else:
                group[name.rsplit(":", 1)[1]] = rec.get("v")
    return out


def test_the_plot_of_a_captured_run_shows_what_was_captured(
        finished: tuple[DemoRun, Path], tmp_path: Path) -> None:
    """The PNG is an image with ink on it, and its depth lines are the capture's depths."""
    _, capture = finished
    png = tmp_path / "run.png"
    assert plot.main([str(capture), "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(png)
    assert img.shape[0] >= 600 and img.shape[1] >= 800
    # Non-blank: plenty of pixels far from the white background.
    ink = np.mean(np.abs(img[..., :3] - 1.0).sum(axis=2) > 0.5)
    assert ink > 0.02, ink
    # What was drawn: the figure's depth line of each node holds the decoded depths.
    data = plot.series((m.topic, m.payload) for m in capture_file.read(capture))
    fig = plot.figure(data)
    drawn = {line.get_gid(): line for ax in fig.axes for line in ax.get_lines()}
    truth = _decoded(capture)
    assert set(truth) == {1, 2, 3}
    for node, points in truth.items():
        points.sort()
        line = drawn[f"depth-{node}"]
        ys = np.asarray(line.get_ydata(), dtype=float).tolist()
        xs = np.asarray(line.get_xdata(), dtype=float).tolist()
        assert ys == pytest.approx([d for _, d in points]), node
        assert xs == pytest.approx([t - data.t0 for t, _ in points]), node
    assert np.asarray(drawn["depth-1"].get_ydata(), dtype=float).max() > 76
    assert "alarm-1-crossed" in drawn
    counts = [p for ax in fig.axes for p in ax.patches
              if isinstance(p, Rectangle) and p.get_gid() == "count-2"]
    assert counts and sum(p.get_height() for p in counts) >= 20
