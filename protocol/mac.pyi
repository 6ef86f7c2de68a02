# Types for protocol/mac.py: HMAC-SHA256/64 in COSE_Mac0.
from typing import Final, TypeAlias

_ReadBuf: TypeAlias = bytes | bytearray | memoryview

KEY_B: Final = 32
TAG_B: Final = 8
OVERHEAD_B: Final = 18

class Key:
    _in: bytes      # key XOR ipad, one SHA-256 block (HMAC's inner pad)
    _out: bytes     # key XOR opad (outer pad); gateway.fastpath hashes both once per key
    def __init__(self, key: _ReadBuf) -> None: ...  # KEY_B bytes, else ValueError
    def tag(self, payload: _ReadBuf) -> bytes: ...

def is_mac0(data: _ReadBuf) -> bool: ...
def wrap(payload: _ReadBuf, key: Key) -> bytes: ...
def unwrap(data: _ReadBuf) -> tuple[bytes, bytes]: ...  # (payload, tag)
def verify(key: Key, payload: _ReadBuf, tag: _ReadBuf) -> None: ...
