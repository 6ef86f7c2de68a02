"""The suite's moving parts for one test: broker, MQTT capture, gateway, relays, boards.

`Rig` starts, in order: its own Mosquitto on a free loopback port (gateway/tests/brokers.py),
a subscriber on ``#`` whose messages, stamped with their arrival time, are written as they
come to ``mqtt.jsonl`` (capture_file format), one `Relay` per node link (the virtual
null-modem cable, where line faults are injected), the real ``roadside-gateway`` process on
a generated config naming the relays' ports (gateway/tests/gwproc.py), then the boards. It
stops everything in reverse order and leaves no process behind. Everything a run produces
lands in the rig's folder (the test's artefact folder): console logs (``node-N/console.log``),
hex captures and fault seeds (``links/``), the gateway's log and config (``gateway/``) and
``mqtt.jsonl``.

Boards are emulated (`supervisor.Board` on a scenario) or real: `add_real()` takes the link
port of a board already running the firmware (a USB-UART adapter, /dev/ttyUSB1) and its key.
A board on its scenario-replay sensor driver (`add_board(..., replay=True)`, or a real board
given its scenario) computes its sensors from the scenario itself; the rig keeps a World of
the same scenario for the truth, and maps node times to scenario seconds through the
node's uptime (the replay's scenario time) instead of the emulated clock.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from gateway.tests.brokers import Broker, Capture, mosquitto
from gateway.tests.gwproc import GatewayProcess
from hil_tests.emulator.replay_file import PATH_ON_BOARD, replay_json
from hil_tests.emulator.run import node_config
from hil_tests.emulator.scenario import Scenario, load_scenario
from hil_tests.emulator.supervisor import Board, build_images
from hil_tests.emulator.world import World
from hil_tests.rig import capture_file
from hil_tests.rig.relay import Relay
from hil_tests.rig.uplinks import Accounting, Uplink, account, gaps, uplinks
from tools.node import NodeSession
from tools.provision import CONFIG, write_config

GATEWAY_ID = "hil-gw"
SITE_ID = "hil"
TOPIC_BASE = f"roadside/v1/{SITE_ID}/{GATEWAY_ID}"
GUARD_S = 120.0                  # hang guard of waits on MQTT (not a measurement)


@dataclass(frozen=True)
class RealBoard:
    """A real board on the rig: node id, USB console port, link UART adapter port, key."""

    node: int
    console: str
    link: str
    key: bytes


@dataclass
class Node:
    """One node on the rig: its id, key, relay and (emulated) board with its world."""

    node: int
    key: bytes
    relay: Relay
    board: Board | None = None
    world: World | None = None
    replay: bool = False               # sensors from the firmware's replay driver


class ReplayWorld(World):
    """The World of a board on its replay driver: the truth for the tests, and it counts the
    sensor queries that reach it (the firmware should make none; W goes to the supervisor)."""

    sensor_queries = 0

    def answer(self, request: bytes) -> bytes:
        self.sensor_queries += 1
        return super().answer(request)


class Rig:
    """Broker, capture, gateway, relays and boards in `folder` (a context manager)."""

    def __init__(self, folder: Path, *, time_scale: float = 20.0,
                 gateway: Mapping[str, Mapping[str, object]] | None = None,
                 flip_rate: float = 0.0, seed: int | None = None,
                 persistence: bool = True, images: tuple[Path, Path] | None = None,
                 real: list[RealBoard] | None = None) -> None:
        self.folder = folder
        self.real = list(real or [])      # real boards not yet given a scenario
        folder.mkdir(parents=True, exist_ok=True)
        self.time_scale = time_scale
        self.gateway_extra = {k: dict(v) for k, v in (gateway or {}).items()}
        self.flip_rate = flip_rate
        self.seed = seed
        self.persistence = persistence
        self.nodes: dict[int, Node] = {}
        self.broker: Broker | None = None
        self.capture: Capture | None = None
        self.gateway: GatewayProcess | None = None
        self._images = images            # (rom, device dir) from build_images, or built here
        self._writer: capture_file.Writer | None = None
        self._stamped: list[capture_file.Message] = []
        self._lock = threading.Condition()
        self._pump: threading.Thread | None = None
        self._stopping = threading.Event()
        self._gw_dir: Path | None = None

    # ----- building the rig ---------------------------------------------------------------

    def add_board(self, node: int, scenario: Path | Scenario, *, board: str = "emulated",
                  flip_rate: float | None = None, seed: int | None = None,
                  replay: bool = False, **settings: object) -> Node:
        """An emulated board on a scenario; settings go into its /config.json. replay: the
        firmware computes its sensors from the scenario's replay file on its flash (as a
        real board on the rig does) instead of asking the emulator's World."""
        scen = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        if self.real:
            if node in self.nodes:
                raise ValueError(f"node {node} is on the rig already")
            return self.add_replayed(self.real.pop(0), scen, **settings)
        if self._images is None:
            self._images = build_images(self.folder / "images")
        rom, device = self._images
        key = secrets.token_bytes(32)
        world = ReplayWorld(scen) if replay else World(scen)
        cfg = {**node_config(scen, node, board, key), **settings}
        files: dict[str, str | bytes] = {}
        if replay:
            cfg["replay"] = PATH_ON_BOARD
            files[PATH_ON_BOARD.lstrip("/")] = replay_json(scen)
        b = Board(world, cfg, state_dir=self.folder / f"node-{node}", time_scale=self.time_scale,
                  board=board, rom=rom, device_dir=device, files=files)
        relay = self._relay(node, b.host_port, flip_rate, seed)
        self.nodes[node] = Node(node, key, relay, b, b.world, replay)
        return self.nodes[node]

    def add_real(self, node: int, link_port: str, key: bytes,
                 flip_rate: float | None = None, seed: int | None = None, *,
                 scenario: Scenario | None = None) -> Node:
        """A real board already running the firmware, its link UART on `link_port`; with
        `scenario`, one replaying it (its replay file and config already on the board)."""
        relay = self._relay(node, link_port, flip_rate, seed)
        world = None if scenario is None else World(scenario)
        self.nodes[node] = Node(node, key, relay, world=world, replay=scenario is not None)
        return self.nodes[node]

    def add_replayed(self, real: RealBoard, scenario: Scenario, **settings: object) -> Node:
        """A real board (or an emulated one on its console pty, treated alike) made to
        replay `scenario`: over its console with mpremote (tools.node), /replay.json copied,
        /config.json given `replay` and `settings` (validated by the node, tools.provision),
        then reset so that the scenario starts at its boot; the rig keeps a World for the
        truth. At 1x on silicon: a 15-minute scenario takes 15 minutes."""
        with NodeSession(real.console) as node:
            node.write_file(PATH_ON_BOARD, replay_json(scenario))
            old = node.read_file(CONFIG)
            cfg = json.loads(old) if old else {}
            cfg.update({"replay": PATH_ON_BOARD, "h0_mm": round(scenario.site.h0_mm),
                        "mag_distance_mm": round(scenario.site.mag_distance_mm), **settings})
            write_config(node, cfg)
            node.reset()
        return self.add_real(real.node, real.link, real.key, scenario=scenario)

    def _relay(self, node: int, port: str, flip_rate: float | None, seed: int | None) -> Relay:
        return Relay(port, self.folder / "links", f"node-{node}",
                     flip_rate=self.flip_rate if flip_rate is None else flip_rate,
                     seed=self.seed if seed is None else seed)

    # ----- life cycle ---------------------------------------------------------------------

    def __enter__(self) -> Rig:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        self.broker = mosquitto(self.folder / "broker", persistence=self.persistence)
        self.capture = Capture(self.broker, "#", identifier="roadside-hil-capture").start()
        self._writer = capture_file.Writer(self.folder / "mqtt.jsonl")
        self._pump = threading.Thread(target=self._pump_loop, name="rig.capture", daemon=True)
        self._pump.start()
        for n in self.nodes.values():
            n.relay.start()
        extra: dict[str, dict[str, object]] = {
            "gateway": {"id": GATEWAY_ID, "site": SITE_ID, "log_level": "info"},
            # The boards' clocks run time_scale times faster: set them at hello only.
            "downlink": {"time_interval_s": 0},
        }
        for name, table in self.gateway_extra.items():
            extra.setdefault(name, {}).update(table)
        # Its notify socket needs a short path (AF_UNIX: 107 bytes): the gateway's files live
        # in a temporary folder, its log and config are copied to the rig's folder at close.
        self._gw_dir = Path(tempfile.mkdtemp(prefix="rs-gw-"))
        self.gateway = GatewayProcess(
            self._gw_dir, broker_host=self.broker.host, broker_port=self.broker.port,
            ports=[str(n.relay.path) for n in self.nodes.values()],
            keys={n.node: n.key for n in self.nodes.values()}, extra=extra)
        self.gateway.start()
        for n in self.nodes.values():
            if n.board is not None:
                n.board.start()

    def close(self) -> None:
        """Stops everything started, boards first; leaves no process behind."""
        self._stopping.set()
        for n in self.nodes.values():
            if n.board is not None:
                with contextlib.suppress(Exception):
                    n.board.close()
        gw = self.gateway
        if gw is not None:
            if gw.proc is not None and gw.proc.poll() is None:
                with contextlib.suppress(AssertionError, OSError):
                    gw.stop(signal.SIGTERM, timeout_s=15.0)
            gw.close()
        if self._gw_dir is not None:
            out = self.folder / "gateway"
            out.mkdir(exist_ok=True)
            for name in ("gateway.log", "gateway.log.1", "gateway.toml"):
                with contextlib.suppress(OSError):
                    shutil.copy(self._gw_dir / name, out / name)
            shutil.rmtree(self._gw_dir, ignore_errors=True)
            self._gw_dir = None
        for n in self.nodes.values():
            with contextlib.suppress(Exception):
                n.relay.close()
        if self._pump is not None:
            self._pump.join(5.0)
        if self.capture is not None:
            self.capture.stop()
        if self.broker is not None:
            self.broker.stop()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _pump_loop(self) -> None:
        """Stamps each new message with its arrival time and writes it to mqtt.jsonl."""
        cap = self.capture
        assert cap is not None
        seen = 0

        def more(c: Capture) -> bool:
            return len(c.messages) > seen

        while not self._stopping.is_set():
            try:
                got = cap.wait_for(more, timeout=0.5)
            except TimeoutError:
                continue
            now = time.time()
            new = [capture_file.Message(now, m.topic, m.payload, m.qos, m.retain)
                   for m in got[seen:]]
            seen = len(got)
            with self._lock:
                self._stamped += new
                if self._writer is not None:
                    self._writer.write_all(new)
                self._lock.notify_all()

    # ----- what reached MQTT --------------------------------------------------------------

    @property
    def messages(self) -> list[capture_file.Message]:
        with self._lock:
            return list(self._stamped)

    def uplinks(self, node: int | None = None, kind: str | None = None) -> list[Uplink]:
        return [u for u in uplinks(self.messages)
                if (node is None or u.node == node) and (kind is None or u.kind == kind)]

    def account(self) -> Accounting:
        msgs = self.messages
        return account(uplinks(msgs), gaps(msgs))

    def wait_uplinks(self, what: str, pred: Callable[[list[Uplink]], bool],
                     timeout_s: float = GUARD_S) -> list[Uplink]:
        """Waits until pred(uplinks) holds; TimeoutError naming `what` (a hang guard)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                ups = uplinks(self._stamped)
                if pred(ups):
                    return ups
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{what}: not seen on MQTT within {timeout_s:.0f} s; "
                                       f"{len(ups)} uplinks, the last "
                                       f"{[(u.node, u.kind, u.boot, u.seq) for u in ups[-5:]]}")
                self._lock.wait(min(left, 1.0))

    def wait_drained(self, node: int, timeout_s: float = GUARD_S) -> Uplink:
        """Waits for a health message of the node's latest boot reporting an empty queue
        (every frame before it acknowledged); returns it."""
        n = self.nodes[node]

        def drained(ups: list[Uplink]) -> bool:
            boot = max((u.boot for u in ups if u.node == node), default=0)
            if n.board is not None:
                boot = max(boot, len(n.board.boots))
            return any(u.node == node and u.kind == "health" and u.boot == boot
                       and u.num("queue") == 0 for u in ups)

        ups = self.wait_uplinks(f"node {node}: health with an empty queue", drained, timeout_s)
        return [u for u in ups if u.node == node and u.kind == "health"][-1]

    def wait_scenario_s(self, node: int, s: float, timeout_s: float) -> None:
        """Waits until the node's scenario reached s seconds: the emulated clock, or for a
        replaying node (real boards too) a health message with uptime >= s."""
        n = self.nodes[node]
        if n.board is not None and not n.replay:
            n.board.wait_until_ms(s * 1000.0, timeout_s=timeout_s)
            return
        self.wait_uplinks(f"node {node}: health at scenario {s:g} s", lambda ups: any(
            u.node == node and u.kind == "health" and u.num("uptime") >= s for u in ups),
            timeout_s)

    def hello_sync(self, node: int, boot: int) -> float:
        """The board's virtual s at which the gateway set the node's clock in `boot`, minus
        the Unix time it was set to: scenario_s = node_t + this (emulated boards)."""
        n = self.nodes[node]
        assert n.board is not None
        hello = next(u for u in self.uplinks(node, "hello") if u.boot == boot)
        v_s = n.board.virtual_ms_at(hello.t) / 1000.0
        return v_s - hello.t

    def replay_origin(self, node: int, boot: int) -> float:
        """The Unix time of a replaying node's scenario t = 0 in `boot`: the mean of t -
        uptime over its synced health messages (each is off by less than 1 s either way,
        the mean by far less)."""
        offs = [u.t - u.num("uptime") for u in self.uplinks(node, "health")
                if u.boot == boot and "unsynced" not in u.fields]
        if not offs:
            raise LookupError(f"node {node} boot {boot}: no synced health message yet to "
                              "place its replay in time; wait for one (health_s)")
        return sum(offs) / len(offs)

    def scenario_s(self, up: Uplink) -> float:
        """When (virtual s since its scenario's start) an uplink's node stamped it."""
        if self.nodes[up.node].replay:
            return up.t - self.replay_origin(up.node, up.boot)
        return up.t + self.hello_sync(up.node, up.boot)
