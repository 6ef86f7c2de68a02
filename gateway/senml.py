"""Uplink records as SenML CBOR packs (RFC 8428, content type ``application/senml+cbor``).

One pack per MQTT publish: a CBOR array of SenML records (maps with RFC 8428's integer labels:
bver -1, bn -2, bt -3, bu -4, bv -5, bs -6, n 0, u 1, v 2, vs 3, vb 4, s 5, t 6, ut 7, vd 8;
base sum is -6, not the -16 some libraries use). Encoded deterministically: every map is
built with its keys already in RFC 8949 deterministic order (n u v vs vb vd, then bn bt) and
written by cbor2's C encoder as is, so a retried publish of the same records carries the same
bytes. Numbers are integers where the value is integral and float64 otherwise (cbor2's
``canonical=True`` would also shorten floats, at seven times the cost: 40 against 5 us a
record on the benchmark machine).

Record groups.
    Each uplink message becomes one contiguous group of records, in this order:
    ``type`` (vs: hello, flood, traffic, alarm, health; gap reports use ``gap``), ``boot`` (v),
    ``seq`` (v), then the message's fields. The ``type`` record opens the group and carries the
    base time ``bt``; the base name ``bn`` = ``urn:dev:roadside:{node}:`` is written when the
    node differs from the previous group's (a resolver carries it forward, RFC 8428 4.6), so
    every resolved record is named ``urn:dev:roadside:{node}:{field}`` and every group carries
    (node, boot, seq): consumers de-duplicate with it (SPEC 6 and 14).

Time.
    ``bt`` is the reading's own ``t`` when it is Unix time (``t >= 1e9``, SPEC 5.2). When the
    node's clock is not synchronised, ``bt`` is the gateway's receive time (seconds, ms
    precision) and the group adds ``unsynced`` (vb true) and ``boot_t`` (s: the node's
    seconds since boot). hello has no ``t``: its time is always the receive time, no flag.

Units (RFC 8428 section 12.1 registry; base units where one is registered).
    =========  ================================  ================================
    type       field -> record (unit)            conversion
    =========  ================================  ================================
    hello      fw, board, cfg_error (vs)         text as sent
               reset_cause (vs)                  name (show.RESET_NAMES) or code
               cfg_hash (vd)                     bytes
    flood      depth (m), range (m)              mm / 1000; depth omitted if invalid
               temp (Cel)                        0.01 C / 100; omitted when null
               flags (v), flag_<name> (vb true)  bit mask; one record per set bit
               q (count)                         pings with a usable echo
    traffic    window (s), count (count)         as sent; bt = window start
               occupancy (/)                     per mille / 1000
               speed (m/s)                       mm/s / 1000; omitted when null
               samples (count)                   as sent
    alarm      alarm (vs)                        name (show.ALARM_NAMES) or code
               level (m), depth (m)              mm / 1000
               rate (m/s)                        um/s / 1e6
               eta (s)                           omitted when null
    health     uptime (s)                        as sent
               heap_free (B), heap_min (B)       bytes
               resets_<cause> (count)            one per array entry
               battery (V)                       mV / 1000; omitted when null
               queue (count), dropped (count)    frames
               link_<counter> (count)            one per array entry
               status (v), status_<bit> (vb)     bit mask; one record per set bit
    gap        reason (vs), dropped (count)      records lost at the gateway
               ranges (vs)                       "5-9,12": seq ranges, ends included
    =========  ================================  ================================

`decode_pack` is a generic RFC 8428 resolver, written apart from the encoder: it knows no
roadside names and is what the tests read packs back with.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import cbor2

from gateway.errors import GatewayError
from protocol import messages as m
from protocol import show

CONTENT_TYPE = "application/senml+cbor"
NAME_PREFIX = "urn:dev:roadside:"

# RFC 8428 Table 4: CBOR labels.
BVER, BN, BT, BU, BV, BS = -1, -2, -3, -4, -5, -6
N, U, V, VS, VB, S, T, UT, VD = 0, 1, 2, 3, 4, 5, 6, 7, 8
_LABELS = {BVER: "bver", BN: "bn", BT: "bt", BU: "bu", BV: "bv", BS: "bs", N: "n", U: "u",
           V: "v", VS: "vs", VB: "vb", S: "s", T: "t", UT: "ut", VD: "vd"}
_SENML_VERSION = 10

LINK_NAMES = ("sent", "retx", "rx", "bad", "timeouts")          # SPEC 5.4.6
STATUS_NAMES = ("safe_mode", "cfg_error", "flood_failed", "temp_failed", "mag_a_failed",
                "mag_b_failed", "unsynced", "replay")            # SPEC 5.4.7


class SenmlError(GatewayError):
    """A pack cannot be encoded (message type without a mapping) or is not valid SenML."""


# Made per frame: slots and no frozen (a frozen dataclass sets each field through
# object.__setattr__, 4x the cost of this one's __init__). Treat it as read-only.
@dataclass(slots=True)
class Uplink:
    """One verified uplink message and the gateway's UTC milliseconds when it arrived."""

    received_ms: int
    msg: m.Message

    @property
    def node(self) -> int:
        return self.msg.node

    @property
    def boot(self) -> int:
        return self.msg.boot

    @property
    def seq(self) -> int:
        return self.msg.seq


