"""Topic builders, id validation, state/status payloads and the retained config payload."""

from __future__ import annotations

import json

import pytest

from gateway.topics import (
    ConfigPayloadError,
    TopicError,
    Topics,
    check_id,
    config_payload,
    parse_config,
    state_payload,
    status_payload,
    will_payload,
)
from protocol import messages as m

TOPICS = Topics("elm-st", "gw-1")
BASE = "roadside/v1/elm-st/gw-1"


def test_every_topic() -> None:
    """Each topic is prefix/site/gateway followed by its documented suffix."""
    assert TOPICS.data == BASE + "/data"
    assert TOPICS.alarm == BASE + "/alarm"
    assert TOPICS.gaps == BASE + "/gaps"
    assert TOPICS.state == BASE + "/state"
    assert TOPICS.node_status(1042) == BASE + "/node/1042/status"
    assert TOPICS.node_config(1042) == BASE + "/node/1042/config"
    assert TOPICS.config_filter == BASE + "/node/+/config"


def test_custom_prefix() -> None:
    """A multi-level prefix is kept as given."""
    assert Topics("s", "g", prefix="city/flood/v1").data == "city/flood/v1/s/g/data"


@pytest.mark.parametrize("bad", ["", "a/b", "a+", "#", "$SYS", "-lead", "x" * 65, "a b", "é"])
def test_ids_that_cannot_be_topic_levels(bad: str) -> None:
    """Site and gateway ids with separators, wildcards, spaces or bad length are refused."""
    with pytest.raises(TopicError, match="cannot go in an MQTT topic"):
        Topics(bad, "gw-1")
    with pytest.raises(TopicError, match="cannot go in an MQTT topic"):
        Topics("elm-st", bad)


def test_check_id_accepts_the_allowed_alphabet() -> None:
    """Letters, digits, '-', '_', '.' up to 64 characters pass unchanged."""
    for ok in ("a", "Elm_St.2-north", "9" * 64):
        assert check_id("site", ok) == ok


@pytest.mark.parametrize("bad", ["", "/a", "a/", "a//b", "a/+/b", "a/#", "$SYS/x"])
def test_bad_prefixes(bad: str) -> None:
    """Empty levels, wildcards and $-topics are refused as prefixes."""
    with pytest.raises(TopicError, match="topic prefix"):
        Topics("s", "g", prefix=bad)


@pytest.mark.parametrize("node", [-1, 2**32, True])
def test_node_ids_outside_uint32(node: int) -> None:
    """Node topics need a uint32 node id."""
    with pytest.raises(TopicError, match="uint32"):
        TOPICS.node_status(node)


def test_config_node_parses_own_topics_only() -> None:
    """config_node returns the node of this gateway's config topics and refuses others."""
    assert TOPICS.config_node(BASE + "/node/1042/config") == 1042
    assert TOPICS.config_node(BASE + "/node/0/config") == 0
    for bad in (BASE + "/node/1042/status", BASE + "/node/x/config", BASE + "/node/01/config",
                BASE + "/node//config", BASE + "/node/4294967296/config",
                "roadside/v1/elm-st/gw-2/node/1/config", "x/" + BASE + "/node/1/config",
                BASE + "/node/1/config/extra"):
        with pytest.raises(TopicError, match="not a node config topic"):
            TOPICS.config_node(bad)


def test_state_payloads() -> None:
    """Online and clean offline carry a time; the last will is offline with will=true."""
    assert json.loads(state_payload(TOPICS, True, 1_700_000_000_000, "Elm St")) == {
        "state": "online", "site": "elm-st", "gateway": "gw-1", "site_name": "Elm St",
        "since_ms": 1_700_000_000_000}
    assert json.loads(state_payload(TOPICS, False, 5)) == {
        "state": "offline", "site": "elm-st", "gateway": "gw-1", "since_ms": 5}
    assert json.loads(will_payload(TOPICS)) == {
        "state": "offline", "site": "elm-st", "gateway": "gw-1", "will": True}


def test_status_payload() -> None:
    """Node status holds the last hello and health with identity, receive time and names."""
    hello = m.Hello(1042, 17, 1, "0.1.0", "esp32-devkitc", 3, b"\xab\xcd", "")
    health = m.Health(1042, 17, 9, 1_700_000_000, 60, 60000, 50000, [0, 1], None, 0, 0,
                      (1, 0, 1, 0, 0), 0x41)
    d = json.loads(status_payload(1042, (hello, 111), (health, 222)))
    assert d["node"] == 1042
    assert d["hello"] == {"boot": 17, "seq": 1, "received_ms": 111, "fw": "0.1.0",
                          "board": "esp32-devkitc", "reset_cause": 3, "reset_name": "watchdog",
                          "cfg_hash": "abcd", "cfg_error": ""}
    assert d["health"]["seq"] == 9 and d["health"]["received_ms"] == 222
    assert d["health"]["link"] == [1, 0, 1, 0, 0]
    assert d["health"]["battery_mv"] is None
    assert d["health"]["status_names"] == ["safe_mode", "unsynced"]
    assert json.loads(status_payload(7, None, None)) == {"node": 7, "hello": None,
                                                         "health": None}


def test_parse_config_maps_names_to_keys() -> None:
    """Key names become SPEC 5.4.4 numbers; levels_mm stays an array."""
    cfg = parse_config(b'{"dry_s": 300, "levels_mm": [76, 200, 400], "h0_mm": 3200}')
    assert cfg == {1: 300, 4: [76, 200, 400], 7: 3200}
    assert cfg is not None and m.valid(m.CFG, cfg)


def test_config_payload_round_trip() -> None:
    """config_payload and parse_config are inverses."""
    cfg: dict[int, int | list[int]] = {1: 300, 4: [100], 14: 4230, 12: -5}
    assert parse_config(config_payload(cfg)) == cfg


def test_empty_config_payload_means_nothing_to_push() -> None:
    """An empty retained payload (topic cleared) parses to None; {} is an empty config."""
    assert parse_config(b"") is None
    assert parse_config(b"{}") == {}


@pytest.mark.parametrize(("payload", "why"), [
    (b"{", "not JSON"),
    (b"\xff", "not JSON"),
    (b"[1]", "JSON object"),
    (b'{"dry": 1}', "unknown"),
    (b'{"": 1}', "unknown"),
    (b'{"dry_s": "300"}', "not an integer"),
    (b'{"dry_s": 1.5}', "not an integer"),
    (b'{"dry_s": true}', "not an integer"),
    (b'{"dry_s": 2147483648}', "not an integer"),
    (b'{"dry_s": [1]}', "not an integer"),
    (b'{"levels_mm": 100}', "array of at most 16"),
    (b'{"levels_mm": [' + b",".join(b"%d" % i for i in range(1, 18)) + b"]}",
     "array of at most 16"),
    (b'{"levels_mm": [200, 100]}', "ascending"),
    (b'{"levels_mm": [100, 100]}', "ascending"),
    (b'{"levels_mm": [1, null]}', "not an integer"),
])
def test_config_payload_errors(payload: bytes, why: str) -> None:
    """Each invalid config payload is refused with a message naming the problem."""
    with pytest.raises(ConfigPayloadError, match=why):
        parse_config(payload)


def test_config_payload_refuses_unnamed_keys() -> None:
    """A config map key without a name cannot be written as a payload."""
    with pytest.raises(ConfigPayloadError, match="no name"):
        config_payload({99: 1})
