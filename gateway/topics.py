"""MQTT topics of one gateway and the payloads that are not SenML (SPEC 14).

Every topic starts ``{prefix}/{site}/{gateway}`` (prefix ``roadside/v1`` by default):

==============================  =========================  ===  ======  =========================
topic                           payload                    QoS  retain  direction
==============================  =========================  ===  ======  =========================
``.../data``                    SenML CBOR pack (batches)  1    no      gateway -> broker
``.../alarm``                   SenML CBOR pack (at once)  1    no      gateway -> broker
``.../gaps``                    SenML CBOR pack (gaps)     1    no      gateway -> broker
``.../state``                   JSON state (+ last will)   1    yes     gateway -> broker
``.../node/{node}/status``      JSON last hello + health   1    yes     gateway -> broker
``.../node/{node}/config``      JSON config for the node   1    yes     broker -> gateway
==============================  =========================  ===  ======  =========================

Site and gateway ids are single topic levels: 1..64 letters, digits, ``-``, ``_``, ``.``,
starting with a letter or digit (no ``/``, ``+``, ``#``, no leading ``$``).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from gateway.errors import GatewayError
from gateway.senml import STATUS_NAMES
from protocol import messages as m
from protocol import show

JSON_TYPE: Final = "application/json"
DEFAULT_PREFIX: Final = "roadside/v1"
ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
CONFIG_KEYS: Final = {name: key for key, name in enumerate(show.CONFIG_KEYS) if name}
ARRAY_KEYS: Final = frozenset({"levels_mm"})        # SPEC 5.4.4: the only array value
_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1
_ARRAY_MAX = 16
NODE_MAX: Final = 2**32 - 1

STATE_ONLINE: Final = "online"
STATE_OFFLINE: Final = "offline"


class TopicError(GatewayError):
    """A topic part or a topic received does not fit the topic tree."""


class ConfigPayloadError(GatewayError):
    """A node's retained config payload is not a valid config; the message names the fix."""


def check_id(what: str, value: str) -> str:
    """`value` if it can be one topic level (site or gateway id), else TopicError."""
    if not ID_RE.match(value):
        raise TopicError(f"{what}: {json.dumps(value)} cannot go in an MQTT topic; use 1..64 "
                         "letters, digits, '-', '_' or '.', starting with a letter or digit "
                         '(e.g. "elm-st")')
    return value


def check_prefix(prefix: str) -> str:
    """`prefix` if it is one or more non-empty topic levels without wildcards, else TopicError."""
    levels = prefix.split("/")
    if not prefix or prefix.startswith("$") or any(
            not lv or any(ch in lv for ch in "+#\0") for lv in levels):
        raise TopicError(f"topic prefix {json.dumps(prefix)}: use non-empty levels without "
                         "'+', '#', a leading '$' or '/' (e.g. \"roadside/v1\")")
    return prefix


def _check_node(node: int) -> int:
    if isinstance(node, bool) or not 0 <= node <= NODE_MAX:
        raise TopicError(f"node {node!r} is not a uint32 node id")
    return node


@dataclass(frozen=True)
class Topics:
    """The topic names of one gateway; the constructor validates every part."""

    site: str
    gateway: str
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        check_prefix(self.prefix)
        check_id("site", self.site)
        check_id("gateway", self.gateway)

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.site}/{self.gateway}"

    @property
    def data(self) -> str:
        """Batched SenML packs of routine records."""
        return self.base + "/data"

    @property
    def alarm(self) -> str:
        """Alarm records, one pack per publish, not batched."""
        return self.base + "/alarm"

    @property
    def gaps(self) -> str:
        """Gap reports: records the gateway dropped."""
        return self.base + "/gaps"

    @property
    def state(self) -> str:
        """Retained online/offline state; also the last will's topic."""
        return self.base + "/state"

    def node_status(self, node: int) -> str:
        """Retained status of one node (last hello, last health)."""
        return f"{self.base}/node/{_check_node(node)}/status"

    def node_config(self, node: int) -> str:
        """Retained config for one node, set by operators, subscribed by the gateway."""
        return f"{self.base}/node/{_check_node(node)}/config"

    @property
    def config_filter(self) -> str:
        """Subscription filter matching every node's config topic."""
        return self.base + "/node/+/config"

    def config_node(self, topic: str) -> int:
        """The node id of a config topic of this gateway; TopicError for any other topic."""
        head, sep, rest = topic.partition(self.base + "/node/")
        node, sep2, tail = rest.partition("/")
        if head or not sep or not sep2 or tail != "config" or not node.isdigit() \
                or (len(node) > 1 and node[0] == "0") or int(node) > NODE_MAX:
            raise TopicError(f"{topic!r} is not a node config topic under {self.base}/node/")
        return int(node)


