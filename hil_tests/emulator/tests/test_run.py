"""`roadside emulate`: the command a user runs, with the bench peer attached (`--ack`)."""

import io
from pathlib import Path

from hil_tests.emulator import run
from tools import cli

SCENARIO = """
name = "short_rise"
duration_s = 150
start_utc = "2026-11-22T08:00:00Z"
depth = [[0, 0], [30, 0], [150, 120]]
[site]
h0_mm = 2500
"""


def test_emulate_with_ack_prints_decoded_frames_and_ends_with_the_scenario(
        tmp_path: Path) -> None:
    """The real firmware's hello, floods and health arrive decoded; exit 0 at the end."""
    scenario = tmp_path / "short.toml"
    scenario.write_text(SCENARIO)
    key = tmp_path / "node.key"
    key.write_text("ab" * 32 + "\n")
    out = io.StringIO()
    rc = run.emulate(scenario, 77, 30.0, "emulated", bytes.fromhex("ab" * 32), None, out=out,
                     ack=True)
    text = out.getvalue()
    assert rc == 0, text
    assert "<< hello 77/1#1 fw=" in text
    assert text.count("<< flood 77/1#") >= 1 and "<< health 77/1#" in text
    # The same through the command line parser (options, key file), here only parsed.
    args = cli.build_parser().parse_args(["emulate", "--scenario", str(scenario), "--ack",
                                          "--key-file", str(key), "--time-scale", "30"])
    assert args.ack and args.func is run.command
