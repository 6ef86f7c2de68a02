"""End-to-end tests of roadside-gateway: real process, real ptys, real Mosquitto, real SQLite.

Each test starts its own broker on a free loopback port (conftest fixtures), its own
gateway process (`gwproc.GatewayProcess`) and nodes on ptys (`nodes.PtyNode`) that behave like
the firmware: a frame stays pending until an ack covers it and is retransmitted unchanged.
What reached MQTT is read by a subscriber and decoded with the independent SenML resolver
(`senml.decode_pack`); loss is checked by (node, boot, seq) accounting. Waits are bounded by
hang guards; nothing asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import senml
from gateway.service import StoreWorker, _cancel
from gateway.tests.brokers import Broker, Capture
from gateway.tests.gwproc import GatewayProcess
from gateway.tests.netcut import Relay
from gateway.tests.nodes import PtyNode
from protocol import frame
from protocol import messages as m

KEYS = {101: bytes(range(32)), 102: bytes(range(1, 33))}
T0 = 1_790_000_000
PREFIX = "roadside/v1/test-site/gw-test"


def groups(payloads: list[bytes]) -> list[dict[str, object]]:
    """Record groups of SenML packs (SPEC 14.2): one dict per message with node, type, ..."""
    out: list[dict[str, object]] = []
    for payload in payloads:
        for rec in senml.decode_pack(payload):
            name = str(rec["n"])
            node_s, _, field = name.removeprefix(senml.NAME_PREFIX).partition(":")
            value = next((rec[k] for k in ("v", "vs", "vb", "vd") if k in rec), None)
            if field == "type":
                out.append({"node": int(node_s), "type": value, "t": rec["t"]})
            else:
                out[-1][field] = value
    return out


def identities(cap: Capture, *topics: str) -> list[tuple[int, int, int]]:
    payloads = [msg.payload for msg in cap.messages if msg.topic.rsplit("/", 1)[-1] in topics]
    return [(int(str(g["node"])), int(str(g["boot"])), int(str(g["seq"])))
            for g in groups(payloads)]


def expected(*nodes: PtyNode) -> set[tuple[int, int, int]]:
    return {(msg.node, msg.boot, msg.seq) for n in nodes for msg in n.sent}


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[PtyNode, PtyNode]]:
    with PtyNode(tmp_path, 101, KEYS[101]) as a, PtyNode(tmp_path, 102, KEYS[102]) as b:
        yield a, b


def gateway(tmp_path: Path, broker: Broker | Relay, nodes: tuple[PtyNode, ...],
            tls: dict[str, object] | None = None,
            **extra: dict[str, object]) -> GatewayProcess:
    """The gateway for these nodes, talking to the broker (or through a relay to it)."""
    return GatewayProcess(tmp_path / "gw", broker_host=broker.host, broker_port=broker.port,
                          ports=[str(n.path) for n in nodes], keys=KEYS, extra=extra, tls=tls)


def happy_path(tmp_path: Path, broker: Broker, pair: tuple[PtyNode, PtyNode],
               tls: dict[str, object] | None = None, frames: int = 20) -> None:
    """Hello, floods and an alarm from two nodes arrive once each; the gateway stops cleanly."""
    a, b = pair
    with Capture(broker, PREFIX + "/#") as cap, gateway(tmp_path, broker, pair, tls) as gw:
        gw.start()
        for n in pair:
            n.hello()
        for i in range(frames):
            a.flood(T0 + i, 10 * i)
            b.flood(T0 + i, 5 * i)
        a.alarm(T0 + frames)
        for n in pair:
            n.wait_acked()
        want = expected(a, b)
        cap.wait_for(lambda c: set(identities(c, "data", "alarm")) >= want)
        assert set(identities(cap, "data", "alarm")) == want
        assert gw.stop() == 0


def test_happy_path_from_ptys_to_senml(tmp_path: Path, mosquitto_broker: Broker,
                                       pair: tuple[PtyNode, PtyNode]) -> None:
    """Frames of two nodes reach MQTT once each as SenML, acked, with state and status."""
    a, b = pair
    with Capture(mosquitto_broker, PREFIX + "/#") as cap, \
            gateway(tmp_path, mosquitto_broker, pair) as gw:
        gw.start()
        for n in pair:
            n.hello()
        for i in range(50):
            a.flood(T0 + i, 10 * i)
            b.flood(T0 + i, 5 * i)
        a.alarm(T0 + 50)
        for n in pair:
            n.wait_acked()
        want = expected(a, b)
        cap.wait_for(lambda c: set(identities(c, "data", "alarm")) >= want)
        got = identities(cap, "data", "alarm")
        assert sorted(got) == sorted(want)                    # every frame exactly once
        alarms = groups([msg.payload for msg in cap.messages if msg.topic.endswith("/alarm")])
        assert {(g["type"], g["node"]) for g in alarms} == {("alarm", 101), ("hello", 101),
                                                            ("hello", 102)}
        floods = sorted((g for g in groups([msg.payload for msg in cap.messages
                                            if msg.topic.endswith("/data")])
                         if g["node"] == 101), key=lambda g: int(str(g["seq"])))
        assert [round(float(str(g["depth"])) * 1000) for g in floods] == [10 * i
                                                                          for i in range(50)]
        assert a.times and b.times                            # hello answered with time
        cap.wait_for(lambda c: any(msg.topic == f"{PREFIX}/node/101/status" for msg in
                                   c.messages))
        state = [json.loads(msg.payload) for msg in cap.messages
                 if msg.topic == PREFIX + "/state"]
        assert state[-1]["state"] == "online"
        status = json.loads(next(msg.payload for msg in cap.messages
                                 if msg.topic == f"{PREFIX}/node/101/status"))
        assert status["hello"]["fw"] == "test-1.0"
        assert gw.metric("frames_accepted_total") == len(want)
        assert gw.metric("records_published_total") == len(want)
        assert gw.metric("queue_records", priority="routine") == 0
        assert gw.stop() == 0
        assert "STOPPING=1" in "".join(gw.notices)
        cap.wait_for(lambda c: json.loads(
            [msg.payload for msg in c.messages if msg.topic == PREFIX + "/state"][-1]
        )["state"] == "offline")
        last = json.loads([msg.payload for msg in cap.messages
                           if msg.topic == PREFIX + "/state"][-1])
        assert "since_ms" in last and "will" not in last      # a clean stop, not the will


def test_garbage_forged_and_replayed_frames_are_counted(
        tmp_path: Path, mosquitto_broker: Broker, pair: tuple[PtyNode, PtyNode]) -> None:
    """Noise, bad CRCs, forged tags and replays are refused by reason; none reaches MQTT."""
    a, b = pair
    with Capture(mosquitto_broker, PREFIX + "/#") as cap, \
            gateway(tmp_path, mosquitto_broker, pair) as gw:
        gw.start()
        good = a.flood(T0, 100)
        a.wait_acked()                                        # the port is open
        a.write(bytes(range(1, 200)) + b"\x00")               # line noise
        flipped = a.next(m.Flood, T0 + 1, 666, 2334, 2450, 0, 5)
        a.send(flipped, corrupt=lambda w: w[:5] + bytes([w[5] ^ 0x40]) + w[6:])  # CRC/COBS
        forger = PtyNode(tmp_path, 101, KEYS[102], name="forger-unused")
        forged = m.Flood(101, 1, 2, T0 + 2, 777, 2223, 2450, 0, 5)
        a.write(forger._sealer.seal(forged))                  # wrong key for node 101
        forger.close()
        a.write(a._sealer.seal(good))                         # a replay of seq 1
        b.write(frame_for_unknown_node())
        real = a.flood(T0 + 3, 300)
        a.wait_acked()
        cap.wait_for(lambda c: (101, 1, real.seq) in identities(c, "data", "alarm"))
        got = identities(cap, "data", "alarm")
        assert sorted(got) == [(101, 1, good.seq), (101, 1, real.seq)]
        bad = {k[1][0][1]: v for k, v in gw.scrape().items()
               if k[0] == "roadside_gateway_frames_bad_total"}
        assert bad.get("tag", 0) >= 1
        assert bad.get("replay", 0) >= 1
        assert bad.get("node", 0) >= 1
        assert sum(bad.values()) >= 5
        assert gw.stop() == 0


def frame_for_unknown_node() -> bytes:
    return frame.seal(m.Flood(999, 1, 1, T0, 1, 1, 2450, 0, 5), bytes(32))


def test_unplug_and_replug_resumes(tmp_path: Path, mosquitto_broker: Broker,
                                   pair: tuple[PtyNode, PtyNode]) -> None:
    """A pulled adapter is noticed; after replug the link resumes and nothing is lost."""
    a, b = pair
    with Capture(mosquitto_broker, PREFIX + "/#") as cap, \
            gateway(tmp_path, mosquitto_broker, pair) as gw:
        gw.start()
        for i in range(10):
            a.flood(T0 + i, i)
        a.wait_acked()
        a.unplug()
        for i in range(10, 20):
            a.flood(T0 + i, i)                                # written into the void
        b.flood(T0, 1)
        b.wait_acked()                                        # the other port is unaffected
        a.plug()
        a.wait_acked()                                        # retransmitted after replug
        want = expected(a, b)
        cap.wait_for(lambda c: set(identities(c, "data", "alarm")) >= want)
        assert gw.metric("serial_unplugs_total", port=str(a.path)) >= 1
        assert gw.stop() == 0


def test_sigkill_mid_stream_loses_nothing(tmp_path: Path, mosquitto_broker: Broker,
                                          pair: tuple[PtyNode, PtyNode]) -> None:
    """SIGKILL while frames flow: after a restart every frame arrives, duplicates identical."""
    a, b = pair
    with Capture(mosquitto_broker, PREFIX + "/#") as cap, \
            gateway(tmp_path, mosquitto_broker, pair) as gw:
        gw.start()

        def send() -> None:
            for i in range(300):
                a.flood(T0 + i, i % 400)
                b.flood(T0 + i, i % 300)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        deadline = time.monotonic() + 30
        while gw.metric("records_stored_total") < 150:
            assert time.monotonic() < deadline, gw.log_tail()
        gw.stop(signal.SIGKILL)                               # while frames flow
        gw.start()
        sender.join(timeout=60)
        assert not sender.is_alive()
        for n in pair:
            n.wait_acked()
        want = expected(a, b)
        cap.wait_for(lambda c: set(identities(c, "data", "alarm")) >= want)
        got = identities(cap, "data", "alarm")
        assert set(got) == want
        dups = Counter(got)
        payload_of: dict[tuple[int, int, int], dict[str, object]] = {}
        for g in groups([msg.payload for msg in cap.messages
                         if msg.topic.endswith(("/data", "/alarm"))]):
            ident = (int(str(g["node"])), int(str(g["boot"])), int(str(g["seq"])))
            if ident in payload_of:
                assert payload_of[ident] == g                 # a duplicate is the same record
            payload_of[ident] = g
        assert sum(dups.values()) - len(dups) == len(got) - len(set(got))
        assert gw.stop() == 0


def test_broker_down_30_s_under_load(tmp_path: Path, mosquitto_broker: Broker,
                                     pair: tuple[PtyNode, PtyNode]) -> None:
    """The broker stops for 30 s while nodes keep sending; afterwards everything arrives."""
    a, b = pair
    with Capture(mosquitto_broker, PREFIX + "/#") as cap, \
            gateway(tmp_path, mosquitto_broker, pair) as gw:
        gw.start()
        for i in range(20):
            a.flood(T0 + i, i)
        a.wait_acked()
        cap.wait_for(lambda c: len(identities(c, "data")) >= 20)
        mosquitto_broker.stop()
        end = time.monotonic() + 30
        i = 20
        while time.monotonic() < end:
            a.flood(T0 + i, i % 400)
            b.flood(T0 + i, i % 300)
            if i % 50 == 0:
                a.alarm(T0 + i)
            i += 1
            time.sleep(0.01)
        for n in pair:
            n.wait_acked()                                    # stored, so acked, while down
        assert gw.metric("mqtt_connected") == 0
        mosquitto_broker.start()
        want = expected(a, b)
        cap.wait_for(lambda c: set(identities(c, "data", "alarm")) >= want, timeout=120)
        assert gw.metric("mqtt_disconnects_total") >= 1
        assert gw.stop() == 0


def test_tls_with_client_certificate(tmp_path: Path, mosquitto_tls: Broker,
                                     pair: tuple[PtyNode, PtyNode]) -> None:
    """Against a Mosquitto that requires client certificates, the happy path holds."""
    tls = mosquitto_tls.tls
    assert tls is not None and tls.client_cert is not None and tls.client_key is not None
    happy_path(tmp_path, mosquitto_tls, pair, {
        "tls": True, "ca_file": str(tls.ca), "cert_file": str(tls.client_cert),
        "key_file": str(tls.client_key)})


def test_tls_refused_certificate_is_retried_and_named(
        tmp_path: Path, mosquitto_tls: Broker, pair: tuple[PtyNode, PtyNode]) -> None:
    """A client certificate of a foreign CA: no connection, frames kept, the log says why."""
    a, _ = pair
    tls = mosquitto_tls.tls
    pki = mosquitto_tls.pki
    assert tls is not None and pki is not None
    foreign = pki.foreign_client
    with gateway(tmp_path, mosquitto_tls, pair, {
            "tls": True, "ca_file": str(tls.ca), "cert_file": str(foreign.cert),
            "key_file": str(foreign.key)}) as gw:
        gw.start()
        a.flood(T0, 1)
        a.wait_acked()                                        # stored, so acked
        deadline = time.monotonic() + 60
        while gw.metric("mqtt_connect_failures_total") < 1:
            assert time.monotonic() < deadline, gw.log_tail()
            time.sleep(0.2)
        assert gw.metric("queue_records", priority="routine") == 1
        assert "cannot connect" in gw.log_tail(200)
        assert gw.stop() == 0


def test_nats_with_mqtt(tmp_path: Path, nats_broker: Broker,
                        pair: tuple[PtyNode, PtyNode]) -> None:
    """The happy path against nats-server's MQTT listener."""
    happy_path(tmp_path, nats_broker, pair)


