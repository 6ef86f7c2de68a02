"""CPython only: independent implementations agree with the vectors (cbor2, pycose)."""

import json
from typing import Any

import cbor2
from pycose.keys import SymmetricKey
from pycose.messages import Mac0Message

from protocol import link
from protocol.tests.vecio import Failures, rows, same, value, vector_dir


def _plain(v: Any) -> Any:
    # cbor2 gives tuples for arrays and frozendicts for maps nested in arrays; compare as lists.
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def test_cbor2_decodes_every_valid_cbor_vector_to_its_value() -> None:
    """cbor2, an independent decoder, reads each golden CBOR item as the same value."""
    fails = Failures()
    for v in rows("cbor.jsonl"):
        if "value" in v:
            got = _plain(cbor2.loads(bytes.fromhex(v["hex"])))
            fails.check(same(got, value(v["value"])), v["name"], f"cbor2 read {got!r}")
    fails.done(50)


def test_cbor2_reads_every_message_body_as_its_fields() -> None:
    """cbor2 decodes each frame body to [kind, node, boot, seq, fields...] as in the vector."""
    fails = Failures()
    for v in rows("frames.jsonl"):
        body = _plain(cbor2.loads(bytes.fromhex(v["body"])))
        m = v["message"]
        fails.check(body[1:4] == [m["node"], m["boot"], m["seq"]], v["name"], repr(body))
    fails.done(40)


def test_pycose_verifies_every_tagged_vector_and_refuses_a_wrong_key() -> None:
    """Every tagged frame is a COSE_Mac0 (HMAC 256/64) that pycose verifies with the node key."""
    fails = Failures()
    for v in rows("frames.jsonl"):
        if not v["tagged"]:
            continue
        payload = link.unframe(bytes.fromhex(v["wire"]))
        tag = cbor2.loads(payload)
        assert tag.tag == 17
        p, u, body, t = tag.value
        msg = Mac0Message.from_cose_obj([p, dict(u), body, t], True)
        msg.key = SymmetricKey(k=_raw_key(v["message"]["node"]))
        fails.check(msg.verify_tag(), v["name"], "pycose rejected the tag")
        msg.key = SymmetricKey(k=bytes(32))
        fails.check(not msg.verify_tag(), v["name"], "pycose accepted a wrong key")
    fails.done(40)


def _raw_key(node: int) -> bytes:
    with open(vector_dir() + "/keys.json") as f:
        return bytes.fromhex(json.load(f)["keys"][str(node)])
