"""Tests of gateway.config: template round trip, every kind of error message, check()."""

import dataclasses
import os
import stat
import tomllib
from pathlib import Path

import pytest

from gateway import config
from gateway.config import Config, check, load, template
from gateway.errors import ConfigError

PORT = '[[serial.ports]]\npath = "/dev/ttyUSB0"\n'
KEYED = '[keys]\nfile = "/etc/roadside/node-keys"\n'


def _write(tmp_path: Path, text: str, name: str = "gateway.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _error(tmp_path: Path, text: str) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    return str(info.value)


def test_template_loads_back_to_the_defaults(tmp_path: Path) -> None:
    """Loading the printed template gives exactly Config()."""
    assert load(_write(tmp_path, template())) == Config()


def test_template_comments_every_key() -> None:
    """Every key line of the template is preceded by a comment line."""
    lines = template().splitlines()
    keys = [i for i, line in enumerate(lines) if " = " in line and not line.startswith("#")]
    assert len(keys) == 33
    assert all(lines[i - 1].startswith("#") for i in keys)
    assert all(len(line) <= 100 for line in lines)


def test_template_lists_one_example_by_id_port() -> None:
    """The template shows one [[serial.ports]] with a /dev/serial/by-id/ path."""
    parsed = tomllib.loads(template())
    ports = parsed["serial"]["ports"]
    assert len(ports) == 1
    assert ports[0]["path"].startswith("/dev/serial/by-id/usb-")


def test_defaults_are_valid() -> None:
    """The defaults pass the cross-field rules that load() applies."""
    assert config._cross_checks(Config()) == []


def test_minimal_file_takes_defaults(tmp_path: Path) -> None:
    """A file with only a port gets the default for every other key."""
    got = load(_write(tmp_path, PORT))
    assert got == dataclasses.replace(
        Config(), serial=dataclasses.replace(Config().serial,
                                             ports=(config.SerialPort("/dev/ttyUSB0"),)))


REALISTIC = """
[gateway]
id = "gw-elm-st"
site = "hcmc-d7"
site_name = "Elm St bridge, north abutment"
log_level = "debug"

[serial]
reopen_min_s = 1
reopen_max_s = 20.5

[[serial.ports]]
path = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0"

[[serial.ports]]
path = "/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0"
baudrate = 57600

[keys]
file = "keys/node-keys"

[store]
path = "/data/roadside/queue.sqlite3"
max_bytes = 1_073_741_824
max_age_s = 1_209_600
commit_interval_ms = 0

[mqtt]
host = "mqtt.city.example"
port = 8883
client_id = "elm-st"
keepalive_s = 20
username = "gw-elm-st"
password_file = "/etc/roadside/mqtt-password"
tls = true
ca_file = "ca.pem"
cert_file = "/etc/roadside/client.pem"
key_file = "/etc/roadside/client.key"
topic_prefix = "city/flood/v1"
qos = 2
reconnect_min_s = 0.5
reconnect_max_s = 120

[batch]
max_count = 500
max_bytes = 65536
max_age_ms = 0

[downlink]
time_interval_s = 0

[metrics]
listen = "[::1]:9200"
"""


def test_realistic_config_parses(tmp_path: Path) -> None:
    """A full deployment file gives the typed values, relative paths under the file's folder."""
    got = load(_write(tmp_path, REALISTIC))
    assert got.gateway == config.Gateway("gw-elm-st", "hcmc-d7",
                                         "Elm St bridge, north abutment", "debug")
    assert got.serial.reopen_min_s == 1.0
    assert isinstance(got.serial.reopen_min_s, float)
    assert got.serial.ports[1] == config.SerialPort(
        "/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0", 57600)
    assert got.keys == config.Keys(tmp_path / "keys/node-keys", False)
    assert got.store.max_bytes == 1 << 30
    assert got.mqtt.ca_file == tmp_path / "ca.pem"
    assert got.mqtt.key_file == Path("/etc/roadside/client.key")
    assert got.mqtt.username == "gw-elm-st"
    assert (got.mqtt.qos, got.mqtt.reconnect_max_s) == (2, 120.0)
    assert got.client_id == "elm-st"
    assert got.metrics.address() == ("::1", 9200)
    assert got.downlink.time_interval_s == 0


def test_empty_strings_mean_none(tmp_path: Path) -> None:
    """"" in optional keys gives None; the client id then derives from the gateway id."""
    got = load(_write(tmp_path, PORT + '[mqtt]\nca_file = ""\nusername = ""\n'
                                       '[metrics]\nlisten = ""\n'))
    assert got.mqtt.ca_file is None
    assert got.mqtt.username is None
    assert got.metrics.address() is None
    assert got.client_id == "roadside-gateway-1"


BAD = [
    ("port out of range", PORT + "[mqtt]\nport = 70000\n",
     "mqtt.port: 70000 is not a port number; use 1..65535 (1883 plain, 8883 TLS)"),
    ("unknown key", PORT + "[mqtt]\nhots = \"x\"\n", "mqtt.hots: unknown key; did you mean host?"),
    ("unknown key, nothing close", PORT + "[mqtt]\nzzz = 1\n",
     "mqtt.zzz: unknown key; remove it; known keys in mqtt: host, port,"),
    ("unknown section", PORT + "[mqt]\nhost = \"x\"\n", "mqt: unknown key; did you mean mqtt?"),
    ("unknown port key", '[[serial.ports]]\npath = "/dev/ttyUSB0"\nbaud = 9600\n',
     "serial.ports[0].baud: unknown key; did you mean baudrate?"),
    ("section key below a port", PORT + "reopen_max_s = 9.0\n",
     "serial.ports[0].reopen_max_s: unknown key; remove it; known keys in serial.ports[0]: "
     "path, baudrate (keys below a [[...]] header belong to that table"),
    ("string for float", PORT + '[serial]\nreopen_max_s = "9"\n',
     'serial.reopen_max_s: expected a number, got string "9"; use a number like 30.0 '
     "(without quotes)"),
    ("quoted integer", PORT + '[mqtt]\nport = "8883"\n',
     'mqtt.port: expected an integer, got string "8883"; use an integer like 8883 '
     "(without quotes)"),
    ("float for integer", PORT + "[batch]\nmax_count = 1.5\n",
     "batch.max_count: expected an integer, got float 1.5"),
    ("bool for integer", PORT + "[batch]\nmax_count = true\n",
     "batch.max_count: expected an integer, got boolean True"),
    ("string for bool", PORT + '[mqtt]\ntls = "yes"\n',
     'mqtt.tls: expected true or false, got string "yes"'),
    ("integer for string", PORT + "[mqtt]\nhost = 10\n",
     "mqtt.host: expected a string, got integer 10"),
    ("table expected", 'mqtt = "broker"\n' + PORT, "mqtt: expected a table ([mqtt]), got string"),
    ("nan", PORT + "[serial]\nreopen_min_s = nan\n",
     "serial.reopen_min_s: nan is not a finite number"),
    ("below range", PORT + "[mqtt]\nkeepalive_s = 0\n",
     "mqtt.keepalive_s: 0 is out of range; use 5..65535 (0 would never notice a dead link)"),
    ("qos 0", PORT + "[mqtt]\nqos = 0\n",
     "mqtt.qos: 0 is not a QoS the queue can rely on; use 1..2"),
    ("max_age_s zero", PORT + "[store]\nmax_age_s = 0\n", "store.max_age_s: 0 is out of range"),
    ("log level", PORT + '[gateway]\nlog_level = "warn"\n',
     'gateway.log_level: "warn" is not one of debug, info, warning, error; did you mean '
     '"warning"?'),
    ("no ports", "[serial]\nreopen_min_s = 1\n",
     'serial.ports: missing; add at least one port:\n    [[serial.ports]]\n    path = "/dev/'),
    ("empty file", "", "serial.ports: missing; add at least one port"),
    ("empty ports", "[serial]\nports = []\n", "serial.ports: empty; add at least one port"),
    ("ports not tables", '[serial]\nports = ["/dev/ttyUSB0"]\n',
     'serial.ports[0]: expected a table ([[serial.ports]]), got string "/dev/ttyUSB0"'),
    ("port without path", "[[serial.ports]]\nbaudrate = 9600\n", "serial.ports[0].path: missing"),
    ("relative port", '[[serial.ports]]\npath = "ttyUSB0"\n',
     'serial.ports[0].path: "ttyUSB0" is not an absolute device path; use its /dev/serial/by-id/'),
    ("duplicate port", PORT + PORT,
     "serial.ports[1].path: /dev/ttyUSB0 is already serial.ports[0]; list each port once"),
    ("reopen order", PORT + "[serial]\nreopen_min_s = 10\nreopen_max_s = 5\n",
     "serial.reopen_min_s: 10.0 is above serial.reopen_max_s 5.0; make reopen_min_s <= "
     "reopen_max_s"),
    ("reconnect order", PORT + "[mqtt]\nreconnect_min_s = 100\nreconnect_max_s = 10\n",
     "mqtt.reconnect_min_s: 100.0 is above mqtt.reconnect_max_s 10.0"),
    ("no keys", PORT + '[keys]\nfile = ""\n',
     "keys.file: none given; set it to the keys file (lines `NODE HEX64`), or set "
     "keys.allow_unkeyed = true"),
    ("cert without key", PORT + '[mqtt]\ncert_file = "/etc/c.pem"\n',
     "mqtt.cert_file: set without mqtt.key_file; client TLS needs both (or neither)"),
    ("key without cert", PORT + '[mqtt]\nkey_file = "/etc/c.key"\n',
     "mqtt.key_file: set without mqtt.cert_file"),
    ("files without tls", PORT + "[mqtt]\ntls = false\nport = 1883\n",
     'mqtt.ca_file: set while mqtt.tls = false; set mqtt.tls = true or ca_file = ""'),
    ("password without user", PORT + '[mqtt]\npassword_file = "/etc/p"\n',
     "mqtt.password_file: set but mqtt.username is empty; set mqtt.username too"),
    ("host with port", PORT + '[mqtt]\nhost = "broker:8883"\n',
     'mqtt.host: "broker:8883" is not a host name'),
    ("host with scheme", PORT + '[mqtt]\nhost = "mqtts://broker"\n',
     'mqtt.host: "mqtts://broker" is not a host name'),
    ("topic wildcard", PORT + '[mqtt]\ntopic_prefix = "roadside/#"\n',
     'mqtt.topic_prefix: "roadside/#" is not a topic prefix'),
    ("topic slash", PORT + '[mqtt]\ntopic_prefix = "/roadside/"\n',
     'mqtt.topic_prefix: "/roadside/" is not a topic prefix'),
    ("gateway id", PORT + '[gateway]\nid = "gw/1"\n',
     'gateway.id: "gw/1" cannot go in an MQTT topic'),
    ("metrics listen", PORT + '[metrics]\nlisten = "9108"\n',
     'metrics.listen: "9108" is not host:port'),
    ("metrics port", PORT + '[metrics]\nlisten = "0.0.0.0:99999"\n',
     'metrics.listen: "0.0.0.0:99999" is not host:port'),
    ("empty path", PORT + '[store]\npath = ""\n',
     "store.path: empty; use a file path like /var/lib/roadside/queue.sqlite3"),
    ("bad toml", PORT + "[mqtt]\nhost = broker\n", "not valid TOML: Invalid value"),
]


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in BAD],
                         ids=[name for name, _, _ in BAD])
