"""SenML packs: one golden group per uplink type, identity, names, time, the generic resolver."""

from __future__ import annotations

import json

import cbor2
import pytest

from gateway.senml import (
    CONTENT_TYPE,
    SenmlError,
    Uplink,
    decode_pack,
    encode_gaps,
    encode_pack,
    format_ranges,
)
from gateway.store import GapReport
from protocol import messages as m

RX_MS = 1_763_784_000_250          # gateway receive time used throughout
T = 1_763_783_990                  # a synchronised node time (Unix seconds)
URN = "urn:dev:roadside:1042:"

HELLO = m.Hello(1042, 17, 1, "0.1.0", "esp32-devkitc", 3, bytes.fromhex("a1b2c3d4"), "")
FLOOD = m.Flood(1042, 17, 40321, T, 412, 2788, 3150, 0, 7)
TRAFFIC = m.Traffic(1042, 17, 40322, T, 300, 42, 125, 8333, 3000)
ALARM = m.Alarm(1042, 17, 40323, T, m.ALARM_CROSSED, 200, 215, 1500, None)
HEALTH = m.Health(1042, 17, 40324, T, 3600, 61000, 52000, [0, 2, 0, 1], 3712, 4, 0,
                  [900, 3, 880, 1, 2], 0x41)


def _group(t: float, type_: str, seq: int, *fields: dict[str, object]) -> list[dict[str, object]]:
    head: list[dict[str, object]] = [{"n": URN + "type", "vs": type_},
                                     {"n": URN + "boot", "v": 17}, {"n": URN + "seq", "v": seq}]
    out = []
    for r in head + [dict(f, n=URN + str(f["n"])) for f in fields]:
        out.append(dict(r, t=t))
    return out


GOLDEN: list[tuple[m.Message, list[dict[str, object]]]] = [
    (HELLO, _group(RX_MS / 1000, "hello", 1,
                   {"n": "fw", "vs": "0.1.0"}, {"n": "board", "vs": "esp32-devkitc"},
                   {"n": "reset_cause", "vs": "watchdog"},
                   {"n": "cfg_hash", "vd": bytes.fromhex("a1b2c3d4")},
                   {"n": "cfg_error", "vs": ""})),
    (FLOOD, _group(T, "flood", 40321,
                   {"n": "depth", "u": "m", "v": 0.412}, {"n": "range", "u": "m", "v": 2.788},
                   {"n": "temp", "u": "Cel", "v": 31.5}, {"n": "flags", "v": 0},
                   {"n": "q", "u": "count", "v": 7})),
    (TRAFFIC, _group(T, "traffic", 40322,
                     {"n": "window", "u": "s", "v": 300}, {"n": "count", "u": "count", "v": 42},
                     {"n": "occupancy", "u": "/", "v": 0.125},
                     {"n": "speed", "u": "m/s", "v": 8.333},
                     {"n": "samples", "u": "count", "v": 3000})),
    (ALARM, _group(T, "alarm", 40323,
                   {"n": "alarm", "vs": "crossed"}, {"n": "level", "u": "m", "v": 0.2},
                   {"n": "depth", "u": "m", "v": 0.215}, {"n": "rate", "u": "m/s", "v": 0.0015})),
    (HEALTH, _group(T, "health", 40324,
                    {"n": "uptime", "u": "s", "v": 3600}, {"n": "heap_free", "u": "B", "v": 61000},
                    {"n": "heap_min", "u": "B", "v": 52000},
                    {"n": "resets_unknown", "u": "count", "v": 0},
                    {"n": "resets_power_on", "u": "count", "v": 2},
                    {"n": "resets_hard", "u": "count", "v": 0},
                    {"n": "resets_watchdog", "u": "count", "v": 1},
                    {"n": "battery", "u": "V", "v": 3.712}, {"n": "queue", "u": "count", "v": 4},
                    {"n": "dropped", "u": "count", "v": 0},
                    {"n": "link_sent", "u": "count", "v": 900},
                    {"n": "link_retx", "u": "count", "v": 3},
                    {"n": "link_rx", "u": "count", "v": 880},
                    {"n": "link_bad", "u": "count", "v": 1},
                    {"n": "link_timeouts", "u": "count", "v": 2}, {"n": "status", "v": 0x41},
                    {"n": "status_safe_mode", "vb": True}, {"n": "status_unsynced", "vb": True})),
]


@pytest.mark.parametrize(("msg", "want"), GOLDEN, ids=[g[0].NAME for g in GOLDEN])
def test_golden_group_per_type(msg: m.Message, want: list[dict[str, object]]) -> None:
    """Each uplink type resolves to exactly the documented records, field by field."""
    got = decode_pack(encode_pack([Uplink(RX_MS, msg)]))
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g == w


