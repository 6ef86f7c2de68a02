"""CPython fast path of `protocol/` for the gateway's hot loop: same verdicts, C-speed steps.

`protocol/` is written once for MicroPython and CPython, so it decodes COBS, CBOR and fields
byte by byte in Python: about 70 us per 48-byte frame on the benchmark machine, the largest
single cost of the gateway. Here the same checks are made with CPython's C routines
(``bytes.split``, ``binascii.crc32``, ``hashlib`` with the key's precomputed pads,
``cbor2``), and only for the *clean* case:

- A frame the fast path accepts is one that `protocol` accepts, as the same message (the
  tests check this against every golden vector and against mutated frames).
- Whatever looks unusual (a COBS code 0xFF, a CRC or tag mismatch, an unknown node, a non
  uplink type, a value outside its field's range, a trailing field, any CBOR the
  re-encoding does not reproduce byte for byte...) is handed to `protocol` itself, which
  gives the authoritative verdict and reason. Refused frames therefore cost what they cost
  before; the normal diet of a receiver, good frames, costs about a fifth.

Deterministic CBOR is checked by decoding with cbor2 and re-encoding: cbor2 writes integers
and lengths in the shortest form and definite lengths only, which is RFC 8949's deterministic
encoding for everything an uplink message may hold (integers, text, bytes, null, arrays of
integers); maps and floats are never valid in an uplink field and go to `protocol`. cbor2
only ever sees a body whose tag was verified (or an open node's untagged body), as SPEC 7.3
orders.

`decode_stored` turns a payload the store holds (a body this gateway verified before storing
it) back into a message for publishing, again with cbor2, falling back to `protocol` for
anything but the clean case. Live records are published a moment after they were verified,
so the opener keeps the last `MEMO_MAX` messages it decoded, keyed by their exact body bytes
(equal bytes decode to an equal message), and `decode_stored` takes them from there: a
record is decoded once on its way through the gateway unless it waited in a backlog.
"""

from __future__ import annotations

import hashlib
from binascii import crc32
from collections import OrderedDict
from collections.abc import Iterator

import cbor2

from protocol import frame, link, mac, messages
from protocol.errors import OVERSIZE, ProtocolError

_MAX_COBS_B = link.MAX_COBS_B
_MAC0_HEAD = b"\xd1\x84\x43\xa1\x01\x04\xa0"   # mac._HEAD: tag 17, array(4), alg 4, {}
_MAC0_HEAD_B = len(_MAC0_HEAD)
_TBS = b"\x84\x64MAC0\x43\xa1\x01\x04\x40"     # MAC_structure up to the payload (mac._TBS)
_TAG_B = mac.TAG_B
_U32_MAX = 0xFFFFFFFF
MEMO_MAX = 8192            # messages kept for decode_stored (about 4 MB, a second of traffic)
# An OrderedDict: deleting a plain dict's first key again and again makes next(iter(d)) walk
# the deleted slots (12 us a frame here); popitem(last=False) stays O(1).
_memo: OrderedDict[bytes, messages.Message] = OrderedDict()
_NO_DELIMITER = f"no delimiter in {link.MAX_WIRE_B} B"   # protocol.link.Deframer's words
_UPLINK = {c.TYPE: c for c in messages.CLASSES if c.UPLINK}
_INT_KINDS = {messages.U32: (0, _U32_MAX), messages.I32: (-0x80000000, 0x7FFFFFFF)}
_NULLABLE = {messages.U32N: messages.U32, messages.I32N: messages.I32}