def test_bad_file_names_key_and_fix(tmp_path: Path, text: str, expected: str) -> None:
    """Each kind of mistake gives a message with the file, the dotted key and the fix."""
    message = _error(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'gateway.toml'}: ")
    assert expected in message


def test_all_problems_are_listed_one_per_line(tmp_path: Path) -> None:
    """Several mistakes are all reported at once, each line naming the file."""
    message = _error(tmp_path, PORT + "[mqtt]\nport = 0\nqos = 5\nhots = 1\n")
    lines = message.splitlines()
    assert len(lines) == 3
    assert all(line.startswith(str(tmp_path / "gateway.toml")) for line in lines)


def test_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    """A missing file points at print-config."""
    path = tmp_path / "none.toml"
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert message == (f"{path}: no such file; create one with `roadside-gateway print-config "
                       f"> {path}` and edit it")


def test_unreadable_file_names_the_problem(tmp_path: Path) -> None:
    """A directory, or bytes that are not UTF-8, give a readable error rather than a traceback."""
    with pytest.raises(ConfigError, match="cannot read it"):
        load(tmp_path)
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[gateway]\nsite_name = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load(bad)
    assert str(info.value).startswith(f"{bad}: cannot read it (")


def _secret(path: Path, text: str = "x\n") -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_check_finds_missing_files(tmp_path: Path) -> None:
    """check() names each missing file, folder and port with its fix."""
    text = (PORT.replace("/dev/ttyUSB0", str(tmp_path / "ttyNONE"))
            + f'[keys]\nfile = "nokeys"\n[store]\npath = "{tmp_path}/nodir/q.sqlite3"\n'
            '[mqtt]\nusername = "u"\npassword_file = "nopass"\nca_file = "noca.pem"\n'
            'cert_file = "nocert.pem"\nkey_file = "nokey.pem"\n')
    problems = check(load(_write(tmp_path, text)))
    assert [p.split(":", 1)[0] for p in problems] == [
        "keys.file", "mqtt.password_file", "mqtt.key_file", "mqtt.ca_file", "mqtt.cert_file",
        "store.path", "serial.ports[0].path"]
    assert problems[0] == (f"keys.file: {tmp_path}/nokeys does not exist; write one "
                           "`NODE HEX64` line per node there or change keys.file")
    assert f"folder {tmp_path}/nodir does not exist" in problems[5]
    assert "plug the node in" in problems[6]