def test_rabbitmq_with_mqtt_plugin(tmp_path: Path, rabbitmq_broker: Broker,
                                   pair: tuple[PtyNode, PtyNode]) -> None:
    """The happy path against RabbitMQ's MQTT plugin."""
    happy_path(tmp_path, rabbitmq_broker, pair)


def test_config_from_retained_topic_is_pushed_once(
        tmp_path: Path, mosquitto_broker: Broker, pair: tuple[PtyNode, PtyNode]) -> None:
    """A retained config reaches the node; its next hello confirms it and stops the pushes."""
    a, _ = pair
    topic = f"{PREFIX}/node/101/config"
    with Capture(mosquitto_broker, PREFIX + "/#") as cap, \
            gateway(tmp_path, mosquitto_broker, pair) as gw:
        cap.publish(topic, b"not json", retain=True)
        gw.start()
        a.hello()
        a.wait_acked()
        cap.publish(topic, json.dumps({"dry_s": 120, "levels_mm": [50, 150]}).encode(),
                    retain=True)
        a.wait_for(lambda n: len(n.configs) >= 1)
        assert a.configs[-1].cfg == {1: 120, 4: [50, 150]}
        a.hello(cfg_hash=b"\x01" * 8)                         # applied: a hello follows
        for i in range(5):
            a.flood(T0 + i, i)
        a.wait_acked()
        assert len(a.configs) == 1, gw.log_tail()             # confirmed: not pushed again
        assert gw.metric("config_refused_total") == 1         # the "not json" payload
        a.reboot()
        a.hello(cfg_hash=b"\x02" * 8)                         # reset to other values
        a.wait_acked()
        a.wait_for(lambda n: len(n.configs) >= 2)             # pushed again
        assert gw.stop() == 0