class Deframer:
    """`protocol.link.Deframer` with C-speed splitting and COBS; the same items, in order.

    Yields each good payload (bytes) and a `ProtocolError` for each bad frame; a frame the
    fast COBS path cannot take is decoded by `protocol.link.unframe` for the exact verdict.
    """

    def __init__(self) -> None:
        self._partial = b""
        self._discarding = False    # inside a frame already refused as oversize

    def reset(self) -> None:
        self._partial = b""
        self._discarding = False

    def pending(self) -> int:
        return len(self._partial)

    def feed(self, data: bytes | bytearray) -> Iterator[bytes | ProtocolError]:
        parts = bytes(data).split(b"\x00")
        if self._partial:
            parts[0] = self._partial + parts[0]
        tail = parts.pop()
        for w in parts:
            if self._discarding:        # the end of a frame refused as oversize
                self._discarding = False
                continue
            if not w:
                continue                # idle fill between delimiters
            if len(w) > _MAX_COBS_B:
                yield ProtocolError(OVERSIZE, _NO_DELIMITER)
                continue
            payload = _unframe(w)
            if payload is None:
                try:
                    payload = link.unframe(w)
                except ProtocolError as exc:
                    yield exc
                    continue
            yield payload
        if len(tail) > _MAX_COBS_B and not self._discarding:
            self._discarding = True
            tail = b""
            yield ProtocolError(OVERSIZE, _NO_DELIMITER)
        elif self._discarding:
            tail = b""
        self._partial = tail


def _unframe(w: bytes) -> bytes | None:
    # COBS: each code byte but the first becomes the zero it stands for; a code 0xFF (a
    # block without a zero), a block past the end or a bad CRC go to protocol.link.
    n = len(w)
    raw = bytearray(w)
    i = 0
    while i < n:
        code = raw[i]
        if code == 0xFF:
            return None
        raw[i] = 0
        i += code
    if i != n or n < 6:
        return None
    payload = bytes(raw[1:n - 4])
    if crc32(payload) != int.from_bytes(raw[n - 4:], "big"):
        return None
    return payload


class Opener:
    """`protocol.frame.open_payload` for uplink payloads, fast when the frame is clean.

    `open(payload)` returns (message, body) like the reference would, or raises its
    `ProtocolError`: a payload the fast path does not accept goes to `frame.open_payload`.
    """

    def __init__(self, ring: frame.KeyRing) -> None:
        self.ring = ring
        self._pads: dict[int, tuple[mac.Key, hashlib._Hash, hashlib._Hash]] = {}
        self.fast = 0       # payloads opened on the fast path
        self.slow = 0       # payloads handed to protocol/

    def open(self, payload: bytes) -> tuple[messages.Message, bytes]:
        got = self._fast(payload)
        if got is not None:
            self.fast += 1
            return got
        self.slow += 1
        msg = frame.open_payload(payload, self.ring)
        body = mac.unwrap(payload)[0] if mac.is_mac0(payload) else bytes(payload)
        return msg, body

    def _fast(self, payload: bytes) -> tuple[messages.Message, bytes] | None:
        if payload[:1] == b"\xd1":
            if payload[:_MAC0_HEAD_B] != _MAC0_HEAD:
                return None
            hb = payload[_MAC0_HEAD_B]
            if hb == 0x58:
                ln = payload[_MAC0_HEAD_B + 1]
                start = _MAC0_HEAD_B + 2
                if ln < 24:
                    return None
            elif 0x40 <= hb < 0x58:
                ln = hb - 0x40
                start = _MAC0_HEAD_B + 1
            else:
                return None
            end = start + ln
            if len(payload) != end + 1 + _TAG_B or payload[end] != 0x48:
                return None
            body = payload[start:end]
            node = _peek_node(body)
            if node is None:
                return None
            pads = self._key_pads(node)
            if pads is None:
                return None
            inner = pads[1].copy()
            inner.update(payload[_MAC0_HEAD_B:start])
            inner.update(body)
            outer = pads[2].copy()
            outer.update(inner.digest())
            if outer.digest()[:_TAG_B] != payload[end + 1:]:
                return None         # protocol/ compares in constant time and says "tag"
        else:
            node = _peek_node(payload)
            if node is None or not self.ring.open_nodes or self.ring.get(node) is not None:
                return None
            body = payload
        msg = _message(body)
        if msg is None:
            return None
        if len(_memo) >= MEMO_MAX:
            _memo.popitem(last=False)           # the oldest
        _memo[body] = msg
        return msg, body

    def _key_pads(self, node: int) -> tuple[mac.Key, hashlib._Hash, hashlib._Hash] | None:
        key = self.ring.get(node)
        if key is None:
            return None
        pads = self._pads.get(node)
        if pads is None or pads[0] is not key:
            # HMAC(K, m) = H(opad || H(ipad || m)): hash states after each pad block, copied
            # per frame. The MAC_structure up to the payload's bstr head is the same for
            # every frame and is hashed once here.
            # protocol's Key keeps only the pads (no raw key on a board's heap).
            inner = hashlib.sha256(key._in)
            inner.update(_TBS)
            pads = (key, inner, hashlib.sha256(key._out))
            self._pads[node] = pads
        return pads


