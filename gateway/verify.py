"""Frame decode and verify stage: bytes from serial ports in, authenticated uplink messages out.

`Verifier.feed(port, data)` splits each port's byte stream into frames (one deframer per
port, so ports never mix partial frames), opens each payload as
`protocol.frame.open_payload` does (layout, key-ring policy, tag, then the message; SPEC
7.3) and checks it against the replay window (`protocol.replay.ReplayGuard`, SPEC 9.1).
Deframing and opening take `gateway.fastpath`, which gives `protocol`'s verdicts at C speed
for clean frames and hands every other frame to `protocol` itself. What passes comes back
as `Accepted`; everything else is counted by reason (the names of `protocol.errors`) and by
claimed node, logged at most once per reason per `log_interval_s`, and never raised: line
noise, forged tags and unknown nodes are the normal diet of a receiver.

Order of replay check and accept (the caller's duty):

1. `feed()` only *checks* the replay window; it records nothing.
2. The caller writes the accepted records to the durable store and waits for COMMIT.
3. Only then it calls `Verifier.accept(item)` (which records the seq in the window) and
   acknowledges the node.

Accepting before the commit would be wrong: if the commit then fails (disk full, power cut),
the node gets no ack and retransmits, and the window, already holding that seq, would refuse
the retransmission as a replay; the frame would be lost although the node did everything
right. Because nothing is recorded before the commit, a retransmission that arrives while
the first copy is still waiting for its commit passes `feed()` again: the store is the final
judge of duplicates (SPEC 9.1: each (node, boot, seq) stored once) and reports it as not new.

An authenticated replay is usually a retransmission whose ack was lost. It is counted as
`replay`, and its (port, node, boot) is remembered until `take_reacks()` so the caller can send
the current ack again (SPEC 9.2: a lost ack is repaired by the next one).

Threads: a Verifier belongs to the event loop thread (no locks); `feed` is CPU-only and
bounded by the chunk given.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from gateway.fastpath import Deframer, Opener
from protocol import frame, mac, messages
from protocol.errors import NODE, TAG, UNTAGGED, ProtocolError
from protocol.replay import ReplayGuard

log = logging.getLogger(__name__)

INTERNAL = "internal"  # an exception other than ProtocolError: a bug, counted, never raised
OTHER_NODE = -1  # node label once MAX_NODE_LABELS distinct claimed nodes were counted
MAX_NODE_LABELS = 1024  # bound on by-node counters: garbage may claim any uint32 node id
LOG_INTERVAL_S = 10.0
_SECURITY = frozenset((TAG, UNTAGGED, NODE))  # refusals an operator must look at: warning


# Made per frame: slots and no frozen (a frozen dataclass sets each field through
# object.__setattr__, 4x the cost of this one's __init__). Treat it as read-only.
@dataclass(slots=True)
class Accepted:
    """One uplink frame that passed every check but the durable store's duplicate check."""

    port: str
    node: int
    boot: int
    seq: int
    kind: int  # message type (messages.FLOOD ...)
    msg: messages.Message
    body: bytes  # the authenticated CBOR message (inside COSE_Mac0, or the untagged payload)


class Verifier:
    """Deframes, authenticates and replay-checks uplink frames of any number of ports."""

    def __init__(self, ring: frame.KeyRing, guard: ReplayGuard | None = None, *,
                 log_interval_s: float = LOG_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ring = ring
        self.opener = Opener(ring)
        self.guard = guard if guard is not None else ReplayGuard()
        self.accepted = 0
        self.bad: Counter[str] = Counter()  # reason -> refused frames
        self.bad_by_node: Counter[int] = Counter()  # claimed node -> refused frames
        self._deframers: dict[str, Deframer] = {}
        self._reacks: dict[tuple[str, int, int], None] = {}  # ordered set
        self._log_interval_s = log_interval_s
        self._clock = clock
        self._last_log: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()

    def feed(self, port: str, data: bytes | bytearray) -> list[Accepted]:
        """Returns the frames of `data` (bytes read from `port`) that passed; never raises."""
        deframer = self._deframers.get(port)
        if deframer is None:
            deframer = self._deframers[port] = Deframer()
        out: list[Accepted] = []
        for item in deframer.feed(data):
            if isinstance(item, ProtocolError):
                self._refuse(port, item.reason, item.detail, None)
                continue
            got = self._open(port, item)
            if got is not None:
                out.append(got)
        self.accepted += len(out)
        return out

    def reset_port(self, port: str) -> None:
        """Drops the partial frame of a port (call when it was reopened)."""
        deframer = self._deframers.get(port)
        if deframer is not None:
            deframer.reset()

    def accept(self, item: Accepted) -> bool:
        """Records item's seq in the replay window; call only after the store committed it.

        Returns False when the window already held it (a duplicate within one commit group).
        """
        try:
            self.guard.accept(item.node, item.boot, item.seq)
        except ProtocolError:
            return False
        return True

    @property
    def reacks_pending(self) -> bool:
        """True when authenticated replays wait for `take_reacks`."""
        return bool(self._reacks)

    def take_reacks(self) -> list[tuple[str, int, int]]:
        """(port, node, boot) of authenticated replays since the last call, to ack again."""
        out = list(self._reacks)
        self._reacks.clear()
        return out

    def _open(self, port: str, payload: bytes) -> Accepted | None:
        try:
            msg, body = self.opener.open(payload)
        except ProtocolError as exc:
            self._refuse(port, exc.reason, exc.detail, _claimed_node(payload))
            return None
        except Exception as exc:  # a codec bug must cost one frame, not the gateway
            log.exception("port %s: unexpected error opening a frame", port)
            self._refuse(port, INTERNAL, repr(exc), _claimed_node(payload))
            return None
        try:
            self.guard.check(msg.node, msg.boot, msg.seq)
        except ProtocolError as exc:
            self._reacks[(port, msg.node, msg.boot)] = None
            self._refuse(port, exc.reason, exc.detail, msg.node)
            return None
        return Accepted(port, msg.node, msg.boot, msg.seq, msg.TYPE, msg, body)

    def _refuse(self, port: str, reason: str, detail: str, node: int | None) -> None:
        self.bad[reason] += 1
        if node is not None:
            if node not in self.bad_by_node and len(self.bad_by_node) >= MAX_NODE_LABELS:
                node = OTHER_NODE
            self.bad_by_node[node] += 1
        self._unlogged[reason] += 1
        now = self._clock()
        last = self._last_log.get(reason)
        if last is not None and now - last < self._log_interval_s:
            return
        count = self._unlogged.pop(reason)
        self._last_log[reason] = now
        level = logging.WARNING if reason in _SECURITY else logging.INFO
        since = "" if last is None else f" in the last {now - last:.0f} s"
        log.log(level, "refused %d frame(s) as %s%s (%d in total); latest on %s from node %s: %s",
                count, reason, since, self.bad[reason], port,
                "?" if node is None else node, detail or "-")


def _claimed_node(payload: bytes) -> int | None:
    """The node id a refused payload claims (not authenticated), or None if unreadable."""
    try:
        body = mac.unwrap(payload)[0] if mac.is_mac0(payload) else payload
        return messages.peek_node(body)
    except Exception:
        return None