class Gap(Protocol):
    """What a gap report needs (`gateway.store.GapReport` has it)."""

    @property
    def node(self) -> int: ...
    @property
    def boot(self) -> int: ...
    @property
    def reason(self) -> str: ...
    @property
    def ranges(self) -> tuple[tuple[int, int], ...]: ...
    @property
    def count(self) -> int: ...
    @property
    def last_ms(self) -> int: ...


_Rec = dict[int, object]


def _name(names: Sequence[str], code: int) -> str:
    return names[code] if 0 <= code < len(names) and names[code] else str(code)


def _entry(i: int, names: Sequence[str]) -> str:
    return names[i] if i < len(names) else str(i)


class _Builder:
    """Appends record groups; writes bn only when the node changes."""

    def __init__(self) -> None:
        self.records: list[_Rec] = []
        self._node: int | None = None

    def open(self, node: int, bt: float, type_: str, boot: int, seq: int | None) -> None:
        # Keys in deterministic order: n (0x00), vs (0x03), bn (0x21), bt (0x22).
        first: _Rec = {N: "type", VS: type_}
        if node != self._node:
            first[BN] = f"{NAME_PREFIX}{node}:"
            self._node = node
        first[BT] = bt
        self.records.append(first)
        self.num("boot", boot)
        if seq is not None:
            self.num("seq", seq)

    def num(self, n: str, v: float, u: str | None = None) -> None:
        rec: _Rec = {N: n}
        if u is not None:
            rec[U] = u
        rec[V] = _num(v)
        self.records.append(rec)

    def text(self, n: str, vs: str) -> None:
        self.records.append({N: n, VS: vs})

    def flag(self, n: str) -> None:
        self.records.append({N: n, VB: True})

    def data(self, n: str, vd: bytes) -> None:
        self.records.append({N: n, VD: vd})


def _num(v: float) -> float:
    # 0.0 m is written 0, as short as canonical CBOR would write it.
    return int(v) if type(v) is float and v.is_integer() else v


def _time(b: _Builder, up: Uplink, t: int | None) -> None:
    msg = up.msg
    if t is not None and t >= m.UNIX_MIN:
        b.open(msg.node, t, msg.NAME, msg.boot, msg.seq)
        return
    b.open(msg.node, up.received_ms / 1000, msg.NAME, msg.boot, msg.seq)
    if t is not None:
        b.flag("unsynced")
        b.num("boot_t", t, "s")


def _bits(out: list[_Rec], mask: int, prefix: str, names: Sequence[str]) -> None:
    # One ``{prefix}{name}`` (vb true) record per set bit.
    if mask:
        out.extend({N: prefix + name, VB: True} for i, name in enumerate(names)
                   if mask >> i & 1)


