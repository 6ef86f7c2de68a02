"""Tests of the broker fixtures themselves (gateway/tests/brokers.py, conftest.py).

Real brokers, real aiomqtt clients: a QoS 1 retained message reaches a live subscriber and a
late one on every broker kind; Mosquitto keeps retained and queued messages across a restart
on the same port; mutual TLS accepts the test CA's client and refuses the others; stop() and
kill() leave no process behind. One RabbitMQ test only: its start costs seconds.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import ssl
import subprocess
from pathlib import Path

import aiomqtt
import pytest

from gateway.tests import brokers
from gateway.tests.brokers import Broker, Capture, TlsInfo


async def _late_retained(broker: Broker, topic: str) -> aiomqtt.Message:
    """The message a subscriber arriving after the publish gets on ``topic``."""
    async with broker.client(identifier="late-subscriber") as client:
        await client.subscribe(topic, qos=1)
        async for message in client.messages:
            return message
    raise AssertionError("message iterator ended")


def _roundtrip(broker: Broker) -> None:
    """Publish QoS 1 retained; a live capture and a late subscriber both receive it."""
    topic = "roadside/test/gw-1/state"

    async def main() -> aiomqtt.Message:
        async with Capture(broker, "roadside/test/#") as live:
            async with broker.client(identifier="publisher") as pub:
                await pub.publish(topic, b"online", qos=1, retain=True)
            got = await live.wait_for_async(lambda cap: len(cap.messages) >= 1)
        assert [(m.topic, m.payload, m.qos) for m in got] == [(topic, b"online", 1)]
        return await asyncio.wait_for(_late_retained(broker, topic), 20)

    late = asyncio.run(main())
    assert (late.topic.value, late.payload, late.retain, late.qos) == (topic, b"online", True, 1)


def _gone(broker: Broker, pid: int, pgid: int) -> None:
    """No process of the broker is left and its port refuses connections."""
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert brokers.process_group(pgid) == []
    assert not broker.is_running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((broker.host, broker.port), timeout=2).close()


def test_mosquitto_roundtrip(mosquitto_broker: Broker) -> None:
    """Mosquitto delivers a QoS 1 retained message live and to a later subscriber."""
    _roundtrip(mosquitto_broker)


def test_nats_roundtrip(nats_broker: Broker) -> None:
    """NATS's MQTT listener delivers a QoS 1 retained message live and to a later subscriber."""
    _roundtrip(nats_broker)


def test_rabbitmq_roundtrip_and_stop(rabbitmq_broker: Broker) -> None:
    """RabbitMQ MQTT delivers QoS 1 retained messages; stop() leaves no process, epmd included."""
    _roundtrip(rabbitmq_broker)
    pid, pgid = rabbitmq_broker.pid, rabbitmq_broker.pgid
    assert pid is not None and pgid is not None and pgid != pid     # the private epmd leads
    assert len(brokers.process_group(pgid)) >= 2
    rabbitmq_broker.stop()
    _gone(rabbitmq_broker, pid, pgid)


def test_mosquitto_restart_keeps_retained_and_queued(mosquitto_broker: Broker) -> None:
    """After stop()/start() on the same port, retained and queued QoS 1 messages are there."""
    broker = mosquitto_broker
    port, first_pid = broker.port, broker.pid

    async def before() -> None:
        async with broker.client(identifier="sleeper", clean_session=False) as sleeper:
            await sleeper.subscribe("queue/#", qos=1)
        async with broker.client(identifier="publisher") as pub:
            await pub.publish("state/gw", b"retained", qos=1, retain=True)
            await pub.publish("queue/gw", b"queued while away", qos=1)

    async def after() -> tuple[aiomqtt.Message, aiomqtt.Message]:
        retained = await asyncio.wait_for(_late_retained(broker, "state/gw"), 20)
        async with broker.client(identifier="sleeper", clean_session=False) as sleeper:
            queued = await asyncio.wait_for(anext(aiter(sleeper.messages)), 20)
        return retained, queued

    asyncio.run(before())
    broker.stop()
    broker.start()
    assert (broker.port, broker.starts) == (port, 2) and broker.pid != first_pid
    retained, queued = asyncio.run(after())
    assert (retained.payload, retained.retain) == (b"retained", True)
    assert (queued.topic.value, queued.payload, queued.qos) == ("queue/gw", b"queued while away", 1)


def test_nats_restart_keeps_retained(nats_broker: Broker) -> None:
    """NATS keeps a retained MQTT message in JetStream across stop()/start()."""
    async def publish() -> None:
        async with nats_broker.client(identifier="publisher") as pub:
            await pub.publish("state/gw", b"retained", qos=1, retain=True)

    asyncio.run(publish())
    nats_broker.stop()
    nats_broker.start()
    message = asyncio.run(asyncio.wait_for(_late_retained(nats_broker, "state/gw"), 20))
    assert (message.payload, message.retain) == (b"retained", True)


def test_capture_spans_a_broker_restart(mosquitto_broker: Broker) -> None:
    """A sync Capture reconnects by itself and sees what is published after a restart."""
    async def publish(payload: bytes) -> None:
        async with mosquitto_broker.client() as pub:
            await pub.publish("data/gw", payload, qos=1)

    with Capture(mosquitto_broker, "data/#") as capture:
        asyncio.run(publish(b"before"))
        capture.wait_message(lambda m: m.payload == b"before")
        mosquitto_broker.stop()
        mosquitto_broker.start()
        capture.wait_for(lambda cap: cap.connects >= 2)
        asyncio.run(publish(b"after"))
        got = capture.wait_message(lambda m: m.payload == b"after")
    assert (got.topic, got.qos, got.retain) == ("data/gw", 1, False)
    assert {m.payload for m in capture.messages} == {b"before", b"after"}


