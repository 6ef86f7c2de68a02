"""deploy, provision, calibrate, verify and monitor against emulated boards over ptys.

Each board runs the real firmware on the MicroPython unix port with its console on a pty
(supervisor console_pty); the tools reach it with the real mpremote, as on a USB cable.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.keys import load_keys
from protocol import frame, messages
from tools import cli, deploy
from tools.errors import ToolError
from tools.node import NodeSession
from tools.tests.conftest import H0_MM, KEY, MakeBoard, gateway, node_config

ROOT = Path(__file__).resolve().parents[2]


def _config_on(port: str) -> dict[str, object]:
    with NodeSession(port) as node:
        raw = node.read_file("/config.json")
        node.reset()
    assert raw is not None
    cfg: dict[str, object] = json.loads(raw)
    return cfg


def test_verify_passes_a_healthy_node_with_its_gateway(
        make_board: MakeBoard, capsys: pytest.CaptureFixture[str]) -> None:
    """Every check PASSes (sensors, ranges near h0, link answered); exit 0; firmware runs."""
    board = make_board()
    with gateway(board):
        board.wait_for(r"uplink: clock set")
        mark = board.mark()
        assert cli.main(["verify", "--port", str(board.console_port)]) == 0
        board.wait_for(r"flood: depth", after=mark)      # left running its firmware
    out = capsys.readouterr().out
    for name in ("health", "config", "board", "temp", "ranger", "mag_a", "mag_b", "battery",
                 "link"):
        assert any(ln.startswith(f"PASS  {name} ") for ln in out.splitlines()), (name, out)
    assert "verify: PASS (9/9 checks passed)" in out, out


def test_verify_fails_a_dead_ranger_a_missing_magnetometer_and_no_link(
        make_board: MakeBoard, capsys: pytest.CaptureFixture[str]) -> None:
    """No echo, magnetometer B absent, no gateway: those three FAIL, the rest PASS; exit 1."""
    faults = ("[[faults]]\nsensor = \"ranger\"\nkind = \"noecho\"\nt_s = 0\nuntil_s = 36000\n"
              "[[faults]]\nsensor = \"mag_b\"\nkind = \"absent\"\nt_s = 0\nuntil_s = 36000\n")
    board = make_board(tail=faults)
    board.wait_for(r"node: node 7 boot")
    assert cli.main(["verify", "--port", str(board.console_port), "--link-timeout", "3"]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any(ln.startswith("FAIL  ranger   sr04t 0/7 echoes") for ln in lines), out
    assert any(ln.startswith("FAIL  mag_b") for ln in lines), out
    assert any(ln.startswith("FAIL  link") and "keys file has node 7" in ln for ln in lines)
    assert any(ln.startswith("PASS  mag_a") for ln in lines), out
    assert "verify: FAIL: ranger, mag_b, link" in out


def test_calibrate_writes_the_median_of_dry_ranges(
        make_board: MakeBoard, capsys: pytest.CaptureFixture[str]) -> None:
    """On a dry road h0 comes out within noise of the true height and the node uses it."""
    board = make_board(node_config(h0_mm=3000))
    board.wait_for(r"node: node 7 boot")
    assert cli.main(["calibrate", "--port", str(board.console_port), "--yes"]) == 0
    out = capsys.readouterr().out
    assert "15 ranges" in out and "h0_mm =" in out
    cfg = _config_on(str(board.console_port))
    assert isinstance(cfg["h0_mm"], int) and abs(cfg["h0_mm"] - H0_MM) <= 4
    assert cfg["node"] == 7 and cfg["key"] == KEY.hex()           # the rest kept
    mark = board.mark()
    board.wait_for(r"flood: depth \d mm range 26[45]\d mm", after=mark)


def test_calibrate_refuses_moving_water_and_a_no(make_board: MakeBoard, tmp_path: Path) -> None:
    """Rising water makes the ranges disagree: refused, nothing written; a `n` writes nothing."""
    board = make_board(node_config(h0_mm=3000), top="depth = [[0, 0], [30, 1500]]")
    board.wait_for(r"node: node 7 boot")
    with pytest.raises(ToolError, match=r"the ranges disagree by \d+ mm"):
        cli.command_calibrate(cli.build_parser().parse_args(
            ["calibrate", "--port", str(board.console_port), "--yes"]))
    still = make_board(node_config(h0_mm=3000))
    still.wait_for(r"node: node 7 boot")
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("roadside")), "calibrate", "--port",
         str(still.console_port), "--count", "5"], input="n\n", capture_output=True,
        text=True, timeout=120, check=False)
    assert proc.returncode == 1 and "nothing written" in proc.stdout, proc.stdout + proc.stderr
    assert _config_on(str(still.console_port))["h0_mm"] == 3000
    assert _config_on(str(board.console_port))["h0_mm"] == 3000


def test_provision_writes_identity_and_the_gateways_keys_file(
        make_board: MakeBoard, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A fresh key in the node's config and in the keys file (which the gateway loads, other
    lines kept); the node boots as the new node and its gateway accepts its frames."""
    board = make_board(node_config(key=None))
    keys = tmp_path / "keys"
    other = "1042 " + "ab" * 32
    keys.write_text(f"# the site's nodes\n{other}\n9 {'00' * 32}\n")
    board.wait_for(r"node: node 7 boot")
    assert cli.main(["provision", "--port", str(board.console_port), "--node-id", "9",
                     "--site", "hcmc-d7-009", "--board", "emulated",
                     "--gateway-keys", str(keys)]) == 0
    assert "node 9's key replaced in" in capsys.readouterr().out
    _, warnings = load_keys(keys)                    # the gateway's own loader
    assert warnings == []
    text = keys.read_text()
    assert other in text and "# the site's nodes" in text and text.count("\n9 ") == 1
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
    cfg = _config_on(str(board.console_port))
    key = bytes.fromhex(str(cfg["key"]))
    assert cfg["node"] == 9 and cfg["site"] == "hcmc-d7-009" and cfg["h0_mm"] == H0_MM
    assert f"9 {key.hex()}" in text and key != bytes(32)
    with gateway(board, {9: key}) as gw:
        gw.wait_for(lambda got: any(r.msg.node == 9 and isinstance(r.msg, messages.Hello)
                                    for r in got))