def _add(b: _Builder, up: Uplink) -> None:
    # Flood, traffic and alarm (nearly every record) append literal maps: the same records
    # as b.num/b.text would, at half the cost.
    msg = up.msg
    out = b.records
    match msg:
        case m.Flood():
            _time(b, up, msg.t)
            if not msg.flags & m.FLAG_INVALID:
                out.append({N: "depth", U: "m", V: _num(msg.depth_mm / 1000)})
            out.append({N: "range", U: "m", V: _num(msg.range_mm / 1000)})
            if msg.temp_cc is not None:
                out.append({N: "temp", U: "Cel", V: _num(msg.temp_cc / 100)})
            out.append({N: "flags", V: msg.flags})
            _bits(out, msg.flags, "flag_", show.FLAG_NAMES)
            out.append({N: "q", U: "count", V: msg.q})
        case m.Traffic():
            _time(b, up, msg.t)
            out.append({N: "window", U: "s", V: msg.window_s})
            out.append({N: "count", U: "count", V: msg.count})
            out.append({N: "occupancy", U: "/", V: _num(msg.occupancy_pm / 1000)})
            if msg.speed_mms is not None:
                out.append({N: "speed", U: "m/s", V: _num(msg.speed_mms / 1000)})
            out.append({N: "samples", U: "count", V: msg.samples})
        case m.Alarm():
            _time(b, up, msg.t)
            out.append({N: "alarm", VS: _name(show.ALARM_NAMES, msg.alarm)})
            out.append({N: "level", U: "m", V: _num(msg.level_mm / 1000)})
            out.append({N: "depth", U: "m", V: _num(msg.depth_mm / 1000)})
            out.append({N: "rate", U: "m/s", V: _num(msg.rate_ums / 1_000_000)})
            if msg.eta_s is not None:
                out.append({N: "eta", U: "s", V: msg.eta_s})
        case m.Hello():
            _time(b, up, None)
            b.text("fw", msg.fw)
            b.text("board", msg.board)
            b.text("reset_cause", _name(show.RESET_NAMES, msg.reset_cause))
            b.data("cfg_hash", bytes(msg.cfg_hash))
            b.text("cfg_error", msg.cfg_error)
        case m.Health():
            _time(b, up, msg.t)
            b.num("uptime", msg.uptime_s, "s")
            b.num("heap_free", msg.heap_free, "B")
            b.num("heap_min", msg.heap_min, "B")
            for i, n in enumerate(msg.resets):
                b.num("resets_" + _entry(i, show.RESET_NAMES).replace("-", "_"), n, "count")
            if msg.battery_mv is not None:
                b.num("battery", msg.battery_mv / 1000, "V")
            b.num("queue", msg.queue, "count")
            b.num("dropped", msg.dropped, "count")
            for i, n in enumerate(msg.link):
                b.num("link_" + _entry(i, LINK_NAMES), n, "count")
            b.num("status", msg.status)
            _bits(out, msg.status, "status_", STATUS_NAMES)
        case _:
            raise SenmlError(f"{msg.NAME} (type {msg.TYPE}) has no SenML mapping: only uplink "
                             "messages are published")


def _dump(records: list[_Rec]) -> bytes:
    # The builder wrote every map in deterministic key order: no sorting needed here.
    return cbor2.dumps(records)


def encode_pack(uplinks: Iterable[Uplink]) -> bytes:
    """One SenML CBOR pack holding a record group per uplink message, in the given order."""
    b = _Builder()
    for up in uplinks:
        _add(b, up)
    return _dump(b.records)


def format_ranges(ranges: Iterable[tuple[int, int]]) -> str:
    """Seq ranges as text: ((5, 9), (12, 12)) -> "5-9,12"."""
    return ",".join(str(a) if a == z else f"{a}-{z}" for a, z in ranges)


