# Link layer: a frame on the wire is COBS(payload + CRC-32 big-endian) followed by 0x00.
#
# - COBS (Cheshire and Baker 1999) removes every 0x00 from the frame so 0x00 can delimit
#   frames; a receiver that joins mid-stream or sees garbage resynchronises at the next 0x00.
# - CRC-32 is the IEEE polynomial computed by binascii.crc32 on MicroPython and by
#   zlib.crc32/binascii.crc32 on CPython; it is appended big-endian after the payload.
# - A frame on the wire (COBS bytes plus the delimiter) is at most 256 bytes, so the payload
#   plus CRC is at most 254 bytes and the payload at most 250 bytes.
#
# Deframer is the stream decoder: feed it any chunks, it yields payloads (bytes) and
# ProtocolError instances (one per bad frame) and never holds more than 255 bytes.
# feed() is a generator: iterate it to the end for each chunk, or bytes stay unread.

try:
    from micropython import const
except ImportError:     # CPython: every const() here is an int (no function: heap on a board)
    const = int  # type: ignore[assignment]

from binascii import crc32

from protocol.errors import COBS, CRC, OVERSIZE, TRUNCATED, ProtocolError

MAX_WIRE_B = const(256)      # COBS bytes + delimiter
MAX_COBS_B = const(255)      # COBS bytes between delimiters
MAX_RAW_B = const(254)       # payload + CRC, before COBS
MAX_PAYLOAD_B = const(250)   # payload alone
_CRC_B = const(4)


def crc_bytes(payload):
    c = crc32(payload) & 0xFFFFFFFF
    return bytes(((c >> 24) & 0xFF, (c >> 16) & 0xFF, (c >> 8) & 0xFF, c & 0xFF))


def cobs_encode_into(src, n, dst):
    # Encodes src[0:n] into dst (at least n + n // 254 + 1 bytes); returns the length.
    # A block is closed at a zero byte or after 254 data bytes; no trailing empty block.
    code_i = 0
    o = 1
    code = 1
    i = 0
    while i < n:
        b = src[i]
        i += 1
        if b == 0:
            dst[code_i] = code
            code_i = o
            o += 1
            code = 1
            continue
        dst[o] = b
        o += 1
        code += 1
        if code == 0xFF and i < n:
            dst[code_i] = code
            code_i = o
            o += 1
            code = 1
    dst[code_i] = code
    return o


def cobs_decode_into(src, n, dst):
    # Decodes src[0:n] (no delimiter) into dst; returns the length. Raises ProtocolError.
    i = 0
    o = 0
    while i < n:
        code = src[i]
        if code == 0:
            raise ProtocolError(COBS, "zero in frame")
        i += 1
        end = i + code - 1
        if end > n:
            raise ProtocolError(COBS, "block past end")
        while i < end:
            dst[o] = src[i]
            o += 1
            i += 1
        if code < 0xFF and i < n:
            dst[o] = 0
            o += 1
    return o


def frame_into(payload, raw, out):
    # payload -> wire bytes in out (COBS + delimiter), using raw as scratch; returns the
    # length. raw holds MAX_RAW_B and out MAX_WIRE_B bytes. Raises ProtocolError(OVERSIZE).
    n = len(payload)
    if n > MAX_PAYLOAD_B:
        raise ProtocolError(OVERSIZE, "payload %d > %d B" % (n, MAX_PAYLOAD_B))
    raw[0:n] = payload
    raw[n:n + _CRC_B] = crc_bytes(payload)
    m = cobs_encode_into(raw, n + _CRC_B, out)
    out[m] = 0
    return m + 1


def frame(payload):
    # payload -> wire bytes (COBS + delimiter). Raises ProtocolError(OVERSIZE).
    out = bytearray(MAX_WIRE_B)
    return bytes(out[0:frame_into(payload, bytearray(MAX_RAW_B), out)])


def check_raw(raw, n):
    # raw[0:n] is a COBS-decoded frame; returns the payload length after checking the CRC.
    if n <= _CRC_B:
        raise ProtocolError(TRUNCATED, "frame of %d B" % n)
    p = n - _CRC_B
    c = crc32(memoryview(raw)[0:p]) & 0xFFFFFFFF
    got = (raw[p] << 24) | (raw[p + 1] << 16) | (raw[p + 2] << 8) | raw[p + 3]
    if c != got:
        raise ProtocolError(CRC, "%08x != %08x" % (c, got))
    return p


def unframe(wire):
    # One complete frame (with or without its trailing delimiter) -> payload bytes.
    n = len(wire)
    if n and wire[n - 1] == 0:
        n -= 1
    if n > MAX_COBS_B:
        raise ProtocolError(OVERSIZE, "frame %d > %d B" % (n + 1, MAX_WIRE_B))
    if n == 0:
        raise ProtocolError(TRUNCATED, "empty")
    out = bytearray(n)
    m = cobs_decode_into(wire, n, out)
    p = check_raw(out, m)
    return bytes(out[0:p])


class Deframer:
    # Stream decoder. Memory is two 255-byte buffers allocated once.
    def __init__(self):
        self._rx = bytearray(MAX_COBS_B)
        self._out = bytearray(MAX_COBS_B)
        self._n = 0             # bytes held; -1: discarding an oversize frame until the
                                # next delimiter
        self.frames = 0         # good payloads yielded
        self.errors = 0         # bad frames yielded as errors

    def reset(self):
        # Forget a partial frame (after a port reopen, for instance).
        self._n = 0

    def pending(self):
        return max(self._n, 0)

    def feed(self, data):
        # Generator: yields bytes (a payload whose CRC matched) or a ProtocolError.
        # Empty frames (consecutive delimiters) are idle fill and yield nothing.
        n = len(data)
        i = 0
        rx = self._rx
        while i < n:
            j = data.find(b"\x00", i)
            end = n if j < 0 else j
            take = end - i
            if take and self._n >= 0:
                if self._n + take > MAX_COBS_B:
                    self._n = -1
                    self.errors += 1
                    yield ProtocolError(OVERSIZE, "no delimiter in %d B" % MAX_WIRE_B)
                else:
                    rx[self._n:self._n + take] = data[i:end]
                    self._n += take
            if j < 0:
                return
            i = j + 1
            if self._n < 0:     # the oversize frame ends here
                self._n = 0
                continue
            if self._n:
                m = self._n
                self._n = 0
                try:
                    k = cobs_decode_into(rx, m, self._out)
                    p = check_raw(self._out, k)
                except ProtocolError as e:
                    self.errors += 1
                    yield e
                    continue
                self.frames += 1
                yield bytes(self._out[0:p])
