"""`roadside provision`: a node's identity: its key, /config.json, and the gateway's keys file.

The node key is 32 random bytes from `secrets`. /config.json keeps whatever the node already
has (h0_mm from a calibration, intervals) and sets node, site, board and key; the node's own
validator (firmware/config.py, run on the node) must accept it, apart from a missing h0_mm,
which `roadside calibrate` writes next. The gateway's keys file (the format gateway/keys.py
reads: `NODE HEX64` per line, `#` comments) gets the node's line added or replaced, other
lines and comments kept, written atomically with mode 0600.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tools.deploy import MAIN_PY, load_board
from tools.errors import ToolError
from tools.node import NodeSession

KEY_B = 32
MAX_TEXT_B = 32                       # firmware/config.py: text values hold 32 bytes at most
U32_MAX = 0xFFFFFFFF
CONFIG = "/config.json"
H0_MISSING = "h0_mm missing"


@dataclass
class Provisioned:
    """What provisioning wrote."""

    node_id: int
    key: bytes
    config: dict[str, object]
    node_error: str                   # the node's validator verdict ("" or "h0_mm missing")


def check_identity(node_id: int, site: str, board: str) -> None:
    """Refuses what the node's validator would refuse, before touching the node."""
    if not 0 <= node_id <= U32_MAX:
        raise ToolError(f"--node-id {node_id}: node ids are 0..{U32_MAX}")
    if len(site.encode()) > MAX_TEXT_B or not site:
        raise ToolError(f"--site {site!r}: give 1..{MAX_TEXT_B} bytes, e.g. hcmc-d7-012")
    load_board(board)


def new_key() -> bytes:
    """A fresh node key."""
    return secrets.token_bytes(KEY_B)


def node_config(current: bytes | None, node_id: int, site: str, board: str, *,
                key: bytes, h0_mm: int | None = None) -> dict[str, object]:
    """The node's new /config.json: what it had, with the identity set."""
    cfg: dict[str, object] = {}
    if current:
        try:
            loaded = json.loads(current)
        except ValueError:
            loaded = None
        if isinstance(loaded, dict):
            cfg = loaded
    cfg.update({"node": node_id, "site": site, "board": board, "key": key.hex()})
    if h0_mm is not None:
        cfg["h0_mm"] = h0_mm
    return cfg


def validate_on_node(node: NodeSession) -> str:
    """The node's verdict on its /config.json (firmware/config.py): "" when all is valid."""
    return str(node.eval("__import__('firmware.config', None, None, ('Config',))"
                         ".Config().load().error"))


def write_config(node: NodeSession, cfg: dict[str, object], allow: tuple[str, ...] = ()) -> str:
    """Writes /config.json, has the node validate it, restores the old one if refused."""
    old = node.read_file(CONFIG)
    node.write_file(CONFIG, (json.dumps(cfg, sort_keys=True) + "\n").encode())
    error = validate_on_node(node)
    if error and error not in allow:
        if old is not None:
            node.write_file(CONFIG, old)
        raise ToolError(f"the node refused its new config.json: {error}; nothing changed "
                        "on the node; fix the value named")
    return error


def update_keys_file(path: Path, node_id: int, key: bytes) -> bool:
    """Adds or replaces the node's line; True if it replaced one. Atomic, mode 0600."""
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
    except OSError as exc:
        raise ToolError(f"{path}: cannot read the keys file ({exc})") from exc
    lines = text.splitlines()
    out: list[str] = []
    replaced = False
    for raw in lines:
        fields = raw.split("#", 1)[0].split()
        if fields and fields[0] == str(node_id):
            if not replaced:
                out.append(f"{node_id} {key.hex()}")
            replaced = True
            continue
        if fields and (len(fields) != 2 or not fields[0].isdecimal()
                       or not re.fullmatch(r"[0-9a-fA-F]{64}", fields[1])):
            raise ToolError(f"{path}: line {raw!r} is not `NODE HEX64`; fix it (the gateway "
                            "would refuse the file) and run provision again")
        out.append(raw)
    if not replaced:
        if not out:
            out.append("# node  key (roadside provision; the gateway reads this file)")
        out.append(f"{node_id} {key.hex()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".keys-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(out) + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return replaced


def provision(node: NodeSession, node_id: int, site: str, board: str,
              key: bytes | None = None) -> Provisioned:
    """Writes the node's identity (a new key unless given) and its main.py if missing."""
    check_identity(node_id, site, board)
    key = key or new_key()
    cfg = node_config(node.read_file(CONFIG), node_id, site, board, key=key)
    error = write_config(node, cfg, allow=(H0_MISSING,))
    if node.read_file("/main.py") is None:
        node.write_file("/main.py", MAIN_PY.encode())
    return Provisioned(node_id, key, cfg, error)
