"""Benchmark of roadside-gateway end to end (`make bench`, issue 4), ratios from one run.

Everything is real: the gateway is ``python -m gateway run`` (`gwproc.GatewayProcess`), nodes
are ptys (`nodes.PtyNode`) fed with frames sealed by ``protocol/`` with the node keys, the
broker is a private Mosquitto (`brokers.mosquitto`), the store a SQLite file on this disk.

Placement ("on one core"): the gateway (its event loop and its store thread) is pinned to
CPU 0; this process (writers, subscriber, alarm sender), the brokers and everything else to
CPU 1 (`os.sched_setaffinity`; children inherit the mask of the thread that starts them).

Measurements, each printed as a table with its target and PASS/FAIL:

1. *Writer alone*: the same pre-sealed frames blasted into ptys whose other side is read and
   discarded: the ceiling of the feed, which must be far above the gateway.
2. *Throughput*: 4 flood nodes, one pty and one writer thread each, blast their pre-sealed
   frames (48 bytes each, seq 1, 2, ... in order) as fast as the ptys take them. SPEC 9.3
   lets a node have at most 64 unacked frames; the writers ignore that on purpose: frames
   arrive in order and none is lost, so the gateway's replay window only moves forward and
   refuses nothing (checked: ``frames_bad_total`` must stay 0). Frames/s runs from the first
   byte written to the arrival, at a subscriber on the broker, of the message that completes
   the set of every (node, boot, seq) (so broker delivery is included); the PUBACK-side
   figure (the gateway's ``records_published_total`` reaching N, polled) is printed too.
   Run with the deployment defaults of `gateway.config` and with `TUNED`. Core busy and CPU
   us/frame come from the process's utime + stime over the run (/proc/PID/stat).
   ``--profile FILE`` adds a run under py-spy and prints the gateway's CPU per pipeline
   stage (`STAGES`).
3. *Naive forwarder* (``naive`` sub-command of this module, pinned to CPU 0 like the
   gateway): the same ptys and frames, deframe + authenticate + replay check with
   ``protocol/`` and a one-record SenML pack per frame (the same work per frame), each frame
   published with aiomqtt QoS 1 and its PUBACK awaited before the next frame of that port (no
   batching, no store, no acks to the nodes). Its own Mosquitto; same subscriber-side clock.
4. *Alarm latency under load*: during every throughput run a fifth node writes an alarm
   every 100 ms on its own pty; latency is the alarm's write to its arrival at the
   subscriber (one clock, this process), p50/p99 (nearest rank). The gateway's own
   ``alarm_latency_seconds`` histogram (frame read to PUBACK, interpolated within its
   buckets) is shown too. Measured under the blast (saturation) and under a paced load: the
   4 nodes each at the full rate of a 115200-baud link (8N1), the most real serial links
   can carry, for 15 s (~150 alarms).
5. *Backlog*: no broker (its port is reserved, nothing listens) while 1,000,000 frames are
   written, stored and acked; the gateway's VmRSS is sampled at 0, 1/4, 1/2, 3/4 and all of
   them stored; then the broker starts and the drain rate (records PUBACKed per second) and
   the RSS during the drain are measured.

Run: ``make bench`` or ``.venv/bin/python -m gateway.tests.bench_gateway [--quick]``; see
``--help``. Not collected by pytest (not named test_*.py): timing belongs here, not in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime
import functools
import math
import os
import platform
import queue
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tty
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import cbor2

from gateway import config as cfgmod
from gateway import senml
from gateway.tests import brokers
from gateway.tests.brokers import Broker
from gateway.tests.gwproc import GatewayProcess
from gateway.tests.nodes import PtyNode
from protocol import frame, link
from protocol import messages as m
from protocol.errors import ProtocolError
from protocol.replay import ReplayGuard

GW_CPU = 0                       # the gateway (or the naive forwarder) alone here
REST_CPU = 1                     # this process, the broker, everything else
FLOOD_NODES = (201, 202, 203, 204)
ALARM_NODE = 250
KEYS = {n: bytes((n + i) % 256 for i in range(32)) for n in (*FLOOD_NODES, ALARM_NODE)}
SITE, GW_ID = "bench-site", "gw-bench"
PREFIX = f"roadside/v1/{SITE}/{GW_ID}"
T0 = 1_790_000_000
ALARM_PERIOD_S = 0.1
LINE_BAUD = 115200               # the paced load: each node at the full rate of its link
PACED_S = 15.0                   # length of a paced run (>= 100 alarms)
SKIPPABLE = ("writer", "defaults", "tuned", "naive", "paced", "backlog")
POLL_S = 0.25                    # metrics polls (each costs the gateway a scrape)
GUARD_S = 600.0                  # hang guard of one measurement
STALL_S = 30.0                   # no progress for this long: a run is stuck, say where

# Targets of issue 4.
TARGET_FPS = 50_000
TARGET_RATIO = 10.0
TARGET_ALARM_P99_S = 0.020
TARGET_RSS_B = 80_000_000       # "80 MB"
FLAT_RSS_B = 5 * 1024 * 1024     # "flat": RSS at all stored minus RSS at 1/4 stored

# What a deployment runs with (gateway/config.py defaults) and the tuned alternative.
_DEF_STORE, _DEF_BATCH = cfgmod.Store(), cfgmod.Batch()
DEFAULTS: dict[str, dict[str, object]] = {
    "store": {"commit_interval_ms": _DEF_STORE.commit_interval_ms},
    "batch": {"max_count": _DEF_BATCH.max_count, "max_bytes": _DEF_BATCH.max_bytes,
              "max_age_ms": _DEF_BATCH.max_age_ms},
}
# Tuned: a 10 ms commit period. No setting moves throughput beyond run-to-run noise (batch
# max_count 1000: +5%, and a worse alarm tail). At 4 x 115200 baud it trims the alarm p99
# (14 -> 10 ms with ingest committing alarms at once; 118 -> 22-32 ms before it did).
TUNED: dict[str, dict[str, object]] = {
    "store": {"commit_interval_ms": 10},
    "batch": dict(DEFAULTS["batch"]),
}


Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]   # GatewayProcess.scrape()


# ---- frames ---------------------------------------------------------------------------------

def seal_floods(node: int, first_seq: int, count: int) -> bytes:
    """`count` flood frames of `node` from `first_seq` on, sealed with its key, concatenated.

    A slowly rising and falling water level, temperature drifting: 48-49 bytes on the wire,
    like a real reading."""
    sealer = frame.Sealer(KEYS[node])
    out = bytearray()
    for seq in range(first_seq, first_seq + count):
        depth = 300 + (seq * 7 + node) % 900
        out += sealer.seal(m.Flood(node, 1, seq, T0 + seq, depth, 3000 - depth,
                                   2400 + seq % 120, 0, 5))
    return bytes(out)


def seal_alarms(count: int) -> list[bytes]:
    sealer = frame.Sealer(KEYS[ALARM_NODE])
    return [sealer.seal(m.Alarm(ALARM_NODE, 1, seq, T0 + seq, 1, 200, 205 + seq % 50, 1000,
                                None)) for seq in range(1, count + 1)]


def make_blobs(per_node: int, extra: int) -> tuple[dict[int, bytes], dict[int, bytes]]:
    """Per node: seqs 1..per_node, and per_node+1..per_node+extra (sealed on both CPUs)."""
    with concurrent.futures.ProcessPoolExecutor(os.cpu_count() or 2) as pool:
        first = {n: pool.submit(seal_floods, n, 1, per_node) for n in FLOOD_NODES}
        rest = {n: pool.submit(seal_floods, n, per_node + 1, extra) for n in FLOOD_NODES}
        return ({n: f.result() for n, f in first.items()},
                {n: f.result() for n, f in rest.items()})


def pack_identities(payload: bytes) -> list[tuple[int, int, int]]:
    """(node, boot, seq) of every record group of a SenML pack of the gateway, in order.

    A fast reader of our own encoding (senml.py: groups open with ``type``, then ``boot`` and
    ``seq``; ``bn`` names the node when it changes); checked against the independent
    `senml.decode_pack` once per run (`check_reader`)."""
    out: list[tuple[int, int, int]] = []
    node = boot = -1
    for rec in cbor2.loads(payload):
        bn = rec.get(senml.BN)
        if bn is not None:
            node = int(bn[len(senml.NAME_PREFIX):-1])
        name = rec.get(senml.N)
        if name == "boot":
            boot = rec[senml.V]
        elif name == "seq":
            out.append((node, boot, rec[senml.V]))
    return out


def check_reader(payload: bytes) -> None:
    """pack_identities agrees with the independent RFC 8428 resolver on `payload`."""
    ids: list[tuple[int, int, int]] = []
    node = boot = -1
    for rec in senml.decode_pack(payload):
        node_s, _, fld = str(rec["n"]).removeprefix(senml.NAME_PREFIX).partition(":")
        if fld == "boot":
            node, boot = int(node_s), int(str(rec["v"]))
        elif fld == "seq":
            ids.append((node, boot, int(str(rec["v"]))))
    if ids != pack_identities(payload):
        raise AssertionError(f"pack reader disagrees with senml.decode_pack: {ids[:3]}...")


# ---- processes and CPUs ---------------------------------------------------------------------

@contextlib.contextmanager
def on_cpu(cpu: int) -> Iterator[None]:
    """Runs the block with this thread on `cpu`: processes started meanwhile inherit it."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def pin_all_threads(pid: int, cpu: int) -> None:
    """Pins every thread of `pid` to `cpu` (belt and braces on top of inheritance), checked."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), {cpu})
            if os.sched_getaffinity(int(tid)) != {cpu}:
                raise RuntimeError(f"thread {tid} of {pid} could not be pinned to CPU {cpu}")


def rss_b(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of `pid` in bytes."""
    vals: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                vals[key] = int(rest.split()[0]) * 1024
    return vals["VmRSS"], vals["VmHWM"]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- the subscriber -------------------------------------------------------------------------

