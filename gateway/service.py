"""The wiring of roadside-gateway: every stage built, started and stopped in one place.

Stages, in start order (each a module of its own; they never import each other's
internals, they meet here):

==================  ===============================  ====================================
step                task(s)                          what it does
==================  ===============================  ====================================
store               thread ``gateway.store``         `store.Store`, every call on one thread
                                                     (alarms in a lane of their own)
publisher           ``gateway.publisher``            `publisher.Publisher`: MQTT, will,
                                                     state, config subscription
batcher             ``gateway.batcher``              `batcher.Batcher`: store -> publishes
ingest              ``gateway.ingest``               `ingest.Ingest`: verify, commit, ack
serial links        ``gateway.serial:<path>``        `serial_link.SerialLink` per port
side loops          ``gateway.gaps``,                gap reports, retained node statuses,
                    ``gateway.status``,              age bound without traffic, systemd
                    ``gateway.bounds``,              watchdog and status line
                    ``gateway.watchdog``
metrics             (asyncio server)                 `metrics.MetricsServer` on
                                                     ``metrics.listen``
==================  ===============================  ====================================

All tasks run in one `asyncio.TaskGroup`: a task that dies takes the service down (exit
status 1, systemd restarts it) instead of leaving a half-working gateway. SIGTERM and SIGINT
stop it cleanly, in reverse order: the serial links stop reading, the open commit group is
committed and acked, the batcher gives back what it holds, the publisher publishes the
offline state and disconnects, the replay window is saved and the store closed. Nothing is
lost in any order of events: a frame is acked only after its commit, and a record is deleted
only after its PUBACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from gateway import config as cfgmod
from gateway import keys, metrics, sdnotify, senml, telemetry, topics
from gateway.batcher import Batcher
from gateway.downlink import Downlink
from gateway.ingest import Ingest
from gateway.publisher import Publisher
from gateway.serial_link import SerialLink
from gateway.store import DropReport, Store, StoreError
from gateway.verify import Accepted, Verifier
from protocol import messages as m
from protocol.replay import ReplayGuard

log = logging.getLogger(__name__)

_T = TypeVar("_T")
BOUNDS_INTERVAL_S = 60.0      # the age bound is enforced at least this often
STATUS_INTERVAL_S = 10.0      # the systemd status line
GAPS_PER_PUBLISH = 64
GAPS_RETRY_S = 5.0
STORE_STUCK_S = 60.0          # a store call this old stops the watchdog pings
CANCEL_AGAIN_S = 5.0          # a stage still running this long after its cancel gets another


def utc_ms() -> int:
    return time.time_ns() // 1_000_000


class StoreWorker:
    """Runs every store call on one thread, in order (the store is not thread-safe).

    Two lanes: ``urgent=True`` calls (the commit and acks of alarms and hellos, and the takes
    that publish them) run before every queued ordinary call, so an alarm waits at most for
    the one call the thread is in, never for a queue of group commits, takes and deletes.
    """

    def __init__(self) -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Callable[[], None] | None]] = (
            queue.PriorityQueue())
        self._thread = threading.Thread(target=self._run, name="gateway.store", daemon=True)
        self._thread.start()
        self._started: dict[int, float] = {}      # calls queued or running -> loop time
        self._n = 0

    async def call(self, fn: Callable[..., _T], *args: Any, urgent: bool = False) -> _T:
        if not self._thread.is_alive():
            raise RuntimeError("store worker closed: no store call after close()")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[_T] = loop.create_future()
        self._n += 1
        key = self._n
        self._started[key] = loop.time()

        def job() -> None:
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the caller, whatever it is
                loop.call_soon_threadsafe(_fail, fut, exc)
            else:
                loop.call_soon_threadsafe(_done, fut, result)

        self._queue.put((0 if urgent else 1, key, job))
        try:
            return await fut
        finally:
            del self._started[key]

    def stuck_s(self) -> float:
        """How long the oldest pending store call has waited (0 when none)."""
        if not self._started:
            return 0.0
        return asyncio.get_running_loop().time() - min(self._started.values())

    def close(self) -> None:
        """Runs what is queued, then ends the thread."""
        self._queue.put((2, 0, None))
        self._thread.join()

    def _run(self) -> None:
        while True:
            job = self._queue.get()[2]
            if job is None:
                return
            job()


def _done(fut: asyncio.Future[_T], result: _T) -> None:
    if not fut.done():          # the caller may have been cancelled meanwhile
        fut.set_result(result)


def _fail(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


class NodeStatus:
    """The last hello and health of each node, published retained (SPEC 14.5)."""

    def __init__(self) -> None:
        self.hello: dict[int, tuple[m.Hello, int]] = {}
        self.health: dict[int, tuple[m.Health, int]] = {}
        self.dirty: set[int] = set()
        self.changed = asyncio.Event()

    def on_record(self, item: Accepted, received_ms: int) -> None:
        msg = item.msg
        if isinstance(msg, m.Hello):
            self.hello[msg.node] = (msg, received_ms)
        elif isinstance(msg, m.Health):
            self.health[msg.node] = (msg, received_ms)
        else:
            return
        self.dirty.add(msg.node)
        self.changed.set()

    def all_dirty(self) -> None:
        self.dirty.update(self.hello)
        self.dirty.update(self.health)
        if self.dirty:
            self.changed.set()

    def payload(self, node: int) -> bytes:
        return topics.status_payload(node, self.hello.get(node), self.health.get(node))


class Service:
    """One gateway: build with a loaded config, then `await run()` until stopped."""

    utc_ms = staticmethod(utc_ms)

    def __init__(self, cfg: cfgmod.Config, *, notifier: sdnotify.Notifier | None = None
                 ) -> None:
        self.cfg = cfg
        self.notifier = notifier or sdnotify.Notifier.from_env()
        self.stop_requested = asyncio.Event()
        ring, warnings = keys.load_keys(cfg.keys.file, cfg.keys.allow_unkeyed)
        for w in warnings:
            log.warning("%s", w)
        self.topics = topics.Topics(cfg.gateway.site, cfg.gateway.id, cfg.mqtt.topic_prefix)
        self.worker = StoreWorker()
        self.store = Store(cfg.store.path, cfg.store.max_bytes, cfg.store.max_age_s)
        guard = ReplayGuard()
        guard.load(self.store.load_replay())
        self.verifier = Verifier(ring, guard)
        self.links: dict[str, SerialLink] = {}
        self.status = NodeStatus()
        self.gaps_wake = asyncio.Event()
        self.publisher = Publisher(cfg, self.topics, on_config=self._on_config,
                                   on_connect=self._on_connect)
        self.downlink = Downlink(cfg.downlink, ring, self._next_seq, self._write)
        self.batcher = Batcher(
            cfg.batch, self._take, self.publisher.publish_batch, self._confirm, self._release,
            take_since=self._take_since, backoff_max_s=5.0)
        self.ingest = Ingest(
            self.store, self.worker.call, self.verifier, self.downlink,
            lambda alarm: self.batcher.notify(alarm=alarm),
            commit_interval_ms=cfg.store.commit_interval_ms,
            call_urgent=functools.partial(self.worker.call, urgent=True),
            on_record=self.status.on_record, on_drops=self._on_drops, alarms=self.batcher)
        for port in cfg.serial.ports:
            self.links[port.path] = SerialLink(
                port, cfg.serial.reopen_min_s, cfg.serial.reopen_max_s, self.ingest.on_data,
                on_open=self.ingest.on_open)
        self.registry = metrics.Registry()
        telemetry.register(self, self.registry)

    # -- glue between stages (all store calls on the worker) ---------------------------------

    async def _take(self, count: int, size: int) -> list[Any]:
        # Takes jump the queue while alarms are stored: they come first out of take.
        try:
            return await self.worker.call(self.store.take, count, size,
                                          urgent=self.store.alarms_stored > 0)
        except StoreError as exc:
            log.error("store read failed, publishing waits for the next commit: %s", exc)
            return []

    async def _take_since(self, count: int, size: int, since_ms: int) -> list[Any]:
        try:
            return await self.worker.call(self.store.take_since, count, size, since_ms)
        except StoreError as exc:
            log.error("store read failed, publishing waits for the next commit: %s", exc)
            return []

    async def _confirm(self, ids: Any) -> None:
        await self.worker.call(self.store.confirm, list(ids))

    async def _release(self, ids: Any) -> None:
        await self.worker.call(self.store.release, list(ids))

    async def _next_seq(self, node: int, boot: int) -> int:
        return await self.worker.call(self.store.next_downlink_seq, node, boot)

    def _write(self, port: str, data: bytes) -> bool:
        link = self.links.get(port)
        return link is not None and link.write(data)

    def _on_config(self, node: int, payload: bytes) -> None:
        task = asyncio.get_running_loop().create_task(
            self.downlink.set_config(node, payload), name="gateway.downlink.config")
        task.add_done_callback(_log_failure)

    async def _on_connect(self) -> None:
        self.status.all_dirty()
        self.gaps_wake.set()

    def _on_drops(self, report: DropReport) -> None:
        log.warning("store over its bounds: dropped %s (%d gap reports)",
                    ", ".join(f"{n} {r}" for r, n in report.dropped.items()), report.gaps)
        self.gaps_wake.set()

    # -- side loops --------------------------------------------------------------------------

    async def _gaps_loop(self) -> None:
        while True:
            await self.gaps_wake.wait()
            self.gaps_wake.clear()
            try:
                await self._publish_gaps()
            except StoreError as exc:
                log.error("gap reports not published now (store: %s); retrying", exc)
                await asyncio.sleep(GAPS_RETRY_S)
                self.gaps_wake.set()

    async def _publish_gaps(self) -> None:
        while True:
            gaps = await self.worker.call(self.store.take_gaps, GAPS_PER_PUBLISH)
            if not gaps:
                return
            ids = [g.id for g in gaps]
            if await self.publisher.publish(self.topics.gaps, senml.encode_gaps(gaps)):
                await self.worker.call(self.store.confirm_gaps, ids)
            else:
                await self.worker.call(self.store.release_gaps, ids)
                await self.publisher.wait_connected()

    async def _status_loop(self) -> None:
        st = self.status
        while True:
            await st.changed.wait()
            st.changed.clear()
            for node in sorted(st.dirty):
                st.dirty.discard(node)
                if not await self.publisher.publish(self.topics.node_status(node),
                                                    st.payload(node), retain=True):
                    st.dirty.add(node)
                    st.changed.set()
                    await self.publisher.wait_connected()

    async def _bounds_loop(self) -> None:
        while True:
            await asyncio.sleep(BOUNDS_INTERVAL_S)
            try:
                report = await self.worker.call(self.store.enforce_bounds, utc_ms())
            except StoreError as exc:
                log.error("store bounds not enforced: %s", exc)
                continue
            if report.total:
                self._on_drops(report)

    def health(self) -> str | None:
        """None when the service may feed the systemd watchdog, else why not.

        A blocked event loop stops the pings by itself; this adds the store's worker thread:
        an SQLite call hung for STORE_STUCK_S (a dead SD card) gets the service restarted.
        """
        stuck = self.worker.stuck_s()
        if stuck >= STORE_STUCK_S:
            return f"a store call has not returned for {stuck:.0f} s"
        return None

    def status_line(self) -> str:
        open_ports = sum(link.is_open for link in self.links.values())
        return (f"{open_ports}/{len(self.links)} ports open, mqtt "
                f"{'up' if self.publisher.connected else 'down'}, "
                f"{self.ingest.stats.committed} frames stored, "
                f"{self.batcher.records} published")

    async def _status_line_loop(self) -> None:
        while True:
            self.notifier.status(self.status_line())
            await asyncio.sleep(STATUS_INTERVAL_S)

    # -- run and stop ------------------------------------------------------------------------

    def request_stop(self) -> None:
        self.stop_requested.set()

    async def run(self) -> None:
        """Runs every stage until request_stop() (SIGTERM/SIGINT) or a stage fails."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        server: metrics.MetricsServer | None = None
        try:
            addr = self.cfg.metrics.address()
            if addr is not None:
                server = metrics.MetricsServer(self.registry, *addr)
                await server.__aenter__()
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self.publisher.run(), name="gateway.publisher"),
                    tg.create_task(self.batcher.run(), name="gateway.batcher"),
                    tg.create_task(self.ingest.run(), name="gateway.ingest"),
                ]
                links = [tg.create_task(link.run(), name=link.task_name)
                         for link in self.links.values()]
                side = [
                    tg.create_task(self._gaps_loop(), name="gateway.gaps"),
                    tg.create_task(self._status_loop(), name="gateway.status"),
                    tg.create_task(self._bounds_loop(), name="gateway.bounds"),
                    tg.create_task(self._status_line_loop(), name="gateway.status_line"),
                ]
                interval = sdnotify.watchdog_interval_s()
                if interval:
                    side.append(tg.create_task(
                        sdnotify.watchdog_loop(self.notifier, self.health, interval),
                        name="gateway.watchdog"))
                self.gaps_wake.set()
                self.notifier.ready(self.status_line())
                log.info("roadside-gateway %s/%s: running with %d serial ports, mqtt %s:%d",
                         self.cfg.gateway.site, self.cfg.gateway.id, len(self.links),
                         self.cfg.mqtt.host, self.cfg.mqtt.port)
                await self.stop_requested.wait()
                self.notifier.stopping()
                log.info("stopping")
                await _cancel(links)                 # no more frames come in
                await self.ingest.commit()           # what came in is stored and acked
                await _cancel(side)
                await _cancel([tasks[2], tasks[1]])  # ingest; batcher gives back its records
                await self.publisher.close()         # offline state, DISCONNECT
                await _cancel([tasks[0]])
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if server is not None:
                await server.__aexit__(None, None, None)
            with contextlib.suppress(StoreError):
                await self.worker.call(self.store.save_replay, self.verifier.guard.rows())
            await self.worker.call(self.store.close)
            self.worker.close()
            log.info("stopped")


async def _cancel(tasks: list[asyncio.Task[None]], again_s: float = CANCEL_AGAIN_S) -> None:
    # Cancels and awaits the tasks. One that is still running again_s after its cancel is
    # cancelled again: Python 3.11's asyncio.wait_for (in libraries too) can drop a cancel
    # that arrives with the awaited result, and the stop must not hang on it.
    for t in tasks:
        t.cancel()
    for t in tasks:
        while not t.done():
            await asyncio.wait({t}, timeout=again_s)
            if not t.done():
                log.warning("%s still running %.1f s after its cancel; cancelling again",
                            t.get_name(), again_s)
                t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await t


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())
