"""`roadside fleet`: boards of a manifest in a row, progress, summary, one failure reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.keys import load_keys
from hil_tests.bench import Received
from tools import cli
from tools.tests.conftest import MakeBoard, gateway, node_config


def test_fleet_provisions_and_verifies_each_board_and_reports_a_failure(
        make_board: MakeBoard, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two emulated boards are provisioned (keys file gets both), self-tested and linked;
    a board on a missing port is FAILED in the summary, and the exit code is 1."""
    a = make_board(node_config(key=None))
    b = make_board(node_config(key=None))
    keys = tmp_path / "keys"
    manifest = tmp_path / "boards.toml"
    manifest.write_text(
        'gateway_keys = "keys"\nboard = "emulated"\ndeploy = false\nlink_timeout_s = 0\n'
        f'[[node]]\nport = "{a.console_port}"\nnode_id = 21\nsite = "s-21"\n'
        '[[node]]\nport = "u97"\nnode_id = 22\nsite = "s-22"\n'
        f'[[node]]\nport = "{b.console_port}"\nnode_id = 23\nsite = "s-23"\n')
    assert cli.main(["fleet", "--manifest", str(manifest)]) == 1
    out = capsys.readouterr().out
    assert "fleet: 2 of 3 nodes ready; 1 failed" in out, out
    assert "FAILED" in out and "/dev/ttyUSB97 does not exist" in out.replace("\n", "")
    _, warnings = load_keys(keys)
    text = keys.read_text()
    assert "\n21 " in text and "\n23 " in text and "22 " not in text and warnings == []
    for board, node in ((a, 21), (b, 23)):
        key = next(bytes.fromhex(ln.split()[1]) for ln in text.splitlines()
                   if ln.startswith(f"{node} "))
        def heard(got: list[Received], n: int = node) -> bool:
            return any(r.msg.node == n for r in got)

        with gateway(board, {node: key}) as gw:
            gw.wait_for(heard)


def test_fleet_manifest_errors_name_the_fix(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A missing node_id and a duplicate id are one line each, naming the node and key."""
    manifest = tmp_path / "boards.toml"
    manifest.write_text('[[node]]\nport = "u0"\nsite = "x"\n')
    assert cli.main(["fleet", "--manifest", str(manifest)]) == 1
    assert "node 1: `node_id` is missing" in capsys.readouterr().err
    manifest.write_text('board = "emulated"\n[[node]]\nport = "u0"\nnode_id = 5\nsite = "x"\n'
                        '[[node]]\nport = "u1"\nnode_id = 5\nsite = "y"\n')
    assert cli.main(["fleet", "--manifest", str(manifest)]) == 1
    assert "node 2: node_id 5 is also node 1" in capsys.readouterr().err
