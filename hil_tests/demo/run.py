"""`python -m hil_tests.demo` (what `make demo` runs): three boards, gateway, broker, dashboard.

    python -m hil_tests.demo                      # live dashboard until Ctrl-C
    python -m hil_tests.demo --duration 60 --time-scale 20 --capture run.jsonl
    python -m hil_tests.demo.plot run.jsonl -o run.png

A flooding street, a busy road and a dry street (hil_tests/scenarios/demo_*.toml) run the real
firmware on emulated boards; the real gateway reads their links and publishes SenML to a broker
of its own; the demo subscribes, decodes and shows depth, alarms, traffic, health, and the
gateway's queue and links from its /metrics. When stdout is not a terminal (or with --plain) it
prints plain lines every --every seconds and one ``ALARM`` line per alarm as it arrives.
Ctrl-C or SIGTERM stops everything (exit 130); --duration stops it by itself (exit 0).
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO
from urllib.error import URLError

from rich.console import Console
from rich.live import Live

from gateway.tests.brokers import BrokerError
from hil_tests.demo import dashboard
from hil_tests.demo.model import DemoState
from hil_tests.demo.stack import SITES, Stack
from hil_tests.emulator.supervisor import BoardError
from hil_tests.rig import capture_file

TICK_S = 0.25
SCRAPE_S = 1.0


class StopRequestedError(Exception):
    """SIGINT or SIGTERM arrived: stop everything."""


def _stop(signum: int, frame: object) -> None:
    # Once stopping, further signals are ignored so the clean-up itself is not interrupted.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise StopRequestedError(signal.Signals(signum).name)


@contextlib.contextmanager
def _signals() -> Iterator[None]:
    old = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class Demo:
    """The running demo: the stack, the state the dashboard shows, the capture file."""

    def __init__(self, stack: Stack, out: TextIO, capture: Path | None) -> None:
        self.stack = stack
        self.out = out
        self.state = DemoState({s.node: s.label for s in stack.sites})
        self.writer = capture_file.Writer(capture) if capture is not None else None
        self.events: list[str] = []
        self.ports = {b.host_port: node for node, b in stack.boards.items()}
        self._scraped = 0.0
        self.ended = False                     # the scenarios' end was announced

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def tick(self, plain: bool) -> None:
        """Takes the messages that arrived and, once a second, the gateway's metrics."""
        while True:
            try:
                got = self.stack.arrivals.get_nowait()
            except queue.Empty:
                break
            msg = got.msg
            if self.writer is not None:
                self.writer.write(capture_file.Message(got.t, msg.topic, msg.payload, msg.qos,
                                                       msg.retain))
            for r in self.state.add_message(msg.topic, msg.payload):
                if r.kind == "alarm":
                    line = dashboard.alarm_line(self.state, r)
                    self.events.append(line)
                    if plain:
                        self.say(line)
        for node, board in self.stack.boards.items():
            self.state.node(node).board = board.state
        if not self.ended and self.stack.scenario_s and \
                self.stack.virtual_s >= self.stack.scenario_s:
            self.ended = True
            line = (f"demo: the scenarios ended at t+{self.stack.scenario_s:.0f} s; the world "
                    "stays as it is now (Ctrl-C stops)")
            self.events.append(line)
            if plain:
                self.say(line)
        now = time.monotonic()
        if now - self._scraped >= SCRAPE_S and self.stack.gateway is not None:
            self._scraped = now
            try:
                self.state.set_metrics(self.stack.gateway.scrape())
            except (URLError, OSError, ValueError) as exc:
                self.state.metrics_failed(f"unreachable ({exc})")

    def clock(self) -> str:
        return (f"{time.monotonic() - self.stack.started_at:6.1f} s wall, "
                f"t+{self.stack.virtual_s:.0f} s of {self.stack.scenario_s:.0f}")

    def title(self) -> str:
        gateway = "up" if self.stack.gateway_alive() else "DOWN"
        return (f"Roadside demo - {len(self.stack.boards)} emulated boards at "
                f"{self.stack.time_scale:g}x, gateway {gateway}, "
                f"{self.state.messages} MQTT messages - {self.clock()} - Ctrl-C stops")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _gateway_died(stack: Stack) -> str:
    gw = stack.gateway
    return "the gateway exited; its log ends:\n" + (gw.log_tail(20) if gw else "")


