# Replay window and acknowledgement state, per node and boot (SPEC.md "Acknowledgement").
#
# For each (node, boot) the guard keeps a floor (every seq <= floor was accepted) and a
# 64-bit map of accepted seqs above it (bit i = seq floor + 1 + i). A seq at or below the
# floor, or whose bit is set, is a replay. An ack carries (boot, floor, map): the node drops
# every frame it covers, so a frame the node itself discarded never blocks the floor.
# A seq more than 64 above the floor moves the floor up; the seqs passed over that were
# never received are counted in `skipped`. Senders keep at most 64 frames in flight beyond
# the oldest unacknowledged one, so nothing still held by a node is ever passed over.
#
# Boot counters only grow. Up to `boots` boots are tracked per node; when full, the oldest
# is forgotten and a frame from a boot older than every tracked one is refused as a replay.
# The gateway's durable store is the final judge of duplicates; this guard is the fast,
# bounded first line, and its state can be saved and loaded (rows()).

try:
    from micropython import const
except ImportError:     # CPython: every const() here is an int (no function: heap on a board)
    const = int  # type: ignore[assignment]

from protocol.errors import REPLAY, ProtocolError

WINDOW = const(64)
_MASK = const(0xFFFFFFFFFFFFFFFF)
_BOOTS = const(8)


class ReplayGuard:
    def __init__(self, boots=_BOOTS):
        self._nodes = {}        # node -> {boot: [floor, bits]}
        self._max_boots = boots
        self.skipped = 0        # seqs passed over by a window move, never received

    def check(self, node, boot, seq):
        # Raises ProtocolError(REPLAY) if (node, boot, seq) must be refused.
        boots = self._nodes.get(node)
        if boots is None:
            return
        st = boots.get(boot)
        if st is None:
            if len(boots) >= self._max_boots and boot < min(boots):
                raise ProtocolError(REPLAY, "%d/%d: boot too old" % (node, boot))
            return
        floor = st[0]
        if seq <= floor:
            raise ProtocolError(REPLAY, "%d/%d#%d <= %d" % (node, boot, seq, floor))
        i = seq - floor - 1
        if i < WINDOW and (st[1] >> i) & 1:
            raise ProtocolError(REPLAY, "%d/%d#%d seen" % (node, boot, seq))

    def accept(self, node, boot, seq):
        # Checks, then records (node, boot, seq) as accepted. Returns the seqs skipped.
        boots = self._nodes.get(node)
        st = boots.get(boot) if boots is not None else None
        if st is not None and seq == st[0] + 1 and not st[1]:
            st[0] = seq     # the next seq in order with nothing held above the floor
            return 0
        self.check(node, boot, seq)
        st = self._state(node, boot)
        floor = st[0]
        bits = st[1]
        i = seq - floor - 1
        skipped = 0
        if i >= WINDOW:
            shift = i - WINDOW + 1
            # Count the holes passed over: unset bits below the shift, plus seqs beyond the map.
            covered = shift if shift < WINDOW else WINDOW
            skipped = covered - _popcount(bits & ((1 << covered) - 1))
            if shift > WINDOW:
                skipped += shift - WINDOW
            bits = bits >> shift if shift < WINDOW else 0
            floor += shift
            i = WINDOW - 1
        bits |= 1 << i
        while bits & 1:
            bits >>= 1
            floor += 1
        st[0] = floor
        st[1] = bits & _MASK
        self.skipped += skipped
        return skipped

    def ack(self, node, boot):
        # -> (floor, map) for an ack of this boot; (0, 0) if nothing was accepted.
        boots = self._nodes.get(node)
        st = boots.get(boot) if boots is not None else None
        if st is None:
            return 0, 0
        return st[0], st[1]

    def rows(self):
        # Saved state: list of (node, boot, floor, map).
        out = []
        for node in self._nodes:
            boots = self._nodes[node]
            for boot in boots:
                st = boots[boot]
                out.append((node, boot, st[0], st[1]))
        return out

    def load(self, rows):
        for node, boot, floor, bits in rows:
            st = self._state(node, boot)
            st[0] = floor
            st[1] = bits & _MASK

    def _state(self, node, boot):
        boots = self._nodes.get(node)
        if boots is None:
            boots = {}
            self._nodes[node] = boots
        st = boots.get(boot)
        if st is None:
            if len(boots) >= self._max_boots:
                del boots[min(boots)]
            st = [0, 0]
            boots[boot] = st
        return st


def _popcount(x):
    n = 0
    while x:
        x &= x - 1
        n += 1
    return n


def covered(floor, sack, seq):
    # Node side: does an ack (floor, sack) cover seq?
    if seq <= floor:
        return True
    i = seq - floor - 1
    return i < WINDOW and (sack >> i) & 1 == 1
