"""The per-node keys file of the gateway, loaded into a `protocol.frame.KeyRing`.

Format (the same file `roadside decode --keys` reads): one `NODE HEX64` pair per line, NODE a
decimal uint32 node id and HEX64 its 32-byte HMAC key as 64 hex digits; `#` starts a comment;
blank lines are ignored. Example::

    # node  key
    1042    00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff

`load_keys` reports every bad line at once in one ConfigError naming the file, the line and the
fix. A file readable by group or others is still loaded: the problem is returned as a warning
(`config.check()` reports it too), so a wrong chmod never takes a gateway off the air.
"""

from __future__ import annotations

import stat
from pathlib import Path

from gateway.errors import ConfigError
from protocol import frame
from protocol.mac import KEY_B

_U32_MAX = 0xFFFFFFFF
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_EXAMPLE = "1042 " + "00112233445566778899aabbccddeeff" * 2


def parse_keys(text: str, source: str) -> dict[int, bytes]:
    """Parses the text of a keys file into node -> 32-byte key; `source` names it in errors."""
    keys: dict[int, bytes] = {}
    first_line: dict[int, int] = {}
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}:{number}"
        parts = line.split()
        if len(parts) != 2:
            problems.append(f"{where}: expected `NODE HEX64`, got {len(parts)} field(s); "
                            f"write one pair per line like `{_EXAMPLE}`")
            continue
        node_text, hex_text = parts
        if not node_text.isdecimal():
            problems.append(f"{where}: node {node_text!r} is not a decimal number; write the "
                            "node id in decimal (0..4294967295)")
            continue
        node = int(node_text)
        if node > _U32_MAX:
            problems.append(f"{where}: node {node} is out of range; node ids are uint32 "
                            "(0..4294967295)")
            continue
        key = _parse_hex(hex_text, where, problems)
        if key is None:
            continue
        if node in keys:
            problems.append(f"{where}: node {node} already has a key on line "
                            f"{first_line[node]}; keep one line per node")
            continue
        keys[node] = key
        first_line[node] = number
    if problems:
        raise ConfigError("\n".join(problems))
    return keys


def _parse_hex(text: str, where: str, problems: list[str]) -> bytes | None:
    bad = sorted(set(text) - _HEX_DIGITS)
    if bad:
        problems.append(f"{where}: key has non-hex character(s) {''.join(bad)!r}; use only "
                        "0-9 and a-f")
        return None
    if len(text) % 2:
        problems.append(f"{where}: key has an odd number of hex digits ({len(text)}); a key is "
                        f"{2 * KEY_B} hex digits (make one with `openssl rand -hex {KEY_B}`)")
        return None
    if len(text) != 2 * KEY_B:
        problems.append(f"{where}: key is {len(text) // 2} bytes, need {KEY_B} "
                        f"({2 * KEY_B} hex digits; make one with `openssl rand -hex {KEY_B}`)")
        return None
    return bytes.fromhex(text)


def load_keys(path: Path | None, allow_unkeyed: bool = False) -> tuple[frame.KeyRing, list[str]]:
    """Loads the keys file into a KeyRing; returns it and warnings (permissions, no keys).

    `path` None means no keys file (config `keys.file = ""`). `allow_unkeyed` opens the ring:
    untagged frames of nodes without a key are accepted (SPEC 7.3; bench only). Raises
    ConfigError naming the file, line and fix.
    """
    warnings: list[str] = []
    keys: dict[int, bytes] = {}
    if path is not None:
        try:
            mode = path.stat().st_mode
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ConfigError(f"keys.file: {path} does not exist; create it (one `NODE HEX64` "
                              'line per node, chmod 600) or set keys.file = ""') from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"keys.file: cannot read {path} ({exc}); it must be a text file "
                              "readable by the gateway's user") from exc
        keys = parse_keys(text, str(path))
        if stat.S_IMODE(mode) & 0o077:
            warnings.append(f"keys.file: {path} is readable by others "
                            f"(mode {stat.S_IMODE(mode):o}); chmod 600 {path}")
    if not keys and not allow_unkeyed:
        where = "keys.file is empty" if path is not None else "no keys.file"
        warnings.append(f"{where} and keys.allow_unkeyed is false: every frame will be refused; "
                        "add node keys")
    if allow_unkeyed:
        warnings.append("keys.allow_unkeyed is true: untagged frames of nodes without a key are "
                        "accepted (anyone on the wire could inject data); bench use only")
    return frame.KeyRing(keys, open_nodes=allow_unkeyed), warnings
