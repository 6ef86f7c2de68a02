# Node configuration: defaults, validation naming the first fault, wire updates, save/load.

from firmware.config import Config
from firmware.tests.scratch import fresh, wipe
from protocol.show import CONFIG_KEYS

GOOD = ('{"node": 1042, "site": "hcmc-d1", "board": "emulated", "h0_mm": 3000,'
        ' "levels_mm": [100, 250], "key": "' + "ab" * 32 + '"}')


def _load(text):
    d = fresh("config")
    try:
        if text is not None:
            with open(d + "/config.json", "w") as f:
                f.write(text)
        return Config().load(d + "/config.json")
    finally:
        wipe(d)


def test_good_file_loads_without_error():
    """A valid file gives its values, defaults for the rest, and no error."""
    c = _load(GOOD)
    assert c.error == ""
    assert c.get("node") == 1042 and c.get("h0_mm") == 3000
    assert c.get("levels_mm") == [100, 250] and c.get("dry_s") == 300
    assert c.key_bytes() == b"\xab" * 32
    assert c.module_name() == "boards.emulated"


def test_missing_or_broken_files_name_the_fault_and_keep_defaults():
    """No file, bad JSON, or bad values never raise; the first fault is named."""
    assert _load(None).error.startswith("no ")
    assert _load("{nope").error.endswith("is not JSON")
    c = _load('{"node": 7, "h0_mm": 99999, "dry_s": "often", "levels_mm": [5, 3]}')
    assert c.error == "dry_s must be an int 5..86400"   # the first by name
    assert c.get("dry_s") == 300 and c.get("levels_mm") == [76, 200, 400]
    assert _load('{"h0_mm": 3000}').error == "node missing"
    assert _load('{"node": 3}').error == "h0_mm missing"
    assert _load('{"node": 3, "h0_mm": 3000, "colour": 1}').error == "unknown key colour"
    assert _load('{"node": 3, "h0_mm": 3000, "key": "abc"}').error.startswith("key must")
    assert _load('{"node": 3, "h0_mm": 3000, "replay": "r.json"}').error.startswith("replay")
    assert _load('{"node": 3, "h0_mm": 3000, "replay": "/r.json"}').get("replay") == "/r.json"


def test_wire_config_applies_known_keys_and_ignores_unknown_numbers():
    """A config frame's map changes named settings; unknown numbers are ignored."""
    c = _load(GOOD)
    assert c.apply_wire({1: 600, 4: [50, 150, 300], 200: 5}) == 2
    assert c.error == "" and c.get("dry_s") == 600 and c.get("levels_mm") == [50, 150, 300]
    c.apply_wire({2: -1})
    assert c.error.startswith("wet_s must be") and c.get("wet_s") == 60


def test_mag_thresholds_keep_their_hysteresis():
    """mag_off at or above mag_on is refused and replaced below mag_on."""
    c = _load('{"node": 1, "h0_mm": 3000, "mag_on": 30, "mag_off": 40}')
    assert c.error.startswith("mag_off") and c.get("mag_off") < c.get("mag_on")


def test_save_then_load_gives_the_same_digest():
    """save() writes a file load() reads back to the same settings and cfg_hash."""
    d = fresh("config")
    try:
        with open(d + "/config.json", "w") as f:
            f.write(GOOD)
        c = Config().load(d + "/config.json")
        c.apply_wire({13: 120})
        c.save(d + "/config.json")
        c2 = Config().load(d + "/config.json")
        assert c2.error == "" and c2.get("health_s") == 120
        assert c2.digest() == c.digest() and len(c.digest()) == 8
        c2.apply_wire({13: 121})
        assert c2.digest() != c.digest()
    finally:
        wipe(d)


def test_wire_numbers_name_the_spec_keys():
    """Config frame key n changes the key SPEC 5.4.4 numbers n (protocol.show.CONFIG_KEYS)."""
    c = _load(GOOD)
    for n in range(1, len(CONFIG_KEYS)):
        assert c.apply_wire({n: "bad"}) == 1
        assert c.error.startswith(CONFIG_KEYS[n] + " must be"), (n, c.error)
    assert c.apply_wire({len(CONFIG_KEYS): 1}) == 0