class Arrivals:
    """An aiomqtt subscriber (own thread and loop) stamping each message on arrival.

    Like `brokers.Capture`, plus the arrival time (``time.perf_counter``, the clock the
    writers use) and a running count of record groups, which Capture does not keep."""

    def __init__(self, broker: Broker, topics: Sequence[str]) -> None:
        self.broker = broker
        self.topics = topics
        self.lock = threading.Lock()
        self.got: list[tuple[float, str, bytes]] = []
        self.records = 0
        self.alarms: dict[tuple[int, int, int], float] = {}
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()),
                                        name="bench.arrivals", daemon=True)

    def __enter__(self) -> Arrivals:
        self._thread.start()
        if not self._ready.wait(30):
            raise brokers.BrokerError(f"subscriber: no SUBACK from {self.broker!r}: "
                                      f"{self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def count(self) -> int:
        with self.lock:
            return self.records

    def wait_records(self, n: int, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while self.count() < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: {self.count()} of {n} records arrived within "
                                   f"{timeout_s:.0f} s")
            time.sleep(0.05)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        task = asyncio.create_task(self._run())
        stop = asyncio.create_task(self._stop.wait())
        await asyncio.wait((task, stop), return_when=asyncio.FIRST_COMPLETED)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await task

    async def _run(self) -> None:
        try:
            async with self.broker.client(identifier="bench-arrivals") as client:
                for t in self.topics:
                    await client.subscribe(t, qos=1)
                self._ready.set()
                async for msg in client.messages:
                    now = time.perf_counter()
                    topic = msg.topic.value
                    payload = msg.payload if isinstance(msg.payload, bytes) else b""
                    ids = pack_identities(payload)
                    with self.lock:
                        self.got.append((now, topic, payload))
                        self.records += len(ids)
                        if topic.endswith("/alarm"):
                            for ident in ids:
                                self.alarms.setdefault(ident, now)
        except BaseException as exc:
            self._error = exc
            raise

    def completion_s(self, want: set[tuple[int, int, int]]) -> tuple[float, int, int]:
        """(arrival time of the message completing `want`, records seen, duplicates)."""
        seen: set[tuple[int, int, int]] = set()
        total = 0
        done = math.nan
        with self.lock:
            got = list(self.got)
        for t, _, payload in got:
            for ident in pack_identities(payload):
                if ident in want:
                    total += 1
                    seen.add(ident)
            if math.isnan(done) and len(seen) == len(want):
                done = t
        if len(seen) != len(want):
            raise AssertionError(f"{len(want) - len(seen)} records never arrived")
        return done, total, total - len(seen)


# ---- feeding ptys ---------------------------------------------------------------------------

def write_all(fd: int, data: bytes) -> None:
    """Writes all of data on a non-blocking fd, waiting for room as long as it takes."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [], 1.0)


class Writers:
    """One writer thread per pty; each remembers how far it got and why it stopped.

    `PtyNode.write` behaves like a UART: it drops what the pty cannot take within a second
    and any write that fails (the node retransmits later). A benchmark must lose nothing and
    report failures, so these threads write on the node's (non-blocking) master fd and wait
    for room as long as it takes."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.written: dict[int, int] = {}
        self.errors: dict[int, str] = {}

    def start(self, node: PtyNode, target: Callable[[Callable[[bytes], None]], None]) -> None:
        fd = node._master              # private: see the class documentation
        self.written[node.node] = 0

        def write(data: bytes) -> None:
            write_all(fd, data)
            self.written[node.node] += len(data)

        def run() -> None:
            try:
                target(write)
            except OSError as exc:
                self.errors[node.node] = repr(exc)

        t = threading.Thread(target=run, name=f"bench.writer-{node.node}", daemon=True)
        self.threads.append(t)
        t.start()

    def join(self, timeout_s: float) -> None:
        for t in self.threads:
            t.join(timeout_s)

    def state(self, scrape: Scrape | None) -> str:
        """Per node: bytes written, bytes the gateway read (from its metrics), error."""
        read = {int(dict(labels)["port"].rsplit("-", 1)[1]): v for (n, labels), v in
                (scrape or {}).items() if n == "roadside_gateway_serial_bytes_in_total"}
        return "; ".join(f"node {n}: wrote {w:,} B"
                         f"{f', gateway read {read.get(n, 0):,.0f} B' if scrape else ''}"
                         f"{', ' + self.errors[n] if n in self.errors else ''}"
                         for n, w in sorted(self.written.items()))


def blast(nodes: Sequence[PtyNode], blobs: Sequence[bytes]) -> Writers:
    """One writer thread per pty writing its blob as fast as the pty takes it."""
    writers = Writers()
    for node, blob in zip(nodes, blobs, strict=True):
        writers.start(node, functools.partial(_write_blob, blob))
    return writers


def _write_blob(blob: bytes, write: Callable[[bytes], None]) -> None:
    write(blob)


def paced(nodes: Sequence[PtyNode], blobs: Sequence[bytes], fps_per_node: float,
          stop: threading.Event) -> Writers:
    """One writer thread per pty writing whole frames at fps_per_node (10 ms steps)."""

    def run(blob: bytes, write: Callable[[bytes], None]) -> None:
        start = time.perf_counter()
        pos = sent = 0
        while pos < len(blob) and not stop.is_set():
            due = int((time.perf_counter() - start) * fps_per_node) + 1
            end = pos
            while sent < due and end < len(blob):
                end = blob.index(b"\x00", end) + 1
                sent += 1
            write(blob[pos:end])
            pos = end
            time.sleep(0.01)

    writers = Writers()
    for node, blob in zip(nodes, blobs, strict=True):
        writers.start(node, functools.partial(run, blob))
    return writers


class AlarmSender:
    """Writes one pre-sealed alarm every ALARM_PERIOD_S on the alarm node's pty."""

    def __init__(self, node: PtyNode, wires: list[bytes]) -> None:
        self.node = node
        self.wires = wires
        self.sent: dict[tuple[int, int, int], float] = {}
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench.alarms", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> None:
        self.stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        start = time.perf_counter()
        for i, wire in enumerate(self.wires):
            if self.stop.wait(max(0.0, start + i * ALARM_PERIOD_S - time.perf_counter())):
                return
            t = time.perf_counter()
            write_all(self.node._master, wire)       # private: see Writers
            self.sent[(ALARM_NODE, 1, i + 1)] = t


# ---- profile --------------------------------------------------------------------------------

def py_spy() -> str | None:
    """The py-spy next to this interpreter or on PATH (pip install py-spy), or None."""
    near = Path(sys.executable).parent / "py-spy"
    return str(near) if near.exists() else shutil.which("py-spy")


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling every thread of `pid` at 250 Hz without pausing it, raw stacks."""
    tool = py_spy()
    assert tool is not None
    return subprocess.Popen([tool, "record", "--pid", str(pid), "--format", "raw", "--threads",
                             "--nonblocking", "--rate", "250", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# Pipeline stages by where a sample's stack passes, most specific first. Store calls run on
# the store thread, so their stacks hold Store.* but not the coroutine that asked for them.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("metrics scrapes (the benchmark's polls)", ("gateway/metrics.py", "gateway/telemetry.py")),
    ("acks to the nodes: seal, write (downlink)", ("gateway/downlink.py",)),
    ("publish: decode stored messages again", ("_uplinks (gateway/publisher.py",)),
    ("publish: SenML CBOR encoding (cbor2)", ("_dump (gateway/senml.py",)),
    ("publish: SenML records (senml._add)", ("encode_pack (gateway/senml.py",)),
    ("store: INSERT group commit (add_batch)", ("Store.add_batch",)),
    ("store: DELETE after PUBACK (confirm)", ("Store.confirm",)),
    ("store: take (SELECT)", ("Store._take", "Store.take")),
    ("store: other (bounds, ack state, stats)", ("gateway/store.py",)),
    # First match wins: the deeper fast-path frames before Opener._fast, which calls them.
    ("verify: CBOR decode, field checks", ("protocol/messages.py", "protocol/cbor.py",
                                           "_message (gateway/fastpath.py")),
    ("verify: deframe (COBS, CRC-32)", ("protocol/link.py", "Deframer.feed (gateway/fastpath.py",
                                        "_unframe (gateway/fastpath.py")),
    ("verify: COSE_Mac0 and HMAC-SHA256 tag", ("protocol/mac.py", "Opener.")),
    ("verify: replay window", ("protocol/replay.py",)),
    ("verify: other (Accepted, refusals)", ("gateway/verify.py", "gateway/fastpath.py",
                                            "protocol/")),
    ("serial: pty reads", ("gateway/serial_link.py",)),
    ("ingest: groups, Records, accept", ("gateway/ingest.py",)),
    ("MQTT client (aiomqtt, paho)", ("aiomqtt/", "paho/")),
    ("batcher, publisher glue", ("gateway/batcher.py", "gateway/publisher.py")),
    ("event loop: epoll_wait (partly idle)", ("EpollSelector.select",)),
    ("store calls: thread hand-offs", ("call_soon_threadsafe", "_read_from_self",
                                       "run_in_executor", "concurrent/futures")),
    ("event loop: other", ("asyncio/", "threading.py", "selectors.py", "queue.py")),
)


def stage_shares(raw: Path) -> list[tuple[str, float]]:
    """Share of the profile's samples per stage (py-spy raw: "thread;frame;... count")."""
    counts: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        total += int(n)
        name = next((stage for stage, marks in STAGES if any(k in stack for k in marks)),
                    "other")
        counts[name] = counts.get(name, 0) + int(n)
    return sorted(((k, v / total) for k, v in counts.items()), key=lambda kv: -kv[1])


# ---- results --------------------------------------------------------------------------------

@dataclass
class Latency:
    n: int
    p50_s: float
    p99_s: float
    max_s: float
    gw_p50_s: float = math.nan   # the gateway's histogram (bucket-interpolated)
    gw_p99_s: float = math.nan


@dataclass
class Run:
    name: str
    frames: int
    wall_s: float                # first write -> subscriber has every record
    puback_s: float              # first write -> the forwarder reported every PUBACK
    cpu_s: float                 # CPU seconds of the gateway/forwarder process in the run
    broker_cpu_s: float
    duplicates: int = 0
    bad: int = 0
    alarms: Latency | None = None
    notes: list[str] = field(default_factory=list)
    profile: Path | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.frames * 1e6


def quantile(xs: Sequence[float], q: float) -> float:
    """Nearest-rank quantile."""
    s = sorted(xs)
    return s[max(0, min(len(s) - 1, math.ceil(q * len(s)) - 1))]


def metric_sum(scrape: Scrape, name: str) -> float:
    return sum(v for (n, _), v in scrape.items() if n == "roadside_gateway_" + name)


def histogram_quantile(scrape: Scrape, name: str, q: float) -> float:
    """Prometheus' histogram_quantile over the buckets of `name` (linear within a bucket)."""
    buckets = sorted((float(dict(labels)["le"]), v) for (n, labels), v in scrape.items()
                     if n == f"roadside_gateway_{name}_bucket")
    if not buckets or buckets[-1][1] == 0:
        return math.nan
    rank = q * buckets[-1][1]
    lo_le, lo_n = 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if math.isinf(le):
                return lo_le
            return lo_le + (le - lo_le) * (rank - lo_n) / max(n - lo_n, 1e-9)
        lo_le, lo_n = le, n
    return math.nan


# ---- one gateway run ------------------------------------------------------------------------

class Bench:
    """Shared state of one `make bench`: the folder, the frames, the results."""

    def __init__(self, folder: Path, per_node: int, backlog_per_node: int) -> None:
        self.folder = folder
        self.per_node = per_node
        self.backlog_per_node = backlog_per_node
        extra = max(0, backlog_per_node - per_node)
        print(f"sealing {len(FLOOD_NODES) * (per_node + extra):,} flood frames with the node "
              "keys (protocol/, both CPUs)...", flush=True)
        t = time.perf_counter()
        self.blobs, more = make_blobs(per_node, extra)
        self.backlog_blobs = {n: (self.blobs[n] + more[n] if backlog_per_node >= per_node
                                  else _prefix(self.blobs[n], backlog_per_node))
                              for n in FLOOD_NODES}
        self.alarm_wires = seal_alarms(20_000)
        self.frame_b = len(self.blobs[FLOOD_NODES[0]]) / per_node
        print(f"  done in {time.perf_counter() - t:.1f} s; a flood frame is "
              f"{self.frame_b:.1f} bytes on the wire on average", flush=True)
        self._n = 0

    def sub(self, name: str) -> Path:
        self._n += 1
        path = self.folder / f"{self._n}-{name}"
        path.mkdir()
        return path

    def nodes(self, folder: Path) -> list[PtyNode]:
        return [PtyNode(folder, n, KEYS[n]) for n in FLOOD_NODES]

    def gateway(self, folder: Path, broker: Broker, nodes: Sequence[PtyNode],
                settings: dict[str, dict[str, object]]) -> GatewayProcess:
        extra: dict[str, dict[str, object]] = {
            "gateway": {"id": GW_ID, "site": SITE, "log_level": "info"}}
        for k, v in settings.items():
            extra[k] = dict(v)
        return GatewayProcess(folder / "gw", broker_host=broker.host, broker_port=broker.port,
                              ports=[str(n.path) for n in nodes], keys=KEYS, extra=extra)

    @staticmethod
    def start(gw: GatewayProcess, nodes: Sequence[PtyNode]) -> int:
        """Starts the gateway pinned to GW_CPU; returns once every port is open."""
        with on_cpu(GW_CPU):
            gw.start()
        assert gw.proc is not None
        pid = gw.proc.pid
        pin_all_threads(pid, GW_CPU)
        deadline = time.monotonic() + 30
        while True:
            scrape = gw.scrape()
            if metric_sum(scrape, "serial_port_open") >= len(nodes):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"gateway ports not open; log:\n{gw.log_tail()}")
            time.sleep(0.05)
        pin_all_threads(pid, GW_CPU)     # threads started since (executor) too
        return pid

    # -- 1: the writer alone -----------------------------------------------------------------

    def writer_alone(self) -> float:
        """Frames/s the writers put through ptys whose other side only reads."""
        blobs = [self.blobs[n] for n in FLOOD_NODES]
        pairs = []
        for _ in blobs:
            master, slave = os.openpty()
            tty.setraw(master)
            tty.setraw(slave)
            pairs.append((master, slave))

        def drain(fd: int, n: int) -> None:
            while n > 0:
                n -= len(os.read(fd, 65536))

        readers = [threading.Thread(target=drain, args=(s, len(b)), daemon=True)
                   for (_, s), b in zip(pairs, blobs, strict=True)]
        for r in readers:
            r.start()

        def write(fd: int, blob: bytes) -> None:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view):]

        t = time.perf_counter()
        writers = [threading.Thread(target=write, args=(mfd, b), daemon=True)
                   for (mfd, _), b in zip(pairs, blobs, strict=True)]
        for w in writers:
            w.start()
        for th in (*writers, *readers):
            th.join(GUARD_S)
        wall = time.perf_counter() - t
        for mfd, sfd in pairs:
            os.close(mfd)
            os.close(sfd)
        return self.per_node * len(blobs) / wall

    # -- 2/4: throughput with alarms ---------------------------------------------------------

    def throughput(self, name: str, settings: dict[str, dict[str, object]],
                   per_node: int | None = None, fps_per_node: float | None = None,
                   profile: Path | None = None) -> Run:
        """Floods blasted (or paced at fps_per_node) through the gateway, alarms alongside."""
        folder = self.sub(re.sub(r"[^a-z0-9]+", "-", name.lower().removeprefix("gateway, ")))
        per = self.per_node if per_node is None else per_node
        n_frames = per * len(FLOOD_NODES)
        want = {(n, 1, s) for n in FLOOD_NODES for s in range(1, per + 1)}
        broker = brokers.mosquitto(folder)
        nodes = self.nodes(folder)
        alarm_node = PtyNode(folder, ALARM_NODE, KEYS[ALARM_NODE])
        gw = self.gateway(folder, broker, [*nodes, alarm_node], settings)
        stop = threading.Event()
        spy: subprocess.Popen[bytes] | None = None
        try:
            with Arrivals(broker, [PREFIX + "/data", PREFIX + "/alarm"]) as arr:
                pid = self.start(gw, [*nodes, alarm_node])
                if profile is not None:
                    spy = start_profiler(pid, profile)
                cpu0, bcpu0 = cpu_s(pid), cpu_s(broker_pid(broker))
                sender = AlarmSender(alarm_node, self.alarm_wires)
                published_at = math.nan
                t0 = time.perf_counter()
                sender.start()
                blobs = [self.blobs[n] if per == self.per_node else _prefix(self.blobs[n], per)
                         for n in FLOOD_NODES]
                writers = (blast(nodes, blobs) if fps_per_node is None
                           else paced(nodes, blobs, fps_per_node, stop))
                progress = (-1.0, time.monotonic())
                while True:
                    time.sleep(POLL_S)
                    scrape = gw.scrape()
                    floods = (metric_sum(scrape, "records_published_total")
                              - metric_sum(scrape, "alarm_latency_seconds_count"))
                    if math.isnan(published_at) and floods >= n_frames:
                        published_at = time.perf_counter()
                    if not math.isnan(published_at) and arr.count() >= n_frames + len(
                            sender.sent):
                        break
                    stored = metric_sum(scrape, "records_stored_total")
                    moved = floods + sum(v for (n, labels), v in scrape.items()
                                         if n == "roadside_gateway_serial_bytes_in_total"
                                         and not dict(labels)["port"].endswith(f"-{ALARM_NODE}"))
                    if moved != progress[0]:
                        progress = (moved, time.monotonic())
                    if (time.monotonic() - progress[1] > STALL_S
                            or (gw.proc and gw.proc.poll() is not None)):
                        raise RuntimeError(
                            f"{name}: stalled at {floods:.0f} of {n_frames} flood frames "
                            f"published, {stored:.0f} records stored; "
                            f"{writers.state(scrape)}; log:\n{gw.log_tail()}")
                sender.finish()
                stop.set()
                writers.join(5)
                cpu = cpu_s(pid) - cpu0
                bcpu = cpu_s(broker_pid(broker)) - bcpu0
                arr.wait_records(n_frames + len(sender.sent), 60, name)
                done, _, dups = arr.completion_s(want)
                scrape = gw.scrape()
                with arr.lock:
                    got = dict(arr.alarms)
                    if arr.got:
                        check_reader(arr.got[0][2])
                lat = [got[k] - t for k, t in sender.sent.items()]
                if len(lat) != len(sender.sent):
                    raise AssertionError(f"{name}: {len(sender.sent) - len(lat)} alarms lost")
                run = Run(name, n_frames, done - t0, published_at - t0, cpu, bcpu,
                          duplicates=dups, bad=int(metric_sum(scrape, "frames_bad_total")))
                run.alarms = Latency(len(lat), quantile(lat, 0.5), quantile(lat, 0.99), max(lat),
                                     histogram_quantile(scrape, "alarm_latency_seconds", 0.5),
                                     histogram_quantile(scrape, "alarm_latency_seconds", 0.99))
                run.notes.append(
                    f"{metric_sum(scrape, 'batches_published_total'):.0f} publishes")
                if gw.stop() != 0:
                    raise RuntimeError(f"{name}: unclean stop; log:\n{gw.log_tail()}")
                if spy is not None:
                    spy.wait(60)                 # py-spy writes its file when the target exits
                    run.profile = profile
                return run
        finally:
            stop.set()
            if spy is not None and spy.poll() is None:
                spy.kill()
                spy.wait()
            gw.close()
            for n in (*nodes, alarm_node):
                n.close()
            broker.stop()

    # -- 3: the naive forwarder --------------------------------------------------------------

    def naive(self) -> Run:
        folder = self.sub("naive")
        per = self.per_node
        n_frames = per * len(FLOOD_NODES)
        want = {(n, 1, s) for n in FLOOD_NODES for s in range(1, per + 1)}
        broker = brokers.mosquitto(folder)
        nodes = self.nodes(folder)
        keys = folder / "node-keys"
        keys.write_text("".join(f"{n} {k.hex()}\n" for n, k in KEYS.items()))
        topic = PREFIX + "/data"
        argv = [sys.executable, "-m", "gateway.tests.bench_gateway", "naive",
                "--host", broker.host, "--port", str(broker.port), "--topic", topic,
                "--keys", str(keys), "--expect", str(n_frames), *[str(n.path) for n in nodes]]
        blobs = [self.blobs[n] for n in FLOOD_NODES]
        proc: subprocess.Popen[str] | None = None
        try:
            with Arrivals(broker, [topic]) as arr:
                with on_cpu(GW_CPU):
                    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True,
                                            env={**os.environ, "PYTHONPATH": str(_ROOT)})
                assert proc.stdout is not None
                proc_out = proc.stdout
                if proc_out.readline().strip() != "READY":
                    raise RuntimeError("naive forwarder did not start")
                pin_all_threads(proc.pid, GW_CPU)
                cpu0, bcpu0 = cpu_s(proc.pid), cpu_s(broker_pid(broker))
                t0_wall = time.time()
                t0 = time.perf_counter()
                writers = blast(nodes, blobs)
                lines: queue.Queue[str] = queue.Queue()
                threading.Thread(target=lambda: lines.put(proc_out.readline()),
                                 daemon=True).start()
                progress = (-1, time.monotonic())
                while True:                             # DONE <count> <wall time> <refused>
                    with contextlib.suppress(queue.Empty):
                        line = lines.get(timeout=POLL_S).split()
                        break
                    if arr.count() != progress[0]:
                        progress = (arr.count(), time.monotonic())
                    if time.monotonic() - progress[1] > STALL_S:
                        raise RuntimeError(f"naive forwarder: stalled at {arr.count():,} of "
                                           f"{n_frames:,} records; {writers.state(None)}")
                cpu = cpu_s(proc.pid) - cpu0
                bcpu = cpu_s(broker_pid(broker)) - bcpu0
                if not line or line[0] != "DONE":
                    raise RuntimeError(f"naive forwarder: {line}")
                arr.wait_records(n_frames, 60, "naive")
                writers.join(5)
                done, _, dups = arr.completion_s(want)
                return Run("naive forwarder", n_frames, done - t0, float(line[2]) - t0_wall,
                           cpu, bcpu, duplicates=dups, bad=int(line[3]))
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            for n in nodes:
                n.close()
            broker.stop()

    # -- 5: backlog --------------------------------------------------------------------------

    def backlog(self, settings: dict[str, dict[str, object]]) -> Backlog:
        folder = self.sub("backlog")
        total = self.backlog_per_node * len(FLOOD_NODES)
        broker = brokers.mosquitto(folder, start=False)      # the port, nobody listening
        nodes = self.nodes(folder)
        gw = self.gateway(folder, broker, nodes, settings)
        res = Backlog(total)
        try:
            pid = self.start(gw, nodes)
            marks = [total * k // 4 for k in range(5)]
            res.samples.append((0, *rss_b(pid)))
            t0 = time.perf_counter()
            writers = blast(nodes, [self.backlog_blobs[n] for n in FLOOD_NODES])
            next_mark = 1
            progress = (-1, time.monotonic())
            while next_mark < len(marks):
                time.sleep(POLL_S / 2)
                scrape = gw.scrape()
                stored = int(metric_sum(scrape, "records_stored_total"))
                while next_mark < len(marks) and stored >= marks[next_mark]:
                    res.samples.append((stored, *rss_b(pid)))
                    next_mark += 1
                if stored != progress[0]:
                    progress = (stored, time.monotonic())
                if time.monotonic() - progress[1] > STALL_S:
                    raise RuntimeError(f"backlog: stalled at {stored:,} of {total:,} stored; "
                                       f"{writers.state(scrape)}; log:\n{gw.log_tail()}")
            res.store_s = time.perf_counter() - t0
            writers.join(10)
            scrape = gw.scrape()
            res.bad = int(metric_sum(scrape, "frames_bad_total"))
            res.file_b = sum(p.stat().st_size for p in (folder / "gw").glob("queue.sqlite3*"))
            with on_cpu(REST_CPU):
                broker.start()
            t1 = time.perf_counter()
            connected = math.nan
            while True:
                time.sleep(POLL_S)
                scrape = gw.scrape()
                now = time.perf_counter()
                if math.isnan(connected) and metric_sum(scrape, "mqtt_connected") >= 1:
                    connected = now
                published = metric_sum(scrape, "records_published_total")
                res.drain_rss.append(rss_b(pid)[0])
                if published >= total and metric_sum(scrape, "queue_records") == 0:
                    break
                if published != progress[0]:
                    progress = (int(published), time.monotonic())
                if time.monotonic() - progress[1] > STALL_S:
                    raise RuntimeError(f"backlog drain: stalled at {published:,.0f} of "
                                       f"{total:,} published; log:\n{gw.log_tail()}")
            res.drain_s = now - connected
            res.drain_from_start_s = now - t1
            res.hwm_b = rss_b(pid)[1]
            if gw.stop() != 0:
                raise RuntimeError(f"backlog: unclean stop; log:\n{gw.log_tail()}")
            return res
        finally:
            gw.close()
            for n in nodes:
                n.close()
            broker.stop()


@dataclass
class Backlog:
    total: int
    samples: list[tuple[int, int, int]] = field(default_factory=list)  # stored, RSS, HWM
    drain_rss: list[int] = field(default_factory=list)
    store_s: float = math.nan
    drain_s: float = math.nan
    drain_from_start_s: float = math.nan
    hwm_b: int = 0
    file_b: int = 0
    bad: int = 0


_ROOT = Path(__file__).resolve().parents[2]


def broker_pid(broker: Broker) -> int:
    pid = broker.pid
    assert pid is not None
    return pid


def _prefix(blob: bytes, frames: int) -> bytes:
    """The first `frames` frames of a concatenation of frames."""
    end = 0
    for _ in range(frames):
        end = blob.index(b"\x00", end) + 1
    return blob[:end]


# ---- output ---------------------------------------------------------------------------------

def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def ms(s: float) -> str:
    return f"{s * 1000:.1f} ms"


def mib(b: float) -> str:
    return f"{b / 1024 / 1024:.1f} MiB"


def table(title: str, head: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in (head, *rows)) for i in range(len(head))]
    print(f"\n{title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |")