def test_check_passes_when_everything_is_there(tmp_path: Path) -> None:
    """check() returns [] when every file exists with safe permissions."""
    port = _secret(tmp_path / "tty")
    for name in ("keys", "pass", "client.key"):
        _secret(tmp_path / name)
    for name in ("ca.pem", "client.pem"):
        (tmp_path / name).write_text("pem\n")
    text = (f'[[serial.ports]]\npath = "{port}"\n[keys]\nfile = "keys"\n'
            f'[store]\npath = "{tmp_path}/q.sqlite3"\n'
            '[mqtt]\nusername = "u"\npassword_file = "pass"\nca_file = "ca.pem"\n'
            'cert_file = "client.pem"\nkey_file = "client.key"\n')
    assert check(load(_write(tmp_path, text))) == []


def test_check_flags_secrets_readable_by_others(tmp_path: Path) -> None:
    """A keys or private-key file readable by group or others is a problem with chmod 600."""
    keys = _secret(tmp_path / "keys")
    keys.chmod(0o644)
    got = check(dataclasses.replace(Config(), keys=config.Keys(keys)))
    assert f"keys.file: {keys} is readable by others; chmod 600 {keys}" in got


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file; run as a normal user")
def test_check_flags_unreadable_files(tmp_path: Path) -> None:
    """A CA file the gateway's user cannot read is reported."""
    ca = tmp_path / "ca.pem"
    ca.write_text("pem\n")
    ca.chmod(0)
    try:
        got = check(dataclasses.replace(Config(), mqtt=config.Mqtt(ca_file=ca)))
    finally:
        ca.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert f"mqtt.ca_file: {ca} is not readable by this user; chown/chmod it for the " \
           "gateway's user" in got