def test_store_bound_thins_counts_and_reports_gaps(
        tmp_path: Path, mosquitto_broker: Broker, pair: tuple[PtyNode, PtyNode]) -> None:
    """Over store.max_bytes while the uplink is down: drops counted, gap reports published,
    and every frame either published or named in a gap report."""
    a, _ = pair
    with Capture(mosquitto_broker, PREFIX + "/#") as cap, \
            Relay(mosquitto_broker.host, mosquitto_broker.port) as relay, \
            gateway(tmp_path, relay, pair,
                    store={"max_bytes": 1024 * 1024, "commit_interval_ms": 50}) as gw:
        relay.cut()
        gw.start()
        a.hello()
        for i in range(12_000):
            a.flood(T0 + i, i % 500)
            if i % 1000 == 999:
                a.wait_acked()
        a.wait_acked()
        dropped = sum(v for k, v in gw.scrape().items()
                      if k[0] == "roadside_gateway_records_dropped_total")
        assert dropped > 0
        relay.restore()
        want = expected(a)

        def accounted(c: Capture) -> bool:
            got = set(identities(c, "data", "alarm"))
            gaps = groups([msg.payload for msg in c.messages if msg.topic.endswith("/gaps")])
            return got | {(101, 1, q) for g in gaps for q in _seqs(str(g["ranges"]))} >= want

        cap.wait_for(accounted, timeout=60)
        got = set(identities(cap, "data", "alarm"))
        gaps = groups([msg.payload for msg in cap.messages if msg.topic.endswith("/gaps")])
        missing = {(101, 1, seq) for g in gaps for seq in _seqs(str(g["ranges"]))}
        assert got | missing == want                          # every frame: published or reported
        assert not got & missing
        assert sum(int(float(str(g["dropped"]))) for g in gaps) == dropped
        assert (101, 1, 1) in got                             # the hello (an alarm) was kept
        assert gw.stop() == 0


