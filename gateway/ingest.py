"""Ingest stage: verified frames into the durable store in group commits, then acks.

Bytes from every serial link arrive through `on_data(port, data)`; the `Verifier` turns them
into authenticated, replay-checked frames, which join the open *commit group*. `run()` (a
long-running task, `TASK_NAME`) commits the group ``store.commit_interval_ms`` after its first
frame arrived (at once when 0) or as soon as it holds ``max_group`` frames, in one store
transaction (`Store.add_batch`: one fsync for the whole group). Alarms and hellos never join
that group: they go to an *alarm group* that a second loop (``TASK_NAME + ".alarms"``)
commits at once, concurrently with a routine group, through the store worker's urgent lane
(``call_urgent``), so an alarm waits neither for a group of routine frames to fill or commit
nor for room. The commit, the ack states of the nodes it touched and, for an alarm group,
the take of its alarms are one call of the store worker. Only after COMMIT:

1. an alarm group's alarms go straight to the batcher (``alarms``: `AlarmSink`, while it has
   room to publish them at once), so they wait for no take of their own; an alarm the sink
   already published before its commit (`AlarmSink.publish_early`, called as soon as the
   alarm is verified: a commit can wait hundreds of ms for the disk) is settled instead: its
   stored copy is deleted once that publish was acknowledged, or handed over to be
   published again if it failed;
2. each frame is recorded in the verifier's replay window (`Verifier.accept`: recording it
   earlier would refuse a retransmission of a frame whose commit failed);
3. one ack per (port, node, boot) the group touched goes back to the node (duplicates
   included: SPEC 9.2, the node lost our previous ack), and so do acks for authenticated
   replays the verifier saw (`Verifier.take_reacks`);
4. the batcher is woken (``notify(alarm=...)`` when an alarm or hello was among them that
   it was not handed);
5. the store's bounds are enforced (`Store.enforce_bounds`; gap reports wake the gap loop);
6. the downlink hears of each new frame (route, time on hello, config pushes) and
   ``on_record`` of each new one (the node status).

When the commit fails (`StoreError`, `StoreFullError` on a full disk) the group is dropped
without any ack: the nodes keep the frames and send them again, nothing is lost. The failure
is counted and logged (rate-limited); frames keep being verified and the next group tries
again, so the service recovers by itself once space is freed.

Alarms first, for the CPU too: from the moment an alarm is read until its batch is PUBACKed
(at most ``alarm_priority_s``, default `ALARM_PRIORITY_S`), `on_data` of every port waits
before verifying more, so at saturation the alarm's commit, hand-off and publish do not queue
behind the verification of routine frames on the event loop; bytes wait in the kernel.

Back-pressure: while a group of ``max_group`` frames waits for its commit, `on_data` waits
too, so the serial links stop reading and the kernel buffers; memory stays bounded.

All store calls go through ``call`` (the single store worker thread of the wiring).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.downlink import Downlink
from gateway.store import ALARM, ROUTINE, DropReport, Record, Store, StoreError, StoreFullError
from gateway.verify import Accepted, Verifier
from protocol import messages as m

log = logging.getLogger(__name__)

TASK_NAME = "gateway.ingest"
MAX_GROUP = 500             # frames per routine commit: bounds what an alarm waits behind
ALARM_PRIORITY_S = 0.05     # routine input waits at most this long for an alarm's publish
LOG_INTERVAL_S = 10.0

Call = Callable[..., Awaitable[Any]]
OnRecord = Callable[[Accepted, int], None]


class AlarmSink(Protocol):
    """Where committed alarms go without a take of their own (batcher.Batcher)."""

    def alarm_room(self) -> tuple[int, int]: ...
    def hand_alarms(self, recs: list[Record]) -> asyncio.Future[None]: ...
    def publish_early(self, rec: Record) -> asyncio.Future[bool] | None: ...


def priority_of(kind: int) -> int:
    """Alarms and hellos are kept longer and published first (store.ALARM)."""
    return ALARM if kind in (m.ALARM, m.HELLO) else ROUTINE


@dataclass
class IngestStats:
    committed: int = 0           # new records committed
    duplicates: int = 0          # frames the store already held (acked again)
    commits: int = 0             # group commits
    commit_failures: int = 0     # groups not stored (no ack sent)
    full_failures: int = 0       # of which the disk or the store was full


class Ingest:
    """Commit groups from the serial links to the store (see the module documentation)."""

    def __init__(self, store: Store, call: Call, verifier: Verifier, downlink: Downlink,
                 notify: Callable[[bool], None], *, commit_interval_ms: int,
                 max_group: int = MAX_GROUP, call_urgent: Call | None = None,
                 on_record: OnRecord | None = None,
                 on_drops: Callable[[DropReport], None] | None = None,
                 alarms: AlarmSink | None = None, alarm_priority_s: float = ALARM_PRIORITY_S,
                 utc_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self.store = store
        self.stats = IngestStats()
        self._call = call
        self._call_urgent = call if call_urgent is None else call_urgent
        self._verifier = verifier
        self._downlink = downlink
        self._notify = notify
        self._interval_s = commit_interval_ms / 1000
        self._max_group = max_group
        self._on_record = on_record
        self._on_drops = on_drops
        self._sink = alarms
        self._priority_s = alarm_priority_s
        self._utc_ms = utc_ms
        self._group: list[tuple[Accepted, int]] = []
        self._alarms: list[tuple[Accepted, int]] = []     # alarms and hellos, not yet committed
        self._have = asyncio.Event()       # the group is not empty
        self._room = asyncio.Event()       # the group is below max_group
        self._room.set()
        self._full = asyncio.Event()       # the group reached max_group
        self._urgent = asyncio.Event()     # an alarm or hello waits
        self._no_alarm = asyncio.Event()   # no alarm between its reading and its publish
        self._no_alarm.set()
        self._published: asyncio.Future[Any] | None = None    # of the alarms handed last
        # alarms published before their commit, by (node, boot, seq): True once PUBACKed
        self._early: dict[tuple[int, int, int], asyncio.Future[bool]] = {}
        self._settling: set[asyncio.Task[None]] = set()
        # when each hello not yet heard by the downlink arrived (its clock), by (node, boot,
        # seq): a hello read before a config push does not confirm that push
        self._hello_at: dict[tuple[int, int, int], float] = {}
        self._last_log = -LOG_INTERVAL_S

    # -- input -------------------------------------------------------------------------------

    async def on_data(self, port: str, data: bytes) -> None:
        """Bytes read from a serial port (SerialLink's on_data)."""
        if not self._no_alarm.is_set():
            # An alarm is on its way to the broker: it gets the CPU first (bounded wait).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._priority_s):
                    await self._no_alarm.wait()
        items = self._verifier.feed(port, data)
        now = self._utc_ms()
        for item in items:
            if item.kind == m.HELLO:
                self._hello_at[item.node, item.boot, item.seq] = self._downlink.now()
            if priority_of(item.kind) == ALARM:
                # An alarm never waits for room and is committed at once, in its own group
                # (alarms skip the queue at every stage); it is published even before that.
                self._alarms.append((item, now))
                self._urgent.set()
                self._no_alarm.clear()
                if self._sink is not None:
                    early = self._sink.publish_early(Record(
                        item.node, item.boot, item.seq, item.kind, ALARM, now, item.body))
                    if early is not None:
                        self._early[item.node, item.boot, item.seq] = early
                        self._published = early
                continue
            while len(self._group) >= self._max_group:
                self._room.clear()
                await self._room.wait()
            self._group.append((item, now))
            self._have.set()
            if len(self._group) >= self._max_group:
                self._full.set()
        # Let the other ports in before this one sends more: one busy port must not fill
        # group after group while an alarm waits on another.
        await asyncio.sleep(0)
        if not items and self._verifier.reacks_pending:
            self._have.set()

    def on_open(self, port: str) -> None:
        """A serial port was (re)opened: forget its partial frame."""
        self._verifier.reset_port(port)

    # -- the commit loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Commits groups until cancelled; a cancel commits nothing more (no ack is owed)."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._alarm_loop(), name=TASK_NAME + ".alarms")
                tg.create_task(self._group_loop(), name=TASK_NAME + ".groups")
        finally:
            # Stored copies still being settled stay in the store: published again after a
            # restart (a duplicate at worst).
            for t in self._settling:
                t.cancel()

    async def _group_loop(self) -> None:
        while True:
            await self._have.wait()
            if self._interval_s > 0 and len(self._group) < self._max_group:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval_s):
                        await self._full.wait()
            await self._commit_group()

    async def _alarm_loop(self) -> None:
        while True:
            await self._urgent.wait()
            await self._commit_alarms()

    async def commit(self) -> None:
        """Commits the open groups now (alarms first), then acks and notifies."""
        await self._commit_alarms()
        await self._commit_group()

    async def _commit_alarms(self) -> None:
        alarms, self._alarms = self._alarms, []
        self._urgent.clear()
        try:
            if alarms:
                await self._commit(alarms, self._call_urgent, urgent=True)
            published, self._published = self._published, None
            if published is not None:
                with contextlib.suppress(TimeoutError):    # (not wait_for: see batcher)
                    async with asyncio.timeout(self._priority_s):
                        await asyncio.shield(published)
        finally:
            if not self._alarms:
                self._no_alarm.set()

    async def _commit_group(self) -> None:
        group, self._group = self._group, []
        self._have.clear()
        self._full.clear()
        self._room.set()
        reacks = self._verifier.take_reacks()
        if group:
            await self._commit(group, self._call)
        if reacks:
            await self._ack(reacks, self._call)

    async def _commit(self, group: list[tuple[Accepted, int]], call: Call,
                      urgent: bool = False) -> None:
        recs = [Record(a.node, a.boot, a.seq, a.kind, priority_of(a.kind), t, a.body)
                for a, t in group]
        routes = list(dict.fromkeys((a.port, a.node, a.boot) for a, _ in group))
        sink = self._sink
        room = sink.alarm_room() if urgent and sink is not None else (0, 0)
        # Alarms of this group published before their commit, by (node, boot, seq): their
        # stored copies are taken too, beyond the room, to be settled.
        futures: dict[tuple[int, int, int], asyncio.Future[bool]] = {}
        for r in recs if urgent else ():
            f = self._early.pop((r.node, r.boot, r.seq), None)
            if f is not None:
                futures[r.node, r.boot, r.seq] = f
                room = (room[0] + 1, room[1] + len(r.payload))
        store = self.store

        def job() -> tuple[list[bool], list[tuple[int, int]], list[Record]]:
            # One worker call: the commit, the ack states and (alarms) the take.
            new = store.add_batch(recs)
            acks = [store.ack_state(n, b) for _, n, b in routes]
            held: list[Record] = []
            if room[0] > 0 and any(new):
                try:
                    held = store.take_alarms(*room)
                except StoreError as exc:       # stored all the same: the batcher takes them
                    log.error("alarms stored but not handed to the batcher: %s", exc)
            return new, acks, held

        try:
            new, acks, held = await call(job)
        except StoreError as exc:
            self.stats.commit_failures += 1
            full = isinstance(exc, StoreFullError)
            self.stats.full_failures += full
            now = time.monotonic()
            if now - self._last_log >= LOG_INTERVAL_S:
                self._last_log = now
                log.error("%d frames not stored, not acked (the nodes will send them again): "
                          "%s; %s", len(group), exc,
                          "free disk space or lower store.max_bytes" if full else
                          "the disk refused a write: check free space and quota (df -h), "
                          "and the SD card (dmesg)")
            return
        if held and sink is not None:
            settle = [(r, futures[r.node, r.boot, r.seq]) for r in held
                      if (r.node, r.boot, r.seq) in futures]
            rest = [r for r in held if (r.node, r.boot, r.seq) not in futures]
            if rest:
                self._published = sink.hand_alarms(rest)
            if settle:
                task = asyncio.create_task(self._settle(settle), name=TASK_NAME + ".settle")
                self._settling.add(task)
                task.add_done_callback(self._settling.discard)
        self.stats.commits += 1
        alarm = False
        fresh: list[tuple[Accepted, int]] = []
        for (item, t), is_new in zip(group, new, strict=True):
            self._verifier.accept(item)
            if is_new:
                fresh.append((item, t))
                alarm = alarm or priority_of(item.kind) == ALARM
            else:
                self.stats.duplicates += 1
                if item.kind == m.HELLO:
                    self._hello_at.pop((item.node, item.boot, item.seq), None)
        self.stats.committed += len(fresh)
        for (port, node, boot), (floor, sack) in zip(routes, acks, strict=True):
            await self._downlink.ack(port, node, boot, floor, sack)
        if fresh:
            # Handed alarms need no take; a take may still find any beyond the room.
            self._notify(alarm and (not held or len(held) >= room[0]))
        try:
            report: DropReport = await call(store.enforce_bounds, self._utc_ms())
        except StoreError as exc:
            log.error("store bounds not enforced: %s", exc)
        else:
            if report.total and self._on_drops is not None:
                self._on_drops(report)
        for item, t in fresh:
            arrived = (self._hello_at.pop((item.node, item.boot, item.seq), None)
                       if item.kind == m.HELLO else None)
            await self._downlink.heard(item.port, item.msg, arrived)
            if self._on_record is not None:
                self._on_record(item, t)

    async def _settle(self, pairs: list[tuple[Record, asyncio.Future[bool]]]) -> None:
        # Stored copies (in flight) of alarms published before their commit: deleted once
        # that publish was acknowledged, else handed to the batcher to be published again.
        sink = self._sink
        assert sink is not None
        done = [r for r, f in pairs if await f]
        again = [r for r, f in pairs if not f.result()]
        if again:
            sink.hand_alarms(again)
        if done:
            try:
                await self._call_urgent(self.store.confirm, [r.id for r in done])
            except StoreError as exc:          # still stored: published again after restart
                log.error("%d alarms published but not deleted from the store: %s",
                          len(done), exc)

    async def _ack(self, routes: list[tuple[str, int, int]], call: Call) -> None:
        store = self.store

        def states() -> list[tuple[int, int]]:
            return [store.ack_state(n, b) for _, n, b in routes]

        acks: list[tuple[int, int]] = await call(states)
        for (port, node, boot), (floor, sack) in zip(routes, acks, strict=True):
            await self._downlink.ack(port, node, boot, floor, sack)
