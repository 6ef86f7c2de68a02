"""Batcher stage: records from the durable store grouped into publish batches, alarms first.

The batcher never touches SQLite. It pulls records through an injected ``take(count, bytes)``
(the store's `Store.take`: alarms first, then oldest first, each record in flight until
confirmed or released), hands each closed `Batch` to an injected ``publish(batch) -> bool``
(True: the broker sent PUBACK) and then calls ``confirm(ids)`` (PUBACK: delete) or
``release(ids)`` (no PUBACK: the store hands the records out again). Records therefore stay on
disk until their own batch is acknowledged, and a record is in at most one batch at a time,
so no id is ever confirmed twice and none is lost; after a failure, a cancel or a restart a
record may be published again (at least once; consumers de-duplicate by (node, boot, seq)).

Closing rules (config ``[batch]``): a routine batch closes at the first of ``max_count``
records, ``max_bytes`` payload bytes (the authenticated messages as stored; the SenML encoding
the publisher makes of them is larger) or ``max_age_ms`` after the *oldest* record of the batch
reached the gateway (``received_ms``), so a lone reading is published within ``max_age_ms``.
The age wait is measured on the event loop's monotonic clock from the time of the take, capped
at ``max_age_ms``, so a wall clock that steps back cannot hold a batch longer.

Alarms (priority 1: alarms and hellos) never wait: every take splits them off into batches of
their own (``alarm=True``), published at once, ahead of any routine batch, within a separate
in-flight allowance (``alarm_in_flight``), so an alarm never queues behind routine batches
awaiting PUBACK. When the routine window is full, a ``notify(alarm=True)`` makes the batcher
*probe*: one take, the alarms kept, the routine records released at once. Ingest does not
even wait for a take: while `alarm_room` says there is room, it takes the alarms it has just
committed in the same store call and gives them to `hand_alarms` (one store round trip and
one event-loop pass less per alarm). Before that, `publish_early` publishes an alarm the moment
it is verified, before its commit: a commit waits for the disk's fsync, which under sustained
writes took 100-850 ms on the benchmark VM (and an SD card is slower). Such a record is not in
the store yet (id 0): its publish confirms and releases nothing, and its future tells ingest
whether the broker acknowledged it, so ingest deletes the stored copy or hands it over to be
published again. The node is acked only after the commit, as always; a crash between the
publish and the commit makes the node send the alarm again (a duplicate, never a loss).

Backlog and live data. At most ``max_in_flight`` routine batches await PUBACK; one more closed
batch may wait for a slot, and the store is only read while none waits (memory stays bounded
by a few batches whatever the backlog). A record is *backlog* when it reached the gateway more
than ``backlog_after_ms`` ago (default ``BACKLOG_FACTOR`` x ``max_age_ms``, at least
``BACKLOG_MIN_MS``), else it is *live*. While oldest-first takes return backlog records (drain
mode), every ``backlog_per_live`` backlog batches are followed by one live turn: an injected
``take_since(count, bytes, since_ms)`` takes the oldest records received at or after the
backlog cut, published at once as one batch. So after an outage live readings keep at least
1 / (backlog_per_live + 1) of the publish slots while the backlog drains with the rest, and a
live turn with no live records waiting goes back to the backlog. Without ``take_since`` the
batcher drains strictly oldest first.

Wake-ups: the wiring calls `notify()` after each store commit (``alarm=True`` if it stored a
new alarm or hello); the batcher then takes until the store has nothing left to hand out and
otherwise sleeps until the next notify, the age deadline of the open batch, the end of a
backoff or a free slot. No polling.

Failures: ``publish`` returning False or raising releases the batch's records and starts a
capped, jittered exponential backoff (``backoff_min_s`` doubling up to ``backoff_max_s``, each
delay scaled by a random factor in [0.5, 1)) during which nothing is taken or published; the
first PUBACK resets it. A failing ``confirm`` is logged and counted and the records are
released (published again: a duplicate, never a loss).

Stopping: `run()` is a long-running task (`TASK_NAME`); `async with Batcher(...)` starts and
cancels it. On cancel every record the batcher holds (open, waiting, being taken, awaiting
PUBACK) is released, so the store hands it out again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from gateway import backoff, config
from gateway.store import ALARM, Record

log = logging.getLogger(__name__)

TASK_NAME = "gateway.batcher"
SEND_TASK_NAME = "gateway.batcher.send"
CLOSE_COUNT = "count"        # Batch.reason: max_count reached
CLOSE_BYTES = "bytes"        # the next record would pass max_bytes (or max_bytes reached)
CLOSE_AGE = "age"            # the oldest record waited max_age_ms
CLOSE_ALARM = "alarm"        # alarms are published at once
CLOSE_LIVE = "live"          # a live turn during a backlog drain is published at once
CLOSE_STOP = "stop"          # never published: what the batcher held when it stopped
BACKLOG_FACTOR = 10          # records older than this many max_age_ms are backlog...
BACKLOG_MIN_MS = 10_000      # ...and at least this old

Take = Callable[[int, int], Awaitable[list[Record]]]
TakeSince = Callable[[int, int, int], Awaitable[list[Record]]]
Ids = Callable[[Sequence[int]], Awaitable[None]]
Publish = Callable[["Batch"], Awaitable[bool]]


def utc_ms() -> int:
    """Gateway wall-clock time in UTC milliseconds (the clock of Record.received_ms)."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Batch:
    """Records published together; `alarm` batches go to the alarm topic."""

    records: tuple[Record, ...]
    alarm: bool
    reason: str              # CLOSE_*: why the batch was closed
    backlog: bool = False    # holds records older than the backlog cut

    @property
    def ids(self) -> list[int]:
        """Store row ids of the records."""
        return [r.id for r in self.records]

    @property
    def size(self) -> int:
        """Payload bytes of the records."""
        return sum(len(r.payload) for r in self.records)