def _seqs(ranges: str) -> list[int]:
    out: list[int] = []
    for part in ranges.split(","):
        lo, _, hi = part.partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return out


def test_disk_full_keeps_running_and_recovers(
        tmp_path: Path, mosquitto_broker: Broker, pair: tuple[PtyNode, PtyNode]) -> None:
    """A file size quota hit while the uplink is down: commits fail (counted), frames are not
    acked so the nodes keep them; once the uplink is back the store drains, commits succeed
    again in the same process and every frame arrives."""
    a, _ = pair
    with Capture(mosquitto_broker, PREFIX + "/#") as cap, \
            Relay(mosquitto_broker.host, mosquitto_broker.port) as relay, \
            gateway(tmp_path, relay, pair, gateway={"log_level": "info"}) as gw:
        relay.cut()
        gw.start(fsize_limit_b=400 * 1024)
        # The node sends 6000 readings; once the quota stops the acks its window fills and
        # it waits (retransmitting), as the firmware does, until the gateway acks again.
        sender = threading.Thread(target=lambda: [a.flood(T0 + i, i % 500)
                                                  for i in range(6000)], daemon=True)
        sender.start()
        deadline = time.monotonic() + 60
        # RLIMIT_FSIZE gives EFBIG, which SQLite reports as an I/O error (cause "error");
        # ENOSPC on a full disk is SQLITE_FULL (cause "full"). The service treats both alike.
        while gw.metric("commit_failures_total", cause="error") < 1:
            assert time.monotonic() < deadline, gw.log_tail()
            time.sleep(0.5)
        assert a.pending                                      # not acked: the node keeps them
        assert gw.metric("mqtt_connected") == 0
        relay.restore()
        sender.join(timeout=120)
        assert not sender.is_alive()
        a.wait_acked(timeout_s=120)
        want = expected(a)
        cap.wait_for(lambda c: set(identities(c, "data", "alarm")) >= want, timeout=120)
        assert gw.proc is not None and gw.proc.poll() is None
        assert gw.stop() == 0