def settings_text(s: dict[str, dict[str, object]]) -> str:
    st, b = s["store"], s["batch"]
    return (f"commit_interval_ms={st['commit_interval_ms']}, batch max_count={b['max_count']} "
            f"max_bytes={b['max_bytes']} max_age_ms={b['max_age_ms']}")


def report_throughput(writer_fps: float, runs: Sequence[Run], naive: Run | None) -> None:
    rows = [["writer alone (pty, no gateway)", f"{writer_fps:,.0f}", "-", "-", "-", "-",
             f">> gateway: {writer_fps / max(r.fps for r in runs):.0f}x the best run"]]
    for r in runs:
        rows.append([r.name, f"{r.fps:,.0f}", f"{r.frames / r.puback_s:,.0f}",
                     f"{r.cpu_s / r.wall_s:.0%}", f"{r.cpu_us:.0f}",
                     f"{r.frames / r.cpu_s:,.0f}",
                     f">= {TARGET_FPS:,}: {verdict(r.fps >= TARGET_FPS)}"])
    if naive is not None:
        rows.append([naive.name, f"{naive.fps:,.0f}", f"{naive.frames / naive.puback_s:,.0f}",
                     f"{naive.cpu_s / naive.wall_s:.0%}", f"{naive.cpu_us:.0f}",
                     f"{naive.frames / naive.cpu_s:,.0f}", "-"])
    table("End-to-end throughput (pty in -> PUBACK -> subscriber), gateway on 1 core",
          ["run", "frames/s (to subscriber)", "frames/s (PUBACK, polled)", "core busy",
           "CPU us/frame", "frames per CPU-s", "target"], rows)
    for r in (*runs, *([naive] if naive else [])):
        extra = "; ".join(r.notes)
        print(f"  {r.name}: {r.frames:,} frames in {r.wall_s:.2f} s, refused {r.bad}, "
              f"duplicates at the subscriber {r.duplicates}, broker CPU "
              f"{r.broker_cpu_s / r.wall_s:.0%} of a core{'; ' + extra if extra else ''}")
    if naive is not None:
        print()
        for r in runs:
            ratio = r.fps / naive.fps
            print(f"ratio {r.name} / naive forwarder: {ratio:.1f}x "
                  f"(target >= {TARGET_RATIO:.0f}x: {verdict(ratio >= TARGET_RATIO)}); "
                  f"per CPU second {r.frames / r.cpu_s / (naive.frames / naive.cpu_s):.1f}x")