@dataclass(frozen=True)
class BatcherStats:
    """Counters for metrics; counts are totals since start."""

    batches: int             # batches PUBACKed
    alarm_batches: int       # of which alarm batches
    records: int             # records PUBACKed
    failures: int            # publishes that returned False or raised
    confirm_errors: int      # confirms that raised (records released, published again)
    in_flight: int           # batches awaiting PUBACK now
    waiting: int             # closed batches waiting for a slot (or a backoff) now
    last_latency_s: float | None   # take of the batch's first record -> PUBACK, last batch
    draining: bool           # a backlog is being drained


@dataclass(frozen=True)
class _Out:
    batch: Batch
    taken: float             # loop time of the take of its first record
    done: asyncio.Future[None] | None = None     # set once published, given back or dropped
    early: asyncio.Future[bool] | None = None    # publish_early: not stored, PUBACKed or not


def _finish(out: _Out, ok: bool = False) -> None:
    if out.done is not None and not out.done.done():
        out.done.set_result(None)
    if out.early is not None and not out.early.done():
        out.early.set_result(ok)


class Batcher:
    """Pulls records, closes batches, publishes them (see the module documentation)."""

    def __init__(
        self,
        cfg: config.Batch,
        take: Take,
        publish: Publish,
        confirm: Ids,
        release: Ids,
        *,
        take_since: TakeSince | None = None,
        max_in_flight: int = 4,
        alarm_in_flight: int = 2,
        backlog_per_live: int = 3,
        backlog_after_ms: int | None = None,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        now_ms: Callable[[], int] = utc_ms,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if cfg.max_count < 1 or cfg.max_bytes < 1 or cfg.max_age_ms < 0:
            raise ValueError("batch limits must be positive (max_age_ms may be 0)")
        if max_in_flight < 1 or alarm_in_flight < 1 or backlog_per_live < 1:
            raise ValueError("max_in_flight, alarm_in_flight and backlog_per_live must be >= 1")
        if not 0 < backoff_min_s <= backoff_max_s:
            raise ValueError("backoff needs 0 < backoff_min_s <= backoff_max_s")
        self.cfg = cfg
        self._take = take
        self._take_since = take_since
        self._publish = publish
        self._confirm = confirm
        self._release = release
        self.max_in_flight = max_in_flight
        self.alarm_in_flight = alarm_in_flight
        self.backlog_per_live = backlog_per_live
        self.backlog_after_ms = (
            max(BACKLOG_FACTOR * cfg.max_age_ms, BACKLOG_MIN_MS)
            if backlog_after_ms is None else backlog_after_ms
        )
        self._backoff_min_s = backoff_min_s
        self._backoff_max_s = backoff_max_s
        self._now_ms = now_ms
        self._rand = rand
        self._wake = asyncio.Event()
        self._more = True            # the store may hold records not yet taken
        self._alarm_hint = True      # the store may hold alarms not yet taken
        self._open: list[Record] = []
        self._open_bytes = 0
        self._open_oldest_ms = 0
        self._open_taken = 0.0
        self._open_backlog = False
        self._deadline = 0.0         # loop time at which the open batch is old enough
        self._ready: deque[_Out] = deque()
        self._alarm_ready: deque[_Out] = deque()
        self._routine_tasks: set[asyncio.Task[None]] = set()
        self._alarm_tasks: set[asyncio.Task[None]] = set()
        self._taking: asyncio.Future[list[Record]] | None = None
        self._drain = False
        self._since_live = 0         # backlog batches closed since the last live turn
        self._fails = 0              # failures since the last PUBACK
        self._backoff_until = 0.0
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.alarm_batches = 0
        self.records = 0
        self.failures = 0
        self.confirm_errors = 0
        self.last_latency_s: float | None = None

    # -- interface -----------------------------------------------------------------------------

    def notify(self, alarm: bool = False) -> None:
        """New records were committed to the store (alarm: among them an alarm or hello)."""
        self._more = True
        if alarm:
            self._alarm_hint = True
        self._wake.set()

    def alarm_room(self) -> tuple[int, int]:
        """(records, bytes) of alarms `hand_alarms` may bring now to be published at once;
        (0, 0) while backing off or with the alarm allowance in use."""
        if asyncio.get_running_loop().time() < self._backoff_until:
            return 0, 0
        free = self.alarm_in_flight - len(self._alarm_tasks) - len(self._alarm_ready)
        if free <= 0:
            return 0, 0
        return free * self.cfg.max_count, free * self.cfg.max_bytes

    def hand_alarms(self, recs: Sequence[Record]) -> asyncio.Future[None]:
        """Alarms already taken from the store (in flight there), published at once like
        taken ones: ingest's path for alarms it has just committed (no take of their own).
        The future is done when their batches are PUBACKed, failed or the batcher stopped."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if not recs:
            done.set_result(None)
            return done
        self._add_alarms(list(recs), loop.time(), done)
        self._dispatch()
        self._wake.set()
        return done

    def publish_early(self, rec: Record) -> asyncio.Future[bool] | None:
        """An alarm published before it is committed (not in the store: id 0). The future
        is True once the broker acknowledged it, False if the publish failed or the batcher
        stopped. None (nothing published) while backing off or with the alarm allowance in
        use: the alarm then takes the committed path."""
        loop = asyncio.get_running_loop()
        if (loop.time() < self._backoff_until
                or len(self._alarm_tasks) + len(self._alarm_ready) >= self.alarm_in_flight):
            return None
        early: asyncio.Future[bool] = loop.create_future()
        self._alarm_ready.append(
            _Out(Batch((rec,), True, CLOSE_ALARM), loop.time(), early=early))
        self._dispatch()
        return early

    def stats(self) -> BatcherStats:
        """Current counters."""
        return BatcherStats(
            self.batches, self.alarm_batches, self.records, self.failures, self.confirm_errors,
            len(self._routine_tasks) + len(self._alarm_tasks),
            len(self._ready) + len(self._alarm_ready), self.last_latency_s, self._drain,
        )

    async def __aenter__(self) -> Batcher:
        self._task = asyncio.create_task(self.run(), name=TASK_NAME)
        return self

    async def __aexit__(self, *exc: object) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        """Batch and publish until cancelled; then release every record held."""
        loop = asyncio.get_running_loop()
        try:
            await self._batch_loop(loop)
        finally:
            await self._shutdown()

    # -- the loop ------------------------------------------------------------------------------

    async def _batch_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            self._wake.clear()       # every wake reason is also state, re-read below
            now = loop.time()
            if self._open and now >= self._deadline:
                self._close(CLOSE_AGE)
            backing_off = now < self._backoff_until
            if not backing_off:
                self._dispatch()
                if self._more and not self._ready:
                    await self._fill(loop)
                    continue
                if (self._alarm_hint and not self._alarm_ready
                        and len(self._alarm_tasks) < self.alarm_in_flight):
                    await self._probe(loop)
                    continue
            timeout: float | None = None
            if self._open:
                timeout = self._deadline - now
            if backing_off:
                wait = self._backoff_until - now
                timeout = wait if timeout is None else min(timeout, wait)
            # asyncio.timeout, not wait_for: 3.11's wait_for loses a cancel that comes as the
            # wake does, and the service's stop then waits for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _taken(self, call: Awaitable[list[Record]]) -> list[Record]:
        # Shielded so that a cancel during the take still learns which records it handed out.
        fut = asyncio.ensure_future(call)
        self._taking = fut
        recs = await asyncio.shield(fut)
        self._taking = None
        return recs

    async def _fill(self, loop: asyncio.AbstractEventLoop) -> None:
        cfg = self.cfg
        cut = self._now_ms() - self.backlog_after_ms
        if (self._drain and self._take_since is not None and not self._open
                and self._since_live >= self.backlog_per_live):
            self._since_live = 0
            recs = await self._taken(self._take_since(cfg.max_count, cfg.max_bytes, cut))
            if recs:
                self._sort(recs, loop.time(), cut)
                if self._open:
                    self._close(CLOSE_LIVE)
                self._dispatch()
                return
        self._more = False
        self._alarm_hint = False
        room = cfg.max_count - len(self._open)
        recs = await self._taken(self._take(room, max(1, cfg.max_bytes - self._open_bytes)))
        if recs:
            self._more = True
            if recs[-1].priority == ALARM and len(recs) >= room:
                self._alarm_hint = True      # alarms come first: more may wait
            oldest = min((r.received_ms for r in recs if r.priority != ALARM), default=None)
            self._drain = oldest is not None and oldest < cut
        self._sort(recs, loop.time(), cut)
        if self._open and loop.time() >= self._deadline:
            self._close(CLOSE_AGE)
        self._dispatch()

    async def _probe(self, loop: asyncio.AbstractEventLoop) -> None:
        # Routine window full: look for alarms only; routine records go straight back.
        self._alarm_hint = False
        recs = await self._taken(self._take(self.cfg.max_count, self.cfg.max_bytes))
        alarms = [r for r in recs if r.priority == ALARM]
        back = [r.id for r in recs if r.priority != ALARM]
        if alarms and not back and len(recs) >= self.cfg.max_count:
            self._alarm_hint = True
        self._add_alarms(alarms, loop.time())
        self._dispatch()
        if back:
            await self._give_back(back)

    def _sort(self, recs: list[Record], taken: float, cut: int) -> None:
        # Alarms into their own batches, routine records into the open batch.
        cfg = self.cfg
        alarms: list[Record] = []
        for r in recs:
            if r.priority == ALARM:
                alarms.append(r)
                continue
            n = len(r.payload)
            if self._open and self._open_bytes + n > cfg.max_bytes:
                self._close(CLOSE_BYTES)
            if not self._open:
                self._open_taken = taken
                self._open_oldest_ms = r.received_ms
                self._deadline = taken + cfg.max_age_ms / 1000 * _age_left(
                    r.received_ms, cfg.max_age_ms, self._now_ms())
            elif r.received_ms < self._open_oldest_ms:
                self._open_oldest_ms = r.received_ms
                self._deadline = min(self._deadline, taken + cfg.max_age_ms / 1000 * _age_left(
                    r.received_ms, cfg.max_age_ms, self._now_ms()))
            self._open.append(r)
            self._open_bytes += n
            if r.received_ms < cut:
                self._open_backlog = True
            if len(self._open) >= cfg.max_count:
                self._close(CLOSE_COUNT)
            elif self._open_bytes >= cfg.max_bytes:
                self._close(CLOSE_BYTES)
        if alarms:
            self._add_alarms(alarms, taken)

    def _add_alarms(self, alarms: list[Record], taken: float,
                    done: asyncio.Future[None] | None = None) -> None:
        # done: set when the last of these batches is finished
        cfg = self.cfg
        chunk: list[Record] = []
        size = 0
        for r in alarms:
            n = len(r.payload)
            if chunk and (len(chunk) >= cfg.max_count or size + n > cfg.max_bytes):
                self._alarm_ready.append(_Out(Batch(tuple(chunk), True, CLOSE_ALARM), taken))
                chunk, size = [], 0
            chunk.append(r)
            size += n
        if chunk:
            self._alarm_ready.append(_Out(Batch(tuple(chunk), True, CLOSE_ALARM), taken, done))

    def _close(self, reason: str) -> None:
        batch = Batch(tuple(self._open), False, reason, self._open_backlog)
        self._ready.append(_Out(batch, self._open_taken))
        if self._open_backlog:
            self._since_live += 1
        self._open = []
        self._open_bytes = 0
        self._open_backlog = False

    def _dispatch(self) -> None:
        # Alarms first, each kind within its own allowance; nothing during a backoff.
        if asyncio.get_running_loop().time() < self._backoff_until:
            return
        while self._alarm_ready and len(self._alarm_tasks) < self.alarm_in_flight:
            self._spawn(self._alarm_ready.popleft(), self._alarm_tasks)
        while self._ready and len(self._routine_tasks) < self.max_in_flight:
            self._spawn(self._ready.popleft(), self._routine_tasks)

    def _spawn(self, out: _Out, tasks: set[asyncio.Task[None]]) -> None:
        task = asyncio.create_task(self._send(out), name=SEND_TASK_NAME)
        tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            tasks.discard(t)
            self._wake.set()

        task.add_done_callback(done)

    # -- one batch -----------------------------------------------------------------------------

    async def _send(self, out: _Out) -> None:
        batch = out.batch
        ids = batch.ids
        try:
            try:
                ok = await self._publish(batch)
            except Exception:
                log.warning("publish of %d records failed", len(ids), exc_info=True)
                ok = False
            if not ok:
                self.failures += 1
                self._backoff()
                if out.early is None:
                    await self._give_back(ids, batch.alarm)
                return
            loop = asyncio.get_running_loop()
            self._fails = 0
            self.batches += 1
            self.alarm_batches += batch.alarm
            self.records += len(ids)
            self.last_latency_s = loop.time() - out.taken
            _finish(out, True)       # published: whoever waits for it need not wait for confirm
            if out.early is not None:
                return               # not stored yet: ingest settles the stored copy
            try:
                await self._confirm(ids)
            except Exception:
                self.confirm_errors += 1
                log.error("confirm of %d published records failed; they will be published"
                          " again", len(ids), exc_info=True)
                await self._give_back(ids, batch.alarm)
        except asyncio.CancelledError:
            if out.early is None:
                await self._give_back(ids, batch.alarm)
            raise
        finally:
            _finish(out)

    def _backoff(self) -> None:
        self._fails += 1
        delay = backoff.delay(self._fails - 1, self._backoff_min_s, self._backoff_max_s,
                              self._rand())
        until = asyncio.get_running_loop().time() + delay
        if until > self._backoff_until:
            self._backoff_until = until
            log.info("publishing paused for %.1f s after %d failures", delay, self._fails)

    async def _give_back(self, ids: Sequence[int], alarm: bool = False) -> None:
        # The store hands the records out again; alarm: some were alarms (worth a probe).
        self._more = True
        self._alarm_hint = self._alarm_hint or alarm
        self._wake.set()
        try:
            await self._release(ids)
        except Exception:
            log.error("release of %d records failed", len(ids), exc_info=True)

    async def _shutdown(self) -> None:
        tasks = [*self._alarm_tasks, *self._routine_tasks]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        ids = [r.id for r in self._open]
        for out in (*self._alarm_ready, *self._ready):
            if out.early is None:
                ids += out.batch.ids
            _finish(out)
        self._open = []
        self._open_bytes = 0
        self._ready.clear()
        self._alarm_ready.clear()
        taking, self._taking = self._taking, None
        if taking is not None:
            with contextlib.suppress(Exception):
                ids += [r.id for r in await taking]
        if ids:
            await self._give_back(ids)


def _age_left(received_ms: int, max_age_ms: int, now_ms: int) -> float:
    # Fraction of max_age_ms a record received at received_ms may still wait, in [0, 1].
    if max_age_ms <= 0:
        return 0.0
    return min(1.0, max(0.0, (received_ms + max_age_ms - now_ms) / max_age_ms))
