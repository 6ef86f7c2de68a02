# Whole frames: Message <-> wire bytes.
#
#   seal:  message -> CBOR -> [COSE_Mac0 with the node key] -> + CRC-32 -> COBS -> + 0x00
#   open:  payload (from link.Deframer or link.unframe) -> authenticated Message
#
# Opening checks the tag before anything in the message is trusted: the only field read
# before verification is the node id, and only to pick the key. A KeyRing holds the keys;
# a node with a key must send tagged frames, and a node without one is refused unless the
# ring is open (a lab set-up without keys).

try:
    from micropython import const
except ImportError:     # CPython: every const() here is an int (no function: heap on a board)
    const = int  # type: ignore[assignment]

from protocol import link, mac, messages
from protocol.cbor import Writer
from protocol.errors import NODE, UNTAGGED, ProtocolError
from protocol.mac import Key

_BUF_B = const(256)


class KeyRing:
    # node id -> mac.Key. open_nodes: accept untagged frames from nodes without a key.
    def __init__(self, keys=None, open_nodes=False):
        self.keys = {}
        self.open_nodes = open_nodes
        if keys:
            for node in keys:
                self.add(node, keys[node])

    def add(self, node, key):
        self.keys[node] = key if isinstance(key, Key) else Key(key)

    def get(self, node):
        return self.keys.get(node)


class Sealer:
    # Encodes messages into frames with buffers allocated once (node side hot path).
    def __init__(self, key=None):
        if key is not None and not isinstance(key, Key):
            key = Key(key)
        self.key = key
        self._w = Writer(bytearray(_BUF_B))
        self._raw = bytearray(link.MAX_RAW_B)
        self._out = bytearray(link.MAX_WIRE_B)

    def payload(self, msg):
        # Message -> payload bytes (the CBOR message, or its COSE_Mac0 when keyed).
        w = self._w
        w.n = 0
        messages.encode_into(msg, w)
        body = w.getvalue()
        if self.key is None:
            return body
        return mac.wrap(body, self.key)

    def seal(self, msg):
        # Message -> wire bytes ready to write to the UART.
        n = link.frame_into(self.payload(msg), self._raw, self._out)
        return bytes(self._out[0:n])


def seal(msg, key=None):
    return Sealer(key).seal(msg)


def open_payload(payload, ring, uplink=True):
    # Payload (CRC already checked) -> Message. Raises ProtocolError.
    if mac.is_mac0(payload):
        body, tag = mac.unwrap(payload)
        node = messages.peek_node(body)
        key = ring.get(node)
        if key is None:
            raise ProtocolError(NODE, "node %d has no key" % node)
        mac.verify(key, body, tag)
        return messages.decode(body, uplink)
    node = messages.peek_node(payload)
    if ring.get(node) is not None:
        raise ProtocolError(UNTAGGED, "node %d has a key" % node)
    if not ring.open_nodes:
        raise ProtocolError(NODE, "node %d unknown, ring closed" % node)
    return messages.decode(payload, uplink)


def open_wire(wire, ring, uplink=True):
    # One complete wire frame -> Message.
    return open_payload(link.unframe(wire), ring, uplink)