def test_provision_refuses_an_invalid_board_before_touching_the_node(
        make_board: MakeBoard, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown --board is one line listing the known boards; the node keeps its config."""
    board = make_board()
    board.wait_for(r"node: node 7 boot")
    assert cli.main(["provision", "--port", str(board.console_port), "--node-id", "9",
                     "--site", "x", "--board", "esp32-wroom"]) == 1
    err = capsys.readouterr().err.strip()
    assert "unknown board 'esp32-wroom'" in err and "esp32-devkitc" in err and "\n" not in err
    assert _config_on(str(board.console_port))["node"] == 7


def test_deploy_copies_the_firmware_then_only_what_changed(
        make_board: MakeBoard, blank_rom: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A board with MicroPython only: deploy copies every .mpy to /lib and the firmware
    boots from there; again, nothing is copied; one changed file is the only one copied."""
    board = make_board(rom=blank_rom, heap_budget_b=256 * 1024)
    board.wait_for(r"ImportError")                    # no firmware yet: main.py fails
    port = str(board.console_port)
    mark = board.mark()           # before: the firmware may boot and log before deploy returns
    assert cli.main(["deploy", "--port", port, "--board", "emulated"]) == 0
    out = capsys.readouterr().out
    count = len(deploy.compile_all("emulated"))
    assert f"deploy: {count} files copied, 0 unchanged" in out, out
    board.wait_for(r"node: node 7 boot", after=mark)
    board.wait_for(r"flood: depth", after=mark)     # only the deployed firmware logs these
    assert cli.main(["deploy", "--port", port, "--board", "emulated"]) == 0
    assert f"deploy: 0 files copied, {count} unchanged" in capsys.readouterr().out
    files = deploy.compile_all("emulated")
    files["/lib/firmware/log.mpy"] += b""             # unchanged
    files["/lib/boards/extra.mpy"] = files["/lib/boards/emulated.mpy"]
    with NodeSession(port) as node:
        res = deploy.deploy(node, files)
        assert res.copied == ["/lib/boards/extra.mpy"] and res.deleted == []
        del files["/lib/boards/extra.mpy"]
        res = deploy.deploy(node, files)
        assert res.copied == [] and res.deleted == ["/lib/boards/extra.mpy"]
        assert node.read_file("/lib/boards/extra.mpy") is None
        node.reset()


def test_deploy_refuses_the_wrong_chip(make_board: MakeBoard,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Deploying an ESP32-S3 board's build to this board is refused, naming --board."""
    board = make_board()
    board.wait_for(r"node: node 7 boot")
    assert cli.main(["deploy", "--port", str(board.console_port), "--board",
                     "esp32s3-devkitc1"]) == 1
    err = capsys.readouterr().err
    assert "wrong chip" in err and "is an esp32s3; pass the --board of this node" in err


def test_no_micropython_on_the_port(make_board: MakeBoard,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The link UART carries frames, not a REPL: one line saying to flash or pick the console."""
    board = make_board()
    board.wait_for(r"node: node 7 boot")
    assert cli.main(["verify", "--port", board.host_port]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"roadside: no MicroPython answered on {board.host_port}: flash it")
    assert "\n" not in err


def test_monitor_decodes_the_live_link_without_acking(
        make_board: MakeBoard, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The node's frames on its link are printed, tags verified; nothing is sent back (the
    node never gets the time frame a gateway answers a hello with)."""
    board = make_board()
    keys = tmp_path / "keys"
    keys.write_text(f"7 {KEY.hex()}\n")
    assert cli.main(["monitor", "--port", board.host_port, "--keys", str(keys),
                     "--count", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and all(ln.startswith(("hello 7/", "health 7/", "flood 7/"))
                                 for ln in out), out
    assert any(ln.startswith("hello 7/") for ln in out), out
    assert not any("clock set" in ln for ln in board.lines)


def test_monitor_reads_a_hex_capture(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A capture with time stamps, comments and a frame split over two lines; a corrupt
    frame is a bad frame and exit 1; a line that is not hex names its line number."""
    key = bytes(range(32))
    one = frame.seal(messages.Flood(7, 3, 1, 1795000000, 412, 2238, 2650, 0, 7), key)
    two = bytearray(frame.seal(messages.Flood(7, 3, 2, 1795000060, 420, 2230, 2650, 0, 7), key))
    two[5] ^= 0x10
    cap = tmp_path / "link.hex"
    cap.write_text(f"# node 7 link\n[    12.500] {one[:10].hex()}\n12.6 {one[10:].hex(' ')}\n"
                   f"{bytes(two).hex()}\n")
    keys = tmp_path / "keys"
    keys.write_text(f"7 {key.hex()}\n")
    assert cli.main(["monitor", "--capture", str(cap), "--keys", str(keys)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("flood 7/3#1") and "depth_mm=412" in out[0]
    assert out[1].startswith("bad frame:")
    cap.write_text("12.5 00zz\n")
    assert cli.main(["monitor", "--capture", str(cap)]) == 1
    assert f"{cap}:1: not hex bytes" in capsys.readouterr().err