def report_profile(run: Run) -> None:
    assert run.profile is not None
    if not run.profile.exists():
        print(f"\nprofile: py-spy wrote no {run.profile}")
        return
    per = run.cpu_us
    rows = [[stage, f"{share:.1%}", f"{share * per:.1f}"]
            for stage, share in stage_shares(run.profile)]
    table(f"Where the gateway's CPU goes ({run.name}: {run.fps:,.0f} frames/s, {per:.0f} us of "
          f"CPU per frame; py-spy at 250 Hz, both threads; raw stacks in {run.profile})",
          ["stage", "share of samples", "us/frame"], rows)
    print("  a run of its own, so the profiler does not perturb the measured runs above")


def report_alarms(runs: Sequence[Run]) -> None:
    rows = []
    for r in runs:
        a = r.alarms
        if a is None:
            continue
        rows.append([r.name, str(a.n), ms(a.p50_s), ms(a.p99_s), ms(a.max_s),
                     f"{ms(a.gw_p50_s)} / {ms(a.gw_p99_s)}",
                     f"p99 < {ms(TARGET_ALARM_P99_S)}: {verdict(a.p99_s < TARGET_ALARM_P99_S)}"])
    table("Alarm latency under load (alarm written on its pty -> alarm message at the "
          "subscriber, one every 100 ms)",
          ["load", "alarms", "p50", "p99", "max", "gateway histogram p50 / p99", "target"],
          rows)
    if any(r.alarms and r.alarms.n < 100 for r in runs):
        print("  fewer than 100 alarms in a run: its load lasted under 10 s (raise --frames)")


