"""`roadside fleet --manifest FILE.toml`: many boards in a row, with progress and a summary.

    gateway_keys = "/etc/roadside/keys"   # optional: every node's key goes in here
    board = "esp32-devkitc"               # default board for the nodes below
    deploy = true                         # default true: copy the firmware first
    verify = true                         # default true: self-test after provisioning
    link_timeout_s = 30                   # default 30; 0 skips the link check

    [[node]]
    port = "u0"                           # required, as for --port
    node_id = 101                         # required
    site = "hcmc-d7-001"                  # required
    board = "esp32s3-devkitc1"            # optional, overrides the default

Each node: deploy (if asked), provision, verify. A failing node is reported and the next one
goes on; the summary table lists every node, and the exit code is 1 if any failed.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tools import deploy as deploy_mod
from tools import provision as provision_mod
from tools import verify as verify_mod
from tools.errors import ToolError
from tools.node import NodeSession


@dataclass
class Entry:
    """One node of the manifest."""

    port: str
    node_id: int
    site: str
    board: str


@dataclass
class Manifest:
    """A checked manifest."""

    nodes: list[Entry]
    gateway_keys: Path | None
    deploy: bool
    verify: bool
    link_timeout_s: float


def _get(table: dict[str, Any], key: str, kind: type, where: str, default: object = None
         ) -> Any:
    value = table.get(key, default)
    if value is None:
        raise ToolError(f"{where}: `{key}` is missing; add it (see roadside fleet --help)")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ToolError(f"{where}: `{key}` must be {kind.__name__}, got {value!r}")
    return value


def load_manifest(path: Path) -> Manifest:
    """Reads and checks the manifest; every problem named with the fix."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ToolError(f"--manifest {path}: cannot read it ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ToolError(f"{path}: not TOML ({exc}); see roadside fleet --help") from exc
    known = {"gateway_keys", "board", "deploy", "verify", "link_timeout_s", "node"}
    extra = sorted(set(data) - known)
    if extra:
        raise ToolError(f"{path}: unknown key {extra[0]!r}; keys are {', '.join(sorted(known))}"
                        " (a node's keys go under [[node]])")
    default_board = data.get("board")
    nodes_raw = data.get("node")
    if not isinstance(nodes_raw, list) or not nodes_raw:
        raise ToolError(f"{path}: no [[node]] tables; add one per board")
    nodes: list[Entry] = []
    seen: dict[int, int] = {}
    for i, raw in enumerate(nodes_raw, start=1):
        where = f"{path}: node {i}"
        if not isinstance(raw, dict):
            raise ToolError(f"{where}: write it as a [[node]] table")
        extra = sorted(set(raw) - {"port", "node_id", "site", "board"})
        if extra:
            raise ToolError(f"{where}: unknown key {extra[0]!r}; a node has port, node_id, "
                            "site and board")
        entry = Entry(_get(raw, "port", str, where), _get(raw, "node_id", int, where),
                      _get(raw, "site", str, where),
                      _get(raw, "board", str, where, default_board))
        if entry.node_id in seen:
            raise ToolError(f"{where}: node_id {entry.node_id} is also node {seen[entry.node_id]}"
                            "; give each board its own id")
        seen[entry.node_id] = i
        provision_mod.check_identity(entry.node_id, entry.site, entry.board)
        nodes.append(entry)
    keys = data.get("gateway_keys")
    if keys is not None and not isinstance(keys, str):
        raise ToolError(f"{path}: gateway_keys must be a path string")
    keys_path = None if keys is None else (path.parent / keys)
    return Manifest(nodes, keys_path, bool(data.get("deploy", True)),
                    bool(data.get("verify", True)),
                    float(data.get("link_timeout_s", 30)))


def _one(entry: Entry, m: Manifest, step: Any) -> str:
    """Runs one node; its summary detail. ToolError on failure."""
    board = deploy_mod.load_board(entry.board)
    detail = ""
    if m.deploy:
        with NodeSession(entry.port) as node:
            step("deploy")
            deploy_mod.check_chip(node, board)
            res = deploy_mod.deploy(node, deploy_mod.compile_all(deploy_mod.chip_of(board)))
            detail = f"{len(res.copied)} files deployed"
            node.reset()
    with NodeSession(entry.port) as node:
        step("provision")
        prov = provision_mod.provision(node, entry.node_id, entry.site, entry.board)
        if m.gateway_keys is not None:
            provision_mod.update_keys_file(m.gateway_keys, entry.node_id, prov.key)
        if m.verify:
            step("verify")
            checks = verify_mod.self_test(node, 7)
            if m.link_timeout_s > 0:      # resets the node and watches it reach the gateway
                checks.append(verify_mod.link(node, entry.node_id, m.link_timeout_s))
            else:
                node.reset()
            failed = [c for c in checks if not c.ok]
            if failed:
                raise ToolError("; ".join(f"{c.name}: {c.detail}" for c in failed))
        else:
            node.reset()
    return ", ".join(x for x in (detail, "provisioned", "verified" if m.verify else "")
                     if x)


def run(m: Manifest, console: Console) -> int:
    """Every node in a row; 0 if all succeeded."""
    results: list[tuple[Entry, bool, str]] = []
    steps = 1 + int(m.deploy) + int(m.verify)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn(
            "{task.completed}/{task.total}"), TimeElapsedColumn(), console=console) as bars:
        fleet = bars.add_task("fleet", total=len(m.nodes))
        for entry in m.nodes:
            task = bars.add_task(f"node {entry.node_id} on {entry.port}", total=steps)

            def step(name: str, task: Any = task, entry: Entry = entry) -> None:
                bars.update(task, description=f"node {entry.node_id} on {entry.port}: {name}")
                bars.advance(task)

            try:
                detail = _one(entry, m, step)
                results.append((entry, True, detail))
            except ToolError as exc:
                results.append((entry, False, str(exc)))
            bars.update(task, completed=steps)
            bars.advance(fleet)
    table = Table(title="fleet summary")
    for col in ("node", "port", "site", "result", "detail"):
        table.add_column(col)
    for entry, ok, detail in results:
        table.add_row(str(entry.node_id), entry.port, entry.site,
                      "[green]OK[/green]" if ok else "[red]FAILED[/red]", detail)
    console.print(table)
    failed = sum(1 for _, ok, _ in results if not ok)
    console.print(f"fleet: {len(results) - failed} of {len(results)} nodes ready"
                  + (f"; {failed} failed" if failed else ""))
    return 1 if failed else 0
