"""The roadside command line: demo and decode, run as a user runs them."""

import subprocess
import sys
from pathlib import Path

import pytest

from protocol import frame, messages
from tools import cli, demo

ROOT = Path(__file__).resolve().parents[2]


def test_demo_delivers_every_frame_and_refuses_each_injected_fault() -> None:
    """All 20 genuine frames cross the pty; garbage, bit flip, forgery and replay are refused."""
    lines: list[str] = []
    assert demo.run(pace_s=0.0, out=lines.append) == 0
    summary = lines[-1]
    assert "20 frames sent" in summary and "20 accepted" in summary, summary
    assert "cobs=1, crc=1, replay=1, tag=1" in summary, summary
    assert any("alarm=predicted" in ln for ln in lines)
    assert any("alarm=crossed" in ln for ln in lines)


def test_decode_prints_a_tagged_frame_with_its_keys(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """`roadside decode --keys` verifies the tag and prints the reading in one line."""
    key = bytes(range(32))
    wire = frame.seal(messages.Flood(1042, 17, 3, 1795000000, 412, 2788, 3150, 0, 7), key)
    keys = tmp_path / "keys"
    keys.write_text(f"# node key\n1042 {key.hex()}\n")
    assert cli.main(["decode", "--keys", str(keys), wire.hex()]) == 0
    out = capsys.readouterr().out
    assert "flood 1042/17#3" in out and "depth_mm=412" in out


def test_decode_reports_a_tagged_frame_without_its_key_and_garbage(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Without the key the tagged frame is refused by reason; garbage is a bad frame; exit 1."""
    wire = frame.seal(messages.Flood(1042, 17, 3, 1795000000, 412, 2788, 3150, 0, 7), bytes(32))
    assert cli.main(["decode", wire.hex() + "0badf00d00"]) == 1
    out = capsys.readouterr().out
    assert "bad frame: node: node 1042 has no key" in out
    assert out.count("bad frame") == 2


def test_bad_keys_file_is_one_line_naming_the_fix(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed keys file gives exit 1 and a message saying the expected format."""
    keys = tmp_path / "keys"
    keys.write_text("1042 nothex\n")
    assert cli.main(["decode", "--keys", str(keys), "00"]) == 1
    assert "one `NODE HEX-KEY` pair per line" in capsys.readouterr().err


def test_console_script_runs_as_a_process() -> None:
    """`python -m tools.cli decode` works as a separate process (what the console script runs)."""
    wire = frame.seal(messages.Time(1042, 17, 1, 1795000000000, 1), None)
    proc = subprocess.run([sys.executable, "-m", "tools.cli", "decode", "--downlink", wire.hex()],
                          cwd=ROOT, capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "time 1042/17#1" in proc.stdout
