"""Pytest fixtures giving each test its own real MQTT broker (see gateway/tests/brokers.py).

Every fixture is function-scoped: a fresh process on free loopback ports with its files in the
test's ``tmp_path``, stopped (no process left) when the test ends, passed or failed. A missing
broker binary skips the test with the Debian package to install (``make sysdeps`` does it); a
broker that is installed but fails to start is an error carrying the tail of its log.

Cost: Mosquitto and nats-server start in about 0.05 s, RabbitMQ in about 7 s (Erlang boot),
so prefer ``mosquitto_broker`` unless the test is about another broker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.tests import brokers
from gateway.tests.brokers import Broker


@contextmanager
def _running(make: Callable[[], Broker]) -> Iterator[Broker]:
    try:
        broker = make()
    except brokers.BrokerNotInstalledError as exc:
        pytest.skip(str(exc))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mosquitto_broker(tmp_path: Path) -> Iterator[Broker]:
    """Mosquitto 2, plain MQTT, anonymous, with persistence (survives stop()/start())."""
    with _running(lambda: brokers.mosquitto(tmp_path)) as broker:
        yield broker


@pytest.fixture
def mosquitto_tls(tmp_path: Path) -> Iterator[Broker]:
    """Mosquitto 2 over TLS requiring a client certificate of ``broker.pki``'s CA.

    ``broker.tls`` holds the CA and the trusted client certificate (CN roadside-gateway,
    which becomes the MQTT username); ``broker.pki.foreign_client`` is one it refuses.
    """
    with _running(lambda: brokers.mosquitto(tmp_path, require_certificate=True,
                                            use_identity_as_username=True)) as broker:
        yield broker


@pytest.fixture
def nats_broker(tmp_path: Path) -> Iterator[Broker]:
    """nats-server with JetStream and its MQTT listener (QoS 0/1, retained, sessions)."""
    with _running(lambda: brokers.nats_mqtt(tmp_path)) as broker:
        yield broker


@pytest.fixture
def rabbitmq_broker(tmp_path: Path) -> Iterator[Broker]:
    """A private RabbitMQ node with the rabbitmq_mqtt plugin, anonymous MQTT as guest (~7 s)."""
    with _running(lambda: brokers.rabbitmq_mqtt(tmp_path)) as broker:
        yield broker
