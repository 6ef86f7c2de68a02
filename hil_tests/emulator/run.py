"""`roadside emulate`: one emulated board running a scenario, its link on a pty for a gateway.

    roadside emulate --scenario hil_tests/scenarios/flash_flood.toml --time-scale 10

prints `serial: /dev/pts/N` (the port a gateway opens), with --console-pty also
`console: /dev/pts/M` (the board's USB console: REPL, mpremote, the technician's tools), then
the board's console with virtual time stamps, until the scenario ends or Ctrl-C.
Also `python -m hil_tests.emulator.run ...`.
tools/cli.py wires the verb with `add_arguments` and `command`.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import TextIO

from hil_tests.bench import BenchGateway, Received
from hil_tests.emulator.scenario import Scenario, ScenarioError, load_scenario
from hil_tests.emulator.supervisor import CAUSES, Board, BoardError
from protocol import show


def node_config(scenario: Scenario, node_id: int, board: str,
                key: bytes | None) -> dict[str, object]:
    """The node's /config.json for an emulated site (the firmware owns and validates it)."""
    return {
        "node": node_id,
        "site": "emulated",
        "key": key.hex() if key else "",
        "board": board,
        "h0_mm": round(scenario.site.h0_mm),
        "mag_distance_mm": round(scenario.site.mag_distance_mm),
    }


def _summary(board: Board) -> str:
    counts = board.boots_by_cause
    parts = [f"{n} {CAUSES.get(cause, str(cause))}" for cause, n in sorted(counts.items())]
    return "boots: " + (", ".join(parts) or "none")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def emulate(  # noqa: PLR0917 - the signature tools/cli.py calls
        scenario: Path, node_id: int, time_scale: float, board: str, key: bytes | None,
        state_dir: Path | None, out: TextIO | None = None, ack: bool = False,
        console_pty: bool = False) -> int:
    """Runs the scenario on one emulated board; 0 at its end, 1 if the board died, 130 on ^C.

    SIGTERM stops it like Ctrl-C (the board's process group is killed either way).
    """
    out = out or sys.stdout
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            return _emulate(scenario, node_id=node_id, time_scale=time_scale, board=board,
                            key=key, state_dir=state_dir, out=out, ack=ack,
                            console_pty=console_pty)
        finally:
            signal.signal(signal.SIGTERM, previous)
    return _emulate(scenario, node_id=node_id, time_scale=time_scale, board=board, key=key,
                    state_dir=state_dir, out=out, ack=ack, console_pty=console_pty)


def _bench(emu: Board, scen: Scenario, node_id: int, key: bytes | None,
           out: TextIO) -> BenchGateway:
    """The bench peer on the board's link, printing each accepted message as it arrives."""
    start_ms = scen.start_utc.timestamp() * 1000.0

    def show_one(got: Received) -> None:
        print(f"[{got.at_ms / 1000.0:10.3f}] << {show.describe(got.msg)}", file=out, flush=True)

    return BenchGateway(emu.host_port, keys={node_id: key} if key else None,
                        clock_ms=emu.now_ms, utc_ms=lambda: int(start_ms + emu.now_ms()),
                        on_accept=show_one)


def _emulate(scenario: Path, *, node_id: int, time_scale: float, board: str,
             key: bytes | None, state_dir: Path | None, out: TextIO, ack: bool,
             console_pty: bool = False) -> int:
    try:
        scen = load_scenario(scenario)
    except ScenarioError as exc:
        print(f"roadside emulate: {exc}", file=sys.stderr)
        return 1
    emu: Board | None = None
    try:
        # Without a state dir the Board makes a temporary one and removes it when closed.
        emu = Board(scen, node_config(scen, node_id, board, key), state_dir=state_dir,
                    time_scale=time_scale, board=board, echo=out, console_pty=console_pty)
        print(f"serial: {emu.host_port}", file=out, flush=True)
        if emu.console_port is not None:
            print(f"console: {emu.console_port}", file=out, flush=True)
        print(f"emulate: {scen.name}, {scen.duration_s:g} s at {time_scale:g}x, node "
              f"{node_id}, state in {emu.state_dir}", file=sys.stderr, flush=True)
        with contextlib.ExitStack() as stack:
            bench = stack.enter_context(_bench(emu, scen, node_id, key, out)) if ack else None
            emu.start()
            emu.wait_until_ms(scen.duration_s * 1000.0)
            if bench is not None:
                kinds = Counter(r.msg.NAME for r in bench.received)
                print(f"emulate: bench accepted {dict(kinds)}, refused {dict(bench.refused)}, "
                      f"duplicates {bench.duplicates}", file=sys.stderr, flush=True)
        print(f"emulate: scenario ended at {scen.duration_s:g} s; {_summary(emu)}",
              file=sys.stderr, flush=True)
        return 0
    except KeyboardInterrupt:
        if emu is None:
            print("emulate: interrupted", file=sys.stderr)
            return 130
        at = emu.now_ms() / 1000.0
        emu.close()
        print(f"emulate: interrupted at virtual {at:.1f} s; board stopped; {_summary(emu)}",
              file=sys.stderr)
        return 130
    except BoardError as exc:
        print(f"roadside emulate: {exc}", file=sys.stderr)
        return 1
    finally:
        if emu is not None:
            emu.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `roadside emulate`."""
    parser.add_argument("--scenario", type=Path, required=True,
                        help="scenario file, e.g. hil_tests/scenarios/flash_flood.toml")
    parser.add_argument("--node-id", type=int, default=1, help="node id to provision (1)")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="virtual seconds per wall second (1 = real time; 10 runs a "
                             "15-minute scenario in 90 s)")
    parser.add_argument("--board", default="emulated", help="board module in boards/ (emulated)")
    parser.add_argument("--key-file", type=Path,
                        help="file holding the node's 32-byte key as 64 hex digits "
                             "(default: an open node, no key)")
    parser.add_argument("--state-dir", type=Path,
                        help="keep flash, RTC and console.log here (default: a temporary dir)")
    parser.add_argument("--ack", action="store_true",
                        help="attach a bench peer that decodes, acknowledges and time-syncs "
                             "the node and prints each message (no gateway needed)")
    parser.add_argument("--console-pty", action="store_true",
                        help="also put the board's console on a pty, like an ESP32's USB "
                             "serial (REPL, Ctrl-C, mpremote): prints `console: /dev/pts/M`")


def _read_key(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        key = bytes.fromhex(path.read_text(encoding="utf-8").split("#", 1)[0].strip())
    except (OSError, ValueError) as exc:
        raise BoardError(f"{path}: cannot read a key ({exc}); write 64 hex digits") from exc
    if len(key) != 32:
        raise BoardError(f"{path}: key is {len(key)} bytes; write 64 hex digits (32 bytes)")
    return key


def command(args: argparse.Namespace) -> int:
    """`roadside emulate`: see add_arguments."""
    if args.time_scale <= 0:
        print("roadside emulate: --time-scale must be > 0, e.g. 10", file=sys.stderr)
        return 2
    try:
        key = _read_key(args.key_file)
    except BoardError as exc:
        print(f"roadside emulate: {exc}", file=sys.stderr)
        return 1
    return emulate(args.scenario, args.node_id, args.time_scale, args.board, key,
                   args.state_dir, ack=args.ack, console_pty=args.console_pty)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil_tests.emulator.run",
                                     description="Run one emulated board on a scenario.")
    add_arguments(parser)
    return command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
