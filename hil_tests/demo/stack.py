"""The demo's moving parts: a broker, three emulated boards, the real gateway, a subscriber.

`Stack` starts, in this order, a broker on a free loopback port (Mosquitto when installed,
else an embedded Python broker, `pybroker`), an MQTT subscriber on ``#`` (brokers.Capture),
the real ``roadside-gateway`` process on a generated config (gwproc.GatewayProcess: one
serial port per board, a keys file with a fresh key per node), then the boards (the real
firmware on supervisor.Board, each provisioned with its key). It stops them in the reverse
order: boards first (their process groups killed), the gateway by SIGTERM (SIGKILL to its
group if it ignores it), the subscriber, the broker (its whole group swept). Every process
it starts runs in a process group of its own, so Ctrl-C on the terminal reaches only the
demo, which then stops them itself.
"""

from __future__ import annotations

import contextlib
import queue
import secrets
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from gateway.tests.brokers import (
    Broker,
    BrokerError,
    BrokerNotInstalledError,
    Capture,
    Captured,
    mosquitto,
)
from gateway.tests.gwproc import GatewayProcess
from hil_tests.demo import pybroker
from hil_tests.emulator.run import node_config
from hil_tests.emulator.scenario import load_scenario
from hil_tests.emulator.supervisor import Board, build_images

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
GATEWAY_ID = "demo-gw"
SITE_ID = "demo"
TOPIC_BASE = f"roadside/v1/{SITE_ID}/{GATEWAY_ID}"
# Faster than a field node so a demo shows something every few seconds: a dry street read
# every minute (default 5), health every minute (default 5).
NODE_SETTINGS: Mapping[str, object] = {"dry_s": 60, "health_s": 60, "traffic_window_s": 60}


@dataclass(frozen=True)
class Site:
    """One node of the demo: its id, what the dashboard calls it, its scenario file."""

    node: int
    label: str
    scenario: Path


SITES = (
    Site(1, "flooding street", SCENARIOS / "demo_flooding.toml"),
    Site(2, "busy road", SCENARIOS / "demo_busy.toml"),
    Site(3, "dry street", SCENARIOS / "demo_dry.toml"),
)


@dataclass(frozen=True)
class Arrived:
    """One MQTT message and the Unix time the subscriber got it."""

    t: float
    msg: Captured


