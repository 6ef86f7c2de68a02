# The one error type of the protocol. Every bad input, whatever its bytes, ends as a
# ProtocolError carrying a short machine-readable reason (used as a counter label by the
# gateway) and a human detail. Reasons are listed in SPEC.md, section "Errors".

# Reasons (strings, so they print and count without a lookup table).
OVERSIZE = "oversize"          # frame longer than the 256-byte link limit
COBS = "cobs"                  # COBS block runs past the frame end
TRUNCATED = "truncated"        # too short for a CRC, or CBOR ends early
CRC = "crc"                    # CRC-32 trailer does not match
CBOR = "cbor"                  # not well-formed CBOR, or a CBOR feature the protocol forbids
NONCANONICAL = "noncanonical"  # well-formed but not deterministic (RFC 8949 section 4.2.1)
VERSION = "version"            # message kind belongs to an unknown protocol version
TYPE = "type"                  # unknown message type, or one sent in the wrong direction
FIELD = "field"                # wrong field count, type or range
TAG = "tag"                    # authentication tag (COSE_Mac0) malformed or wrong
UNTAGGED = "untagged"          # frame carries no tag but the node has a key
NODE = "node"                  # node unknown to the key ring
REPLAY = "replay"              # (node, boot, seq) already accepted, or too old to judge

REASONS = (OVERSIZE, COBS, TRUNCATED, CRC, CBOR, NONCANONICAL, VERSION, TYPE, FIELD, TAG,
           UNTAGGED, NODE, REPLAY)


class ProtocolError(ValueError):
    def __init__(self, reason, detail=""):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self):
        if self.detail:
            return self.reason + ": " + self.detail
        return self.reason
