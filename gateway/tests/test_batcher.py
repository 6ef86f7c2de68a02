"""Tests of gateway/batcher.py with an in-memory store and a broker the test controls.

`python -m gateway.tests.test_batcher` runs `bench()` (records/s with a no-op publish).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway import config
from gateway.batcher import (
    CLOSE_AGE,
    CLOSE_ALARM,
    CLOSE_BYTES,
    CLOSE_COUNT,
    TASK_NAME,
    Batch,
    Batcher,
)
from gateway.store import ALARM, ROUTINE, Record

NOW = 1_760_000_000_000          # the fake wall clock, UTC ms
HOUR_MS = 3_600_000
LONG_MS = 600_000                # a max_age_ms no test waits for


class FakeStore:
    """Store.take/take_since/confirm/release semantics on a dict; checks every confirm."""

    def __init__(self) -> None:
        self.rows: dict[int, Record] = {}
        self.inflight: set[int] = set()
        self.confirmed: list[int] = []
        self.takes = 0
        self._next = 1

    def add(self, n: int, *, priority: int = ROUTINE, received_ms: int = NOW,
            size: int = 10) -> list[int]:
        ids = []
        for _ in range(n):
            i = self._next
            self._next += 1
            self.rows[i] = Record(7, 1, i, 2, priority, received_ms, b"x" * size, i)
            ids.append(i)
        return ids

    def _pick(self, count: int, limit_bytes: int, since_ms: int | None) -> list[Record]:
        order = sorted(self.rows.values(), key=lambda r: (-r.priority, r.id))
        out: list[Record] = []
        size = 0
        for r in order:
            if r.id in self.inflight or (since_ms is not None and r.received_ms < since_ms):
                continue
            if out and size + len(r.payload) > limit_bytes:
                break
            out.append(r)
            size += len(r.payload)
            if len(out) >= count:
                break
        self.inflight.update(r.id for r in out)
        return out

    async def take(self, count: int, limit_bytes: int) -> list[Record]:
        await asyncio.sleep(0)
        self.takes += 1
        return self._pick(count, limit_bytes, None)

    async def take_since(self, count: int, limit_bytes: int, since_ms: int) -> list[Record]:
        await asyncio.sleep(0)
        return self._pick(count, limit_bytes, since_ms)

    async def confirm(self, ids: Sequence[int]) -> None:
        await asyncio.sleep(0)
        for i in ids:
            assert i in self.inflight, f"confirm of {i} not in flight"
            del self.rows[i]
            self.inflight.discard(i)
            self.confirmed.append(i)

    async def release(self, ids: Sequence[int]) -> None:
        await asyncio.sleep(0)
        self.inflight.difference_update(ids)


class FakeBroker:
    """publish() that records each batch; holds, fails or raises as the test says."""

    def __init__(self) -> None:
        self.sent: list[Batch] = []
        self.acked: list[Batch] = []
        self.results: deque[bool | Exception] = deque()   # scripted outcomes, then True
        self.hold_routine = False
        self.gate = asyncio.Event()

    async def publish(self, batch: Batch) -> bool:
        self.sent.append(batch)
        if self.results:
            outcome = self.results.popleft()
            if isinstance(outcome, Exception):
                raise outcome
            if not outcome:
                return False
        if self.hold_routine and not batch.alarm:
            await self.gate.wait()
        await asyncio.sleep(0)
        self.acked.append(batch)
        return True


def cfg(count: int = 100, nbytes: int = 16384, age_ms: int = LONG_MS) -> config.Batch:
    return config.Batch(max_count=count, max_bytes=nbytes, max_age_ms=age_ms)


def make(store: FakeStore, broker: FakeBroker, c: config.Batch, **kw: object) -> Batcher:
    opts: dict[str, object] = {"backoff_min_s": 0.001, "backoff_max_s": 0.004,
                               "now_ms": lambda: NOW}
    opts.update(kw)
    return Batcher(c, store.take, broker.publish, store.confirm, store.release,
                   **opts)  # type: ignore[arg-type]


async def until(cond: Callable[[], bool], what: str) -> None:
    """Lets the loop run until cond() holds (bounded; not a timing assertion)."""
    for _ in range(5000):
        if cond():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("never happened: " + what)


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro())  # type: ignore[arg-type]


def test_closes_by_count() -> None:
    """Full batches of max_count go out; the rest waits for age and is released on stop."""
    async def main() -> None:
        store, broker = FakeStore(), FakeBroker()
        store.add(25)
        async with make(store, broker, cfg(count=10)):
            await until(lambda: len(store.confirmed) == 20, "two batches confirmed")
            await asyncio.sleep(0.01)
            assert [(len(b.records), b.reason) for b in broker.sent] == [(10, CLOSE_COUNT)] * 2
            assert len(store.inflight) == 5
        assert store.inflight == set()
        assert sorted(store.rows) == list(range(21, 26))
    run(main)


def test_closes_by_bytes() -> None:
    """A batch closes before the record that would pass max_bytes."""
    async def main() -> None:
        store, broker = FakeStore(), FakeBroker()
        store.add(7, size=100)
        async with make(store, broker, cfg(nbytes=256)):
            await until(lambda: len(store.confirmed) == 6, "three batches confirmed")
            assert [(len(b.records), b.reason) for b in broker.sent] == [(2, CLOSE_BYTES)] * 3
            assert all(b.size <= 256 for b in broker.sent)
    run(main)


def test_lone_record_published_by_age() -> None:
    """A single reading is published alone once max_age_ms passed, and then confirmed."""
    async def main() -> None:
        store, broker = FakeStore(), FakeBroker()
        async with make(store, broker, cfg(age_ms=20)) as b:
            await asyncio.sleep(0)
            (rid,) = store.add(1)
            b.notify()
            await until(lambda: store.confirmed == [rid], "the record confirmed")
            assert [(len(x.records), x.reason) for x in broker.sent] == [(1, CLOSE_AGE)]
    run(main)


def test_old_record_published_at_once() -> None:
    """A record already older than max_age_ms does not wait for the age timer."""
    async def main() -> None:
        store, broker = FakeStore(), FakeBroker()
        store.add(1, received_ms=NOW - 2 * LONG_MS)
        async with make(store, broker, cfg()):
            await until(lambda: len(store.confirmed) == 1, "the record confirmed")
            assert broker.sent[0].reason == CLOSE_AGE
    run(main)


def test_alarms_first_in_own_batch() -> None:
    """Alarms stored after routine records are published first, in a batch of their own."""
    async def main() -> None:
        store, broker = FakeStore(), FakeBroker()
        store.add(30, received_ms=NOW - HOUR_MS)
        alarms = store.add(2, priority=ALARM)
        async with make(store, broker, cfg(count=10)):
            await until(lambda: len(store.confirmed) == 32, "all confirmed")
        first = broker.sent[0]
        assert first.alarm and first.reason == CLOSE_ALARM and first.ids == alarms
        assert not any(b.alarm for b in broker.sent[1:])
    run(main)


def test_alarm_overtakes_stuck_routine_and_backlog() -> None:
    """With the routine window stuck awaiting PUBACK and a backlog queued, an alarm still goes."""
    async def main() -> None:
        store, broker = FakeStore(), FakeBroker()
        broker.hold_routine = True
        store.add(50, received_ms=NOW - HOUR_MS)
        async with make(store, broker, cfg(count=10), max_in_flight=1) as b:
            await until(lambda: len(broker.sent) == 1 and b.stats().waiting == 1,
                        "window full and one batch waiting")
            (alarm,) = store.add(1, priority=ALARM)
            b.notify(alarm=True)
            await until(lambda: alarm in store.confirmed, "alarm confirmed")
            assert broker.sent[-1].alarm and broker.sent[-1].ids == [alarm]
            assert len(store.inflight) == 20          # the probe gave routine records back
            broker.gate.set()
            await until(lambda: len(store.confirmed) == 51, "all confirmed")
        assert sorted(store.confirmed) == list(range(1, 52))
    run(main)


def test_handed_alarms_are_published_at_once_without_a_take() -> None:
    """Alarms handed over already taken go out as alarm batches, past a stuck routine
    window; alarm_room shrinks with the alarm allowance and is empty while backing off."""
    async def main() -> None:
        store, broker = FakeStore(), FakeBroker()
        broker.hold_routine = True
        store.add(30, received_ms=NOW - HOUR_MS)
        async with make(store, broker, cfg(count=10), max_in_flight=1, alarm_in_flight=2,
                        backoff_min_s=0.2, backoff_max_s=0.4) as b:
            await until(lambda: b.stats().waiting == 1, "routine window full")
            assert b.alarm_room() == (20, 2 * 16384)
            ids = store.add(3, priority=ALARM)
            handed = store._pick(3, 1 << 20, None)            # what ingest took
            takes = store.takes
            published = b.hand_alarms(handed)
            await until(lambda: set(ids) <= set(store.confirmed), "handed alarms confirmed")
            assert published.done() and b.hand_alarms([]).done()
            assert store.takes == takes                       # no take of their own
            alarm_batches = [x for x in broker.sent if x.alarm]
            assert [x.ids for x in alarm_batches] == [ids]
            broker.results.append(False)                      # the next publish fails
            (late,) = store.add(1, priority=ALARM)
            b.hand_alarms(store._pick(1, 1 << 20, None))
            await until(lambda: b.stats().failures == 1, "failed publish")
            assert b.alarm_room() == (0, 0)                   # backing off
            await until(lambda: late in store.confirmed, "the released alarm, again")
            broker.gate.set()
            await until(lambda: not store.rows, "all confirmed")
    run(main)


def test_an_early_alarm_is_published_and_confirms_nothing() -> None:
    """publish_early: one alarm batch now; its future says PUBACK; no store id is confirmed
    or released. A failed one says False and starts the backoff (no early publish then)."""
    async def main() -> None:
        store, broker = FakeStore(), FakeBroker()
        rec = Record(7, 1, 9, 2, ALARM, NOW, b"alarm", 0)
        async with make(store, broker, cfg(), backoff_min_s=5.0, backoff_max_s=5.0) as b:
            early = b.publish_early(rec)
            assert early is not None
            async with asyncio.timeout(10):
                assert await early is True
            assert [(x.alarm, x.records) for x in broker.acked] == [(True, (rec,))]
            assert store.confirmed == [] and b.stats().records == 1
            broker.results.append(False)
            failed = b.publish_early(rec)
            assert failed is not None
            async with asyncio.timeout(10):
                assert await failed is False
            assert b.publish_early(rec) is None           # backing off
            assert store.confirmed == [] and store.inflight == set()
    run(main)


def test_failures_release_and_retry_without_loss_or_duplicates() -> None:
    """Failed and raising publishes release, back off and retry; each id confirmed once."""
    async def main() -> None:
        store, broker = FakeStore(), FakeBroker()
        broker.results.extend([False, False, ConnectionError("broker gone"), True, False])
        ids = store.add(45, received_ms=NOW - HOUR_MS)
        ids += store.add(3, priority=ALARM)
        async with make(store, broker, cfg(count=10)) as b:
            await until(lambda: not store.rows, "store emptied")
            st = b.stats()
        assert sorted(store.confirmed) == sorted(ids)
        assert len(set(store.confirmed)) == len(store.confirmed)
        assert st.failures == 4 and st.records == 48 and st.in_flight == 0
        assert len(broker.sent) == st.batches + 4
    run(main)


def test_backlog_interleaves_with_live() -> None:
    """While a backlog drains, every 2 backlog batches are followed by one live batch."""
    async def main() -> None:
        store, broker = FakeStore(), FakeBroker()
        store.add(40, received_ms=NOW - HOUR_MS)
        live = store.add(10, received_ms=NOW - 100)
        async with make(store, broker, cfg(count=5, age_ms=1000), max_in_flight=1,
                        backlog_per_live=2, take_since=store.take_since):
            await until(lambda: not store.rows, "store emptied")
        order = "".join("B" if b.backlog else "L" for b in broker.sent)
        assert order == "BBLBBLBBBB"
        assert [i for b in broker.sent if not b.backlog for i in b.ids] == live
    run(main)


def test_without_take_since_drains_oldest_first() -> None:
    """Without take_since the backlog drains strictly oldest first."""
    async def main() -> None:
        store, broker = FakeStore(), FakeBroker()
        ids = store.add(20, received_ms=NOW - HOUR_MS) + store.add(5, received_ms=NOW - 100)
        async with make(store, broker, cfg(count=5, age_ms=0), max_in_flight=1):
            await until(lambda: not store.rows, "store emptied")
        assert [i for b in broker.sent for i in b.ids] == ids
    run(main)


def test_cancel_releases_everything_held() -> None:
    """Stopping releases records awaiting PUBACK, waiting and open; nothing is confirmed."""
    async def main() -> None:
        store, broker = FakeStore(), FakeBroker()
        broker.hold_routine = True
        store.add(27)
        async with make(store, broker, cfg(count=5), max_in_flight=2) as b:
            await until(lambda: b.stats().in_flight == 2 and b.stats().waiting == 1,
                        "window full")
            assert store.inflight
        assert store.inflight == set() and store.confirmed == []
        assert len(store.rows) == 27
    run(main)


def test_task_name_and_run_cancel() -> None:
    """run() as a named task releases what it holds when cancelled."""
    async def main() -> None:
        store, broker = FakeStore(), FakeBroker()
        broker.hold_routine = True
        store.add(3)
        b = make(store, broker, cfg(count=3))
        task = asyncio.create_task(b.run(), name=TASK_NAME)
        await until(lambda: b.stats().in_flight == 1, "one in flight")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert store.inflight == set()
    run(main)


def test_cancel_that_comes_with_a_wake_is_not_lost() -> None:
    """A cancel in the same loop turn as a notify ends run() (3.11's wait_for lost it: the
    service's stop then waited for the batcher forever)."""
    async def main() -> None:
        store, broker = FakeStore(), FakeBroker()
        store.add(1)                               # an open batch: the wait has a timeout
        b = make(store, broker, cfg())
        task = asyncio.create_task(b.run(), name=TASK_NAME)
        await until(lambda: store.takes >= 2, "second take")
        await asyncio.sleep(0.01)                  # idle: waiting for a wake or the age
        b.notify()
        task.cancel()
        await asyncio.wait({task}, timeout=10)     # a hang guard, not a timing assertion
        assert task.cancelled(), "run() went on after its cancel"
        assert store.inflight == set()
    run(main)


def test_counters() -> None:
    """Stats count batches, alarm batches, records and latency after PUBACKs."""
    async def main() -> None:
        store, broker = FakeStore(), FakeBroker()
        assert make(store, broker, cfg()).stats().last_latency_s is None
        store.add(20)
        store.add(1, priority=ALARM)
        async with make(store, broker, cfg(count=10)) as b:
            await until(lambda: not store.rows, "store emptied")
            st = b.stats()
        assert (st.batches, st.alarm_batches, st.records, st.failures) == (3, 1, 21, 0)
        assert (st.in_flight, st.waiting, st.confirm_errors) == (0, 0, 0)
        assert st.last_latency_s is not None and st.last_latency_s >= 0
    run(main)


def test_confirm_error_republishes() -> None:
    """A confirm that raises is counted and its records are published again, not lost."""
    async def main() -> None:
        store, broker = FakeStore(), FakeBroker()
        ids = store.add(4)
        fails = [True]

        async def confirm(batch_ids: Sequence[int]) -> None:
            if fails:
                fails.pop()
                raise OSError("disk")
            await store.confirm(batch_ids)

        b = Batcher(cfg(count=4), store.take, broker.publish, confirm, store.release)
        async with b:
            await until(lambda: not store.rows, "store emptied")
        assert b.stats().confirm_errors == 1 and store.confirmed == ids
        assert len(broker.sent) == 2
    run(main)


def test_rejects_bad_arguments() -> None:
    """Zero windows and inverted backoff bounds are refused."""
    store, broker = FakeStore(), FakeBroker()
    for kw in ({"max_in_flight": 0}, {"alarm_in_flight": 0}, {"backlog_per_live": 0},
               {"backoff_min_s": 2.0, "backoff_max_s": 1.0}):
        with pytest.raises(ValueError):
            make(store, broker, cfg(), **kw)


# ---- benchmark (not a test) -----------------------------------------------------------------

def bench(n: int = 500_000, count: int = 100, threaded: bool = False) -> float:
    """Records/s through the batcher with an instant take and a no-op publish.

    threaded: take/confirm go through a single-thread executor, as the wiring does.
    """
    recs = deque(Record(7, 1, i, 2, ROUTINE, NOW, b"x" * 40, i) for i in range(1, n + 1))
    done = 0

    def pop(c: int) -> list[Record]:
        return [recs.popleft() for _ in range(min(c, len(recs)))]

    def count_done(ids: Sequence[int]) -> None:
        nonlocal done
        done += len(ids)

    pool = ThreadPoolExecutor(1)

    async def take(c: int, _b: int) -> list[Record]:
        if threaded:
            return await asyncio.get_running_loop().run_in_executor(pool, pop, c)
        return pop(c)

    async def publish(_batch: Batch) -> bool:
        return True

    async def confirm(ids: Sequence[int]) -> None:
        if threaded:
            await asyncio.get_running_loop().run_in_executor(pool, count_done, ids)
        else:
            count_done(ids)

    async def release(_ids: Sequence[int]) -> None:
        return None

    async def main() -> float:
        b = Batcher(cfg(count=count, nbytes=1 << 20), take, publish, confirm, release,
                    now_ms=lambda: NOW)
        t0 = time.perf_counter()
        async with b:
            while done < n:
                await asyncio.sleep(0.001)
        return n / (time.perf_counter() - t0)

    try:
        return asyncio.run(main())
    finally:
        pool.shutdown()


if __name__ == "__main__":
    print(f"{bench():.0f} records/s (batches of 100, no-op publish, take inline)")
    print(f"{bench(threaded=True):.0f} records/s (same, take/confirm on a 1-thread executor)")
