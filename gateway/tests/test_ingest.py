"""Tests of gateway/ingest.py with a real store, verifier and downlink (no serial port)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gateway import config
from gateway.downlink import Downlink
from gateway.ingest import AlarmSink, Ingest
from gateway.store import Record, Store
from gateway.verify import Verifier
from protocol import frame, link
from protocol import messages as m

KEY = bytes(range(32))
T0 = 1_790_000_000
GUARD_S = 10.0
_T = TypeVar("_T")


class Rig:
    """Ingest wired to a real store on one worker thread; downlink frames are collected."""

    def __init__(self, tmp_path: Path, commit_interval_ms: int, max_group: int,
                 alarms: AlarmSink | None = None, alarm_priority_s: float = 0.05) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(1)
        self.store = Store(tmp_path / "q.sqlite3", 1 << 30, 86400)
        ring = frame.KeyRing({7: KEY, 8: KEY})
        self.written: list[tuple[str, bytes]] = []
        self.notified: list[bool] = []
        self.downlink = Downlink(config.Downlink(), ring, self._seq, self._write,
                                 quality=lambda: m.TIME_NTP)
        self.ingest = Ingest(self.store, self.call, Verifier(ring), self.downlink,
                             self.notified.append, commit_interval_ms=commit_interval_ms,
                             max_group=max_group, alarms=alarms,
                             alarm_priority_s=alarm_priority_s)

    async def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(fn, *args))

    async def _seq(self, node: int, boot: int) -> int:
        return await self.call(self.store.next_downlink_seq, node, boot)

    def _write(self, port: str, data: bytes) -> bool:
        self.written.append((port, data))
        return True

    def acks(self) -> list[m.Ack]:
        ring = frame.KeyRing({7: KEY, 8: KEY})
        out: list[m.Ack] = []
        for _, w in self.written:
            msg = frame.open_payload(link.unframe(w), ring, uplink=False)
            if isinstance(msg, m.Ack):
                out.append(msg)
        return out

    def close(self) -> None:
        self.pool.submit(self.store.close).result()
        self.pool.shutdown()


def wire(node: int, seq: int, alarm: bool = False) -> bytes:
    msg: m.Message = (m.Alarm(node, 1, seq, T0, 1, 200, 205, 1000, None) if alarm
                      else m.Flood(node, 1, seq, T0 + seq, 10, 2990, 2450, 0, 5))
    return frame.seal(msg, KEY)


def test_alarm_is_committed_and_acked_at_once(tmp_path: Path) -> None:
    """With a long commit interval, floods wait; an alarm is committed and acked alone, now."""
    rig = Rig(tmp_path, commit_interval_ms=60_000, max_group=1000)

    async def main() -> None:
        task = asyncio.create_task(rig.ingest.run())
        await rig.ingest.on_data("p1", wire(7, 1) + wire(7, 2))
        await asyncio.sleep(0.2)
        assert rig.acks() == []                      # the group waits for its interval
        await rig.ingest.on_data("p2", wire(8, 1, alarm=True))
        async with asyncio.timeout(GUARD_S):
            while not rig.acks():
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        assert [(a.node, a.floor) for a in rig.acks()] == [(8, 1)]   # floods still wait
        await rig.ingest.commit()                    # what a stop does: both groups
        task.cancel()

    try:
        asyncio.run(main())
        assert {(a.node, a.floor) for a in rig.acks()} == {(7, 2), (8, 1)}
        assert rig.notified == [True, False]
    finally:
        rig.close()


def test_a_full_group_commits_before_its_interval(tmp_path: Path) -> None:
    """max_group frames commit at once, whatever the commit interval."""
    rig = Rig(tmp_path, commit_interval_ms=60_000, max_group=4)

    async def main() -> None:
        task = asyncio.create_task(rig.ingest.run())
        await rig.ingest.on_data("p1", b"".join(wire(7, s) for s in range(1, 5)))
        async with asyncio.timeout(GUARD_S):
            while not rig.acks():
                await asyncio.sleep(0.01)
        task.cancel()

    try:
        asyncio.run(main())
        assert [(a.node, a.floor) for a in rig.acks()] == [(7, 4)]
    finally:
        rig.close()


def test_a_full_group_does_not_hold_back_an_alarm(tmp_path: Path) -> None:
    """A port that keeps the group full blocks on room; an alarm from another port does not."""
    rig = Rig(tmp_path, commit_interval_ms=60_000, max_group=4)

    async def main() -> None:
        flood = asyncio.create_task(
            rig.ingest.on_data("p1", b"".join(wire(7, s) for s in range(1, 10))))
        await asyncio.sleep(0.1)
        assert not flood.done()                      # waiting for room: nobody commits
        async with asyncio.timeout(GUARD_S):
            await rig.ingest.on_data("p2", wire(8, 1, alarm=True))   # returns at once
        task = asyncio.create_task(rig.ingest.run())
        async with asyncio.timeout(GUARD_S):
            await flood
            while not any(a.node == 8 for a in rig.acks()):
                await asyncio.sleep(0.01)
        task.cancel()

    try:
        asyncio.run(main())
    finally:
        rig.close()


class Sink:
    """An AlarmSink with a fixed room that keeps what it is handed."""

    def __init__(self, room: tuple[int, int], early: bool = False) -> None:
        self.room = room
        self.handed: list[Record] = []
        self.published: list[asyncio.Future[None]] = []    # the test says when
        self.early = early                                  # accept publish_early
        self.early_sent: list[tuple[Record, asyncio.Future[bool]]] = []   # the test answers

    def alarm_room(self) -> tuple[int, int]:
        return self.room

    def publish_early(self, rec: Record) -> asyncio.Future[bool] | None:
        if not self.early:
            return None
        self.early_sent.append((rec, asyncio.get_running_loop().create_future()))
        return self.early_sent[-1][1]

    def hand_alarms(self, recs: list[Record]) -> asyncio.Future[None]:
        self.handed.extend(recs)
        self.published.append(asyncio.get_running_loop().create_future())
        return self.published[-1]


def test_committed_alarms_are_handed_to_the_batcher_in_flight(tmp_path: Path) -> None:
    """With room in the sink, a committed alarm goes to it already taken (in flight in the
    store, so no take hands it out again) and the batcher is not asked to look for it."""
    sink = Sink((10, 100_000))
    rig = Rig(tmp_path, commit_interval_ms=0, max_group=1000, alarms=sink)

    async def main() -> None:
        task = asyncio.create_task(rig.ingest.run())
        await rig.ingest.on_data("p1", wire(7, 1, alarm=True))
        async with asyncio.timeout(GUARD_S):
            while not rig.acks():
                await asyncio.sleep(0.01)
        assert [(r.node, r.seq, r.id > 0) for r in sink.handed] == [(7, 1, True)]
        assert await rig.call(rig.store.take, 100, 1 << 20) == []      # it is in flight
        sink.published[0].set_result(None)
        await rig.ingest.on_data("p1", wire(7, 2))
        async with asyncio.timeout(GUARD_S):
            while len(rig.notified) < 2:
                await asyncio.sleep(0.01)
        task.cancel()

    try:
        asyncio.run(main())
        assert rig.notified == [False, False]
    finally:
        rig.close()


def _early_rig(tmp_path: Path) -> tuple[Rig, Sink]:
    sink = Sink((10, 100_000), early=True)
    return Rig(tmp_path, commit_interval_ms=0, max_group=1000, alarms=sink), sink


async def _records(rig: Rig) -> int:
    stats = await rig.call(rig.store.stats, 0)
    return stats.records


@pytest.mark.parametrize("acked", [True, False], ids=["pubacked", "failed"])
def test_an_alarm_is_published_before_its_commit_then_settled(tmp_path: Path,
                                                               acked: bool) -> None:
    """publish_early comes as the alarm is verified, before any commit or ack. Once the
    broker acknowledged it, its stored copy is deleted, not published again; an early
    publish that got no PUBACK hands the committed copy to the batcher instead."""
    rig, sink = _early_rig(tmp_path)

    async def main() -> None:
        task = asyncio.create_task(rig.ingest.run())
        await rig.ingest.on_data("p1", wire(7, 1, alarm=True))
        assert [(r.seq, r.id) for r, _ in sink.early_sent] == [(1, 0)]   # not stored yet
        async with asyncio.timeout(GUARD_S):
            while not rig.acks():                     # committed and acked all the same
                await asyncio.sleep(0.01)
            assert await _records(rig) == 1           # stored, in flight until settled
            sink.early_sent[0][1].set_result(acked)   # the early publish's outcome
            while (await _records(rig)) if acked else not sink.handed:
                await asyncio.sleep(0.01)
        if acked:
            assert sink.handed == []
        else:
            assert [(r.seq, r.id > 0) for r in sink.handed] == [(1, True)]
            assert await _records(rig) == 1           # kept until that publish's PUBACK
        task.cancel()

    try:
        asyncio.run(main())
    finally:
        rig.close()


def test_no_room_leaves_alarms_to_the_batchers_take(tmp_path: Path) -> None:
    """A sink without room (backing off, allowance in use) is handed nothing; notify says
    an alarm waits, and the store hands it out on the next take."""
    sink = Sink((0, 0))
    rig = Rig(tmp_path, commit_interval_ms=0, max_group=1000, alarms=sink)

    async def main() -> None:
        task = asyncio.create_task(rig.ingest.run())
        await rig.ingest.on_data("p1", wire(7, 1, alarm=True))
        async with asyncio.timeout(GUARD_S):
            while not rig.notified:
                await asyncio.sleep(0.01)
        taken = await rig.call(rig.store.take, 100, 1 << 20)
        assert [(r.seq, r.priority) for r in taken] == [(1, 1)]
        task.cancel()

    try:
        asyncio.run(main())
        assert sink.handed == [] and rig.notified == [True]
    finally:
        rig.close()


def test_routine_input_waits_for_an_alarms_publish(tmp_path: Path) -> None:
    """Between an alarm's reading and its publish, routine input waits (the alarm gets the
    CPU first); it goes on when the alarm is published."""
    sink = Sink((10, 100_000))
    rig = Rig(tmp_path, commit_interval_ms=0, max_group=1000, alarms=sink,
              alarm_priority_s=GUARD_S * 10)

    async def main() -> None:
        task = asyncio.create_task(rig.ingest.run())
        await rig.ingest.on_data("p1", wire(7, 1, alarm=True))
        async with asyncio.timeout(GUARD_S):
            while not sink.published:
                await asyncio.sleep(0.01)
        flood = asyncio.create_task(rig.ingest.on_data("p2", wire(8, 1)))
        await asyncio.sleep(0.2)
        assert not flood.done()                       # waits for the alarm's publish
        sink.published[0].set_result(None)
        async with asyncio.timeout(GUARD_S):
            await flood
            while not any(a.node == 8 for a in rig.acks()):
                await asyncio.sleep(0.01)
        task.cancel()

    try:
        asyncio.run(main())
    finally:
        rig.close()


def test_routine_input_waits_for_an_unpublished_alarm_only_so_long(tmp_path: Path) -> None:
    """An alarm whose publish never ends (broker gone) holds routine input back by at most
    alarm_priority_s: floods are still committed and acked."""
    sink = Sink((10, 100_000))
    rig = Rig(tmp_path, commit_interval_ms=0, max_group=1000, alarms=sink,
              alarm_priority_s=0.05)

    async def main() -> None:
        task = asyncio.create_task(rig.ingest.run())
        await rig.ingest.on_data("p1", wire(7, 1, alarm=True))
        async with asyncio.timeout(GUARD_S):
            for s in range(1, 4):
                await rig.ingest.on_data("p2", wire(8, s))
            while not any(a.node == 8 and a.floor == 3 for a in rig.acks()):
                await asyncio.sleep(0.01)
        task.cancel()

    try:
        asyncio.run(main())
        assert not sink.published[0].done()
    finally:
        rig.close()