class Stack:
    """Broker, subscriber, gateway and boards in `workdir`; a context manager."""

    def __init__(self, workdir: Path, *, time_scale: float,
                 sites: tuple[Site, ...] = SITES, broker: str = "auto") -> None:
        self.workdir = workdir
        self.time_scale = time_scale
        self.sites = sites
        self.broker_kind = broker
        self.keys = {s.node: secrets.token_bytes(32) for s in sites}
        self.broker: Broker | None = None
        self.capture: Capture | None = None
        self.gateway: GatewayProcess | None = None
        self.boards: dict[int, Board] = {}
        self.arrivals: queue.SimpleQueue[Arrived] = queue.SimpleQueue()
        self._pump: threading.Thread | None = None
        self._stopping = threading.Event()
        self.started_at = 0.0
        self.scenario_s = 0.0                  # the longest scenario, virtual s

    # -- life cycle --

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def start(self, say: Callable[[str], None] | None = None) -> None:
        """Starts everything; `say(text)` hears each step."""
        def note(text: str) -> None:
            if say is not None:
                say(text)

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.broker = self._start_broker()
        note(f"broker: {self.broker.kind} on {self.broker.host}:{self.broker.port} "
             f"(pid {self.broker.pid})")
        self.capture = Capture(self.broker, "#", persistent=False,
                               identifier="roadside-demo-dashboard").start()
        self._pump = threading.Thread(target=self._pump_loop, name="demo.subscriber",
                                      daemon=True)
        self._pump.start()
        rom, device = build_images(self.workdir / "images")
        boards = {}
        for s in self.sites:
            scen = load_scenario(s.scenario)
            self.scenario_s = max(self.scenario_s, scen.duration_s)
            cfg = {**node_config(scen, s.node, "emulated", self.keys[s.node]), **NODE_SETTINGS}
            cfg["site"] = s.label.replace(" ", "-")
            boards[s.node] = Board(scen, cfg, state_dir=self.workdir / f"node-{s.node}",
                                   time_scale=self.time_scale, rom=rom, device_dir=device)
        self.boards = boards
        self.gateway = GatewayProcess(
            self.workdir / "gateway", broker_host=self.broker.host,
            broker_port=self.broker.port, ports=[b.host_port for b in boards.values()],
            keys=self.keys, extra={
                "gateway": {"id": GATEWAY_ID, "site": SITE_ID, "log_level": "info",
                            "site_name": "Roadside demo"},
                # Node clocks run time_scale times faster: set them at hello only.
                "downlink": {"time_interval_s": 0},
            })
        self.gateway.start()
        note(f"gateway: pid {self.gateway.proc.pid if self.gateway.proc else '?'}, metrics "
             f"http://127.0.0.1:{self.gateway.metrics_port}/metrics, log "
             f"{self.gateway.log_path}")
        for node, board in boards.items():
            board.start()
            note(f"node {node}: board pid {board.pid} on {board.host_port}, console "
                 f"{board.console_path}")
        self.started_at = time.monotonic()

    def close(self) -> None:
        """Stops everything that was started, boards first; leaves no process behind."""
        self._stopping.set()
        for board in self.boards.values():
            with contextlib.suppress(Exception):
                board.close()
        if self.gateway is not None:
            gw = self.gateway
            if gw.proc is not None and gw.proc.poll() is None:
                with contextlib.suppress(AssertionError, OSError):
                    gw.stop(signal.SIGTERM, timeout_s=15.0)
            gw.close()
        if self._pump is not None:
            self._pump.join(5.0)
        if self.capture is not None:
            self.capture.stop()
        if self.broker is not None:
            self.broker.stop()

    # -- what it runs --

    def _start_broker(self) -> Broker:
        folder = self.workdir / "broker"
        if self.broker_kind in ("auto", "mosquitto"):
            try:
                return mosquitto(folder, persistence=False)
            except BrokerNotInstalledError as exc:
                if self.broker_kind == "mosquitto":
                    raise
                if not pybroker.available():
                    raise BrokerError(f"{exc}; or use the embedded broker: "
                                      f"{pybroker.INSTALL_HINT}") from exc
        return pybroker.start(folder)

    def _pump_loop(self) -> None:
        """Hands each new message, stamped with its arrival time, to `arrivals`."""
        cap = self.capture
        assert cap is not None
        seen = [0]

        def more(c: Capture) -> bool:
            return len(c.messages) > seen[0]

        while not self._stopping.is_set():
            try:
                got = cap.wait_for(more, timeout=0.5)
            except TimeoutError:
                continue
            now = time.time()
            for msg in got[seen[0]:]:
                self.arrivals.put(Arrived(now, msg))
            seen[0] = len(got)

    # -- what the dashboard asks --

    @property
    def virtual_s(self) -> float:
        """Virtual seconds since the boards started (the scenarios' clock): the slowest
        board's, since each leaves out what its process was starved of (emulator/clock.py)."""
        if not self.started_at:
            return 0.0
        if self.boards:
            return min(b.now_ms() for b in self.boards.values()) / 1000.0
        return (time.monotonic() - self.started_at) * self.time_scale

    def gateway_alive(self) -> bool:
        gw = self.gateway
        return gw is not None and gw.proc is not None and gw.proc.poll() is None

    def process_groups(self) -> dict[str, int]:
        """The process group of each running part (broker, gateway, boards)."""
        groups: dict[str, int] = {}
        if self.broker is not None and self.broker.pgid is not None:
            groups["broker"] = self.broker.pgid
        if self.gateway is not None and self.gateway.proc is not None:
            groups["gateway"] = self.gateway.proc.pid
        for node, board in self.boards.items():
            if board.pid is not None:
                groups[f"node-{node}"] = board.pid
        return groups


