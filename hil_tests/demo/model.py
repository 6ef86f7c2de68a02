"""What the demo knows: readings decoded from the gateway's SenML packs, per-node state, gateway.

`readings(topic, payload)` turns one MQTT message of the ``.../data`` or ``.../alarm`` topic
into `Reading`s, one per SenML record group (a group opens with its ``type`` record and carries
node, boot and seq, gateway/senml.py). `DemoState` folds readings and the gateway's Prometheus
samples into what the dashboard shows; the plot reads the same readings from a capture file.
Nothing here starts a process or opens a socket.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gateway.senml import NAME_PREFIX, SenmlError, decode_pack

SENML_TOPICS = ("data", "alarm")           # last topic level of the packs the gateway sends
METRIC = "roadside_gateway_"

Samples = Mapping[tuple[str, tuple[tuple[str, str], ...]], float]
Value = float | str | bool | bytes


@dataclass(frozen=True)
class Reading:
    """One uplink message as it reached MQTT: node, kind, its time (Unix s) and its fields."""

    node: int
    kind: str                                # hello flood traffic alarm health gap
    t: float
    fields: Mapping[str, Value]

    def num(self, name: str) -> float | None:
        """A numeric field (SenML v), or None when absent (e.g. an invalid depth)."""
        v = self.fields.get(name)
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

    def text(self, name: str) -> str:
        v = self.fields.get(name)
        return v if isinstance(v, str) else ""


def readings(topic: str, payload: bytes) -> list[Reading]:
    """The readings in one message; [] for topics that carry no SenML (state, status, config).

    Raises SenmlError for a data/alarm payload that is not a valid roadside pack.
    """
    if topic.rsplit("/", 1)[-1] not in SENML_TOPICS:
        return []
    out: list[Reading] = []
    node: int | None = None
    kind = ""
    t = 0.0
    fields: dict[str, Value] = {}
    for rec in decode_pack(payload):
        name = str(rec["n"])
        if not name.startswith(NAME_PREFIX):
            raise SenmlError(f"record name {name!r} is not under {NAME_PREFIX}")
        node_s, _, fname = name[len(NAME_PREFIX):].partition(":")
        value = next((rec[k] for k in ("v", "vs", "vb", "vd") if k in rec), None)
        if fname == "type":
            if node is not None:
                out.append(Reading(node, kind, t, fields))
            node, kind, fields = int(node_s), str(value), {}
            t = float(rec["t"])                # type: ignore[arg-type]
            continue
        if node is None:
            raise SenmlError(f"record {name!r} comes before any type record")
        if isinstance(value, int | float | str | bool | bytes):
            fields[fname] = value
    if node is not None:
        out.append(Reading(node, kind, t, fields))
    return out


@dataclass
class Node:
    """The latest of everything one node said."""

    node: int
    label: str = ""
    depth_mm: float | None = None
    depth_t: float | None = None
    flags: int = 0
    floods: int = 0
    alarm: Reading | None = None
    alarms: int = 0
    window: Reading | None = None
    vehicles: int = 0
    battery_v: float | None = None
    heap_min_b: float | None = None
    queue: float | None = None
    status: int = 0
    link: dict[str, float] = field(default_factory=dict)
    boots: set[int] = field(default_factory=set)
    reset_cause: str = ""
    last_t: float | None = None
    count: int = 0                           # readings received
    board: str = "running"                   # the emulated board's power state


@dataclass
class Gateway:
    """The gateway as its /metrics endpoint shows it (None until the first scrape)."""

    up: bool = False
    error: str = ""
    queue_routine: float = 0.0
    queue_alarm: float = 0.0
    queue_bytes: float = 0.0
    in_flight: float = 0.0
    oldest_age_s: float | None = None
    mqtt_connected: bool = False
    accepted: float = 0.0
    bad: float = 0.0
    published: float = 0.0
    ports: dict[str, dict[str, float]] = field(default_factory=dict)


class DemoState:
    """Per-node state and the gateway's, fed by `add_message` and `set_metrics`."""

    def __init__(self, labels: Mapping[int, str] | None = None) -> None:
        self.labels = dict(labels or {})
        self.nodes: dict[int, Node] = {n: Node(n, lbl) for n, lbl in self.labels.items()}
        self.gateway = Gateway()
        self.messages = 0
        self.bad_payloads = 0
        self.t0: float | None = None           # the first reading's time: t+0 of the display

    def node(self, n: int) -> Node:
        if n not in self.nodes:
            self.nodes[n] = Node(n, self.labels.get(n, ""))
        return self.nodes[n]

    def add_message(self, topic: str, payload: bytes) -> list[Reading]:
        """Folds one MQTT message in; returns its readings (alarms among them for the log)."""
        self.messages += 1
        try:
            got = readings(topic, payload)
        except SenmlError:
            self.bad_payloads += 1
            return []
        for r in got:
            self.add(r)
        return got

    def add(self, r: Reading) -> None:
        nd = self.node(r.node)
        nd.count += 1
        if self.t0 is None or r.t < self.t0:
            self.t0 = r.t
        nd.last_t = r.t if nd.last_t is None else max(nd.last_t, r.t)
        boot = r.num("boot")
        if boot is not None:
            nd.boots.add(int(boot))
        match r.kind:
            case "hello":
                nd.reset_cause = r.text("reset_cause")
            case "flood":
                nd.floods += 1
                depth = r.num("depth")
                nd.flags = int(r.num("flags") or 0)
                if depth is not None and (nd.depth_t is None or r.t >= nd.depth_t):
                    nd.depth_mm, nd.depth_t = depth * 1000.0, r.t
            case "alarm":
                nd.alarms += 1
                if nd.alarm is None or r.t >= nd.alarm.t:
                    nd.alarm = r
            case "traffic":
                nd.vehicles += int(r.num("count") or 0)
                if nd.window is None or r.t >= nd.window.t:
                    nd.window = r
            case "health":
                battery = r.num("battery")
                nd.battery_v = battery if battery is not None else nd.battery_v
                nd.heap_min_b = r.num("heap_min")
                nd.queue = r.num("queue")
                nd.status = int(r.num("status") or 0)
                nd.link = {k[5:]: float(v) for k, v in r.fields.items()
                           if k.startswith("link_") and isinstance(v, int | float)}
            case _:
                pass

    def rel(self, t: float | None) -> float | None:
        """A reading's time as seconds since the first reading (the display's t+)."""
        return None if t is None or self.t0 is None else t - self.t0

    def set_metrics(self, samples: Samples) -> None:
        """Takes one scrape of the gateway's /metrics (gateway/telemetry.py names)."""
        gw = self.gateway
        gw.up, gw.error = True, ""

        def one(name: str, **labels: str) -> float:
            return samples.get((METRIC + name, tuple(sorted(labels.items()))), 0.0)

        gw.queue_routine = one("queue_records", priority="routine")
        gw.queue_alarm = one("queue_records", priority="alarm")
        gw.queue_bytes = one("queue_bytes")
        gw.in_flight = one("queue_in_flight")
        age = samples.get((METRIC + "queue_oldest_age_seconds", ()))
        gw.oldest_age_s = None if age is None or math.isnan(age) else age
        gw.mqtt_connected = one("mqtt_connected") >= 1
        gw.accepted = one("frames_accepted_total")
        gw.published = one("records_published_total")
        gw.bad = sum(v for (n, _), v in samples.items() if n == METRIC + "frames_bad_total")
        ports: dict[str, dict[str, float]] = {}
        for (name, labels), v in samples.items():
            port = dict(labels).get("port")
            if port is None or not name.startswith(METRIC + "serial_"):
                continue
            key = name[len(METRIC + "serial_"):].removesuffix("_total")
            ports.setdefault(port, {})[key] = v
        gw.ports = ports

    def metrics_failed(self, why: str) -> None:
        self.gateway.up, self.gateway.error = False, why


def fold(messages: Iterable[tuple[str, bytes]], labels: Mapping[int, str] | None = None
         ) -> DemoState:
    """A state built from (topic, payload) pairs, as the live demo would have built it."""
    state = DemoState(labels)
    for topic, payload in messages:
        state.add_message(topic, payload)
    return state