def test_content_type_is_senml_cbor() -> None:
    """The content type is RFC 8428's CBOR media type."""
    assert CONTENT_TYPE == "application/senml+cbor"


def test_raw_labels_are_rfc8428() -> None:
    """The opening record uses RFC 8428 integer labels bn -2, bt -3, n 0, vs 3; values v 2."""
    raw = cbor2.loads(encode_pack([Uplink(RX_MS, FLOOD)]))
    assert raw[0] == {-2: URN, -3: T, 0: "type", 3: "flood"}
    assert raw[1] == {0: "boot", 2: 17}
    assert raw[3] == {0: "depth", 1: "m", 2: 0.412}


def test_encoding_is_deterministic() -> None:
    """Same records, same bytes; map keys in RFC 8949 order; integral values as integers."""
    ups = [Uplink(RX_MS, x) for x, _ in GOLDEN]
    a, b = encode_pack(ups), encode_pack(ups)
    assert a == b
    for rec in cbor2.loads(a):
        keys = list(rec)
        assert keys == sorted(keys, key=cbor2.dumps), rec
        v = rec.get(2)
        assert not (isinstance(v, float) and v.is_integer()), rec


def _groups(resolved: list[dict[str, object]]) -> list[list[dict[str, object]]]:
    out: list[list[dict[str, object]]] = []
    for r in resolved:
        if str(r["n"]).endswith(":type"):
            out.append([])
        out[-1].append(r)
    return out


def test_identity_in_every_group_and_base_name_per_node() -> None:
    """Every group of a mixed pack resolves to its own node's name, boot and seq, in order."""
    msgs = [FLOOD, m.Flood(7, 3, 9, T, 10, 3000, None, 0, 5), HEALTH, m.Flood(7, 3, 10, 5, 0,
                                                                             3000, None, 0, 5)]
    groups = _groups(decode_pack(encode_pack([Uplink(RX_MS, x) for x in msgs])))
    assert len(groups) == len(msgs)
    for grp, msg in zip(groups, msgs, strict=True):
        urn = f"urn:dev:roadside:{msg.node}:"
        assert all(str(r["n"]).startswith(urn) for r in grp)
        assert grp[0] == {"n": urn + "type", "vs": msg.NAME, "t": grp[0]["t"]}
        assert grp[1]["n"] == urn + "boot" and grp[1]["v"] == msg.boot
        assert grp[2]["n"] == urn + "seq" and grp[2]["v"] == msg.seq
        assert len({r["t"] for r in grp}) == 1


def test_base_name_written_only_when_node_changes() -> None:
    """bn appears once per run of the same node, so the resolver carries it forward."""
    msgs = [FLOOD, m.Flood(1042, 17, 40330, T + 60, 400, 2800, 3100, 0, 7),
            m.Flood(7, 3, 9, T, 10, 3000, None, 0, 5)]
    raw = cbor2.loads(encode_pack([Uplink(RX_MS, x) for x in msgs]))
    bns = [r[-2] for r in raw if -2 in r]
    assert bns == [URN, "urn:dev:roadside:7:"]


def test_unsynced_node_time_uses_receive_time_and_flags_it() -> None:
    """t < 1e9 is seconds since boot: bt is the receive time, unsynced and boot_t say so."""
    msg = m.Flood(1042, 17, 5, 812, 412, 2788, None, m.FLAG_NOTEMP, 7)
    got = decode_pack(encode_pack([Uplink(RX_MS, msg)]))
    assert {r["t"] for r in got} == {RX_MS / 1000}
    by = {str(r["n"]).removeprefix(URN): r for r in got}
    assert by["unsynced"]["vb"] is True
    assert by["boot_t"]["v"] == 812 and by["boot_t"]["u"] == "s"
    assert "temp" not in by
    assert by["flag_notemp"]["vb"] is True


def test_synced_time_has_no_unsynced_record() -> None:
    """A Unix t is the group's time and no unsynced flag is written."""
    names = [r["n"] for r in decode_pack(encode_pack([Uplink(RX_MS, FLOOD)]))]
    assert URN + "unsynced" not in names and URN + "boot_t" not in names


def test_invalid_flood_omits_depth_and_names_flags() -> None:
    """An invalid reading has no depth record; each set flag is one vb record."""
    msg = m.Flood(1042, 17, 6, T, 0, 5000, 2000, m.FLAG_INVALID | m.FLAG_NOECHO, 0)
    by = {str(r["n"]).removeprefix(URN): r for r in decode_pack(encode_pack([Uplink(0, msg)]))}
    assert "depth" not in by
    assert by["flags"]["v"] == 0x280
    assert by["flag_invalid"]["vb"] is True and by["flag_noecho"]["vb"] is True
    assert "flag_range" not in by


