# Writes the golden vectors (CPython, run from the repository root):
#     python -m protocol.vectors.generate
# The vectors are normative: once released, a vector's bytes never change. Regenerate only
# to add vectors, and review the diff: a changed line is a wire-format change.
#
# Files (JSON Lines, one vector a line, so a 64 KB MicroPython heap reads them one by one):
#   keys.json      node keys used by the frame vectors
#   frames.jsonl   valid frames of every message type: message <-> exact wire bytes
#   invalid.jsonl  bad inputs, one per class of error, with the expected error reason
#   cbor.jsonl     deterministic CBOR items and non-deterministic/ill-formed rejects
#   streams.jsonl  byte streams through the Deframer: chunks -> frames and errors
#   replay.jsonl   (node, boot, seq) sequences through the ReplayGuard with expected acks

import json
import os

from protocol import cbor, link, mac, show
from protocol import messages as m
from protocol.frame import Sealer
from protocol.replay import ReplayGuard

HERE = os.path.dirname(os.path.abspath(__file__))
KEYS = {1042: bytes(range(32)), 7: bytes(range(0xA0, 0xC0)), 0xFFFFFFFF: b"\xff" * 32}
OPEN_NODE = 1005  # a node with no key (same encoded size as 1042), open rings only
UNIX_T = 1795000000  # 2026-11-18T...Z


def hx(b):
    return bytes(b).hex()


def jsonable(v):
    if isinstance(v, (bytes, bytearray)):
        return {"bytes": hx(v)}
    if isinstance(v, float):
        return {"float": repr(v)}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {"map": [[jsonable(k), jsonable(x)] for k, x in v.items()]}
    return v


def msg_dict(msg):
    d = show.to_dict(msg)
    for k, v in d.items():
        if isinstance(v, bytes):
            d[k] = hx(v)
        elif isinstance(v, dict):
            d[k] = {str(kk): vv for kk, vv in v.items()}
    return d


