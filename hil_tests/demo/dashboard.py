"""The demo's views of a `DemoState`: a rich table for a terminal, plain lines for logs and CI.

Times ``t+N s`` are seconds on the nodes' clocks since the first reading the demo received:
the scenarios' virtual time, running time_scale times faster than the wall.
"""

from __future__ import annotations

from collections.abc import Mapping

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from hil_tests.demo.model import DemoState, Node, Reading

STATUS_BITS = ("safe_mode", "cfg_error", "flood_failed", "temp_failed", "mag_a_failed",
               "mag_b_failed", "unsynced")


def _s(v: float | None) -> str:
    return "-" if v is None else f"t+{v:.0f} s"


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1000 or unit == "MB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} MB"


def depth_text(state: DemoState, nd: Node) -> str:
    if nd.depth_mm is None:
        return "no reading yet" if nd.floods == 0 else "invalid"
    return f"{nd.depth_mm:.0f} mm ({_s(state.rel(nd.depth_t))})"


def alarm_text(state: DemoState, r: Reading | None) -> str:
    if r is None:
        return "none"
    level = r.num("level")
    depth = r.num("depth")
    text = f"{r.text('alarm')} {level * 1000:.0f} mm" if level is not None else r.text("alarm")
    if depth is not None:
        text += f", depth {depth * 1000:.0f} mm"
    eta = r.num("eta")
    if eta is not None:
        text += f", eta {eta:.0f} s"
    return f"{text} at {_s(state.rel(r.t))}"


def traffic_text(nd: Node) -> str:
    w = nd.window
    if w is None:
        return "no window yet"
    speed = w.num("speed")
    text = f"{w.num('count') or 0:.0f} veh / {w.num('window') or 0:.0f} s"
    if speed is not None:
        text += f" @ {speed * 3.6:.0f} km/h"
    return f"{text} (total {nd.vehicles})"


def health_text(nd: Node) -> str:
    parts = []
    if nd.battery_v is not None:
        parts.append(f"battery {nd.battery_v:.2f} V")
    if nd.heap_min_b is not None:
        parts.append(f"heap_min {nd.heap_min_b / 1024:.1f} KiB")
    if nd.queue is not None:
        parts.append(f"queue {nd.queue:.0f}")
    if nd.link:
        parts.append(f"link sent {nd.link.get('sent', 0):.0f} retx {nd.link.get('retx', 0):.0f}")
    if nd.boots:
        parts.append(f"boot {max(nd.boots)}" + (f" ({nd.reset_cause})" if nd.reset_cause else ""))
    if nd.board not in ("running", "sleeping"):
        parts.insert(0, f"BOARD {nd.board.upper()}")
    bits = [n for i, n in enumerate(STATUS_BITS) if nd.status >> i & 1]
    if bits:
        parts.append("status " + ",".join(bits))
    return ", ".join(parts) or "no health yet"


def gateway_text(state: DemoState) -> str:
    gw = state.gateway
    if not gw.up:
        return f"gateway metrics: {gw.error or 'not scraped yet'}"
    oldest = "-" if gw.oldest_age_s is None else f"{gw.oldest_age_s:.1f} s"
    return (f"gateway: queue {gw.queue_routine:.0f} routine + {gw.queue_alarm:.0f} alarm, "
            f"{_bytes(gw.queue_bytes)}, oldest {oldest}, in flight {gw.in_flight:.0f}; "
            f"mqtt {'up' if gw.mqtt_connected else 'DOWN'}; frames {gw.accepted:.0f} accepted, "
            f"{gw.bad:.0f} refused; records published {gw.published:.0f}")


def port_text(state: DemoState, port: str, nodes: Mapping[str, int]) -> str:
    p = state.gateway.ports.get(port, {})
    node = nodes.get(port)
    who = f"node {node}" if node is not None else "?"
    if not p:
        return f"link {port} ({who}): not reported"
    return (f"link {port} ({who}): {'open' if p.get('port_open', 0) >= 1 else 'CLOSED'}, "
            f"{_bytes(p.get('bytes_in', 0))} in, {p.get('unplugs', 0):.0f} unplugs, "
            f"{p.get('write_drops', 0):.0f} write drops")


def plain_lines(state: DemoState, clock: str, ports: Mapping[str, int]) -> list[str]:
    """One line per node, then the gateway and its links, each prefixed with `clock`."""
    lines = []
    for nd in state.nodes.values():
        lines.append(f"[{clock}] node {nd.node} ({nd.label}): depth {depth_text(state, nd)}; "
                     f"alarm {alarm_text(state, nd.alarm)}; traffic {traffic_text(nd)}; "
                     f"{health_text(nd)}")
    lines.append(f"[{clock}] {gateway_text(state)}")
    lines += [f"[{clock}] {port_text(state, port, ports)}" for port in ports]
    return lines


def alarm_line(state: DemoState, r: Reading) -> str:
    nd = state.node(r.node)
    return f"ALARM node {r.node} ({nd.label}): {alarm_text(state, r)}"


def render(state: DemoState, title: str, ports: Mapping[str, int],
           events: list[str]) -> Group:
    """The live view: nodes table, gateway panel with links, the latest alarms."""
    nodes = Table(expand=True, title="nodes", title_justify="left")
    for col in ("node", "depth", "latest alarm", "traffic (last window)", "health"):
        nodes.add_column(col, overflow="fold")
    for nd in state.nodes.values():
        alarm = alarm_text(state, nd.alarm)
        nodes.add_row(f"{nd.node} {nd.label}",
                      Text(depth_text(state, nd),
                           style="bold red" if nd.alarm is not None else ""),
                      Text(alarm, style="bold red" if nd.alarm is not None else "dim"),
                      traffic_text(nd), health_text(nd))
    gw_lines = [gateway_text(state)] + [port_text(state, p, ports) for p in ports]
    gateway = Panel("\n".join(gw_lines), title="gateway and links", title_align="left")
    recent = Panel("\n".join(events[-5:]) or "none yet", title="alarms and events",
                   title_align="left")
    return Group(Text(title, style="bold"), nodes, gateway, recent)
