"""`roadside`: the technician's command line. Each verb is a command_<verb> returning an exit code.

    roadside demo                         the wire protocol live over a pty
    roadside decode 21d18443a1...00       decode frames given as hex (or - for stdin)
    roadside emulate --scenario F.toml    the real firmware on an emulated board
"""

import argparse
import sys

from hil_tests.emulator import run as emulate
from protocol import frame, link, show
from protocol.errors import ProtocolError
from tools import demo
from tools.errors import ToolError


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
