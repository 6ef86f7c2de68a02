"""`roadside`: the technician's command line. Each verb is a command_<verb> returning an exit code.

    roadside demo                         the wire protocol live over a pty
    roadside decode 21d18443a1...00       decode frames given as hex (or - for stdin)
    roadside emulate --scenario F.toml    the real firmware on an emulated board
    roadside flash --port u0 --firmware ESP32_GENERIC-v1.29.bin --chip esp32
    roadside deploy --port u0 --board esp32-devkitc
    roadside provision --port u0 --node-id 101 --site hcmc-d7-001 --gateway-keys keys
    roadside calibrate --port u0
    roadside monitor --port u1            (the link UART, through a USB-UART adapter)
    roadside verify --port u0
    roadside fleet --manifest boards.toml

--port takes a path (/dev/ttyUSB0) or an alias: u0 = /dev/ttyUSB0, a0 = /dev/ttyACM0.
"""

import argparse
import sys
from pathlib import Path

from hil_tests.emulator import run as emulate
from protocol import frame, link, show
from protocol.errors import ProtocolError
from tools import calibrate, demo, deploy, fleet, monitor, provision, verify
from tools import flash as flash_mod
from tools.errors import ToolError
from tools.node import NodeSession

PORT_HELP = "the board's USB console, e.g. /dev/ttyUSB0 or u0 (a0 = /dev/ttyACM0)"


def command_demo(args: argparse.Namespace) -> int:
    """Runs the protocol demonstration (simulated node, real pty, live decoding)."""
    return demo.run(pace_s=args.pace)


def _load_keys(path: str | None) -> frame.KeyRing:
    ring = frame.KeyRing(open_nodes=True)
    if path is None:
        return ring
    try:
        with open(path) as f:
            for raw in f:
                line = raw.split("#", 1)[0].strip()
                if not line:
                    continue
                node, _, key = line.partition(" ")
                ring.add(int(node), bytes.fromhex(key.strip()))
    except (OSError, ValueError) as e:
        raise ToolError(f"{path}: cannot read keys ({e}); one `NODE HEX-KEY` pair per line") from e
    return ring


def command_decode(args: argparse.Namespace) -> int:
    """Decodes frames given as hex; prints one line per frame and exits 1 if any was bad."""
    text = sys.stdin.read() if args.frames == ["-"] else " ".join(args.frames)
    data = bytes.fromhex("".join(text.split()))
    ring = _load_keys(args.keys)
    bad = 0
    for item in link.Deframer().feed(data if data.endswith(b"\x00") else data + b"\x00"):
        try:
            if isinstance(item, ProtocolError):
                raise item
            print(show.describe(frame.open_payload(item, ring, not args.downlink)))
        except ProtocolError as e:
            bad += 1
            print(f"bad frame: {e}")
    return 1 if bad else 0


def command_flash(args: argparse.Namespace) -> int:
    """Erases the chip and writes a MicroPython image (esptool)."""
    flash_mod.flash(args.port, args.firmware, args.chip, baud=args.baud, before=args.before,
                    connect_attempts=args.connect_attempts)
    print(f"flash: MicroPython written to the {args.chip} on {args.port}; next: roadside "
          f"deploy --port {args.port} --board BOARD")
    return 0


def command_deploy(args: argparse.Namespace) -> int:
    """Compiles the node's code for its chip; copies what changed to /lib."""
    board = deploy.load_board(args.board)
    files = deploy.compile_all(deploy.chip_of(board))
    with NodeSession(args.port) as node:
        deploy.check_chip(node, board)
        res = deploy.deploy(node, files, progress=lambda p: print(f"deploy: {p}"))
        node.reset()
    print(f"deploy: {len(res.copied)} files copied, {res.unchanged} unchanged, "
          f"{len(res.deleted)} deleted{', main.py written' if res.wrote_main else ''}; "
          "the node restarted")
    return 0