def test_systemd_notifications_and_watchdog(tmp_path: Path, mosquitto_broker: Broker,
                                            pair: tuple[PtyNode, PtyNode]) -> None:
    """Under WATCHDOG_USEC the gateway pings from its event loop; READY, STATUS, STOPPING."""
    with gateway(tmp_path, mosquitto_broker, pair) as gw:
        gw.start(env={"WATCHDOG_USEC": "400000"})
        pings = gw.wait_notice("WATCHDOG=1")
        assert pings
        assert any("STATUS=" in n and "ports open" in n for n in gw.notices)
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGSTOP)                   # a hung process stops pinging
        time.sleep(0.5)
        gw.drain()                                            # pings sent before the stop
        gw.notices.clear()
        with pytest.raises(TimeoutError):
            gw.wait_notice("WATCHDOG=1", timeout_s=1.0)
        gw.proc.send_signal(signal.SIGCONT)
        gw.wait_notice("WATCHDOG=1")
        assert gw.stop() == 0
        assert any("STOPPING=1" in n for n in gw.notices)


def test_store_worker_runs_urgent_calls_before_queued_ones() -> None:
    """An urgent call waits for the running call only, not for the ordinary calls queued."""
    worker = StoreWorker()
    order: list[str] = []
    gate = threading.Event()

    def slow() -> None:
        gate.wait(10)
        order.append("slow")

    async def main() -> None:
        first = asyncio.ensure_future(worker.call(slow))
        await asyncio.sleep(0.05)                     # the thread is inside slow()
        queued = [asyncio.ensure_future(worker.call(order.append, f"b{i}")) for i in range(3)]
        urgent = asyncio.ensure_future(worker.call(order.append, "alarm", urgent=True))
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(first, *queued, urgent)
        with pytest.raises(ZeroDivisionError):
            await worker.call(lambda: 1 // 0)         # errors reach the caller

    try:
        asyncio.run(main())
    finally:
        worker.close()
    assert order == ["slow", "alarm", "b0", "b1", "b2"]


def test_a_stage_that_drops_its_cancel_is_cancelled_again() -> None:
    """Stopping survives a task that swallows its first cancel (as 3.11's wait_for can)."""
    survived: list[int] = []

    async def stubborn() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            survived.append(1)                       # dropped, as the wait_for bug does
            task = asyncio.current_task()
            assert task is not None
            task.uncancel()
        await asyncio.sleep(60)

    async def main() -> None:
        task = asyncio.create_task(stubborn(), name="gateway.stubborn")
        await asyncio.sleep(0.01)
        async with asyncio.timeout(10):               # a hang guard, not a timing assertion
            await _cancel([task], again_s=0.05)
        assert task.cancelled()

    asyncio.run(main())
    assert survived == [1]
