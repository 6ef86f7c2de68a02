"""Tests of gateway/serial_link.py on real ptys: reading, unplug and reopen, bounded writes.

The test plays the node on the pty master; the link opens the slave path (or a symlink to it,
as /dev/serial/by-id/ is on a Pi). Each test runs its own event loop with asyncio.run. Waits
are bounded by a 10 s hang guard only; nothing asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import select
import tty
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from gateway.config import SerialPort
from gateway.serial_link import SerialLink, reopen_delay
from gateway.verify import Accepted, Verifier
from protocol import frame, messages
from protocol.errors import TAG

KEY = bytes(range(32))
NODE_ID = 1042
GUARD_S = 10.0  # hang guard for waits; never reached when the code works


class Pty:
    """A raw pty pair: the test writes as the node on `master`; `holder` keeps the slave alive."""

    def __init__(self) -> None:
        self.master, self.holder = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.holder)
        self.path = os.ttyname(self.holder)

    def close(self) -> None:
        for fd in (self.master, self.holder):
            with contextlib.suppress(OSError):
                os.close(fd)


def point(link_path: Path, target: str) -> None:
    """Atomically (re)points the symlink, as udev does for /dev/serial/by-id/."""
    tmp = link_path.with_suffix(".new")
    tmp.symlink_to(target)
    os.replace(tmp, link_path)


def read_exact(fd: int, n: int) -> bytes:
    """Reads n bytes from fd (in a worker thread), giving up after GUARD_S."""
    out = b""
    while len(out) < n:
        ready, _, _ = select.select([fd], [], [], GUARD_S)
        assert ready, f"only {len(out)} of {n} bytes arrived"
        out += os.read(fd, n - len(out))
    return out


async def until(pred: Callable[[], bool]) -> None:
    """Waits until pred() is true (hang guard GUARD_S)."""
    async with asyncio.timeout(GUARD_S):
        while not pred():
            await asyncio.sleep(0.005)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def flood(seq: int) -> messages.Flood:
    return messages.Flood(NODE_ID, 1, seq, 1_760_000_000 + seq, 120, 880, 2150, 0, 90)


class Sink:
    """on_data callback feeding a Verifier, keeping what it accepted."""

    def __init__(self) -> None:
        self.verifier = Verifier(frame.KeyRing({NODE_ID: KEY}))
        self.got: list[Accepted] = []

    async def __call__(self, port: str, data: bytes) -> None:
        self.got.extend(self.verifier.feed(port, data))

    def seqs(self) -> list[int]:
        return [a.seq for a in self.got]


def link_for(path: str, on_data: Any, **kw: Any) -> SerialLink:
    return SerialLink(SerialPort(path), 0.02, 0.1, on_data, rng=random.Random(1), **kw)


def test_reopen_delay_is_exponential_jittered_and_capped() -> None:
    """Delays lie in [base/2, base] with base doubling from min up to max, and vary."""
    rng = random.Random(42)
    delays = [reopen_delay(a, 0.5, 30.0, rng) for a in range(200)]
    for a, d in enumerate(delays):
        base = min(30.0, 0.5 * 2 ** min(a, 64))
        assert base / 2 <= d <= base
    capped = delays[10:]
    assert max(capped) <= 30.0 and len(set(capped)) == len(capped)  # jitter at the cap too
    assert reopen_delay(0, 0.5, 30.0, random.Random(42)) == delays[0]  # seeded: reproducible


def test_sealed_frames_arrive_as_accepted() -> None:
    """Frames written by the node side come out of link + Verifier as Accepted, in order."""
    pty = Pty()
    sink = Sink()

    async def main() -> None:
        async with link_for(pty.path, sink) as link:
            await link.wait_open()
            wire = b"".join(frame.seal(flood(s), KEY) for s in range(1, 21))
            for i in range(0, len(wire), 37):  # arbitrary chunking
                os.write(pty.master, wire[i:i + 37])
            await until(lambda: len(sink.got) == 20)
            assert link.stats.bytes_in == len(wire)
            assert link.stats.opens == 1 and link.stats.unplugs == 0
        assert sink.seqs() == list(range(1, 21))
        assert sink.got[0].port == pty.path

    try:
        run(main())
    finally:
        pty.close()


def test_queue_delivery_and_bad_frames_do_not_stop_the_link() -> None:
    """With a Queue as on_data, garbage and a forged frame are counted and data keeps flowing."""
    pty = Pty()

    async def main() -> None:
        queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        verifier = Verifier(frame.KeyRing({NODE_ID: KEY}))
        got: list[Accepted] = []
        async with link_for(pty.path, queue) as link:
            await link.wait_open()
            os.write(pty.master, b"\xff\xfe\x00" + frame.seal(flood(1), bytes(32))
                     + frame.seal(flood(2), KEY))
            while not got:
                async with asyncio.timeout(GUARD_S):
                    port, data = await queue.get()
                got.extend(verifier.feed(port, data))
        assert [a.seq for a in got] == [2]
        assert verifier.bad[TAG] == 1 and sum(verifier.bad.values()) == 2

    try:
        run(main())
    finally:
        pty.close()


def test_unplug_is_detected_and_the_link_reopens_by_itself(tmp_path: Path) -> None:
    """Closing the node side is an unplug; once the by-id link points at a new pty, data flows."""
    first = Pty()
    second: Pty | None = None
    by_id = tmp_path / "ttyNODE"
    point(by_id, first.path)
    sink = Sink()

    async def main() -> None:
        nonlocal second
        async with link_for(str(by_id), sink) as link:
            await link.wait_open()
            os.write(first.master, frame.seal(flood(1), KEY))
            await until(lambda: sink.seqs() == [1])
            by_id.unlink()  # unplug: udev removes the by-id link as the device vanishes
            first.close()
            await until(lambda: link.stats.unplugs == 1)
            await until(lambda: link.stats.open_failures >= 2)  # the old pty is gone: retrying
            assert not link.is_open
            second = Pty()
            point(by_id, second.path)  # the adapter is back, under a new device node
            await link.wait_open()
            os.write(second.master, frame.seal(flood(2), KEY))
            await until(lambda: sink.seqs() == [1, 2])
            assert link.stats.opens == 2 and link.stats.unplugs == 1

    try:
        run(main())
    finally:
        first.close()
        if second is not None:
            second.close()


def test_a_repointed_path_is_noticed_while_the_old_port_lives(tmp_path: Path) -> None:
    """A by-id link that now names another device counts as an unplug, even if the old fd works."""
    old, new = Pty(), Pty()
    by_id = tmp_path / "ttyNODE"
    point(by_id, old.path)
    sink = Sink()

    async def main() -> None:
        async with link_for(str(by_id), sink, probe_s=0.02) as link:
            await link.wait_open()
            point(by_id, new.path)
            await until(lambda: link.stats.opens == 2)
            os.write(new.master, frame.seal(flood(1), KEY))
            await until(lambda: sink.seqs() == [1])
            assert link.stats.unplugs == 1

    try:
        run(main())
    finally:
        old.close()
        new.close()


def test_writes_reach_the_node() -> None:
    """Frames given to write() arrive unchanged on the node side."""
    pty = Pty()

    async def main() -> None:
        async with link_for(pty.path, Sink()) as link:
            await link.wait_open()
            ack = frame.seal(messages.Ack(NODE_ID, 1, 1, 1, 5, 0), KEY)
            assert link.write(ack) and link.write(ack)
            got = await asyncio.to_thread(read_exact, pty.master, 2 * len(ack))
            assert got == ack + ack
            assert link.stats.bytes_out == 2 * len(ack) and link.stats.write_drops == 0

    try:
        run(main())
    finally:
        pty.close()


def test_writes_to_a_stalled_port_are_bounded_then_drain() -> None:
    """A node that stops reading fills the bounded buffer; further frames drop, nothing blocks."""
    pty = Pty()

    async def main() -> None:
        async with link_for(pty.path, Sink(), max_out_b=1024) as link:
            await link.wait_open()
            chunk = bytes(range(1, 50)) + b"\x00"
            kept = [link.write(chunk) for _ in range(8000)]  # 400 kB: beyond any pty buffer
            assert link.pending_out <= 1024
            assert link.stats.write_drops == kept.count(False) > 0
            sent = kept.count(True) * len(chunk)
            got = await asyncio.to_thread(read_exact, pty.master, sent)
            assert got == chunk * kept.count(True)  # whole frames only, in order
            await until(lambda: link.pending_out == 0)
            assert link.stats.bytes_out == sent

    try:
        run(main())
    finally:
        pty.close()


def test_writes_while_unplugged_are_dropped_and_counted(tmp_path: Path) -> None:
    """write() on a lost port returns False at once and counts the drop."""
    pty = Pty()
    by_id = tmp_path / "ttyNODE"
    point(by_id, pty.path)

    async def main() -> None:
        async with link_for(str(by_id), Sink()) as link:
            await link.wait_open()
            by_id.unlink()
            pty.close()
            await until(lambda: link.stats.unplugs == 1)
            assert link.write(b"\x01\x02\x00") is False
            assert link.write(b"\x01\x02\x00") is False
            assert link.stats.write_drops == 2 and link.stats.write_drop_bytes == 6

    run(main())


def test_a_port_held_by_another_link_is_not_shared() -> None:
    """The exclusive lock keeps a second opener out; it retries instead of stealing bytes."""
    pty = Pty()

    async def main() -> None:
        async with link_for(pty.path, Sink()) as first:
            await first.wait_open()
            async with link_for(pty.path, Sink()) as second:
                await until(lambda: second.stats.open_failures >= 2)
                assert second.stats.opens == 0 and not second.is_open

    try:
        run(main())
    finally:
        pty.close()
