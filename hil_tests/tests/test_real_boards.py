"""Real ESP32 boards on the rig (--port, --link-port, --node-id, --node-keys): their link
through the relay to the real gateway and Mosquitto, with the line faults a relay can play
on real hardware (bit flips, unplug and replug), accounted by (node, boot, seq)."""

from __future__ import annotations

import random
import time

import pytest

from hil_tests.rig.stack import Rig

pytestmark = pytest.mark.hardware


def test_real_boards_lose_nothing_through_a_noisy_unplugged_line(
        rig: Rig, real_boards: list[tuple[int, str, bytes]]) -> None:
    """Every real board's frames reach MQTT through bit flips at 1e-3 and an unplug: after
    each reports an empty queue, no seq of any boot is missing."""
    seed = random.randrange(1 << 32)
    rig.seed = seed
    rig.time_scale = 1.0
    for node, link, key in real_boards:
        rig.add_real(node, link, key)
    nodes = [node for node, _, _ in real_boards]
    with rig:
        # A hello (after a reset) or a health (every 5 min) from each board.
        rig.wait_uplinks("every board on MQTT",
                         lambda ups: set(nodes) <= {u.node for u in ups}, 600)
        for n in rig.nodes.values():
            n.relay.flip_rate = 1e-3
        before = len(rig.uplinks())
        rig.wait_uplinks("10 more frames through the noisy line",
                         lambda ups: len(ups) >= before + 10, 900)
        for n in rig.nodes.values():
            n.relay.flip_rate = 0.0
            n.relay.unplug()
        time.sleep(30)                   # the line stays pulled for 30 s (not a measurement)
        for n in rig.nodes.values():
            n.relay.plug()
        for node in nodes:
            rig.wait_drained(node, timeout_s=900)
        acc = rig.account()
    assert not any(acc.missing.values()) and not acc.conflicts, f"seed {seed}: {acc.summary()}"