def _loop(demo: Demo, *, duration_s: float | None, every_s: float, plain: bool) -> None:
    stack = demo.stack
    end = None if duration_s is None else stack.started_at + duration_s
    if plain:
        last = 0.0
        while end is None or time.monotonic() < end:
            demo.tick(plain=True)
            if time.monotonic() - last >= every_s:
                last = time.monotonic()
                for line in dashboard.plain_lines(demo.state, demo.clock(), demo.ports):
                    demo.say(line)
            if not stack.gateway_alive():
                raise RuntimeError(_gateway_died(stack))
            time.sleep(TICK_S)
        demo.tick(plain=True)
        for line in dashboard.plain_lines(demo.state, demo.clock(), demo.ports):
            demo.say(line)
        return
    console = Console(file=demo.out)
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        while end is None or time.monotonic() < end:
            demo.tick(plain=False)
            live.update(dashboard.render(demo.state, demo.title(), demo.ports, demo.events))
            if not stack.gateway_alive():
                raise RuntimeError(_gateway_died(stack))
            time.sleep(TICK_S)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """The demo with parsed arguments; 0 after --duration, 130 on Ctrl-C/SIGTERM, 1 on failure."""
    out = out or sys.stdout
    plain = args.plain or not out.isatty()
    own_dir = args.work_dir is None
    workdir = Path(tempfile.mkdtemp(prefix="roadside-demo-")) if own_dir else args.work_dir
    stack = Stack(workdir, time_scale=args.time_scale, sites=SITES, broker=args.broker)
    demo: Demo | None = None
    code = 0
    began = time.monotonic()
    with _signals():
        try:
            print(f"demo: starting broker, gateway and {len(SITES)} boards at "
                  f"{args.time_scale:g}x in {workdir}", file=out, flush=True)
            stack.start(say=lambda text: print(f"demo: {text}", file=out, flush=True))
            groups = " ".join(f"{k}={v}" for k, v in stack.process_groups().items())
            print(f"demo: running; process groups {groups}", file=out, flush=True)
            demo = Demo(stack, out, args.capture)
            _loop(demo, duration_s=args.duration, every_s=args.every, plain=plain)
        except StopRequestedError as why:
            code = 130
            print(f"demo: {why} received, stopping", file=out, flush=True)
        except (BoardError, BrokerError, RuntimeError, OSError) as exc:
            code = 1
            print(f"demo: {exc}", file=sys.stderr, flush=True)
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if demo is not None:
                with contextlib.suppress(Exception):
                    demo.tick(plain=plain)
                demo.close()
            stack.close()
            if own_dir:
                shutil.rmtree(workdir, ignore_errors=True)
    summary = f"demo: stopped after {time.monotonic() - began:.1f} s; every process ended"
    if demo is not None:
        summary += f"; {demo.state.messages} MQTT messages"
        if demo.writer is not None:
            summary += f", {demo.writer.count} written to {args.capture}"
    print(summary, file=out, flush=True)
    return code


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hil_tests.demo",
        description="Three emulated boards (a flooding street, a busy road, a dry street), the "
                    "real gateway, a broker and a live dashboard. Ctrl-C stops everything.")
    p.add_argument("--duration", type=float, metavar="S",
                   help="stop by itself after S wall seconds (default: run until Ctrl-C)")
    p.add_argument("--time-scale", type=float, default=10.0, metavar="X",
                   help="virtual seconds per wall second (10: the street floods in a minute)")
    p.add_argument("--capture", type=Path, metavar="FILE",
                   help="record every MQTT message as JSONL, e.g. run.jsonl (plot it with "
                        "python -m hil_tests.demo.plot run.jsonl -o run.png)")
    p.add_argument("--plain", action="store_true",
                   help="plain periodic lines even on a terminal (the default when stdout is not)")
    p.add_argument("--every", type=float, default=5.0, metavar="S",
                   help="seconds between plain status lines (5)")
    p.add_argument("--broker", choices=("auto", "mosquitto", "amqtt"), default="auto",
                   help="auto: Mosquitto when installed, else the embedded amqtt broker")
    p.add_argument("--work-dir", type=Path, metavar="DIR",
                   help="keep flash images, consoles, gateway queue and logs here "
                        "(default: a temporary dir, removed at the end)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.time_scale <= 0 or args.time_scale > 100:
        print("demo: --time-scale must be in (0, 100], e.g. 10", file=sys.stderr)
        return 2
    if args.duration is not None and args.duration <= 0:
        print("demo: --duration must be > 0 seconds, e.g. 60", file=sys.stderr)
        return 2
    return run(args)