def report_backlog(b: Backlog, quick: bool) -> None:
    rows = []
    for stored, rss, _ in b.samples:
        rows.append([f"{stored:,}", mib(rss)])
    table(f"Gateway RSS with a backlog (broker down while {b.total:,} frames are stored)",
          ["records stored", "VmRSS"], rows)
    sampled = [s[1] for s in b.samples]
    growth = sampled[-1] - sampled[1]
    peak = max(*sampled, *b.drain_rss, b.hwm_b)
    rows = [
        ["store rate (broker down)", f"{b.total / b.store_s:,.0f} frames/s "
         f"({b.store_s:.1f} s)", "-", "-"],
        ["drain rate (broker back)", f"{b.total / b.drain_s:,.0f} records/s ({b.drain_s:.1f} s "
         f"from reconnect, {b.drain_from_start_s:.1f} s from broker start)", "-", "-"],
        ["RSS peak (VmHWM, whole run)", mib(peak), f"< {TARGET_RSS_B / 1e6:.0f} MB",
         verdict(peak < TARGET_RSS_B)],
        ["RSS growth 1/4 -> all stored", mib(growth), f"< {mib(FLAT_RSS_B)} (flat)",
         verdict(growth < FLAT_RSS_B)],
        ["RSS during drain (min..max)", f"{mib(min(b.drain_rss))}..{mib(max(b.drain_rss))}",
         f"< {TARGET_RSS_B / 1e6:.0f} MB", verdict(max(b.drain_rss) < TARGET_RSS_B)],
        ["store files at the end of storing", mib(b.file_b), "-", "-"],
    ]
    table("Backlog: rates and memory", ["what", "result", "target", "verdict"], rows)
    if quick and b.total < 1_000_000:
        print(f"  --quick: {b.total:,} frames, not the 1,000,000 of issue 4")
    print(f"  refused frames {b.bad}")