def test_mosquitto_tls_accepts_trusted_client(mosquitto_tls: Broker) -> None:
    """Over mutual TLS a client with the test CA's certificate publishes and subscribes."""
    assert mosquitto_tls.tls is not None and mosquitto_tls.tls.client_cert is not None
    _roundtrip(mosquitto_tls)


def _tls_refusal(broker: Broker, tls: TlsInfo) -> str:
    """The TLS alert the broker answers ``tls``'s client certificate (or its absence) with."""
    # TLS 1.3: the client's handshake ends before the server judged its certificate; read
    # (before writing, so no reset hides it) the server's verdict.
    with socket.create_connection((broker.host, broker.port), timeout=5) as raw, \
            tls.ssl_context().wrap_socket(raw, server_hostname=broker.host) as sock, \
            pytest.raises(ssl.SSLError) as refused:
        sock.recv(1)
    return str(refused.value.reason)


def test_mosquitto_tls_refuses_missing_client_cert(mosquitto_tls: Broker) -> None:
    """Without a client certificate the TLS session is refused before any MQTT."""
    assert mosquitto_tls.pki is not None
    reason = _tls_refusal(mosquitto_tls, TlsInfo(mosquitto_tls.pki.ca))
    assert reason in {"TLSV13_ALERT_CERTIFICATE_REQUIRED",      # TLS 1.3
                      "SSLV3_ALERT_HANDSHAKE_FAILURE"}          # TLS 1.2


def test_mosquitto_tls_refuses_foreign_client_cert(mosquitto_tls: Broker) -> None:
    """A client certificate from an untrusted CA is refused as unknown CA before any MQTT."""
    pki = mosquitto_tls.pki
    assert pki is not None
    foreign = TlsInfo(pki.ca, pki.foreign_client.cert, pki.foreign_client.key)
    assert _tls_refusal(mosquitto_tls, foreign) == "TLSV1_ALERT_UNKNOWN_CA"


def test_mosquitto_users(tmp_path: Path) -> None:
    """With users, the right password gets CONNACK 0, a wrong one and anonymous are refused."""
    try:
        broker = brokers.mosquitto(tmp_path, users={"gateway": "s3cret", "other": "x"},
                                   start=False)
    except brokers.BrokerNotInstalledError as exc:
        pytest.skip(str(exc))

    def connack(username: str | None = None, password: str | None = None) -> int:
        return brokers.mqtt_connack(broker.host, broker.port, username=username,
                                    password=password)

    with broker:
        assert (broker.username, broker.password) == ("gateway", "s3cret")
        assert connack(username="gateway", password="s3cret") == 0
        assert connack(username="other", password="x") == 0
        assert connack(username="gateway", password="wrong") in {4, 5}
        assert connack() == 5


def test_password_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    """The Python fallback hash equals mosquitto_passwd's for the same salt."""
    tool = Path("/usr/bin/mosquitto_passwd")
    if not tool.exists():
        pytest.skip("mosquitto_passwd not found; install the Debian package 'mosquitto'")
    path = tmp_path / "passwords"
    subprocess.run([str(tool), "-c", "-b", str(path), "gw", "pa:ss wörd"], check=True,
                   capture_output=True)
    line = path.read_text().strip()
    salt = line.split("$")[3]
    assert line == "gw:" + brokers.mosquitto_password_hash("pa:ss wörd", base64.b64decode(salt))


def test_stop_leaves_no_process(mosquitto_broker: Broker) -> None:
    """stop() ends the broker: pid gone, process group empty, port closed."""
    pid, pgid = mosquitto_broker.pid, mosquitto_broker.pgid
    assert pid is not None and pgid == pid
    mosquitto_broker.stop()
    _gone(mosquitto_broker, pid, pgid)
    mosquitto_broker.stop()                     # idempotent


def test_kill_leaves_no_process_and_start_recovers(nats_broker: Broker) -> None:
    """kill() (SIGKILL) leaves no process; start() then serves MQTT on the same port again."""
    pid, pgid, port = nats_broker.pid, nats_broker.pgid, nats_broker.port
    assert pid is not None and pgid is not None
    nats_broker.kill()
    _gone(nats_broker, pid, pgid)
    nats_broker.start()
    assert nats_broker.port == port
    assert brokers.mqtt_connack(nats_broker.host, port) == 0


def test_start_failure_reports_the_log(tmp_path: Path) -> None:
    """A broker that cannot listen fails start() with its own log's reason in the error."""
    with socket.socket() as squatter:                 # bound, not listening: refuses fast
        squatter.bind(("127.0.0.1", 0))
        try:
            broker = brokers.mosquitto(tmp_path, port=squatter.getsockname()[1], start=False)
        except brokers.BrokerNotInstalledError as exc:
            pytest.skip(str(exc))
        with pytest.raises(brokers.BrokerError, match="Address already in use"):
            broker.start()
    assert not broker.is_running


def test_missing_binary_names_the_package() -> None:
    """A missing broker binary raises an error naming the Debian package to install."""
    with pytest.raises(brokers.BrokerNotInstalledError,
                       match=r"sudo apt-get install no-such-pkg \(or run `make sysdeps`\)"):
        brokers._find("no-such-broker-binary", "no-such-pkg")
