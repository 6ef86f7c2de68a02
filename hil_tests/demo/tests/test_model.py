"""The demo's decoding and state on packs made by the gateway's own encoder, and bad input.

Packs come from gateway/senml.py's encode_pack (what the gateway publishes); no process runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.senml import Uplink, encode_pack
from hil_tests.demo import dashboard, plot
from hil_tests.demo.model import DemoState, readings
from hil_tests.rig import capture_file
from protocol import messages as m

T0 = 1_756_828_800                        # 2025-09-02T16:00:00Z
DATA = "roadside/v1/demo/demo-gw/data"
ALARM = "roadside/v1/demo/demo-gw/alarm"


def _pack(*msgs: m.Message) -> bytes:
    return encode_pack([Uplink(T0 * 1000, msg) for msg in msgs])


def _flood(node: int, seq: int, t: int, depth_mm: int) -> m.Flood:
    return m.Flood(node, 1, seq, t, depth_mm, 3000 - depth_mm, 2350, 0, 7)


def test_readings_split_a_pack_of_several_nodes_into_groups() -> None:
    """Each record group becomes one reading with its node, kind, time and fields."""
    pack = _pack(_flood(1, 5, T0 + 10, 120), _flood(2, 9, T0 + 11, 0),
                 m.Traffic(2, 1, 10, T0 + 60, 60, 7, 35, 12_500, 3000))
    got = readings(DATA, pack)
    assert [(r.node, r.kind, r.t) for r in got] == [
        (1, "flood", T0 + 10), (2, "flood", T0 + 11), (2, "traffic", T0 + 60)]
    assert got[0].num("depth") == pytest.approx(0.120)
    assert got[0].num("seq") == 5
    assert got[2].num("count") == 7 and got[2].num("speed") == pytest.approx(12.5)
    assert readings("roadside/v1/demo/demo-gw/state", b'{"state":"online"}') == []


def test_state_keeps_latest_depth_alarm_and_totals_and_says_the_alarm() -> None:
    """Latest depth and alarm by node time, vehicles summed, the alarm line names level and time."""
    state = DemoState({1: "flooding street"})
    state.add_message(DATA, _pack(_flood(1, 1, T0, 0), _flood(1, 3, T0 + 120, 90),
                                  _flood(1, 2, T0 + 60, 40)))
    got = state.add_message(ALARM, _pack(m.Alarm(1, 1, 4, T0 + 100, m.ALARM_CROSSED, 76, 80,
                                                 700, None)))
    state.add_message(DATA, _pack(m.Traffic(1, 1, 5, T0, 60, 4, 20, 9000, 3000),
                                  m.Traffic(1, 1, 6, T0 + 60, 60, 2, 10, None, 3000)))
    nd = state.nodes[1]
    assert nd.depth_mm == pytest.approx(90) and state.rel(nd.depth_t) == 120
    assert nd.vehicles == 6 and nd.window is not None and nd.window.num("count") == 2
    assert dashboard.alarm_line(state, got[0]) == \
        "ALARM node 1 (flooding street): crossed 76 mm, depth 80 mm at t+100 s"
    line = dashboard.plain_lines(state, "now", {})[0]
    assert "depth 90 mm (t+120 s)" in line and "2 veh / 60 s (total 6)" in line


def test_a_bad_pack_is_counted_not_fatal() -> None:
    """A data message that is not SenML is counted and changes no node."""
    state = DemoState()
    assert state.add_message(DATA, b"\xff\x00junk") == []
    assert state.bad_payloads == 1 and state.nodes == {}


def test_plot_refuses_a_bad_capture_with_one_line_naming_the_format(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A line that is not a message object, or a capture with no reading, exits 1 in one line."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"t": 1, "topic": "x", "payload_hex": "zz"}\n')
    assert plot.main([str(bad), "-o", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"plot: {bad}:1: not a captured message") and "\n" not in err
    empty = tmp_path / "empty.jsonl"
    w = capture_file.Writer(empty)
    w.write(capture_file.Message(1.0, "roadside/v1/demo/demo-gw/state", b"{}", 1, True))
    w.close()
    assert plot.main([str(empty), "-o", str(tmp_path / "y.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert "no SenML reading" in err and "--capture" in err
    assert not (tmp_path / "y.png").exists()


def test_capture_file_round_trips_every_field(tmp_path: Path) -> None:
    """What the writer writes the reader gives back, payload bytes included."""
    path = tmp_path / "c.jsonl"
    msgs = [capture_file.Message(1.5, DATA, bytes(range(256)), 1, False),
            capture_file.Message(2.25, "a/b", b"", 0, True)]
    w = capture_file.Writer(path)
    for msg in msgs:
        w.write(msg)
    w.close()
    assert list(capture_file.read(path)) == msgs