# ---- main -----------------------------------------------------------------------------------

def bench_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m gateway.tests.bench_gateway",
        description="End-to-end benchmark of roadside-gateway (issue 4): throughput against a "
                    "naive aiomqtt forwarder, alarm latency under load, RSS with a backlog. "
                    "Needs mosquitto (apt-get install mosquitto) and 2 CPUs.")
    p.add_argument("--quick", action="store_true",
                   help="smaller runs (100k frames, 100k-frame backlog): about 2 minutes")
    p.add_argument("--frames", type=int, default=None, metavar="N",
                   help="flood frames per throughput run, also the naive forwarder's "
                        "(default 200000, --quick 100000)")
    p.add_argument("--backlog", type=int, default=None, metavar="N",
                   help="frames of the backlog run (default 1000000, --quick 100000)")
    p.add_argument("--skip", action="append", default=[], choices=SKIPPABLE,
                   help="leave a measurement out (repeatable)")
    p.add_argument("--profile", type=Path, default=None, metavar="FILE",
                   help="sample the gateway with py-spy during the defaults run, write the raw "
                        "stacks to FILE and print the CPU per pipeline stage "
                        "(.venv/bin/pip install py-spy)")
    args = p.parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        print("error: the benchmark pins the gateway to CPU 0 and the rest to CPU 1; this "
              "machine has one CPU", file=sys.stderr)
        return 1
    if args.profile is not None and py_spy() is None:
        print("error: --profile needs py-spy: .venv/bin/pip install py-spy", file=sys.stderr)
        return 1
    per_node = (args.frames or (100_000 if args.quick else 200_000)) // len(FLOOD_NODES)
    backlog_per = (args.backlog or (100_000 if args.quick else 1_000_000)) // len(FLOOD_NODES)
    if per_node < 1000 or backlog_per < 4:
        print("error: use --frames of at least 4000 and --backlog of at least 16",
              file=sys.stderr)
        return 1
    skip = set(args.skip)
    # SIGTERM (a timeout) unwinds like Ctrl-C: the finally blocks stop every gateway,
    # forwarder and broker started so far; none is left behind.
    signal.signal(signal.SIGTERM, _interrupted)
    started = time.perf_counter()
    print(f"roadside-gateway benchmark, {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
          f", {platform.node()}, {os.cpu_count()} CPUs ({_cpu_model()}), Python "
          f"{platform.python_version()}, load average {_load()} at the start")
    print(f"gateway (and naive forwarder) pinned to CPU {GW_CPU}; broker, writers and "
          f"subscriber to CPU {REST_CPU}")
    print("writers blast frames in seq order, ignoring the 64-frame sender window of SPEC "
          "9.3: nothing is lost or reordered, so the gateway's window only moves forward and "
          "refuses nothing (refused frames are counted below)")
    writer = math.nan
    runs: list[Run] = []
    paced_runs: list[Run] = []
    naive: Run | None = None
    profiled: Run | None = None
    backlog: Backlog | None = None
    with tempfile.TemporaryDirectory(prefix="roadside-bench-") as tmp:
        try:
            bench = Bench(Path(tmp), per_node, 0 if "backlog" in skip else backlog_per)
            os.sched_setaffinity(0, {REST_CPU})
            if "writer" not in skip:
                writer = bench.writer_alone()
            for label, settings in (("defaults", DEFAULTS), ("tuned", TUNED)):
                if label in skip:
                    continue
                print(f"gateway, {label} ({settings_text(settings)}), blasting "
                      f"{per_node * len(FLOOD_NODES):,} frames...", flush=True)
                runs.append(bench.throughput(f"gateway, {label}", settings))
            if args.profile is not None:
                print("gateway, defaults, profiled with py-spy...", flush=True)
                profiled = bench.throughput("gateway, defaults, profiled", DEFAULTS,
                                            profile=args.profile.resolve())
            if "naive" not in skip:
                print("naive forwarder, the same frames...", flush=True)
                naive = bench.naive()
            if "paced" not in skip:
                fps = line_rate_fps(bench.frame_b)
                per = min(per_node, int(fps * PACED_S))
                for label, settings in (("defaults", DEFAULTS), ("tuned", TUNED)):
                    if label in skip:
                        continue
                    print(f"gateway, {label}, paced at {fps * len(FLOOD_NODES):,.0f} frames/s "
                          f"for {per / fps:.0f} s...", flush=True)
                    paced_runs.append(bench.throughput(
                        f"gateway, {label}, 4 links at {LINE_BAUD} baud "
                        f"({fps * len(FLOOD_NODES):,.0f} frames/s)", settings, per, fps))
            if "backlog" not in skip:
                print(f"backlog of {backlog_per * len(FLOOD_NODES):,} frames, defaults...",
                      flush=True)
                backlog = bench.backlog(DEFAULTS)
        except brokers.BrokerNotInstalledError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if runs or naive:
        report_throughput(writer, runs, naive)
    if profiled is not None:
        report_profile(profiled)
    if runs or paced_runs:
        report_alarms([*runs, *paced_runs])
    if backlog is not None:
        report_backlog(backlog, args.quick)
    print(f"\nbenchmark took {time.perf_counter() - started:.0f} s; load average {_load()} at "
          "the end (other work on this machine skews the numbers)")
    return 0