def command_provision(args: argparse.Namespace) -> int:
    """Gives the node its id, site, board and a new key; adds the key to the gateway's."""
    provision.check_identity(args.node_id, args.site, args.board)
    with NodeSession(args.port) as node:
        prov = provision.provision(node, args.node_id, args.site, args.board)
        if args.gateway_keys is not None:
            replaced = provision.update_keys_file(args.gateway_keys, args.node_id, prov.key)
            how = "replaced in" if replaced else "added to"
            print(f"provision: node {args.node_id}'s key {how} {args.gateway_keys} "
                  "(reload the gateway)")
        node.reset()
    print(f"provision: node {args.node_id} at {args.site} ({args.board}) written to "
          f"{args.port}; the node restarted")
    if prov.node_error:
        print(f"provision: {prov.node_error}: next, roadside calibrate --port {args.port}")
    if args.gateway_keys is None:
        print(f"provision: key {prov.key.hex()} (give it to the gateway's keys file: "
              f"{args.node_id} {prov.key.hex()})")
    return 0


def command_calibrate(args: argparse.Namespace) -> int:
    """Measures h0 with the node's ranger; writes it after confirmation."""

    def confirm(cal: calibrate.Calibration) -> bool:
        temp = "no air temperature" if cal.temp_cc is None else f"{cal.temp_cc / 100:.2f} C"
        print(f"calibrate: {len(cal.ranges_mm)} ranges {' '.join(map(str, cal.ranges_mm))} mm "
              f"(spread {cal.spread_mm} mm, {temp}): h0 = {cal.h0_mm} mm")
        if args.yes:
            return True
        return input(f"write h0_mm = {cal.h0_mm} to the node? [y/N] ").strip().lower() in (
            "y", "yes")

    with NodeSession(args.port) as node:
        cal = calibrate.calibrate(node, args.count, args.tolerance_mm, confirm)
        node.reset()
    if cal is None:
        print("calibrate: nothing written; the node restarted")
        return 1
    print(f"calibrate: h0_mm = {cal.h0_mm} written; the node restarted")
    return 0


def command_monitor(args: argparse.Namespace) -> int:
    """Decodes the frames of a node's link, live or from a capture; never answers."""
    decoder = monitor.Decoder(_load_keys(args.keys), lambda line: print(line, flush=True))
    if args.capture is not None:
        monitor.decode_chunks(monitor.capture_chunks(args.capture), decoder)
    elif args.port is not None:
        monitor.listen(args.port, decoder, count=args.count, duration_s=args.duration)
    else:
        raise ToolError("monitor: give --port (the link UART's adapter, e.g. u1) or "
                        "--capture FILE")
    print(f"monitor: {decoder.frames} frames, {decoder.bad} bad", file=sys.stderr)
    return 1 if decoder.bad else 0


def command_verify(args: argparse.Namespace) -> int:
    """Health, self-test and link: PASS or FAIL per check; 1 if any failed."""
    with NodeSession(args.port) as node:
        checks = verify.verify(node, args.pings, args.link_timeout,
                               lambda c: print(c.line(), flush=True))
    failed = [c.name for c in checks if not c.ok]
    print(f"verify: {'FAIL: ' + ', '.join(failed) if failed else 'PASS'} "
          f"({len(checks) - len(failed)}/{len(checks)} checks passed)")
    return 1 if failed else 0


