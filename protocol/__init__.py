# Roadside wire protocol: the contract between node (MicroPython) and gateway (CPython).
# Sans-IO: bytes in, objects out, and back. Imports nothing outside this package.
# Modules: errors (the one error type), link (COBS, CRC-32, stream deframer), cbor
# (deterministic CBOR), mac (HMAC-SHA256/64 in COSE_Mac0), messages (message types), frame
# (whole frames: seal/open), replay (per-node replay window and acknowledgement state).