def line_rate_fps(frame_b: float) -> float:
    """Frames/s one serial link carries at LINE_BAUD (8N1: 10 bits a byte)."""
    return LINE_BAUD / 10 / frame_b


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


# ---- the naive forwarder (a sub-command, run as its own process) ----------------------------

def naive_main(argv: Sequence[str]) -> int:
    """Reads ptys, verifies each frame with protocol/ and publishes it alone, QoS 1."""
    p = argparse.ArgumentParser(prog="python -m gateway.tests.bench_gateway naive")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--keys", type=Path, required=True)
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("ports", nargs="+")
    args = p.parse_args(argv)
    ring = frame.KeyRing({int(n): bytes.fromhex(k) for n, k in
                          (line.split() for line in args.keys.read_text().splitlines())})
    return asyncio.run(_naive(args.host, args.port, args.topic, ring, args.expect,
                              ports=args.ports))


async def _naive(host: str, port: int, topic: str, ring: frame.KeyRing, expect: int, *,
                 ports: Sequence[str]) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    guard = ReplayGuard()
    counts = {"published": 0, "bad": 0}
    fds = []
    for path in ports:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(fd)
        fds.append(fd)

    async def forward(fd: int, client: aiomqtt.Client) -> None:
        deframer = link.Deframer()
        readable = asyncio.Event()
        loop.add_reader(fd, readable.set)
        while True:
            await readable.wait()
            readable.clear()
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                continue
            for item in deframer.feed(data):
                try:
                    if isinstance(item, ProtocolError):
                        raise item
                    msg = frame.open_payload(item, ring)
                    guard.check(msg.node, msg.boot, msg.seq)
                    guard.accept(msg.node, msg.boot, msg.seq)
                except ProtocolError:
                    counts["bad"] += 1
                    continue
                pack = senml.encode_pack([senml.Uplink(time.time_ns() // 1_000_000, msg)])
                await client.publish(topic, pack, qos=1)
                counts["published"] += 1
                if counts["published"] == expect:
                    print(f"DONE {expect} {time.time()} {counts['bad']}", flush=True)

    async with aiomqtt.Client(host, port, identifier="bench-naive") as client:
        print("READY", flush=True)
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(forward(fd, client)) for fd in fds]
            await stop.wait()
            for t in tasks:
                t.cancel()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["naive"]:
        return naive_main(args[1:])
    return bench_main(args)


if __name__ == "__main__":
    sys.exit(main())