def cobs_frame(raw):
    # COBS + delimiter around raw bytes that already end with their (right or wrong) CRC.
    out = bytearray(len(raw) + len(raw) // 254 + 2)
    n = link.cobs_encode_into(raw, len(raw), out)
    return bytes(out[:n]) + b"\x00"


def raw_frame(payload):
    # Frames arbitrary payload bytes (no size check), for crafted invalid inputs.
    return cobs_frame(bytes(payload) + link.crc_bytes(payload))


def valid_messages():
    hello = m.Hello(1042, 17, 1, "0.1.0", "esp32-devkitc", 3, bytes.fromhex("5a17c0ffee000001"), "")
    return [
        ("hello", hello),
        (
            "hello_config_error",
            m.Hello(7, 3, 1, "0.1.0", "esp32s3-devkitc-1", 1, bytes(8), "h0_mm missing"),
        ),
        ("flood_typical", m.Flood(1042, 17, 40321, UNIX_T, 412, 2788, 3150, 0, 7)),
        ("flood_dry", m.Flood(1042, 17, 2, UNIX_T + 60, 0, 3200, 2890, 0, 7)),
        (
            "flood_cold_no_temp_flags",
            m.Flood(
                1042,
                17,
                3,
                UNIX_T + 120,
                0,
                300,
                None,
                m.FLAG_MINRANGE | m.FLAG_NOTEMP | m.FLAG_INVALID,
                0,
            ),
        ),
        ("flood_negative_temp_unsynced", m.Flood(7, 3, 9, 5400, 0, 3212, -450, m.FLAG_RANGE, 5)),
        (
            "flood_max_values",
            m.Flood(
                0xFFFFFFFF,
                0xFFFFFFFF,
                0xFFFFFFFF,
                0xFFFFFFFF,
                0x7FFFFFFF,
                0xFFFFFFFF,
                -0x80000000,
                0xFFFFFFFF,
                0xFFFFFFFF,
            ),
        ),
        ("traffic", m.Traffic(1042, 17, 40322, UNIX_T, 60, 23, 184, 11940, 6000)),
        ("traffic_no_speed", m.Traffic(1042, 17, 40323, UNIX_T + 60, 60, 0, 0, None, 6000)),
        (
            "alarm_crossed",
            m.Alarm(1042, 17, 40324, UNIX_T + 5, m.ALARM_CROSSED, 200, 203, 760, None),
        ),
        (
            "alarm_predicted",
            m.Alarm(1042, 17, 40325, UNIX_T + 2, m.ALARM_PREDICTED, 200, 151, 810, 60),
        ),
        (
            "alarm_cleared",
            m.Alarm(1042, 17, 40326, UNIX_T + 3600, m.ALARM_CLEARED, 200, 140, -350, None),
        ),
        (
            "health",
            m.Health(
                1042,
                17,
                40327,
                UNIX_T,
                86400,
                41216,
                30112,
                [0, 1, 0, 2, 0, 14, 0, 0],
                3712,
                3,
                0,
                [40327, 12, 41001, 4, 1],
                0,
            ),
        ),
        (
            "health_safe_mode",
            m.Health(7, 3, 2, 30, 30, 52000, 50000, [], None, 0, 129, [2, 0, 0, 0, 0], 0b1000001),
        ),
        ("ack", m.Ack(1042, 17, 1, 17, 40321, 0)),
        ("ack_selective", m.Ack(1042, 17, 2, 16, 8812, (1 << 63) | 0b101)),
        ("time", m.Time(1042, 17, 3, UNIX_T * 1000 + 250, m.TIME_NTP)),
        ("time_free_running", m.Time(7, 3, 1, UNIX_T * 1000, m.TIME_FREE)),
        (
            "config",
            m.Config(
                1042, 17, 4, {1: 600, 2: 120, 3: 10, 4: [76, 200, 400], 5: 900, 6: 20, 13: 300}
            ),
        ),
        ("config_empty", m.Config(1042, 17, 5, {})),
    ]


def frames():
    out = []
    for name, msg in valid_messages():
        for tagged in (False, True):
            # untagged frames are only valid from keyless nodes on an open ring
            use = msg if tagged else type(msg)(OPEN_NODE, msg.boot, msg.seq, *msg.values())
            key = mac.Key(KEYS[use.node]) if tagged else None
            s = Sealer(key)
            wire = s.seal(use)
            out.append(
                {
                    "name": name + ("_tagged" if tagged else ""),
                    "uplink": use.UPLINK,
                    "open": not tagged,
                    "tagged": tagged,
                    "body": hx(m.encode(use)),
                    "wire": hx(wire),
                    "message": msg_dict(use),
                }
            )
    # A newer sender's frame: one extra trailing field, accepted and ignored.
    f = m.Flood(1042, 17, 5, UNIX_T, 10, 3190, 2900, 0, 7)
    body = bytearray(m.encode(f))
    body[0] += 1  # array of 11 instead of 10
    body += cbor.dumps([1, "future"])
    payload = mac.wrap(bytes(body), mac.Key(KEYS[1042]))
    out.append(
        {
            "name": "flood_extra_trailing_field_tagged",
            "uplink": True,
            "open": False,
            "tagged": True,
            "body": hx(body),
            "wire": hx(raw_frame(payload)),
            "message": msg_dict(f),
            "encode": False,
        }
    )
    return out


def invalid():
    k = mac.Key(KEYS[1042])
    good = m.Flood(1042, 17, 40321, UNIX_T, 412, 2788, 3150, 0, 7)
    gbody = m.encode(good)
    gpay = mac.wrap(gbody, k)
    gwire = raw_frame(gpay)
    out = []

    def add(name, klass, wire, reason, uplink=True, open_ring=False):
        out.append(
            {
                "name": name,
                "class": klass,
                "wire": hx(wire),
                "reason": reason,
                "uplink": uplink,
                "open": open_ring,
            }
        )

    def body_case(name, klass, body, reason, uplink=True):
        add(name, klass, raw_frame(mac.wrap(bytes(body), k)), reason, uplink)

    def cbor_body(items):
        return cbor.dumps(items)

    hdr = [2, 1042, 17, 40321]
    fields = [UNIX_T, 412, 2788, 3150, 0, 7]

    # link layer
    w = bytearray(gwire)
    w[-2] ^= 0x01
    add("crc_trailer_flipped", "bad CRC", w, "crc")
    w = bytearray(gwire)
    w[20] ^= 0x10
    add("crc_body_bit_flipped", "bad CRC", w, "crc")
    add("truncated_frame_no_room_for_crc", "truncated", b"\x04\x01\x02\x03\x00", "truncated")
    add("truncated_frame_cut_short", "truncated", gwire[:10] + b"\x00", "cobs")
    add("truncated_cbor", "truncated", raw_frame(gpay[:-9][:20]), "truncated")
    add("oversize_frame", "oversize", b"\x01" * 300 + b"\x00", "oversize")
    add("oversize_payload_255", "oversize", raw_frame(b"\x01" * 251), "oversize")
    add("cobs_block_past_end", "bad COBS", b"\x09\x01\x02\x00", "cobs")
    # version and type
    body_case(
        "unknown_version_2",
        "unknown version",
        cbor_body([32 + 2, 1042, 17, 40321] + fields),
        "version",
    )
    body_case(
        "unknown_version_8", "unknown version", cbor_body([7 * 32 + 1, 1042, 17, 1]), "version"
    )
    body_case("unknown_type_9", "unknown type", cbor_body([9, 1042, 17, 40321] + fields), "type")
    body_case("unknown_type_0", "unknown type", cbor_body([0, 1042, 17, 40321]), "type")
    body_case(
        "downlink_type_on_uplink", "unknown type", m.encode(m.Ack(1042, 17, 1, 17, 4, 0)), "type"
    )
    body_case("uplink_type_on_downlink", "unknown type", gbody, "type", uplink=False)
    # authentication
    w = bytearray(gpay)
    w[-1] ^= 0x80
    add("tag_flipped", "bad tag", raw_frame(w), "tag")
    add("tag_wrong_key", "bad tag", raw_frame(mac.wrap(gbody, mac.Key(bytes(32)))), "tag")
    w = bytearray(gpay)
    w[5] = 0x05  # alg 5: HMAC 256/256
    add("cose_other_algorithm", "bad tag", raw_frame(w), "tag")
    w = bytearray(gpay)
    w[6] = 0xA1
    add(
        "cose_unprotected_header_not_empty",
        "bad tag",
        raw_frame(bytes(w[:7]) + b"\x04\x41\x01" + bytes(w[7:])),
        "tag",
    )
    add("cose_tag_missing", "bad tag", raw_frame(gpay[:-9]), "truncated")
    add("cose_tag_short", "bad tag", raw_frame(gpay[:-9] + b"\x47" + gpay[-8:-1]), "tag")
    add("cose_trailing_bytes", "bad tag", raw_frame(gpay + b"\x00"), "tag")
    add("untagged_from_keyed_node", "bad tag", raw_frame(gbody), "untagged")
    add(
        "untagged_from_keyed_node_open_ring",
        "bad tag",
        raw_frame(gbody),
        "untagged",
        open_ring=True,
    )
    add(
        "untagged_unknown_node",
        "unknown node",
        raw_frame(m.encode(m.Flood(99, 1, 1, UNIX_T, 0, 3000, 2500, 0, 7))),
        "node",
    )
    u = m.Flood(99, 1, 1, UNIX_T, 0, 3000, 2500, 0, 7)
    add("tagged_unknown_node", "unknown node", raw_frame(mac.wrap(m.encode(u), k)), "node")
    # non-deterministic encodings
    b = bytearray(gbody)
    i = b.index(bytes.fromhex("199d81"))  # seq 40321 as uint16 -> as uint32
    body_case(
        "noncanonical_int_head",
        "non-deterministic",
        b[:i] + bytes.fromhex("1a00009d81") + b[i + 3 :],
        "noncanonical",
    )
    body_case(
        "noncanonical_kind_two_bytes",
        "non-deterministic",
        b"\x8a\x18\x02" + gbody[2:],
        "noncanonical",
    )
    body_case(
        "noncanonical_indefinite_array",
        "non-deterministic",
        b"\x9f" + gbody[1:] + b"\xff",
        "noncanonical",
    )
    cfg_head = bytes.fromhex("85121904121104")  # [18, 1042, 17, 4, <map>]
    body_case(
        "noncanonical_unsorted_map",
        "non-deterministic",
        cfg_head + bytes.fromhex("a20218780119" + "0258"),
        "noncanonical",
        uplink=False,
    )
    body_case(
        "noncanonical_float_extra_field",
        "non-deterministic",
        bytes([0x8B]) + gbody[1:] + bytes.fromhex("fa3fc00000"),
        "noncanonical",
    )
    body_case(
        "duplicate_map_key",
        "non-deterministic",
        cfg_head + bytes.fromhex("a201010102"),
        "cbor",
        uplink=False,
    )

    # wrong field types and ranges
    def fcase(name, items, reason="field", uplink=True):
        body_case(name, "wrong field type", cbor_body(items), reason, uplink)

    fcase("field_text_for_uint", hdr + [UNIX_T, "412", 2788, 3150, 0, 7])
    fcase("field_negative_range", hdr + [UNIX_T, 412, -1, 3150, 0, 7])
    fcase("field_null_not_allowed", hdr + [UNIX_T, None, 2788, 3150, 0, 7])
    fcase("field_bool_for_int", hdr + [UNIX_T, 412, 2788, 3150, False, 7])
    fcase("field_float_for_int", hdr + [UNIX_T, 412.0, 2788, 3150, 0, 7])
    fcase("field_int32_overflow", hdr + [UNIX_T, 0x80000000, 2788, 3150, 0, 7])
    fcase("field_uint32_overflow", hdr + [0x100000000, 412, 2788, 3150, 0, 7])
    fcase("field_missing", hdr + [UNIX_T, 412, 2788, 3150, 0])
    fcase("header_too_short", [2, 1042, 17])
    fcase("header_seq_zero", [2, 1042, 17, 0] + fields)
    fcase("header_node_text", [2, "1042", 17, 1] + fields)
    fcase("header_kind_text", ["flood", 1042, 17, 1] + fields)
    fcase("hello_text_too_long", [1, 1042, 17, 1, "0.1.0" * 8, "esp32", 1, b"", ""])
    fcase("hello_bytes_for_text", [1, 1042, 17, 1, b"0.1.0", "esp32", 1, b"", ""])
    fcase("health_array_too_long", [5, 1042, 17, 1, UNIX_T, 1, 1, 1, [0] * 17, None, 0, 0, [], 0])
    fcase("health_array_negative", [5, 1042, 17, 1, UNIX_T, 1, 1, 1, [0, -1], None, 0, 0, [], 0])
    fcase("config_key_zero", [18, 1042, 17, 1, {0: 1}], uplink=False)
    fcase("config_value_text", [18, 1042, 17, 1, {1: "600"}], uplink=False)
    fcase("ack_sack_negative", [16, 1042, 17, 1, 17, 3, -1], uplink=False)
    fcase("message_not_array", {"kind": 2}, reason="cbor")
    # not well-formed CBOR
    body_case("cbor_reserved_additional_info", "malformed CBOR", b"\x8a\x1c" + gbody[2:], "cbor")
    body_case("cbor_trailing_bytes", "malformed CBOR", gbody + b"\x00", "field")
    hello_head = bytes.fromhex("89011904121101")  # [1, 1042, 17, 1, <fw> ...]
    body_case(
        "cbor_invalid_utf8",
        "malformed CBOR",
        hello_head
        + b"\x62\xc3\x28"
        + cbor.dumps("esp32")
        + cbor.dumps(1)
        + cbor.dumps(b"")
        + cbor.dumps(""),
        "cbor",
    )
    body_case("cbor_unexpected_tag", "malformed CBOR", b"\x8a\x02\xc1" + gbody[2:], "cbor")
    body_case("cbor_undefined", "malformed CBOR", gbody[:-1] + b"\xf7", "cbor")
    return out


def cbor_vectors():
    valid = [
        0,
        1,
        10,
        23,
        24,
        25,
        100,
        1000,
        1000000,
        1000000000000,
        18446744073709551615,
        -1,
        -10,
        -100,
        -1000,
        -18446744073709551616,
        0.0,
        -0.0,
        1.0,
        1.1,
        1.5,
        65504.0,
        100000.0,
        3.4028234663852886e38,
        1.0e300,
        5.960464477539063e-8,
        0.00006103515625,
        -4.0,
        -4.1,
        float("inf"),
        float("-inf"),
        float("nan"),
        False,
        True,
        None,
        b"",
        b"\x01\x02\x03\x04",
        "",
        "a",
        "IETF",
        '"\\',
        "\u00fc",
        "\u6c34",
        [],
        [1, 2, 3],
        [1, [2, 3], [4, 5]],
        list(range(1, 26)),
        {},
        {1: 2, 3: 4},
        {"a": 1, "b": [2, 3]},
        ["a", {"b": "c"}],
        {10: 1, 100: 2, -1: 3},
        {"b": 1, "aa": 2},
    ]
    out = []
    for v in valid:
        out.append({"name": "valid %r" % (v,), "hex": hx(cbor.dumps(v)), "value": jsonable(v)})
    bad = [
        ("uint 23 in two bytes", "1817", "noncanonical"),
        ("uint 255 in three bytes", "1900ff", "noncanonical"),
        ("uint 65535 in five bytes", "1a0000ffff", "noncanonical"),
        ("uint 2^32-1 in nine bytes", "1b00000000ffffffff", "noncanonical"),
        ("negative int in two bytes", "3800", "noncanonical"),
        ("bstr length in two bytes", "580101", "noncanonical"),
        ("indefinite array", "9f01ff", "noncanonical"),
        ("indefinite byte string", "5f4101ff", "noncanonical"),
        ("indefinite map", "bf0101ff", "noncanonical"),
        ("unsorted map keys", "a202010101", "noncanonical"),
        ("map keys length-first order", "a22001181801", "noncanonical"),
        ("duplicate map keys", "a201010102", "cbor"),
        ("float 1.5 as single", "fa3fc00000", "noncanonical"),
        ("float 1.5 as double", "fb3ff8000000000000", "noncanonical"),
        ("float 100000.0 as double", "fb40f86a0000000000", "noncanonical"),
        ("NaN as single", "fa7fc00000", "noncanonical"),
        ("NaN with payload", "f97e01", "noncanonical"),
        ("reserved additional info 28", "1c", "cbor"),
        ("lone break", "ff", "cbor"),
        ("undefined", "f7", "cbor"),
        ("simple value 32", "f820", "cbor"),
        ("simple value in two bytes", "f801", "cbor"),
        ("unassigned simple 0", "e0", "cbor"),
        ("tag", "c11a5a17c0ff", "cbor"),
        ("truncated uint16", "1901", "truncated"),
        ("truncated array", "830102", "truncated"),
        ("byte string past the end", "450102", "truncated"),
        ("array longer than the data", "9a01000000", "truncated"),
        ("text not UTF-8", "62c328", "cbor"),
        ("trailing bytes", "0101", "cbor"),
        ("nested too deep", "81" * 12 + "00", "cbor"),
        ("array as map key", "a1800101", "cbor"),
        ("empty input", "", "truncated"),
    ]
    for name, h, reason in bad:
        out.append({"name": name, "hex": h, "reason": reason})
    return out


def streams():
    k = mac.Key(KEYS[1042])
    s = Sealer(k)
    f1 = s.seal(m.Flood(1042, 17, 1, UNIX_T, 0, 3200, 2890, 0, 7))
    f2 = s.seal(m.Flood(1042, 17, 2, UNIX_T + 60, 12, 3188, 2891, 0, 7))
    p1 = link.unframe(f1)
    p2 = link.unframe(f2)
    flipped = bytearray(p2)
    flipped[12] ^= 0x04
    bad = cobs_frame(bytes(flipped) + link.crc_bytes(p2))  # payload bit flipped, CRC kept
    out = []

    def add(name, chunks, events):
        out.append({"name": name, "chunks": [hx(c) for c in chunks], "events": events})

    ok1 = "frame:" + hx(p1)
    ok2 = "frame:" + hx(p2)
    add("two frames in one chunk", [f1 + f2], [ok1, ok2])
    add("byte by byte", [bytes([x]) for x in (b"\x00" + f1 + f2)], [ok1, ok2])
    add("split across chunks", [f1[:7], f1[7:] + f2[:3], f2[3:]], [ok1, ok2])
    add("idle fill between frames", [b"\x00\x00" + f1 + b"\x00\x00\x00" + f2 + b"\x00"], [ok1, ok2])
    add("garbage then delimiter then frame", [b"\xff\xfe\xfd\x00" + f1], ["error:cobs", ok1])
    add("garbage glued to a frame", [b"\x03\x41\x42" + f1, f2], ["error:crc", ok2])
    add("corrupt frame between good ones", [f1 + bytes(bad) + f2], [ok1, "error:crc", ok2])
    add(
        "oversize run then frame",
        [b"\x01" * 200, b"\x01" * 200, b"\x00" + f1],
        ["error:oversize", ok1],
    )
    add("oversize run reported once", [b"\x55" * 1000 + b"\x00"], ["error:oversize"])
    add("partial frame left pending", [f1 + f2[:5]], [ok1])
    add("tiny frame", [b"\x02\x01\x00"], ["error:truncated"])
    return out


def replay():
    out = []

    def run(name, steps, boots=8):
        g = ReplayGuard(boots)
        rec = []
        for node, boot, seq in steps:
            try:
                skipped = g.accept(node, boot, seq)
                expect = "ok"
            except Exception as e:
                expect = e.reason
                skipped = 0
            floor, sack = g.ack(node, boot)
            rec.append(
                {
                    "node": node,
                    "boot": boot,
                    "seq": seq,
                    "expect": expect,
                    "skipped": skipped,
                    "ack": [floor, sack],
                }
            )
        out.append({"name": name, "boots": boots, "steps": rec})

    run("in order", [(1, 1, 1), (1, 1, 2), (1, 1, 3)])
    run("duplicate", [(1, 1, 1), (1, 1, 2), (1, 1, 2), (1, 1, 1)])
    run(
        "out of order then gap filled",
        [(1, 1, 1), (1, 1, 3), (1, 1, 5), (1, 1, 2), (1, 1, 4), (1, 1, 3)],
    )
    run("first seen is not 1", [(1, 1, 40), (1, 1, 41)])
    run("window moves past a hole", [(1, 1, 1), (1, 1, 70), (1, 1, 5), (1, 1, 7), (1, 1, 200)])
    run("edge of the window", [(1, 1, 64), (1, 1, 65), (1, 1, 1)])
    run("boots and nodes are separate", [(1, 1, 1), (1, 2, 1), (2, 1, 1), (1, 1, 1), (2, 2, 1)])
    run(
        "oldest boot forgotten",
        [(1, b, 1) for b in range(1, 5)] + [(1, 5, 1), (1, 1, 2), (1, 2, 2), (1, 6, 1)],
        boots=4,
    )
    return out


def write(name, rows):
    with open(os.path.join(HERE, name), "w") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=True) + "\n")


def main():
    with open(os.path.join(HERE, "keys.json"), "w") as f:
        json.dump(
            {"keys": {str(n): hx(k) for n, k in KEYS.items()}, "open_node": OPEN_NODE},
            f,
            indent=1,
            sort_keys=True,
        )
        f.write("\n")
    write("frames.jsonl", frames())
    write("invalid.jsonl", invalid())
    write("cbor.jsonl", cbor_vectors())
    write("streams.jsonl", streams())
    write("replay.jsonl", replay())


if __name__ == "__main__":
    main()