def encode_gaps(gaps: Iterable[Gap]) -> bytes:
    """A SenML CBOR pack with one ``gap`` group per report (no seq: it names many records)."""
    b = _Builder()
    for g in gaps:
        b.open(g.node, g.last_ms / 1000, "gap", g.boot, None)
        b.text("reason", g.reason)
        b.num("dropped", g.count, "count")
        b.text("ranges", format_ranges(g.ranges))
    return _dump(b.records)


# -- generic resolver (RFC 8428 section 4.6) -------------------------------------------------

_NAME_RE = re.compile(r"[A-Za-z0-9][-A-Za-z0-9:./_]*\Z")
_VALUE_KEYS = ("v", "vs", "vb", "vd")


def _number(x: object, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        raise SenmlError(f"{what}: {x!r} is not a finite number")
    return x


def _resolve_one(raw: dict[str, object], base: dict[str, object], i: int) -> dict[str, object]:
    name = base.get("bn", "")
    n = raw.get("n", "")
    if not isinstance(name, str) or not isinstance(n, str):
        raise SenmlError(f"record {i}: bn and n must be text")
    name += n
    if not _NAME_RE.match(name):
        raise SenmlError(f"record {i}: resolved name {name!r} is not a valid SenML name")
    out: dict[str, object] = {"n": name}
    u = raw.get("u", base.get("bu"))
    if u is not None:
        if not isinstance(u, str):
            raise SenmlError(f"record {i}: unit {u!r} is not text")
        out["u"] = u
    values = [k for k in _VALUE_KEYS if k in raw]
    if len(values) > 1:
        raise SenmlError(f"record {i}: more than one value field ({', '.join(values)})")
    if "v" in raw:
        out["v"] = _number(base.get("bv", 0), f"record {i} bv") + _number(raw["v"], f"record {i} v")
    elif values:
        k = values[0]
        want = {"vs": str, "vb": bool, "vd": bytes}[k]
        if not isinstance(raw[k], want):
            raise SenmlError(f"record {i}: {k} {raw[k]!r} is not {want.__name__}")
        out[k] = raw[k]
    if "s" in raw:
        out["s"] = _number(base.get("bs", 0), f"record {i} bs") + _number(raw["s"], f"record {i} s")
    if not values and "s" not in raw:
        raise SenmlError(f"record {i}: no value and no sum")
    out["t"] = _number(base.get("bt", 0), f"record {i} bt") + _number(raw.get("t", 0),
                                                                      f"record {i} t")
    if "ut" in raw:
        out["ut"] = _number(raw["ut"], f"record {i} ut")
    return out


def decode_pack(data: bytes) -> list[dict[str, object]]:
    """Resolved records of a SenML CBOR pack: names, times, units and values with bases applied.

    Each result has ``n`` and ``t`` and one of ``v``/``vs``/``vb``/``vd`` (or ``s``), ``u``
    when a unit applies. Unknown integer labels are ignored; an unknown text label ending in
    ``_`` (must-understand, RFC 8428 4.4) is refused, as is a ``bver`` above 10.
    """
    try:
        raw = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, EOFError) as exc:
        raise SenmlError(f"not CBOR: {exc}") from exc
    if not isinstance(raw, list):
        raise SenmlError("a SenML pack is a CBOR array of records")
    base: dict[str, object] = {}
    out: list[dict[str, object]] = []
    for i, rec in enumerate(raw):
        if not isinstance(rec, dict):
            raise SenmlError(f"record {i} is not a map")
        named: dict[str, object] = {}
        for key, val in rec.items():
            if isinstance(key, int) and key in _LABELS:
                named[_LABELS[key]] = val
            elif isinstance(key, str) and key.endswith("_"):
                raise SenmlError(f"record {i}: must-understand field {key!r} not supported")
        ver = named.get("bver", _SENML_VERSION)
        if not isinstance(ver, int) or ver > _SENML_VERSION:
            raise SenmlError(f"record {i}: SenML version {ver!r} not supported")
        for key in ("bn", "bt", "bu", "bv", "bs"):
            if key in named:
                base[key] = named[key]
        out.append(_resolve_one(named, base, i))
    return out