def test_check_is_quiet_about_unset_files(tmp_path: Path) -> None:
    """Keys and files set to "" are not checked (the bench setup)."""
    text = PORT + '[keys]\nfile = ""\nallow_unkeyed = true\n[mqtt]\ntls = false\nca_file = ""\n'
    got = check(load(_write(tmp_path, text)))
    assert not any(p.startswith(("keys.", "mqtt.")) for p in got)


def test_every_key_is_documented_and_numbers_are_bounded() -> None:
    """Each field carries a doc line, and each number has both bounds, so the template says them."""
    defaults = Config()
    sections = [defaults, *(getattr(defaults, f.name) for f in dataclasses.fields(Config)),
                defaults.serial.ports[0]]
    for section in sections:
        for f in dataclasses.fields(section):
            spec = config._spec(f)
            assert spec.doc, f.name
            value = getattr(section, f.name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                assert spec.lo is not None and spec.hi is not None, f.name
                assert spec.lo <= value <= spec.hi, f.name


def test_site_must_be_a_topic_level(tmp_path: Path) -> None:
    """gateway.site goes into every topic: free text there is refused with the fix."""
    with pytest.raises(ConfigError, match=r"gateway.site: .*site_name"):
        load(_write(tmp_path, '[gateway]\nsite = "Elm St"\n' + PORT))
