# The node's link: store before send, acks, retransmission, downlink checks, reboots.
# upy-heap: 128k (the whole protocol, the store and the link as heap-loaded .mpy, no ROM)

from firmware.store import Store
from firmware.tests.scratch import fresh, wipe
from firmware.uplink import Clock, Uplink
from protocol import frame, link, messages

# Uplink.counts indices (SPEC 5.4.6)
SENT, RETRANSMITTED, RECEIVED, BAD, ACK_TIMEOUTS = range(5)
KEY = bytes(range(32))
NODE = 1042


class FakeUart:
    # A UART whose receive side is fed by the test and whose writes are kept.
    def __init__(self):
        self.rx = bytearray()
        self.tx = []

    def any(self):
        return len(self.rx)

    def readinto(self, buf):
        n = min(len(buf), len(self.rx))
        buf[0:n] = self.rx[0:n]
        self.rx = self.rx[n:]
        return n

    def write(self, data):
        self.tx.append(bytes(data))
        return len(data)


def _sent(uart):
    ring = frame.KeyRing({NODE: KEY})
    return [frame.open_wire(w, ring) for w in uart.tx]


def _down(msg, key=KEY):
    return frame.seal(msg, key)


def _node(d, boot=1, key=KEY):
    s = Store(d + "/q")
    held = s.open()
    u = Uplink(FakeUart(), NODE, boot, key, s, Clock())
    u.ack_timeout_ms = 0            # every unacknowledged frame is due at the next service
    return u, held


def _flood(u, depth):
    return u.send(messages.Flood, (100, depth, 3000 - depth, 2500, 0, 7))


def test_frames_are_stored_then_sent_and_decode():
    """A sent message is on flash and on the wire, and the gateway decodes it."""
    d = fresh("uplink")
    try:
        u, _ = _node(d)
        assert _flood(u, 12) == 1
        assert _flood(u, 13) == 2
        got = _sent(u.uart)
        assert [g.seq for g in got] == [1, 2] and got[1].depth_mm == 13
        assert u.store.pending() == 2 and u.counts[SENT] == 2
    finally:
        wipe(d)


def test_ack_stops_retransmission_and_frees_the_store():
    """Unacked frames come back unchanged; an ack ends that and empties the store."""
    d = fresh("uplink")
    try:
        u, _ = _node(d)
        for i in range(3):
            _flood(u, i)
        first = list(u.uart.tx)
        u.uart.tx.clear()
        u.service()
        assert u.uart.tx == first                     # byte-identical retransmissions
        assert u.counts[RETRANSMITTED] == 3 and u.counts[ACK_TIMEOUTS] == 3
        u.uart.rx += _down(messages.Ack(NODE, 1, 1, 1, 3, 0))
        u.uart.tx.clear()
        u.service()
        assert u.uart.tx == [] and u.flight == []
        assert u.store.pending() == 0 and u.counts[RECEIVED] == 1
    finally:
        wipe(d)


def test_downlink_checks_refuse_replays_wrong_boot_node_and_forgeries():
    """Only a fresh downlink for this node and boot with its key is acted upon."""
    d = fresh("uplink")
    try:
        u, _ = _node(d, boot=5)
        _flood(u, 1)
        bad = [
            _down(messages.Ack(NODE, 4, 1, 5, 1, 0)),             # an earlier boot
            _down(messages.Ack(7, 5, 1, 5, 1, 0)),                # another node
            _down(messages.Ack(NODE, 5, 1, 5, 1, 0), bytes(32)),  # wrong key
            link.frame(messages.encode(messages.Ack(NODE, 5, 1, 5, 1, 0))),  # untagged
            b"\x01\x02garbage\x00",
        ]
        for w in bad:
            u.uart.rx += w
        u.service()
        assert u.counts[BAD] == len(bad) and u.counts[RECEIVED] == 0
        assert u.store.pending() == 1
        u.uart.rx += _down(messages.Time(NODE, 5, 3, 1795000000123, 1))
        u.uart.rx += _down(messages.Time(NODE, 5, 3, 1795000000123, 1))   # replayed seq
        u.uart.rx += _down(messages.Ack(NODE, 5, 2, 5, 1, 0))             # seq went down
        u.service()
        assert u.counts[RECEIVED] == 1 and u.counts[BAD] == len(bad) + 2
        assert u.clock.synced and u.clock.t() >= 1795000000
        assert u.store.pending() == 1
    finally:
        wipe(d)


def test_config_frames_reach_the_callback():
    """A config frame's map is handed to on_config."""
    d = fresh("uplink")
    try:
        u, _ = _node(d)
        got = []
        u.on_config = got.append
        u.uart.rx += _down(messages.Config(NODE, 1, 1, {1: 600, 4: [50, 150]}))
        u.service()
        assert got == [{1: 600, 4: [50, 150]}]
    finally:
        wipe(d)


def test_reboot_resends_held_frames_and_takes_acks_for_the_old_boot():
    """Frames held across a reboot are sent again and released by an ack of their boot."""
    d = fresh("uplink")
    try:
        u, _ = _node(d, boot=1)
        for i in range(5):
            _flood(u, i)
        u.store.close()
        u2, held = _node(d, boot=2)
        assert held == 5
        u2.service()
        got = _sent(u2.uart)
        assert [(g.boot, g.seq) for g in got] == [(1, 1), (1, 2), (1, 3), (1, 4), (1, 5)]
        assert u2.counts[RETRANSMITTED] == 5
        _flood(u2, 9)
        u2.uart.rx += _down(messages.Ack(NODE, 2, 1, 1, 5, 0))
        u2.service()
        assert u2.store.pending() == 1
    finally:
        wipe(d)


def test_sender_window_holds_back_seqs_beyond_u_plus_64():
    """With seq u unacknowledged, nothing at or beyond u + 64 goes on the wire."""
    d = fresh("uplink")
    try:
        u, _ = _node(d)
        for i in range(80):
            _flood(u, i)
        # Everything but seq 1 acknowledged: the window is [1, 64].
        u.uart.rx += _down(messages.Ack(NODE, 1, 1, 1, 0, (1 << 64) - 2))
        u.uart.tx.clear()
        for _ in range(12):
            u.service()
        seqs = [g.seq for g in _sent(u.uart)]
        assert 1 in seqs
        assert max(seqs) < 65, seqs
        u.uart.rx += _down(messages.Ack(NODE, 1, 2, 1, 64, 0))
        u.uart.tx.clear()
        for _ in range(4):
            u.service()
        seqs = [g.seq for g in _sent(u.uart)]
        assert 65 in seqs and max(seqs) <= 80
    finally:
        wipe(d)
