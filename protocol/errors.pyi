# Types for protocol/errors.py (device code carries no annotations; mypy reads this file).
from typing import Final

OVERSIZE: Final = "oversize"
COBS: Final = "cobs"
TRUNCATED: Final = "truncated"
CRC: Final = "crc"
CBOR: Final = "cbor"
NONCANONICAL: Final = "noncanonical"
VERSION: Final = "version"
TYPE: Final = "type"
FIELD: Final = "field"
TAG: Final = "tag"
UNTAGGED: Final = "untagged"
NODE: Final = "node"
REPLAY: Final = "replay"

REASONS: Final[tuple[str, ...]]

class ProtocolError(ValueError):
    reason: str  # one of REASONS
    detail: str
    def __init__(self, reason: str, detail: str = "") -> None: ...
