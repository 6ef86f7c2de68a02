"""Downlink stage: acks, time and config frames to the nodes (SPEC 8, 9.2, 5.4.3, 14.6).

The downlink knows each node's *route*: the serial port its last frame came on and its
current boot (a hello sets it; any frame of a higher boot raises it). Every frame it sends is
addressed to that boot with a fresh downlink seq from the store (`Store.next_downlink_seq`,
never reused across restarts: SPEC 8) and sealed with the node's key, or untagged for a node
without one (bench rings only).

Acks (`ack`): after a group commit the wiring calls `ack(port, node, boot, floor, sack)`
once per (port, node, boot) the group touched, with the store's state of that boot
(`Store.ack_state`). A node holding frames of an earlier boot gets an ack whose
``acked_boot`` is that boot in a frame addressed to its current boot (SPEC 9.2).

Time: answered to every new hello, and to any frame of a node whose last time frame is
``downlink.time_interval_s`` old (0: hello only). Its quality says whether this machine's
clock is synchronised (Linux `adjtimex`: NTP, or free-running; a Pi without RTC and network
runs free).

Config (SPEC 14.6): the retained ``.../node/{node}/config`` messages arrive through
`set_config`. An empty payload deletes the wish; a payload that does not parse is refused
with a log line naming the problem and the previous wish stays. A wish is pushed when the
node is routable and then, while unconfirmed, again on the node's frames every
``config_retry_s``. The node applies a config frame, saves it and says hello again with its
new ``cfg_hash`` (and ``cfg_error`` naming a key it refused): the first hello of the same boot
read after a push confirms it (not one read before it but committed after), and its hash is
remembered. A later hello with another hash (the node was reflashed or reset to defaults) or
a new boot before confirmation brings a new push.
Identical retained payloads (redelivered at each reconnect) change nothing. The state lives
in memory: after a gateway restart each wish is pushed once more (harmless: the node applies
the same values and says hello).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway import config, topics
from gateway.store import StoreError
from protocol import frame
from protocol import messages as m

log = logging.getLogger(__name__)

CONFIG_RETRY_S = 30.0

NextSeq = Callable[[int, int], Awaitable[int]]
Write = Callable[[str, bytes], bool]
Cfg = dict[int, int | list[int]]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    # Loaded once: find_library may run a subprocess (ldconfig), not for every time frame.
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except OSError:
        return None


def clock_quality() -> int:
    """TIME_NTP when the kernel says the clock is synchronised, else TIME_FREE."""
    libc = _libc()
    try:
        buf = ctypes.create_string_buffer(512)      # struct timex, modes = 0: read only
        state = libc.adjtimex(buf) if libc is not None else -1
    except (OSError, AttributeError):
        return m.TIME_FREE
    return m.TIME_NTP if 0 <= state < 5 else m.TIME_FREE     # 5: TIME_ERROR (unsynced)


@dataclass
class _Wish:
    cfg: Cfg
    payload: bytes
    pushed_at: float | None = None   # monotonic time of the last push
    pushed_boot: int = -1
    confirmed: bytes | None = None   # cfg_hash of the hello that followed the push


@dataclass
class _Route:
    port: str
    boot: int
    time_at: float | None = None     # monotonic time of the last time frame


@dataclass
class DownlinkStats:
    acks: int = 0
    times: int = 0
    configs: int = 0
    config_refused: int = 0          # MQTT config payloads that did not parse
    config_confirmed: int = 0
    write_drops: int = 0             # frames the port could not take (counted by the link too)
    seq_failures: int = 0            # frames not sent: the store could not reserve a seq


class Downlink:
    """Frames to nodes (see the module documentation)."""

    def __init__(self, cfg: config.Downlink, ring: frame.KeyRing, next_seq: NextSeq,
                 write: Write, *, config_retry_s: float = CONFIG_RETRY_S,
                 utc_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
                 clock: Callable[[], float] = time.monotonic,
                 quality: Callable[[], int] = clock_quality) -> None:
        self.cfg = cfg
        self.stats = DownlinkStats()
        self._ring = ring
        self._next_seq = next_seq
        self._write = write
        self._retry_s = config_retry_s
        self._utc_ms = utc_ms
        self._clock = clock
        self._quality = quality
        self._routes: dict[int, _Route] = {}
        self._wishes: dict[int, _Wish] = {}
        self._sealers: dict[int, frame.Sealer] = {}

    # -- what the wiring tells us ------------------------------------------------------------

    def now(self) -> float:
        """This downlink's clock (monotonic s), for the arrival times given to `heard`."""
        return self._clock()

    async def heard(self, port: str, msg: m.Message, arrived: float | None = None) -> None:
        """An uplink frame was committed: update the route, then send what is due.
        `arrived` (`now()` when the frame was read) lets a hello read before a config push,
        but committed after it, not count as the node's answer to that push."""
        node = msg.node
        route = self._routes.get(node)
        hello = isinstance(msg, m.Hello)
        if route is None:
            route = self._routes[node] = _Route(port, msg.boot)
        elif hello or msg.boot > route.boot:
            route.boot = msg.boot
        route.port = port
        now = self._clock()
        if hello or (self.cfg.time_interval_s > 0 and (
                route.time_at is None or now - route.time_at >= self.cfg.time_interval_s)):
            await self._send_time(node, route, now)
        wish = self._wishes.get(node)
        if wish is None:
            return
        if isinstance(msg, m.Hello):
            self._hello(node, msg, wish, arrived)
        if wish.confirmed is None and (
                wish.pushed_at is None or wish.pushed_boot != route.boot
                or now - wish.pushed_at >= self._retry_s):
            await self._push(node, route, wish, now)

    async def ack(self, port: str, node: int, boot: int, floor: int, sack: int) -> None:
        """Acknowledges what the store holds of (node, boot) (SPEC 9.2)."""
        route = self._routes.get(node)
        to_boot = boot if route is None else max(route.boot, boot)
        if await self._send(port, node, to_boot,
                            lambda s: m.Ack(node, to_boot, s, boot, floor, sack)):
            self.stats.acks += 1

    async def set_config(self, node: int, payload: bytes) -> None:
        """A retained config message for `node` arrived (empty: the wish is withdrawn)."""
        old = self._wishes.get(node)
        if old is not None and old.payload == payload:
            return
        try:
            cfg = topics.parse_config(payload)
        except topics.ConfigPayloadError as exc:
            self.stats.config_refused += 1
            log.error("config for node %d refused: %s%s", node, exc,
                      "; keeping the previous one" if old is not None else "")
            return
        if cfg is None:
            self._wishes.pop(node, None)
            log.info("config for node %d withdrawn", node)
            return
        wish = self._wishes[node] = _Wish(cfg, payload)
        log.info("config for node %d: %s", node, payload.decode(errors="replace"))
        route = self._routes.get(node)
        if route is not None:
            await self._push(node, route, wish, self._clock())

    # -- sending -----------------------------------------------------------------------------

    def _hello(self, node: int, hello: m.Hello, wish: _Wish, arrived: float | None) -> None:
        if wish.confirmed is None:
            if wish.pushed_at is not None and arrived is not None and arrived < wish.pushed_at:
                log.debug("node %d: a hello read before the config push is no answer to it",
                          node)
            elif wish.pushed_at is not None and hello.boot == wish.pushed_boot:
                wish.confirmed = bytes(hello.cfg_hash)
                self.stats.config_confirmed += 1
                if hello.cfg_error:
                    log.error("node %d applied its config but refused %s; fix the retained "
                              "config message", node, hello.cfg_error)
                else:
                    log.info("node %d applied its config", node)
        elif bytes(hello.cfg_hash) != wish.confirmed:
            log.info("node %d runs another config than the one it confirmed; pushing again",
                     node)
            wish.confirmed = None
            wish.pushed_at = None

    async def _push(self, node: int, route: _Route, wish: _Wish, now: float) -> None:
        cfg = wish.cfg
        boot = route.boot
        wish.pushed_at = now             # before the await: no second push meanwhile
        wish.pushed_boot = boot
        if await self._send(route.port, node, boot, lambda s: m.Config(node, boot, s, cfg)):
            self.stats.configs += 1
            log.info("config pushed to node %d (boot %d)", node, boot)

    async def _send_time(self, node: int, route: _Route, now: float) -> None:
        quality = self._quality()
        if await self._send(route.port, node, route.boot,
                            lambda s: m.Time(node, route.boot, s, self._utc_ms(), quality)):
            self.stats.times += 1
        route.time_at = now

    async def _send(self, port: str, node: int, boot: int,
                    make: Callable[[int], m.Message]) -> bool:
        try:
            seq = await self._next_seq(node, boot)
        except StoreError as exc:
            # A full disk cannot reserve downlink seqs; acks, time and config are state, so
            # the next one repairs a skipped one (SPEC 9.2). Never a reason to stop.
            self.stats.seq_failures += 1
            log.warning("downlink to node %d skipped: %s", node, exc)
            return False
        sealer = self._sealers.get(node)
        if sealer is None:
            sealer = self._sealers[node] = frame.Sealer(self._ring.get(node))
        if self._write(port, sealer.seal(make(seq))):
            return True
        self.stats.write_drops += 1
        return False
