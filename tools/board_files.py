"""The one list of files that go onto a board: deploy copies them, lint compiles them."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Protocol modules a node imports. show.py (host conveniences) stays on the host.
PROTOCOL = ("__init__", "errors", "link", "cbor", "mac", "messages", "frame", "replay")


def board_files(root: Path = ROOT) -> list[Path]:
    """Every .py file a board carries, in a stable order."""
    files = [root / "protocol" / f"{name}.py" for name in PROTOCOL]
    for folder in ("firmware", "boards"):
        files += sorted(p for p in (root / folder).rglob("*.py")
                        if "tests" not in p.parts and not p.name.startswith("host_"))
    return files
