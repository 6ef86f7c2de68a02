"""CPython only: the .pyi stubs that host code is type-checked against match the device code.

protocol/*.py carries no annotations (it must run unchanged on MicroPython); mypy reads the
stub next to each module instead. These tests catch a stub that drifts from its module.
"""

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from protocol import messages as m

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = ROOT / "protocol"
HEADER = ("self", "node", "boot", "seq")

# Field kind -> the annotation its attribute and __init__ parameter carry in messages.pyi.
KIND_TYPES = {
    m.U32: "int",
    m.U64: "int",
    m.I32: "int",
    m.U32N: "int | None",
    m.I32N: "int | None",
    m.TEXT: "str",
    m.BYTES: "bytes",
    m.U32A: "Sequence[int]",
    m.CFG: "dict[int, int | list[int]]",
}


def _norm(source: str) -> str:
    # One spelling per annotation, whatever the spacing or parentheses in the stub.
    return ast.unparse(ast.parse(source, mode="eval"))


def _stub_classes() -> dict[str, ast.ClassDef]:
    tree = ast.parse((PROTOCOL / "messages.pyi").read_text(encoding="utf-8"))
    return {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}


def _stub_class(cls: type[m.Message]) -> ast.ClassDef:
    stub = _stub_classes().get(cls.__name__)
    assert stub is not None, f"messages.pyi has no class {cls.__name__}"
    return stub


def _want(cls: type[m.Message]) -> list[tuple[str, str]]:
    # (field, expected annotation) in FIELDS order, from the run-time tables.
    assert len(cls.FIELDS) == len(cls.KINDS), f"{cls.__name__}: FIELDS and KINDS differ in length"
    unknown = [k for k in cls.KINDS if k not in KIND_TYPES]
    assert not unknown, f"{cls.__name__}: field kinds {unknown} missing from KIND_TYPES"
    return [(f, _norm(KIND_TYPES[k])) for f, k in zip(cls.FIELDS, cls.KINDS, strict=True)]


@pytest.mark.parametrize("cls", m.CLASSES, ids=lambda c: c.__name__)
def test_stub_init_parameters_are_the_runtime_fields(cls: type[m.Message]) -> None:
    """Each stub __init__ takes (self, node, boot, seq) then exactly FIELDS, typed by KINDS."""
    inits = [n for n in _stub_class(cls).body
             if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
    assert len(inits) == 1, f"messages.pyi: {cls.__name__} needs one __init__"
    args = inits[0].args
    assert not (args.posonlyargs or args.vararg or args.kwonlyargs or args.kwarg), (
        f"{cls.__name__}.__init__ must list its fields as plain parameters")
    names = tuple(a.arg for a in args.args)
    assert names == HEADER + cls.FIELDS, f"{cls.__name__}.__init__{names}"
    for a in args.args[1:len(HEADER)]:
        got = ast.unparse(a.annotation) if a.annotation else None
        assert got == "int", f"{cls.__name__}.__init__ {a.arg}: {got}"
    got = [(a.arg, ast.unparse(a.annotation) if a.annotation else None)
           for a in args.args[len(HEADER):]]
    assert got == _want(cls), f"{cls.__name__}.__init__ parameter types"


@pytest.mark.parametrize("cls", m.CLASSES, ids=lambda c: c.__name__)
def test_stub_attributes_follow_the_runtime_kinds(cls: type[m.Message]) -> None:
    """Each stub class annotates exactly its FIELDS, in order, with the type of each KIND."""
    got = [(n.target.id, ast.unparse(n.annotation)) for n in _stub_class(cls).body
           if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
    assert got == _want(cls), f"{cls.__name__} attribute types"


def test_stubtest_finds_no_difference_in_any_module() -> None:
    """mypy.stubtest finds every protocol module's stub consistent with the module itself."""
    if importlib.util.find_spec("mypy") is None:
        pytest.fail(f"mypy is not installed for {sys.executable}; run "
                    f"`.venv/bin/pip install -e '.[dev]'` to install it")
    sources = sorted(p.stem for p in PROTOCOL.glob("*.py") if p.stem != "__init__")
    missing = [s for s in sources if not (PROTOCOL / f"{s}.pyi").exists()]
    assert not missing, f"protocol modules without a stub: {missing}"
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", *(f"protocol.{s}" for s in sources)],
        env=dict(os.environ, PYTHONPATH=path), cwd=ROOT, capture_output=True, text=True,
        timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