def _peek_node(body: bytes) -> int | None:
    # [kind, node, ...]: an array head 0x84..0x97, a one-byte kind, the node in shortest form.
    if len(body) < 4 or not 0x84 <= body[0] <= 0x97 or body[1] >= 24:
        return None
    h = body[2]
    if h < 24:
        return h
    if h == 0x18 and body[3] >= 24:
        return body[3]
    if h == 0x19 and len(body) > 4 and body[3]:
        return int.from_bytes(body[3:5], "big")
    if h == 0x1A and len(body) > 6 and (body[3] or body[4]):
        return int.from_bytes(body[3:7], "big")
    return None


def _checks(cls: type[messages.Message]) -> tuple[tuple[int, int, int, bool], ...]:
    # Per field: (kind, lo, hi, nullable); lo > hi for the kinds messages.valid judges.
    out = []
    for kind in cls.KINDS:
        base = _NULLABLE.get(kind, kind)
        lo, hi = _INT_KINDS.get(base, (1, 0))
        out.append((kind, lo, hi, kind in _NULLABLE))
    return tuple(out)


_INT_ONLY = frozenset((messages.U32, messages.I32, messages.U32N, messages.I32N))
# type -> (class, per-field checks, attribute names in wire order, every field an integer)
_UPLINK_CHECKS = {t: (c, _checks(c), ("node", "boot", "seq", *c.FIELDS),
                      all(k in _INT_ONLY for k in c.KINDS)) for t, c in _UPLINK.items()}
_INT_TYPE = frozenset((int,))
_SAFE_MAX = 0x7FFFFFFF      # within every integer kind's range (U32, I32 and nullable ones)


def _message(body: bytes) -> messages.Message | None:
    # The clean case of messages.decode(body, uplink=True), or None for protocol/ to judge.
    try:
        items = cbor2.loads(body)
        if type(items) is not list or len(items) < 4 or cbor2.dumps(items) != body:
            return None     # not an array, or decodable but not the deterministic encoding
    except Exception:
        return None
    spec = _UPLINK_CHECKS.get(items[0])
    if spec is None:
        return None
    cls, checks, names, int_only = spec
    if len(items) != len(names) + 1:
        return None
    ident = items[1:]
    # The common case in C-level calls: integers only, all within 0..2**31-1, seq >= 1.
    if not (int_only and set(map(type, ident)) == _INT_TYPE and min(ident) >= 0
            and max(ident) <= _SAFE_MAX and items[3] >= 1):
        node, boot, seq = items[1], items[2], items[3]
        if (type(node) is not int or type(boot) is not int or type(seq) is not int
                or not (0 <= node <= _U32_MAX and 0 <= boot <= _U32_MAX
                        and 1 <= seq <= _U32_MAX)):
            return None
        for (kind, lo, hi, nullable), v in zip(checks, items[4:], strict=True):
            if type(v) is int:
                if not lo <= v <= hi:
                    return None
            elif v is None:
                if not nullable:
                    return None
            elif lo <= hi or not messages.valid(kind, v):
                return None
    # What Message.__init__ does, without its per-field argument matching (the fields are
    # exactly cls.FIELDS, in order).
    msg = object.__new__(cls)
    msg.__dict__.update(zip(names, ident, strict=True))
    return msg


def decode_stored(body: bytes) -> messages.Message:
    """The uplink message of a payload the store holds (verified before it was stored)."""
    msg = _memo.pop(body, None)
    if msg is not None:
        return msg
    msg = _message(body)
    return msg if msg is not None else messages.decode(body)
