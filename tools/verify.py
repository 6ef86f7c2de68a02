"""`roadside verify`: is this node ready to be left on its pole? PASS or FAIL per check.

1. health: /boot.json (boots, resets per cause) and /config.json as the node holds them;
2. the node's self-test (firmware/selftest.py `run`, with the firmware stopped): config
   valid, board module, DS18B20 answers, the ranger's pings echo, agree and lie within reach
   and h0, both magnetometers answer (when traffic is on), battery plausible;
3. link: the node is reset and its console watched until the firmware logs `uplink: clock
   set`: its hello reached the gateway, which answered with a time frame the node verified
   with its key; a FAIL names the cable and the keys file.
Exit 1 if any check failed. The node is left running its firmware.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from tools.errors import ToolError
from tools.node import NodeSession

LINK_UP = "uplink: clock set"
CAUSES = ("?", "power-on", "hard", "watchdog", "deep sleep", "soft", "brown-out", "panic")


@dataclass
class Check:
    """One check's verdict."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.name:<8} {self.detail}"


def health(node: NodeSession) -> Check:
    raw = node.read_file("/boot.json")
    try:
        d = json.loads(raw) if raw else None
        boot = int(d["boot"]) if isinstance(d, dict) else None
        resets = [int(x) for x in d["resets"]] if isinstance(d, dict) else []
    except (ValueError, KeyError, TypeError):
        boot, resets = None, []
    if boot is None:
        return Check("health", False, "no /boot.json: the firmware has never run here "
                     "(roadside deploy, then provision)")
    counts = ", ".join(f"{CAUSES[i] if i < len(CAUSES) else i} {n}"
                       for i, n in enumerate(resets) if n)
    return Check("health", True, f"boot {boot}; resets: {counts or 'none'}")


def self_test(node: NodeSession, pings: int) -> list[Check]:
    out = node.run(f"from firmware import selftest\nselftest.run({pings})")
    checks = []
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) >= 3 and parts[0] == "CHECK":
            checks.append(Check(parts[1], parts[2] == "PASS", parts[3] if len(parts) > 3
                                else ""))
    if not any(line.startswith("SELFTEST ") for line in out.splitlines()):
        checks.append(Check("selftest", False, "did not finish: " + out.strip()[-200:]))
    return checks


def link(node: NodeSession, node_id: object, timeout_s: float) -> Check:
    seen = node.reset_and_watch((LINK_UP,), timeout_s)
    if seen is not None:
        return Check("link", True, f"the gateway answered the node's hello ({seen.strip()})")
    return Check("link", False, f"no answer from the gateway in {timeout_s:g} s: check the "
                 "link cable (node TX -> gateway RX, RX <- TX, GND), that the gateway runs, "
                 f"and that its keys file has node {node_id}'s key (roadside provision "
                 "--gateway-keys)")


def verify(node: NodeSession, pings: int, link_timeout_s: float,
           say: Callable[[Check], None]) -> list[Check]:
    """Runs every check, reporting each as it is known."""
    checks: list[Check] = []

    def add(c: Check) -> None:
        checks.append(c)
        say(c)

    add(health(node))
    try:
        node_id = json.loads(node.read_file("/config.json") or b"{}").get("node")
    except (ValueError, AttributeError):
        node_id = None
    try:
        for c in self_test(node, pings):
            add(c)
    except ToolError as exc:
        add(Check("selftest", False, str(exc)))
    add(link(node, node_id, link_timeout_s))
    return checks
