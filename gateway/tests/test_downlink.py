"""Tests of gateway/downlink.py on its own: a hand-driven clock, frames collected."""

from __future__ import annotations

import asyncio
import json

from gateway import config
from gateway.downlink import Downlink
from protocol import frame, link
from protocol import messages as m

KEY = bytes(range(32))
NODE = 7
PORT = "/dev/pts/9"


class Rig:
    """A downlink whose clock the test moves; every frame it writes is decoded."""

    def __init__(self) -> None:
        self.t = 100.0
        self.seq = 0
        self.written: list[m.Message] = []
        self.ring = frame.KeyRing({NODE: KEY})
        self.downlink = Downlink(config.Downlink(time_interval_s=0), self.ring, self._next,
                                 self._write, clock=lambda: self.t,
                                 quality=lambda: m.TIME_NTP)

    async def _next(self, node: int, boot: int) -> int:
        await asyncio.sleep(0)            # the store's seq is a thread call: others run
        self.seq += 1
        return self.seq

    def _write(self, port: str, data: bytes) -> bool:
        assert port == PORT
        self.written.append(frame.open_payload(link.unframe(data), self.ring, uplink=False))
        return True

    def configs(self) -> list[m.Config]:
        return [w for w in self.written if isinstance(w, m.Config)]


def _hello(seq: int, cfg_hash: bytes) -> m.Hello:
    return m.Hello(NODE, 1, seq, "test-1.0", "emulated", 1, cfg_hash, "")


def _flood(seq: int) -> m.Flood:
    return m.Flood(NODE, 1, seq, 1_790_000_000, 10, 2990, 2450, 0, 5)


def test_a_hello_read_before_the_push_does_not_confirm_it() -> None:
    """The ingest may commit (and so report) a hello after a config push although the
    node sent it before: only a hello read after the push is the node's answer."""
    async def main() -> Rig:
        r = Rig()
        dl = r.downlink
        await dl.heard(PORT, _flood(1))
        old_hello_at = dl.now()           # read now, committed after the push below
        r.t += 1.0
        await dl.set_config(NODE, json.dumps({"dry_s": 120}).encode())
        assert len(r.configs()) == 1
        r.t += 0.01
        await dl.heard(PORT, _hello(2, b"\x00" * 8), old_hello_at)
        r.t += 0.01
        await dl.heard(PORT, _hello(3, b"\x01" * 8), dl.now())    # the answer
        for seq in range(4, 8):
            r.t += 60.0                   # well past the retry interval
            await dl.heard(PORT, _flood(seq))
        return r

    r = asyncio.run(main())
    assert len(r.configs()) == 1, "pushed again: the confirmation was taken from the old hello"
    assert r.downlink.stats.config_confirmed == 1


def test_an_unanswered_push_is_retried_on_the_nodes_frames() -> None:
    """Without a hello after the push, the node's frames bring the push again after the
    retry interval, and a hello read after it confirms."""
    async def main() -> Rig:
        r = Rig()
        dl = r.downlink
        await dl.heard(PORT, _hello(1, b"\x00" * 8), dl.now())
        await dl.set_config(NODE, json.dumps({"dry_s": 120}).encode())
        r.t += 1.0
        await dl.heard(PORT, _flood(2))
        assert len(r.configs()) == 1      # not yet: the node may still be applying it
        r.t += 600.0
        await dl.heard(PORT, _flood(3))
        assert len(r.configs()) == 2
        r.t += 0.1
        await dl.heard(PORT, _hello(4, b"\x01" * 8), dl.now())
        r.t += 600.0
        await dl.heard(PORT, _flood(5))
        return r

    r = asyncio.run(main())
    assert len(r.configs()) == 2
    assert r.downlink.stats.config_confirmed == 1
