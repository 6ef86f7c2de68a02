"""Fault injection around the real firmware, gateway and broker: zero loss by (node, boot,
seq) accounting and nothing corrupt accepted.

One board session (`fault_session.toml` at 20x) takes every fault in turn at named virtual
times: bit flips at 1e-3 on the line (seed recorded in faults.json and links/), unplug and
replug, a power cut mid-frame, a hung sensor read (the watchdog bites), gateway SIGKILL and
restart, a broker outage, a full disk (a file size quota under the gateway), and clock jumps
(the gateway's clock a day ahead under libfaketime and back; meanwhile time messages every
3 s step the node's clock, which runs 20x fast, back by about a minute each). At the end
the node must report an empty queue, and every seq of every boot must have reached MQTT.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.tests.gwproc import GatewayProcess
from hil_tests.rig.stack import Rig
from hil_tests.rig.uplinks import Uplink

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
GUARD_S = 90.0


def _sum(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == "roadside_gateway_" + name)


def _metric(gw: GatewayProcess, name: str) -> float:
    """A metric summed over its labels; 0 while the endpoint does not answer yet."""
    if gw.proc is None or gw.proc.poll() is not None:
        raise AssertionError(f"the gateway exited; log:\n{gw.log_tail()}")
    try:
        return _sum(gw.scrape(), name)
    except OSError:
        return 0.0


def _until(what: str, cond: Callable[[], bool], timeout_s: float = GUARD_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.005)


def _plausible(up: Uplink, h0_mm: float) -> bool:
    """A reading a wet road with 20-60 mm of water and 25-55 km/h traffic can give."""
    match up.kind:
        case "flood":
            return up.num("flags") != 0 or abs(h0_mm - 1000 * up.num("range") - 40) <= 30
        case "traffic":
            return 0 <= up.num("count") <= 20 and (
                "speed" not in up.fields or 4 <= up.num("speed") <= 20)
        case "health":
            return 0 <= up.num("queue") <= 5000 and up.num("dropped") == 0
        case _:
            return up.kind in ("hello", "alarm")


@pytest.mark.emulated
def test_every_fault_in_one_session_loses_nothing(rig: Rig, artifacts: Path) -> None:
    """Bit flips, unplug, power cut mid-frame, watchdog bite, gateway SIGKILL, broker outage,
    disk full and clock jumps: every (node, boot, seq) reaches MQTT, nothing corrupt does."""
    if not FAKETIME.exists():
        pytest.skip(f"{FAKETIME} not found; install the Debian package faketime: "
                    "sudo apt-get install faketime")
    seed = random.randrange(1 << 32)
    rig.time_scale = 20.0
    rig.seed = seed
    rig.gateway_extra = {"downlink": {"time_interval_s": 3}}
    n = rig.add_board(1, SCENARIOS / "fault_session.toml", dry_s=10, wet_s=10, health_s=30,
                      traffic_window_s=30)
    board, relay = n.board, n.relay
    assert board is not None and n.world is not None
    log: list[dict[str, object]] = []

    def note(event: str, **fields: object) -> None:
        assert board is not None
        log.append({"v_s": round(board.now_ms() / 1000, 1), "event": event, **fields})
        (artifacts / "faults.json").write_text(json.dumps({"seed": seed, "events": log},
                                                          indent=1))

    def at(v_s: float) -> None:
        assert board is not None
        board.wait_until_ms(v_s * 1000, timeout_s=GUARD_S)

    with rig:
        gw, broker = rig.gateway, rig.broker
        assert gw is not None and broker is not None
        note("start", seed=seed)
        rig.wait_uplinks("the first hello", lambda ups: any(u.kind == "hello" for u in ups))
        at(60)
        relay.flip_rate = 1e-3                              # 1 bit in 1000, both directions
        note("flips on", rate=1e-3, seed=seed)
        at(180)
        relay.flip_rate = 0.0
        counters = relay.counters()
        note("flips off", **counters)
        assert counters["node-gw.flips"] > 0, counters           # ~100 expected
        bad_frames = _sum(gw.scrape(), "frames_bad_total")
        relay.unplug()
        note("unplug")
        at(240)
        relay.plug()
        note("plug")
        cut = relay.truncate_next()                         # half a frame reaches the gateway
        _until("the node sends a frame", cut.is_set)
        board.powercut(off_s=5.0)                           # and the power dies mid-frame
        note("power cut mid-frame", fifo_lost_b=relay.drop_pending("node-gw"))
        board.wait_boots(2, timeout_s=GUARD_S)
        _until("a watchdog bite (ranger hangs at 300 s)",
               lambda: 3 in board.boots_by_cause, timeout_s=GUARD_S * 2)
        note("watchdog bite", boots=board.boots_by_cause)
        unplugs = _sum(gw.scrape(), "serial_unplugs_total")
        at(360)
        note("gateway SIGKILL", code=gw.stop(signal.SIGKILL))
        at(400)
        gw.start()
        note("gateway restarted")
        at(440)
        broker.stop()
        note("broker down")
        at(520)
        broker.start()
        note("broker up")
        at(560)
        broker.stop()
        gw.stop(signal.SIGTERM)
        db = sum(p.stat().st_size for p in gw.folder.glob("queue.sqlite3*"))
        quota = max(p.stat().st_size for p in gw.folder.glob("queue.sqlite3*")) + 8192
        # The quota holds for every file the gateway writes: its log starts afresh.
        gw.log_path.replace(gw.log_path.with_name("gateway.log.1"))
        gw.start(fsize_limit_b=quota)
        note("disk full", quota_b=quota, store_b=db)
        _until("a failed commit under the quota",
               lambda: _metric(gw, "commit_failures_total") >= 1)
        failures = _metric(gw, "commit_failures_total")
        note("commit failed", failures=failures)
        gw.stop(signal.SIGTERM)
        broker.start()
        gw.start()                                          # disk freed, service restarted
        note("disk freed")
        at(board.now_ms() / 1000 + 60)
        gw.stop(signal.SIGTERM)
        gw.start(env={"LD_PRELOAD": str(FAKETIME), "FAKETIME": "+1d",
                      "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
        note("gateway clock +1 day")
        at(board.now_ms() / 1000 + 80)
        gw.stop(signal.SIGTERM)
        gw.start()
        note("gateway clock back")
        at(board.now_ms() / 1000 + 60)
        last = rig.wait_drained(1, timeout_s=GUARD_S * 2)
        note("drained", boot=last.boot, seq=last.seq)
        acc = rig.account()
        ups = rig.uplinks(1)
        boots = board.boots
    note("accounted", summary=acc.summary())
    assert bad_frames > 0                                   # flipped frames were refused
    assert unplugs >= 1
    assert failures >= 1
    assert not acc.conflicts, f"seed {seed}: {acc.summary()}"
    assert not any(acc.missing.values()), f"seed {seed}: {acc.summary()}"
    causes = {b.cause for b in boots}
    assert {1, 3} <= causes, boots
    hellos = {u.boot for u in ups if u.kind == "hello"}
    assert hellos == {b.number for b in boots}, (hellos, boots)  # every boot reached MQTT
    implausible = [(u.kind, u.identity, dict(u.fields)) for u in ups
                   if not _plausible(u, n.world.scenario.site.h0_mm)]
    assert not implausible, implausible[:5]
    assert acc.frames >= 60, acc.summary()
