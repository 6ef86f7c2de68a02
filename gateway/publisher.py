"""Publisher stage: the one MQTT connection of the gateway (aiomqtt), kept up for ever.

`Publisher.run()` is a long-running task (`TASK_NAME`): connect, announce, serve, and when the
connection breaks wait a capped, jittered exponential delay (`backoff.delay`, from
``mqtt.reconnect_min_s`` doubling to ``mqtt.reconnect_max_s``; the first successful connect
resets it) and connect again. Each connect:

1. registers the last will: ``.../state`` retained, ``offline`` with ``"will": true``
   (SPEC 14.5), which the broker publishes when the gateway vanishes without a goodbye;
2. publishes ``online`` to ``.../state``, retained, QoS 1;
3. subscribes to ``.../node/+/config`` (QoS 1); every config message, retained ones included,
   goes to ``on_config(node, payload)``;
4. calls ``on_connect()`` (the wiring republishes the retained node statuses: a broker that
   lost its state gets it back; aiomqtt 2 leaves subscriptions and availability to us).

`publish()` is what the batcher, gap and status loops call. It waits while there is no
connection (the batcher bounds how many wait: its in-flight allowance), then publishes and
waits for the broker's acknowledgement (PUBACK for QoS 1). It returns True only then. It
returns False when the connection broke before the acknowledgement or ``publish_timeout_s``
passed: the caller gives the records back to the store and they are published again, so a
record is deleted only after its own PUBACK. A publish cut off by a broken connection is
abandoned at once (not after the timeout): each connection has a ``lost`` event that every
pending publish races against.

TLS: ``mqtt.tls`` builds an `ssl.SSLContext` that verifies the broker against ``ca_file`` (or
the system CAs) and its host name, and presents ``cert_file``/``key_file`` when configured
(mutual TLS). ``username`` and the first line of ``password_file`` go in CONNECT.

`close()` ends a clean stop: ``offline`` with ``since_ms`` to ``.../state`` (retained), then
DISCONNECT, which tells the broker not to send the will.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiomqtt

from gateway import backoff, config, fastpath, senml, topics
from gateway.batcher import Batch
from gateway.errors import ConfigError

log = logging.getLogger(__name__)

TASK_NAME = "gateway.publisher"
PUBLISH_TIMEOUT_S = 30.0     # PUBACK wait before a batch is given back
CONNECT_TIMEOUT_S = 10.0     # CONNECT to CONNACK (a refused client certificate ends here)
CLOSE_TIMEOUT_S = 5.0        # the offline state at a clean stop

OnConfig = Callable[[int, bytes], None]
OnConnect = Callable[[], Awaitable[None]]
OnPublished = Callable[[float, "Batch", int], None]   # latency s, batch, PUBACK utc ms


def utc_ms() -> int:
    return time.time_ns() // 1_000_000


def tls_context(cfg: config.Mqtt) -> ssl.SSLContext | None:
    """The TLS context of config ``[mqtt]``, or None without TLS; ConfigError names the fix."""
    if not cfg.tls:
        return None
    try:
        ctx = ssl.create_default_context(
            cafile=str(cfg.ca_file) if cfg.ca_file is not None else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"mqtt.ca_file: cannot load {cfg.ca_file} ({exc}); give the PEM "
                          'file of the CA that signed the broker\'s certificate, or "" for '
                          "the system CAs") from exc
    if cfg.cert_file is not None:
        try:
            ctx.load_cert_chain(str(cfg.cert_file),
                                str(cfg.key_file) if cfg.key_file is not None else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"mqtt.cert_file: cannot load {cfg.cert_file} with key "
                              f"{cfg.key_file} ({exc}); both must be PEM and belong "
                              "together (the key unencrypted)") from exc
    return ctx


def read_password(path: Path | None) -> str | None:
    """First line of the password file, or None; ConfigError names the fix."""
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").splitlines()[0] if path.stat().st_size else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"mqtt.password_file: cannot read {path} ({exc}); put the password "
                          "on its first line, readable by the gateway's user (chmod 600)"
                          ) from exc


def batch_payload(batch: Batch) -> bytes:
    """The SenML CBOR pack of a batch (records are authenticated messages as stored)."""
    return senml.encode_pack(_uplinks(batch))


def _uplinks(batch: Batch) -> list[senml.Uplink]:
    # A stored payload is the authenticated CBOR message (verify.Accepted.body).
    return [senml.Uplink(r.received_ms, fastpath.decode_stored(r.payload))
            for r in batch.records]


@dataclass
class PublisherStats:
    """Counters since start, for metrics and the systemd status line."""

    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0         # an established connection that broke
    published: int = 0           # publishes acknowledged by the broker
    failed: int = 0              # publishes not acknowledged (connection lost, timeout)
    config_messages: int = 0
    last_error: str = ""


class Publisher:
    """The gateway's MQTT connection (see the module documentation)."""

    def __init__(self, cfg: config.Config, tops: topics.Topics, *,
                 on_config: OnConfig | None = None, on_connect: OnConnect | None = None,
                 on_published: OnPublished | None = None,
                 publish_timeout_s: float = PUBLISH_TIMEOUT_S,
                 rand: Callable[[], float] = random.random,
                 now_ms: Callable[[], int] = utc_ms) -> None:
        self.cfg = cfg
        self.topics = tops
        self.stats = PublisherStats()
        self._on_config = on_config
        self._on_connect = on_connect
        self._on_published = on_published
        self._timeout_s = publish_timeout_s
        self._rand = rand
        self._now_ms = now_ms
        self._tls = tls_context(cfg.mqtt)
        self._password = read_password(cfg.mqtt.password_file)
        self._client: aiomqtt.Client | None = None
        self._lost = asyncio.Event()
        self._up = asyncio.Event()
        self._closing = False

    def set_on_published(self, fn: OnPublished | None) -> None:
        """Called after each acknowledged batch (the metrics' latency histograms)."""
        self._on_published = fn

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def wait_connected(self) -> None:
        await self._up.wait()

    # -- the connection task ---------------------------------------------------------------

    def _make_client(self) -> aiomqtt.Client:
        m = self.cfg.mqtt
        will = aiomqtt.Will(self.topics.state,
                            topics.will_payload(self.topics, self.cfg.gateway.site_name),
                            qos=1, retain=True)
        return aiomqtt.Client(
            m.host, m.port, identifier=self.cfg.client_id, keepalive=m.keepalive_s,
            username=m.username, password=self._password, tls_context=self._tls, will=will,
            timeout=CONNECT_TIMEOUT_S, clean_session=True,
            max_inflight_messages=64,
        )

    async def run(self) -> None:
        """Connects and reconnects until cancelled."""
        attempt = 0
        m = self.cfg.mqtt
        while True:
            client = self._make_client()
            established = False
            try:
                async with client:
                    established = True
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # A cancel that arrived while aiomqtt disconnected can surface as its
                    # MqttError: stopping must still stop, not reconnect.
                    raise asyncio.CancelledError from exc
                self.stats.last_error = str(exc)
                if established:
                    self.stats.disconnects += 1
                    log.warning("mqtt %s:%d: connection lost (%s); reconnecting", m.host,
                                m.port, exc)
                else:
                    self.stats.connect_failures += 1
                    hint = ""
                    if "timed out" in str(exc) and m.cert_file is not None:
                        hint = (" (a broker that refuses the client certificate looks like "
                                "this: check mqtt.cert_file against the broker's CA)")
                    log.log(logging.WARNING if attempt == 0 else logging.DEBUG,
                            "mqtt %s:%d: cannot connect (%s)%s; retrying, at most every "
                            "%.0f s", m.host, m.port, exc, hint, m.reconnect_max_s)
            finally:
                self._down()
            if established:
                attempt = 0
            await asyncio.sleep(backoff.delay(attempt, m.reconnect_min_s, m.reconnect_max_s,
                                              self._rand()))
            attempt += 1

    async def _serve(self, client: aiomqtt.Client) -> None:
        m = self.cfg.mqtt
        _raise_if_cancelling()
        await client.publish(self.topics.state, self._state(online=True), qos=1, retain=True)
        await client.subscribe(self.topics.config_filter, qos=1)
        _raise_if_cancelling()
        self.stats.connects += 1
        log.info("mqtt %s:%d: connected as %s%s", m.host, m.port, self.cfg.client_id,
                 " (TLS)" if self._tls is not None else "")
        self._lost = asyncio.Event()
        self._client = client
        self._up.set()
        if self._on_connect is not None:
            await self._on_connect()
        async for msg in client.messages:
            self._message(msg)

    def _down(self) -> None:
        self._client = None
        self._up.clear()
        self._lost.set()

    def _message(self, msg: aiomqtt.Message) -> None:
        topic = str(msg.topic)
        try:
            node = self.topics.config_node(topic)
        except topics.TopicError:
            log.debug("mqtt: ignoring a message on %s", topic)
            return
        payload = msg.payload if isinstance(msg.payload, bytes | bytearray) else b""
        self.stats.config_messages += 1
        if self._on_config is not None:
            self._on_config(node, bytes(payload))

    def _state(self, online: bool) -> bytes:
        return topics.state_payload(self.topics, online, self._now_ms(), self.cfg.gateway.site_name)

    # -- publishing ------------------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1,
                      retain: bool = False) -> bool:
        """Publishes once connected; True only when the broker acknowledged it."""
        while self._client is None:
            if self._closing:
                return False
            await self._up.wait()
        client, lost = self._client, self._lost
        pub = asyncio.ensure_future(client.publish(topic, payload, qos=qos, retain=retain,
                                                   timeout=self._timeout_s))
        gone = asyncio.ensure_future(lost.wait())
        try:
            await asyncio.wait((pub, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not pub.done():
                pub.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await pub
        if pub.cancelled() or pub.exception() is not None:
            self.stats.failed += 1
            exc = None if pub.cancelled() else pub.exception()
            log.debug("mqtt: publish to %s not acknowledged (%s)", topic,
                      exc or "connection lost")
            return False
        self.stats.published += 1
        log.debug("mqtt: %d bytes to %s acknowledged", len(payload), topic)
        return True

    async def publish_batch(self, batch: Batch) -> bool:
        """A batch as one SenML CBOR pack on ``.../data``, or ``.../alarm`` for alarms."""
        topic = self.topics.alarm if batch.alarm else self.topics.data
        started = time.monotonic()
        ok = await self.publish(topic, batch_payload(batch), qos=self.cfg.mqtt.qos)
        if ok and self._on_published is not None:
            self._on_published(time.monotonic() - started, batch, self._now_ms())
        return ok

    async def close(self) -> None:
        """Clean stop: the retained offline state, then DISCONNECT (no will)."""
        self._closing = True
        self._up.set()           # wake publishers waiting for a connection: they give up
        client = self._client
        if client is None:
            return
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            await client.publish(self.topics.state, self._state(online=False), qos=1,
                                 retain=True, timeout=CLOSE_TIMEOUT_S)


def _raise_if_cancelling() -> None:
    # aiomqtt waits for CONNACK, PUBACK and SUBACK with asyncio.wait_for, which on Python 3.11
    # drops a cancel that arrives in the loop turn the awaited packet does: the task is then
    # cancelling but runs on (a SIGTERM during the connect hung the gateway). Honour it here.
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
