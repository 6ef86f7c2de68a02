# The node's side of the link to the gateway: frames out, acks/time/config in (SPEC 8, 9).
#
# Sending: every message gets the next seq of this boot, is sealed once, appended to the
# flash store (store.py) and only then written to the UART; retransmissions re-read the same
# bytes from flash. At most _FLIGHT frames are outstanding at a time and none with a seq at or
# beyond u + 64 (u = the oldest unacknowledged seq of this boot, SPEC 9.3). An unacknowledged
# frame is sent again after an ack timeout that doubles per try up to _MAX_BACKOFF_MS, with
# +-25 % jitter so nodes sharing a gateway do not retry in step.
#
# Receiving: bytes from the UART go through link.Deframer; each payload is authenticated
# with the node's own key (frame.open_payload with a one-key ring), then checked as SPEC 8
# asks of a node: addressed to this node, this boot, and a downlink seq above every one
# accepted in this boot (else counted bad with reason replay). Acks release stored frames,
# time frames set the clock, config frames go to the callback given by the caller.

import os
import time

from micropython import const

from firmware import log
from protocol import frame, link, mac, messages
from protocol.cbor import Writer
from protocol.errors import NODE, REPLAY, ProtocolError

_FLIGHT = const(8)              # frames outstanding at once
_ACK_TIMEOUT_MS = const(3000)   # first retransmission; the gateway acks within ~100 ms
_MAX_BACKOFF_MS = const(60000)
_RX_CHUNK_B = const(64)
_WINDOW = const(64)             # SPEC 9.3 (protocol.replay.WINDOW)
# counts: sent, retransmitted, received, bad, ack timeouts (SPEC 5.4.6)
_SENT = const(0)
_RETRANSMITTED = const(1)
_RECEIVED = const(2)
_BAD = const(3)
_ACK_TIMEOUTS = const(4)
# flight entries: [boot, seq, segment no, offset, length, due ms, writes in this boot]
_F_BOOT = const(0)
_F_SEQ = const(1)
_F_DUE = const(5)
_F_TRIES = const(6)


class Clock:
    # Node time for the `t` fields (SPEC 5.2): Unix seconds once a time frame arrived,
    # seconds since boot before that.
    def __init__(self):
        self.synced = False
        self.quality = 0
        self._t0 = time.ticks_ms()
        self._at = (0, self._t0)        # (Unix ms, ticks_ms) of the last time frame

    def set(self, utc_ms, quality):
        self._at = (utc_ms, time.ticks_ms())
        self.quality = quality
        self.synced = True

    def uptime_s(self):
        return time.ticks_diff(time.ticks_ms(), self._t0) // 1000

    def t(self):
        if not self.synced:
            return self.uptime_s()
        at = self._at
        return (at[0] + time.ticks_diff(time.ticks_ms(), at[1])) // 1000


