# Authentication: HMAC-SHA256 truncated to 64 bits (COSE algorithm 4, "HMAC 256/64"),
# carried as a COSE_Mac0 structure (RFC 9052 section 6.2), tag 17:
#
#   d1                      tag 17, COSE_Mac0
#   84                      array of 4
#   43 a1 01 04             protected header, bstr of {1: 4} (alg: HMAC 256/64)
#   a0                      unprotected header, empty map
#   58 nn / 4n  <payload>   payload, a bstr holding the CBOR message
#   48 <8 bytes>            tag
#
# The tag is HMAC-SHA256(key, MAC_structure)[:8] where MAC_structure is the CBOR array
# ["MAC0", protected, h'' (no external AAD), payload]. Any COSE library verifies our frames.
# MicroPython has no hmac module and its sha256 objects cannot be copied, so HMAC is built
# from two hashes with the key pads precomputed once per key.

try:
    from micropython import const
except ImportError:     # CPython: every const() here is an int (no function: heap on a board)
    const = int  # type: ignore[assignment]

from hashlib import sha256

from protocol.errors import TAG, TRUNCATED, ProtocolError

KEY_B = const(32)
TAG_B = const(8)
_BLOCK_B = const(64)
_HEAD = b"\xd1\x84\x43\xa1\x01\x04\xa0"        # tag 17, array(4), protected, unprotected
_HEAD_B = const(7)
_TBS = b"\x84\x64MAC0\x43\xa1\x01\x04\x40"     # MAC_structure up to the payload bstr
_TAG_HEAD = const(0x48)                         # bstr of 8 bytes
OVERHEAD_B = const(18)                          # wrapping bytes for payloads of 24..255 bytes


class Key:
    def __init__(self, key):
        if len(key) != KEY_B:
            raise ValueError("a node key is %d bytes, got %d" % (KEY_B, len(key)))
        ipad = bytearray(_BLOCK_B)
        opad = bytearray(_BLOCK_B)
        for i in range(_BLOCK_B):
            k = key[i] if i < KEY_B else 0
            ipad[i] = k ^ 0x36
            opad[i] = k ^ 0x5C
        self._in = bytes(ipad)      # the inner and outer key pads
        self._out = bytes(opad)

    def tag(self, payload):
        h = sha256(self._in)
        h.update(_TBS)
        h.update(_bstr_head(len(payload)))
        h.update(payload)
        h2 = sha256(self._out)
        h2.update(h.digest())
        return h2.digest()[0:TAG_B]


def _bstr_head(n):
    if n < 24:
        return bytes((0x40 | n,))
    if n < 0x100:
        return bytes((0x58, n))
    return bytes((0x59, n >> 8, n & 0xFF))


def is_mac0(data):
    return len(data) > 0 and data[0] == 0xD1


def wrap(payload, key):
    # CBOR message -> COSE_Mac0 bytes
    return _HEAD + _bstr_head(len(payload)) + payload + bytes((_TAG_HEAD,)) + key.tag(payload)


def unwrap(data):
    # COSE_Mac0 bytes -> (payload, tag). Checks the structure byte for byte; the protocol
    # allows exactly one shape, so anything else is a bad tag, not something to parse.
    n = len(data)
    if n < _HEAD_B + 1 + 1 + TAG_B:
        raise ProtocolError(TRUNCATED, "COSE_Mac0 of %d B" % n)
    if bytes(data[0:_HEAD_B]) != _HEAD:
        raise ProtocolError(TAG, "not COSE_Mac0 HMAC 256/64")
    hb = data[_HEAD_B]
    p = _HEAD_B + 1
    if hb & 0xE0 != 0x40:
        raise ProtocolError(TAG, "payload not bstr")
    ln = hb & 0x1F
    if ln == 24:
        if p >= n:
            raise ProtocolError(TRUNCATED, "payload length")
        ln = data[p]
        p += 1
        if ln < 24:
            raise ProtocolError(TAG, "payload length form")
    elif ln > 24:
        raise ProtocolError(TAG, "payload too long")
    end = p + ln
    if end < n and data[end] != _TAG_HEAD:
        raise ProtocolError(TAG, "tag not 8 bytes")
    if end + 1 + TAG_B != n:
        if end + 1 + TAG_B > n:
            raise ProtocolError(TRUNCATED, "tag cut short")
        raise ProtocolError(TAG, "bytes after tag")
    return bytes(data[p:end]), bytes(data[end + 1:n])


def verify(key, payload, tag):
    # Constant-time comparison: the time taken does not depend on where bytes differ.
    want = key.tag(payload)
    diff = 0
    for i in range(TAG_B):
        diff |= want[i] ^ tag[i]
    if diff:
        raise ProtocolError(TAG, "tag mismatch")
