"""A live demonstration of the wire protocol: a simulated node talks to a decoder over a pty.

The node side seals readings of a flash flood (depth rising 0 -> 400 mm), a predicted and a
crossing alarm, traffic and health frames, and writes them to one end of a real pseudo-
terminal; the gateway side reads the other end through the stream deframer and opens each
frame with the node's key. Line noise is injected now and then (garbage bytes, a flipped
bit, a forged tag, a replay) to show each being refused and counted.
"""

import os
import random
import select
import time
import tty
from collections import Counter
from collections.abc import Callable

from protocol import frame, link, messages, show
from protocol.errors import ProtocolError
from protocol.replay import ReplayGuard

NODE = 1042
BOOT = 17
KEY = bytes(range(32))
T0 = 1795000000
LEVEL_MM = 200          # HCMC street warning level
LEAD_S = 600            # predicted-crossing lead time


def _scenario() -> list[tuple[str, messages.Message]]:
    """The frames the simulated node sends, with a note for the ones that tell a story."""
    out: list[tuple[str, messages.Message]] = []
    seq = 0

    def nxt() -> int:
        nonlocal seq
        seq += 1
        return seq

    out.append(("boot", messages.Hello(NODE, BOOT, nxt(), "0.1.0", "esp32-devkitc", 1,
                                       bytes.fromhex("5a17c0ffee000001"), "")))
    predicted = crossed = False
    for minute in range(0, 13):
        t = T0 + 60 * minute
        depth = max(0, min(400, (minute - 2) * 40))            # 0 -> 400 mm in 10 minutes
        rate_ums = 667 if 2 <= minute < 12 else 0              # 40 mm/min = 667 um/s
        rng = 3200 - depth
        out.append(("", messages.Flood(NODE, BOOT, nxt(), t, depth, rng, 3150, 0, 7)))
        eta = (LEVEL_MM - depth) * 1000 // rate_ums if rate_ums and depth < LEVEL_MM else None
        if not predicted and eta is not None and eta <= LEAD_S:
            predicted = True
            out.append(("predicted crossing", messages.Alarm(
                NODE, BOOT, nxt(), t, messages.ALARM_PREDICTED, LEVEL_MM, depth, rate_ums, eta)))
        if not crossed and depth >= LEVEL_MM:
            crossed = True
            out.append(("level crossed", messages.Alarm(
                NODE, BOOT, nxt(), t, messages.ALARM_CROSSED, LEVEL_MM, depth, rate_ums, None)))
        if minute % 4 == 3:
            out.append(("", messages.Traffic(NODE, BOOT, nxt(), t - 60, 60, 14 - minute,
                                             300 + 40 * minute, 9000 - 500 * minute, 6000)))
    out.append(("", messages.Health(NODE, BOOT, nxt(), T0 + 780, 780, 41216, 30112,
                                    [0, 1, 0, 0, 0, 0, 0, 0], 3712, 0, 0, [seq, 0, 2, 0, 0], 0)))
    return out


def _noise(kind: str, good: bytes) -> bytes:
    """Damaged copies of a good frame, as a bad line or an attacker would send them."""
    if kind == "garbage":
        return bytes(random.randrange(1, 256) for _ in range(12)) + b"\x00"
    if kind == "bit flip":
        b = bytearray(good)
        b[len(b) // 2] ^= 0x10
        return bytes(b)
    if kind == "forged":
        payload = link.unframe(good)
        return link.frame(payload[:-8] + bytes(8))
    return good            # replay: the very same frame again


def run(pace_s: float = 0.15, out: Callable[[str], None] = print) -> int:
    """Runs the demonstration; returns 0 when every genuine frame arrived and no bad one did."""
    random.seed(7)
    node_fd, host_fd = os.openpty()
    tty.setraw(node_fd)
    tty.setraw(host_fd)
    sealer = frame.Sealer(KEY)
    ring = frame.KeyRing({NODE: KEY})
    guard = ReplayGuard()
    deframer = link.Deframer()
    reasons: Counter[str] = Counter()
    sent = received = wire_bytes = 0
    out(f"Roadside protocol demo: node {NODE} writes to a pty, the decoder reads "
        f"{os.ttyname(host_fd)}; HMAC-SHA256/64 tags, COBS + CRC-32 framing\n")
    try:
        noise = iter(["garbage", "bit flip", "forged", "replay"])
        for i, (note, msg) in enumerate(_scenario()):
            wire = sealer.seal(msg)
            chunks = [b"\x00" + wire]
            if i % 4 == 2:
                kind = next(noise, "")
                if kind:
                    chunks.append(_noise(kind, wire))
                    out(f"  !! line: {kind} injected")
            for c in chunks:
                os.write(node_fd, c)
            sent += 1
            wire_bytes += len(wire)
            time.sleep(pace_s)
            while select.select([host_fd], [], [], 0.05)[0]:
                for item in deframer.feed(os.read(host_fd, 4096)):
                    try:
                        if isinstance(item, ProtocolError):
                            raise item
                        got = frame.open_payload(item, ring)
                        guard.accept(got.node, got.boot, got.seq)
                    except ProtocolError as e:
                        reasons[e.reason] += 1
                        out(f"  xx refused: {e}")
                        continue
                    received += 1
                    tag = f"  << {note}" if note else ""
                    out(f"  ok {show.describe(got)}{tag}")
    finally:
        os.close(node_fd)
        os.close(host_fd)
    floor, sack = guard.ack(NODE, BOOT)
    out(f"\n{sent} frames sent ({wire_bytes / sent:.1f} bytes each on average), "
        f"{received} accepted, ack floor {floor} map {sack:#x}; refused by reason: "
        + (", ".join(f"{k}={v}" for k, v in sorted(reasons.items())) or "none"))
    return 0 if received == sent and sum(reasons.values()) == 4 else 1