class Uplink:
    def __init__(self, uart, node, boot, key, store, clock, on_config=None):
        self.uart = uart
        self.node = node
        self.boot = boot
        self.store = store
        self.clock = clock
        self.on_config = on_config
        # One Key (its HMAC pads) seals frames out and opens frames in.
        key = mac.Key(key) if key else None
        self.key = key
        self.ring = frame.KeyRing({node: key} if key else None, open_nodes=key is None)
        self.deframer = link.Deframer()
        self.seq = 0
        self.down_seq = 0
        self.flight = []
        self.counts = [0, 0, 0, 0, 0]
        self.dropped = 0            # frames that could not be stored (flash full or faulty)
        self._refill = True         # the store may hold frames not in flight: look
        self.ack_timeout_ms = _ACK_TIMEOUT_MS
        self._rx = bytearray(_RX_CHUNK_B)
        # Sealing in place (frame.Sealer's steps on buffers of our own): the CBOR message,
        # the payload + CRC before COBS, and the wire frame. _buf also takes a frame read
        # back from flash for a retransmission; the flash and the UART get a memoryview.
        self._w = Writer(bytearray(link.MAX_WIRE_B))
        self._raw = bytearray(link.MAX_RAW_B)
        self._buf = bytearray(link.MAX_WIRE_B)

    # -- sending ------------------------------------------------------------------------

    def send(self, cls, values, prio=0):
        # Seals a new message of class cls with the given body field values; returns its seq.
        self.seq += 1
        seq = self.seq
        w = self._w
        w.n = 0
        messages.encode_into(cls(self.node, self.boot, seq, *values), w)
        payload = w.getvalue()
        if self.key is not None:
            payload = mac.wrap(payload, self.key)
        wire = memoryview(self._buf)[0:link.frame_into(payload, self._raw, self._buf)]
        try:
            no, off = self.store.append(self.boot, seq, prio, wire)
        except OSError as e:
            # Not on flash: send it once anyway, it is lost if that copy is.
            self.dropped += 1
            log.exc("uplink", "store", e)
            self._write(wire)
            self.counts[_SENT] += 1
            return seq
        if len(self.flight) < _FLIGHT and self._in_window(seq):
            self._write(wire)
            self.counts[_SENT] += 1
            self.flight.append([self.boot, seq, no, off, len(wire), self._due(1), 1])
        else:
            self._refill = True
        return seq

    def _in_window(self, seq):
        u = self.store.oldest_unacked(self.boot)
        return u is None or seq < u + _WINDOW

    def _due(self, n):
        # When a frame written n times is due again.
        ms = self.ack_timeout_ms << (n - 1) if 0 < n < 6 else _MAX_BACKOFF_MS
        ms = min(ms, _MAX_BACKOFF_MS)
        jitter = (os.urandom(1)[0] - 128) * ms // 512       # +-25 %
        return time.ticks_add(time.ticks_ms(), ms + jitter)

    def _write(self, data):
        try:
            self.uart.write(data)
        except OSError as e:            # a UART fault must not kill the link task
            log.exc("uplink", "write", e)

    def _in_flight(self, boot, seq):
        for e in self.flight:
            if e[_F_SEQ] == seq and e[_F_BOOT] == boot:
                return True
        return False

    def service(self):
        # Called often by the link task: receive, retransmit what is due, refill the flight.
        uart = self.uart
        while uart.any():
            n = uart.readinto(self._rx)
            if not n:
                break
            data = self._rx if n == _RX_CHUNK_B else self._rx[0:n]
            for item in self.deframer.feed(data):
                if isinstance(item, ProtocolError):
                    self.counts[_BAD] += 1
                    log.warn("uplink", "bad frame: %s %s", item.reason, item.detail)
                else:
                    self._handle(item)
        now = time.ticks_ms()
        gone = False
        if self._refill and len(self.flight) < _FLIGHT:
            self._refill = False
            for rec in self.store.unacked(_FLIGHT - len(self.flight), self._in_flight):
                if rec[0] == self.boot and not self._in_window(rec[1]):
                    break           # only an ack moves the window; it sets _refill
                # Not yet written in this boot (an earlier boot's frame, or one held back by
                # the flight limit or the window): due now.
                self.flight.append([rec[0], rec[1], rec[2], rec[3], rec[4], now, 0])
        for e in self.flight:
            if time.ticks_diff(now, e[_F_DUE]) >= 0:
                n = self.store.read(e[2], e[3], e[4], self._buf)
                if n <= 0:
                    e[_F_SEQ] = -1      # its segment was dropped (store full): forget it
                    self._refill = True
                    gone = True
                    continue
                self._write(memoryview(self._buf)[0:n])
                if e[_F_TRIES]:
                    self.counts[_ACK_TIMEOUTS] += 1
                    self.counts[_RETRANSMITTED] += 1
                else:       # first write in this boot; an earlier boot's frame is a resend
                    self.counts[_SENT if e[_F_BOOT] == self.boot else _RETRANSMITTED] += 1
                e[_F_TRIES] += 1
                e[_F_DUE] = self._due(e[_F_TRIES])
        if gone:
            self.flight = [e for e in self.flight if e[_F_SEQ] >= 0]

    # -- receiving ----------------------------------------------------------------------

    def _handle(self, payload):
        try:
            msg = frame.open_payload(payload, self.ring, False)
            if msg.node != self.node:
                raise ProtocolError(NODE, "for node %d" % msg.node)
            if msg.boot != self.boot or msg.seq <= self.down_seq:
                raise ProtocolError(REPLAY, "%d#%d" % (msg.boot, msg.seq))
        except ProtocolError as e:
            self.counts[_BAD] += 1
            log.warn("uplink", "refused: %s %s", e.reason, e.detail)
            return
        self.down_seq = msg.seq
        self.counts[_RECEIVED] += 1
        t = msg.TYPE
        if t == messages.ACK:
            self.store.ack(msg.acked_boot, msg.floor, msg.sack)
            self._refill = True
            # the store keeps the newest ack of each boot: drop what it covers
            acked = self.store.acked
            self.flight = [e for e in self.flight if not acked(e[_F_BOOT], e[_F_SEQ])]
        elif t == messages.TIME:
            self.clock.set(msg.utc_ms, msg.quality)
            log.info("uplink", "clock set, quality %d", msg.quality)
        elif t == messages.CONFIG and self.on_config is not None:
            self.on_config(msg.cfg)
