"""What reached MQTT, decoded: one `Uplink` per node message, and the zero-loss accounting.

The gateway publishes SenML packs on ``.../data`` and ``.../alarm`` (gateway/senml.py): a
message opens with its ``type`` record and carries ``node``, ``boot``, ``seq``. `uplinks()`
decodes them with the independent resolver `senml.decode_pack`; ``.../gaps`` packs (records
the gateway had to drop, by seq range) come out of `gaps()`.

`account()` is the suite's loss check: per (node, boot), the seqs seen on MQTT must run from 1
to the highest without a hole (the firmware numbers frames from 1 at every boot and keeps each
on flash until acknowledged), unless a gap report names the missing seqs; a (node, boot, seq)
published twice must carry the same records (at-least-once after a crash, never two different
readings under one identity).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from gateway.senml import NAME_PREFIX, decode_pack
from hil_tests.rig.capture_file import Message

Value = float | str | bool | bytes
Identity = tuple[int, int, int]                # node, boot, seq


@dataclass(frozen=True)
class Uplink:
    """One node message as it reached MQTT."""

    node: int
    kind: str                                  # hello flood traffic alarm health
    t: float                                   # SenML time: the node's Unix time (s)
    fields: Mapping[str, Value]
    arrived: float = 0.0                       # the subscriber's Unix time

    @property
    def boot(self) -> int:
        return int(self.num("boot"))

    @property
    def seq(self) -> int:
        return int(self.num("seq"))

    @property
    def identity(self) -> Identity:
        return (self.node, self.boot, self.seq)

    def num(self, name: str, default: float | None = None) -> float:
        v = self.fields.get(name)
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v)
        if default is not None:
            return default
        raise KeyError(f"{self.kind} from node {self.node} has no number {name!r}: "
                       f"{dict(self.fields)}")

    def text(self, name: str) -> str:
        v = self.fields.get(name)
        return v if isinstance(v, str) else ""


def _groups(payload: bytes) -> list[tuple[int, str, float, dict[str, Value]]]:
    out: list[tuple[int, str, float, dict[str, Value]]] = []
    for rec in decode_pack(payload):
        name = str(rec["n"])
        node_s, _, fname = name.removeprefix(NAME_PREFIX).partition(":")
        value = next((rec[k] for k in ("v", "vs", "vb", "vd") if k in rec), None)
        if fname == "type":
            t = rec["t"]
            assert isinstance(t, int | float), rec
            out.append((int(node_s), str(value), float(t), {}))
        elif isinstance(value, int | float | str | bool | bytes):
            out[-1][3][fname] = value
    return out


def uplinks(messages: Iterable[Message]) -> list[Uplink]:
    """Every node message in the data and alarm packs, in arrival order."""
    out: list[Uplink] = []
    for msg in messages:
        if msg.topic.rsplit("/", 1)[-1] in ("data", "alarm"):
            out += [Uplink(n, k, t, f, msg.t) for n, k, t, f in _groups(msg.payload)]
    return out


@dataclass(frozen=True)
class Gap:
    """Seqs of one (node, boot) the gateway dropped and reported."""

    node: int
    boot: int
    seqs: frozenset[int]
    dropped: int


def _seqs(ranges: str) -> set[int]:
    out: set[int] = set()
    for part in filter(None, ranges.split(",")):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def gaps(messages: Iterable[Message]) -> list[Gap]:
    """The gateway's gap reports (``.../gaps``)."""
    out: list[Gap] = []
    for msg in messages:
        if msg.topic.endswith("/gaps"):
            for node, _, _, f in _groups(msg.payload):
                out.append(Gap(node, int(float(str(f["boot"]))), frozenset(_seqs(str(
                    f["ranges"]))), int(float(str(f.get("dropped", 0))))))
    return out


@dataclass
class Accounting:
    """The result of `account()`: what is missing, what was duplicated, what was reported."""

    seen: dict[tuple[int, int], set[int]] = field(default_factory=dict)
    missing: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    reported: dict[tuple[int, int], set[int]] = field(default_factory=dict)
    duplicates: int = 0
    conflicts: list[Identity] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return sum(len(s) for s in self.seen.values())

    @property
    def dropped(self) -> int:
        return sum(len(s) for s in self.reported.values())

    def summary(self) -> str:
        return (f"{self.frames} frames in {len(self.seen)} (node, boot) runs, "
                f"{self.duplicates} duplicates, {self.dropped} reported dropped, missing "
                f"{ {k: v[:20] for k, v in self.missing.items() if v} }, conflicts "
                f"{self.conflicts[:10]}")


def account(ups: Sequence[Uplink], reported: Iterable[Gap] = ()) -> Accounting:
    """Per (node, boot): seqs 1..max all seen or reported dropped; duplicates identical."""
    acc = Accounting()
    first: dict[Identity, Uplink] = {}
    for up in ups:
        key = up.identity
        if key in first:
            acc.duplicates += 1
            old = first[key]
            if (old.kind, old.t, dict(old.fields)) != (up.kind, up.t, dict(up.fields)):
                acc.conflicts.append(key)
            continue
        first[key] = up
        acc.seen.setdefault((up.node, up.boot), set()).add(up.seq)
    by_run: dict[tuple[int, int], set[int]] = defaultdict(set)
    for g in reported:
        by_run[(g.node, g.boot)] |= g.seqs
    acc.reported = dict(by_run)
    for run in set(acc.seen) | set(by_run):
        seqs = acc.seen.get(run, set()) | by_run.get(run, set())
        acc.missing[run] = sorted(set(range(1, max(seqs) + 1)) - seqs)
    return acc