def test_alarm_with_eta_and_unknown_kind() -> None:
    """eta is written when predicted; an unknown alarm code is its number as text."""
    msg = m.Alarm(1042, 17, 8, T, 9, 400, 310, -250, 120)
    by = {str(r["n"]).removeprefix(URN): r for r in decode_pack(encode_pack([Uplink(0, msg)]))}
    assert by["alarm"]["vs"] == "9"
    assert by["eta"] == {"n": URN + "eta", "u": "s", "v": 120, "t": T}
    assert by["rate"]["v"] == pytest.approx(-0.00025)


def test_mm_precision_survives() -> None:
    """Depths in metres round back to the exact millimetre."""
    for mm in (-31, 0, 1, 412, 999, 4999, 2**31 - 1):
        msg = m.Flood(1, 1, 1, T, mm, 3000, None, 0, 5)
        by = {str(r["n"]): r for r in decode_pack(encode_pack([Uplink(0, msg)]))}
        v = by["urn:dev:roadside:1:depth"]["v"]
        assert isinstance(v, int | float) and round(v * 1000) == mm


def test_downlink_message_has_no_mapping() -> None:
    """Only uplink types are published; a downlink message is refused."""
    with pytest.raises(SenmlError, match="no SenML mapping"):
        encode_pack([Uplink(0, m.Time(1, 1, 1, 0, 1))])


def test_gap_pack() -> None:
    """A gap report resolves to type gap, boot, reason, dropped count and its seq ranges."""
    gap = GapReport(1, 1042, 17, "overflow", ((5, 9), (12, 12)), 6, 1_000, RX_MS)
    got = decode_pack(encode_gaps([gap]))
    assert [(str(r["n"]).removeprefix(URN), r.get("v", r.get("vs"))) for r in got] == [
        ("type", "gap"), ("boot", 17), ("reason", "overflow"), ("dropped", 6),
        ("ranges", "5-9,12")]
    assert {r["t"] for r in got} == {RX_MS / 1000}
    assert format_ranges(()) == ""


def test_resolver_applies_base_values_generically() -> None:
    """bn/bt/bu/bv/bs (bs label -6) resolve per RFC 8428; unknown int labels are ignored."""
    pack = cbor2.dumps([{-1: 10, -2: "dev:", -3: 100, -4: "m", -5: 1.5, -6: 10, 0: "a", 2: 1,
                         99: "x"},
                        {0: "b", 6: 2, 5: 3, 1: "s"}, {-2: "d2:", 0: "c", 4: False}])
    assert decode_pack(pack) == [
        {"n": "dev:a", "u": "m", "v": 2.5, "t": 100},
        {"n": "dev:b", "u": "s", "s": 13, "t": 102},
        {"n": "d2:c", "u": "m", "vb": False, "t": 100},
    ]


@pytest.mark.parametrize(("pack", "why"), [
    (b"\xff", "not CBOR"),
    (cbor2.dumps({0: "a"}), "array"),
    (cbor2.dumps([1]), "not a map"),
    (cbor2.dumps([{0: "a"}]), "no value"),
    (cbor2.dumps([{0: "a", 2: 1, 3: "x"}]), "more than one value"),
    (cbor2.dumps([{0: "-a", 2: 1}]), "valid SenML name"),
    (cbor2.dumps([{0: "a", 2: "1"}]), "finite number"),
    (cbor2.dumps([{0: "a", 3: 1}]), "is not str"),
    (cbor2.dumps([{-1: 11, 0: "a", 2: 1}]), "version"),
    (cbor2.dumps([{0: "a", 2: 1, "x_": 1}]), "must-understand"),
])
def test_resolver_refuses_invalid_packs(pack: bytes, why: str) -> None:
    """Each malformed pack is refused with a reason naming what is wrong."""
    with pytest.raises(SenmlError, match=why):
        decode_pack(pack)


def test_size_flood_pack_of_100() -> None:
    """100 flood readings of one node stay within 130 B each, a third smaller than JSON SenML."""
    ups = [Uplink(RX_MS, m.Flood(1042, 17, 40321 + i, T + 60 * i, 412 + i, 2788 - i, 3150, 0, 7))
           for i in range(100)]
    pack = encode_pack(ups)
    labels = {-2: "bn", -3: "bt", 0: "n", 1: "u", 2: "v", 3: "vs", 4: "vb"}
    as_json = json.dumps([{labels[k]: v for k, v in r.items()} for r in cbor2.loads(pack)],
                         separators=(",", ":"))
    assert len(pack) <= 130 * 100
    assert len(pack) * 3 < len(as_json) * 2