# -- JSON payloads ---------------------------------------------------------------------------

def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def state_payload(topics: Topics, online: bool, utc_ms: int | None = None,
                  site_name: str = "") -> bytes:
    """The retained state: online at connect, offline at a clean stop (with `utc_ms`), and
    offline without a time as the last will (the broker sends it when the gateway vanishes)."""
    d: dict[str, object] = {"state": STATE_ONLINE if online else STATE_OFFLINE,
                            "site": topics.site, "gateway": topics.gateway}
    if site_name:
        d["site_name"] = site_name
    if utc_ms is not None:
        d["since_ms"] = utc_ms
    else:
        d["will"] = not online
    return _json(d)


def will_payload(topics: Topics, site_name: str = "") -> bytes:
    """The last will registered at connect: offline, unplanned."""
    return state_payload(topics, False, None, site_name)


def _msg_dict(msg: m.Message, received_ms: int) -> dict[str, object]:
    d: dict[str, object] = {"boot": msg.boot, "seq": msg.seq, "received_ms": received_ms}
    for name in msg.FIELDS:
        v = getattr(msg, name)
        if isinstance(v, bytes | bytearray):
            v = bytes(v).hex()
        elif isinstance(v, tuple):
            v = list(v)
        d[name] = v
    return d


def status_payload(node: int, hello: tuple[m.Hello, int] | None,
                   health: tuple[m.Health, int] | None) -> bytes:
    """The retained status of a node: its last hello and last health, each with the gateway
    receive time (``(message, received_ms)``), and the names of the health status bits set."""
    d: dict[str, object] = {"node": _check_node(node), "hello": None, "health": None}
    if hello is not None:
        h = _msg_dict(*hello)
        rc = hello[0].reset_cause
        h["reset_name"] = show.RESET_NAMES[rc] if rc < len(show.RESET_NAMES) else str(rc)
        d["hello"] = h
    if health is not None:
        h = _msg_dict(*health)
        h["status_names"] = [n for i, n in enumerate(STATUS_NAMES) if health[0].status >> i & 1]
        d["health"] = h
    return _json(d)


def _i32(key: str, v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not _I32_MIN <= v <= _I32_MAX:
        raise ConfigPayloadError(f"config key {key}: {json.dumps(v)} is not an integer "
                                 f"{_I32_MIN}..{_I32_MAX}")
    return v


def parse_config(payload: bytes) -> dict[int, int | list[int]] | None:
    """The config map (SPEC 5.4.4 keys) of a retained config payload; None for an empty payload
    (retained message deleted: nothing to push). The payload is a JSON object of key names from
    ``show.CONFIG_KEYS`` to integers, ``levels_mm`` an ascending array of at most 16."""
    if not payload:
        return None
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigPayloadError(f"config payload is not JSON ({exc}); publish an object like "
                                 '{"dry_s": 300, "levels_mm": [100, 200]}') from exc
    if not isinstance(obj, dict):
        raise ConfigPayloadError("config payload must be a JSON object of key names to values, "
                                 'e.g. {"dry_s": 300}')
    cfg: dict[int, int | list[int]] = {}
    for name, v in obj.items():
        key = CONFIG_KEYS.get(name)
        if key is None:
            raise ConfigPayloadError(f"config key {json.dumps(name)} is unknown; use one of "
                                     + ", ".join(CONFIG_KEYS))
        if name in ARRAY_KEYS:
            if not isinstance(v, list) or len(v) > _ARRAY_MAX:
                raise ConfigPayloadError(f"config key {name}: use an array of at most "
                                         f"{_ARRAY_MAX} integers, e.g. [100, 200, 300]")
            arr = [_i32(name, x) for x in v]
            if any(a >= b for a, b in itertools.pairwise(arr)):
                raise ConfigPayloadError(f"config key {name}: {arr} is not strictly ascending")
            cfg[key] = arr
        else:
            cfg[key] = _i32(name, v)
    if not m.valid(m.CFG, cfg):
        raise ConfigPayloadError(f"config {cfg} does not fit a config map (SPEC 5.4.4)")
    return cfg


def config_payload(cfg: Mapping[int, int | list[int]]) -> bytes:
    """The JSON payload for a config map (inverse of `parse_config`)."""
    out: dict[str, object] = {}
    for key, v in cfg.items():
        if not 0 < key < len(show.CONFIG_KEYS):
            raise ConfigPayloadError(f"config key {key} has no name (SPEC 5.4.4)")
        out[show.CONFIG_KEYS[key]] = v
    return _json(out)