def command_fleet(args: argparse.Namespace) -> int:
    """Deploys, provisions and verifies every board of a manifest in a row."""
    from rich.console import Console  # noqa: PLC0415 - rich only for fleet

    return fleet.run(fleet.load_manifest(args.manifest), Console())


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="roadside", description="Roadside technician tools.")
    sub = ap.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("demo", help="show the wire protocol live over a pseudo-terminal")
    p.add_argument("--pace", type=float, default=0.15, help="seconds between frames")
    p.set_defaults(func=command_demo)
    p = sub.add_parser("decode", help="decode frames given as hex, e.g. from a capture")
    p.add_argument("frames", nargs="+", help="hex bytes of one or more frames, or - for stdin")
    p.add_argument("--keys", help="keys file: lines of `NODE HEX-KEY` (tags are verified)")
    p.add_argument("--downlink", action="store_true", help="frames travel gateway -> node")
    p.set_defaults(func=command_decode)
    p = sub.add_parser("emulate", help="run the real firmware on an emulated board driven by a "
                       "scenario; prints the serial port a gateway opens")
    emulate.add_arguments(p)
    p.set_defaults(func=emulate.command)

    p = sub.add_parser("flash", help="erase a blank ESP32 and write MicroPython (esptool)")
    p.add_argument("--port", required=True, help=PORT_HELP)
    p.add_argument("--firmware", type=Path, required=True,
                   help="MicroPython image, e.g. ESP32_GENERIC-v1.29.bin")
    p.add_argument("--chip", required=True, choices=sorted(flash_mod.OFFSET))
    p.add_argument("--baud", type=int, default=flash_mod.BAUD, help="write speed (460800)")
    p.add_argument("--before", default="default-reset",
                   help="esptool --before: default-reset, or no-reset if BOOT is held by hand")
    p.add_argument("--connect-attempts", type=int,
                   help="esptool --connect-attempts (its default: 7)")
    p.set_defaults(func=command_flash)

    p = sub.add_parser("deploy", help="compile the firmware for the board and copy what "
                       "changed to its /lib (mpy-cross, mpremote)")
    p.add_argument("--port", required=True, help=PORT_HELP)
    p.add_argument("--board", required=True, help="board module in boards/, e.g. esp32-devkitc")
    p.set_defaults(func=command_deploy)

    p = sub.add_parser("provision", help="node id, site, board and a new key; the key also "
                       "into the gateway's keys file")
    p.add_argument("--port", required=True, help=PORT_HELP)
    p.add_argument("--node-id", type=int, required=True, help="decimal node id, e.g. 101")
    p.add_argument("--site", required=True, help="site name, e.g. hcmc-d7-001")
    p.add_argument("--board", default="esp32-devkitc", help="board module (esp32-devkitc)")
    p.add_argument("--gateway-keys", type=Path,
                   help="the gateway's keys file (NODE HEX64 lines); the node's line is "
                        "added or replaced")
    p.set_defaults(func=command_provision)

    p = sub.add_parser("calibrate", help="measure the height above the dry road (h0) with "
                       "the node's ranger and write it")
    p.add_argument("--port", required=True, help=PORT_HELP)
    p.add_argument("--count", type=int, default=15, help="ranges to take (15)")
    p.add_argument("--tolerance-mm", type=int, default=20,
                   help="largest spread accepted between the ranges (20 mm)")
    p.add_argument("--yes", action="store_true", help="write without asking")
    p.set_defaults(func=command_calibrate)

    p = sub.add_parser("monitor", help="decode a node's link live (never acks) or a hex "
                       "capture file")
    p.add_argument("--port", help="the link UART through a USB-UART adapter, e.g. u1 "
                   "(not the USB console)")
    p.add_argument("--capture", type=Path, help="hex capture file instead of a port")
    p.add_argument("--keys", help="keys file (NODE HEX-KEY lines) to verify tags")
    p.add_argument("--count", type=int, help="stop after this many frames")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.set_defaults(func=command_monitor)

    p = sub.add_parser("verify", help="health, self-test and link of a node: PASS/FAIL each")
    p.add_argument("--port", required=True, help=PORT_HELP)
    p.add_argument("--pings", type=int, default=7, help="ranger pings in the self-test (7)")
    p.add_argument("--link-timeout", type=float, default=30.0,
                   help="seconds to wait for the gateway to answer the node (30)")
    p.set_defaults(func=command_verify)

    p = sub.add_parser("fleet", help="deploy, provision and verify many boards in a row",
                       description=fleet.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, required=True, help="e.g. boards.toml")
    p.set_defaults(func=command_fleet)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ToolError as e:
        print(f"roadside: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("roadside: interrupted", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
