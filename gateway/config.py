"""Configuration of roadside-gateway: one typed structure, its defaults, its loader and template.

The dataclasses below are the single source of the defaults and of each key's documentation:
`field(default=..., metadata=_m(doc, bounds))`. `load()` reads TOML, checks types, ranges and
cross-field rules and raises one ConfigError listing every problem with its fix; it touches no
file but the one it reads. `check()` then looks at the outside world (certificates, keys, ports)
for `roadside-gateway check-config`. `template()` writes the defaults back as commented TOML for
`roadside-gateway print-config`; loading that template gives `Config()` again.

In TOML an empty string stands for "none" in the optional keys (`cert_file = ""`). Relative file
paths are taken relative to the directory of the configuration file.
"""

import dataclasses
import difflib
import json
import math
import os
import re
import textwrap
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, cast

from gateway.errors import ConfigError

DEFAULT_PATH = Path("/etc/roadside/gateway.toml")
EXAMPLE_PORT = "/dev/serial/by-id/usb-Silicon_Labs_CP2102_USB_to_UART_Bridge_0001-if00-port0"
LOG_LEVELS = ("debug", "info", "warning", "error")

_T = TypeVar("_T")
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_MIB = 1024 * 1024


@dataclass(frozen=True)
class _Spec:
    """What the template says about a key and the bounds load() enforces on it."""

    doc: str
    lo: float | None = None
    hi: float | None = None
    what: str = "out of range"
    hint: str = ""
    choices: tuple[str, ...] = ()
    required: bool = False


def _m(
    doc: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    what: str = "out of range",
    hint: str = "",
    choices: tuple[str, ...] = (),
    required: bool = False,
) -> dict[str, _Spec]:
    """Field metadata: the key's documentation and bounds (defaults stay in `field(default=)`)."""
    return {"spec": _Spec(doc, lo, hi, what, hint, choices, required)}


def _spec(f: "dataclasses.Field[Any]") -> _Spec:
    spec = f.metadata.get("spec")
    return spec if isinstance(spec, _Spec) else _Spec("")


@dataclass(frozen=True)
class SerialPort:
    """One serial link to a node (a USB adapter, or a pty in tests)."""

    path: str = field(metadata=_m(
        "Device path; prefer the stable /dev/serial/by-id/ link (ls -l /dev/serial/by-id/).",
        required=True))
    baudrate: int = field(default=115200, metadata=_m(
        "Link speed in bits/s; must match LINK_BAUD of the node's board.",
        lo=1200, hi=4_000_000, what="not a usable baud rate",
        hint="115200 unless the board file says otherwise"))


@dataclass(frozen=True)
class Serial:
    """The serial side: which ports to read and how to retry a port that went away."""

    reopen_min_s: float = field(default=0.5, metadata=_m(
        "Seconds before the first reopen of a port that vanished.", lo=0.05, hi=600.0))
    reopen_max_s: float = field(default=30.0, metadata=_m(
        "Ceiling in seconds of the jittered exponential reopen delay.", lo=0.05, hi=3600.0))
    ports: tuple[SerialPort, ...] = field(default=(SerialPort(EXAMPLE_PORT),), metadata=_m(
        "One [[serial.ports]] table per node link; at least one.", required=True))


@dataclass(frozen=True)
class Keys:
    """Per-node HMAC keys that authenticate uplink frames."""

    file: Path | None = field(default=Path("/etc/roadside/node-keys"), metadata=_m(
        "Keys file: one `NODE HEX64` line per node, as `roadside decode --keys` reads "
        '(chmod 600); "" for none.'))
    allow_unkeyed: bool = field(default=False, metadata=_m(
        "Accept frames of nodes that have no key (bench only: anyone on the wire could "
        "inject data)."))


@dataclass(frozen=True)
class Store:
    """The durable SQLite queue (WAL) that holds frames until the broker acknowledged them."""

    path: Path = field(default=Path("/var/lib/roadside/queue.sqlite3"), metadata=_m(
        "SQLite queue file (its folder must be writable: -wal and -shm files go next to it)."))
    max_bytes: int = field(default=256 * _MIB, metadata=_m(
        "Disk bound of the queue in bytes; the oldest non-alarm rows go first, each drop "
        "counted.", lo=_MIB, hi=1 << 40, hint="268435456 = 256 MiB suits a 16 GB SD card"))
    max_age_s: int = field(default=7 * 86400, metadata=_m(
        "Rows older than this many seconds are dropped (counted).",
        lo=1, hi=366 * 86400, hint="604800 is one week"))
    commit_interval_ms: int = field(default=100, metadata=_m(
        "Group commit period in ms; nodes get their ack only after the commit (0: commit "
        "every frame).", lo=0, hi=10_000))


@dataclass(frozen=True)
class Mqtt:
    """The broker connection (aiomqtt, QoS 1, TLS)."""

    host: str = field(default="localhost", metadata=_m("Broker host name or address."))
    port: int = field(default=8883, metadata=_m(
        "Broker TCP port.", lo=1, hi=65535, what="not a port number",
        hint="1883 plain, 8883 TLS"))
    client_id: str = field(default="", metadata=_m(
        'MQTT client id; "" for roadside-<gateway.id>.'))
    keepalive_s: int = field(default=30, metadata=_m(
        "Keep-alive in seconds; a dead link is noticed within 1.5 times this.",
        lo=5, hi=65535, hint="0 would never notice a dead link"))
    username: str | None = field(default=None, metadata=_m('User name; "" for none.'))
    password_file: Path | None = field(default=None, metadata=_m(
        'File holding the password on its first line (chmod 600); "" for none.'))
    tls: bool = field(default=True, metadata=_m(
        "Use TLS (the broker port must speak TLS, usually 8883)."))
    ca_file: Path | None = field(default=Path("/etc/roadside/mqtt-ca.pem"), metadata=_m(
        'CA certificate(s) of the broker, PEM; "" for the system CAs.'))
    cert_file: Path | None = field(default=None, metadata=_m(
        'Client certificate, PEM, for mutual TLS; "" for none.'))
    key_file: Path | None = field(default=None, metadata=_m(
        'Private key of cert_file, PEM, unencrypted (chmod 600); "" for none.'))
    topic_prefix: str = field(default="roadside/v1", metadata=_m(
        "Topic prefix: topics are <prefix>/<gateway.site>/<gateway.id>/... (SPEC 14)."))
    qos: int = field(default=1, metadata=_m(
        "QoS of data publishes: 1 (at least once) or 2.", lo=1, hi=2,
        what="not a QoS the queue can rely on", hint="0 gets no PUBACK, so data would be lost"))
    reconnect_min_s: float = field(default=1.0, metadata=_m(
        "Seconds before the first reconnect attempt.", lo=0.1, hi=3600.0))
    reconnect_max_s: float = field(default=60.0, metadata=_m(
        "Ceiling in seconds of the jittered exponential reconnect delay.", lo=1.0, hi=86400.0))


@dataclass(frozen=True)
class Batch:
    """How records are grouped into one SenML CBOR publish; a batch closes at the first limit."""

    max_count: int = field(default=100, metadata=_m("Records per publish.", lo=1, hi=100_000))
    max_bytes: int = field(default=16384, metadata=_m(
        "Encoded bytes per publish.", lo=256, hi=268_435_455,
        hint="brokers often cap messages at 128 KiB or 256 KiB"))
    max_age_ms: int = field(default=1000, metadata=_m(
        "Milliseconds the oldest record may wait (0: publish at once).", lo=0, hi=3_600_000))


@dataclass(frozen=True)
class Downlink:
    """Messages the gateway sends to nodes."""

    time_interval_s: int = field(default=3600, metadata=_m(
        "Seconds between time messages to each node, besides the one answering its hello "
        "(0: only on hello).", lo=0, hi=7 * 86400))


@dataclass(frozen=True)
class Metrics:
    """The Prometheus endpoint."""

    listen: str = field(default="127.0.0.1:9108", metadata=_m(
        'host:port of the /metrics endpoint ("0.0.0.0:9108" for all interfaces, "[::1]:9108" '
        'for IPv6); "" disables it.'))

    def address(self) -> tuple[str, int] | None:
        """Returns (host, port) to listen on, or None when disabled; assumes a loaded config."""
        if not self.listen:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Gateway:
    """This gateway's identity and logging."""

    id: str = field(default="gateway-1", metadata=_m(
        "Gateway id, part of every topic: letters, digits, '-', '_', '.'."))
    site: str = field(default="site-1", metadata=_m(
        "Site id, part of every topic (roadside/v1/<site>/<id>/...): letters, digits, '-', "
        "'_', '.'."))
    site_name: str = field(default="", metadata=_m(
        "Free-text site name published with the online state."))
    log_level: str = field(default="info", metadata=_m("Log level.", choices=LOG_LEVELS))


@dataclass(frozen=True)
class Config:
    """The whole configuration; `Config()` is the default one."""

    gateway: Gateway = field(default=Gateway(), metadata=_m("Identity and logging."))
    serial: Serial = field(default=Serial(), metadata=_m("Serial links to the nodes."))
    keys: Keys = field(default=Keys(), metadata=_m("Frame authentication."))
    store: Store = field(default=Store(), metadata=_m("Durable queue on disk."))
    mqtt: Mqtt = field(default=Mqtt(), metadata=_m("MQTT broker."))
    batch: Batch = field(default=Batch(), metadata=_m("Batching of records into publishes."))
    downlink: Downlink = field(default=Downlink(), metadata=_m("Messages to the nodes."))
    metrics: Metrics = field(default=Metrics(), metadata=_m("Prometheus metrics."))

    @property
    def client_id(self) -> str:
        """The MQTT client id to use: mqtt.client_id, or roadside-<gateway.id>."""
        return self.mqtt.client_id or "roadside-" + self.gateway.id


# ---- loading --------------------------------------------------------------------------------

_KINDS: dict[object, tuple[str, str]] = {
    bool: ("true or false", ""),
    int: ("an integer", ""),
    float: ("a number", ""),
    str: ("a string", '"text"'),
    Path: ("a path string", '"/etc/roadside/file"'),
    Path | None: ("a path string", '"/etc/roadside/file" or ""'),
    str | None: ("a string", '"text" or ""'),
}


def _toml_type(v: object) -> str:
    for typ, name in ((bool, "boolean"), (int, "integer"), (float, "float"), (str, "string"),
                      (list, "array"), (dict, "table")):
        if isinstance(v, typ):
            return name
    return "date/time"


def _show(v: object) -> str:
    return json.dumps(v) if isinstance(v, str) else str(v)


class _Loader:
    """Walks the parsed TOML along the dataclasses, collecting problems instead of stopping."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.problems: list[str] = []

    def table(self, cls: Callable[..., _T], raw: object, key: str) -> _T:
        """Builds dataclass `cls` from TOML table `raw` found at dotted `key`."""
        where = key or "top level"
        if not isinstance(raw, dict):
            header = f"[[{key.rsplit('[', 1)[0]}]]" if key.endswith("]") else f"[{key}]"
            self.problems.append(f"{key}: expected a table ({header}), got {_toml_type(raw)} "
                                 f"{_show(raw)}")
            raw = {}
        known = fields(cast(Any, cls))
        names = [f.name for f in known]
        for name in raw:
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1)
                fix = f"did you mean {close[0]}?" if close else "remove it; known keys in " \
                    f"{where}: {', '.join(names)}"
                if key.endswith("]"):
                    fix += " (keys below a [[...]] header belong to that table: put keys of " \
                        "the section above its first [[...]])"
                self.problems.append(f"{_join(key, name)}: unknown key; {fix}")
        values: dict[str, object] = {}
        for f in known:
            sub = _join(key, f.name)
            if f.name in raw:
                values[f.name] = self.value(f, raw[f.name], sub)
            elif dataclasses.is_dataclass(f.type):
                values[f.name] = self.value(f, {}, sub)  # a missing section may require keys
            elif _spec(f).required:
                self.problems.append(f"{sub}: missing; {_missing_fix(sub)}")
                values[f.name] = f.default
            else:
                values[f.name] = f.default
        return cls(**values)

    def value(self, f: "dataclasses.Field[Any]", v: object, key: str) -> object:
        typ = f.type
        if dataclasses.is_dataclass(typ) and isinstance(typ, type):
            return self.table(typ, v, key)
        if typ == tuple[SerialPort, ...]:
            if not isinstance(v, list):
                self.problems.append(f"{key}: expected [[{key}]] tables, got {_toml_type(v)}; "
                                     f"{_missing_fix(key)}")
                return ()
            return tuple(self.table(SerialPort, item, f"{key}[{i}]") for i, item in enumerate(v))
        spec = _spec(f)
        kind, example = _KINDS[typ]
        if typ in (bool, int, float):
            example = _toml(f.default)
        ok = (isinstance(v, bool) if typ is bool else
              isinstance(v, int) and not isinstance(v, bool) if typ is int else
              isinstance(v, int | float) and not isinstance(v, bool) if typ is float else
              isinstance(v, str))
        if not ok:
            fix = f"use {kind} like {example}"
            if isinstance(v, str) and typ in (int, float, bool):
                fix += " (without quotes)"
            self.problems.append(f"{key}: expected {kind}, got {_toml_type(v)} {_show(v)}; {fix}")
            return f.default
        if typ is float:
            assert isinstance(v, int | float)
            v = float(v)
            if not math.isfinite(v):
                self.problems.append(f"{key}: {v} is not a finite number; use a number like "
                                     f"{f.default}")
                return f.default
        if isinstance(v, int | float) and not isinstance(v, bool):
            lo = -math.inf if spec.lo is None else spec.lo
            hi = math.inf if spec.hi is None else spec.hi
            if not lo <= v <= hi:
                hint = f" ({spec.hint})" if spec.hint else ""
                self.problems.append(f"{key}: {v} is {spec.what}; use {_num(lo)}..{_num(hi)}"
                                     f"{hint}")
                return f.default
        if isinstance(v, str):
            return self.text(f, v, key)
        return v

    def text(self, f: "dataclasses.Field[Any]", v: str, key: str) -> object:
        spec = _spec(f)
        if spec.choices and v not in spec.choices:
            close = difflib.get_close_matches(v.lower(), spec.choices, n=1)
            hint = f"did you mean {json.dumps(close[0])}? " if close else ""
            self.problems.append(f"{key}: {json.dumps(v)} is not one of "
                                 f"{', '.join(spec.choices)}; {hint}use one of them")
            return f.default
        if f.type in (Path | None, str | None) and v == "":
            return None
        if f.type is Path or f.type == Path | None:
            if v == "":
                self.problems.append(f"{key}: empty; use a file path like {f.default}")
                return f.default
            p = Path(v)
            return p if p.is_absolute() else self.base / p
        return v


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _num(x: float) -> str:
    return str(int(x)) if math.isfinite(x) and x == int(x) else str(x)


def _missing_fix(key: str) -> str:
    if key.endswith("ports"):
        return f'add at least one port:\n    [[{key}]]\n    path = "{EXAMPLE_PORT}"'
    return 'add it, e.g. path = "/dev/serial/by-id/usb-..."'


def _cross_checks(c: Config) -> list[str]:
    """Rules that tie several keys together, or that one key's type cannot express."""
    out: list[str] = []
    g, s, k, m = c.gateway, c.serial, c.keys, c.mqtt
    if not _ID_RE.match(g.id):
        out.append(f"gateway.id: {json.dumps(g.id)} cannot go in an MQTT topic; use 1..64 "
                   "letters, digits, '-', '_' or '.' (e.g. \"gw-elm-st\")")
    if not _ID_RE.match(g.site):
        out.append(f"gateway.site: {json.dumps(g.site)} cannot go in an MQTT topic; use 1..64 "
                   "letters, digits, '-', '_' or '.' (e.g. \"hcmc-d7\"); put free text in "
                   "gateway.site_name")
    if not s.ports:
        out.append(f"serial.ports: empty; {_missing_fix('serial.ports')}")
    seen: dict[str, int] = {}
    for i, port in enumerate(s.ports):
        if not port.path.startswith("/"):
            out.append(f"serial.ports[{i}].path: {json.dumps(port.path)} is not an absolute "
                       "device path; use its /dev/serial/by-id/ link (ls -l /dev/serial/by-id/)")
        if port.path in seen:
            out.append(f"serial.ports[{i}].path: {port.path} is already serial.ports"
                       f"[{seen[port.path]}]; list each port once")
        seen.setdefault(port.path, i)
    if s.reopen_min_s > s.reopen_max_s:
        out.append(f"serial.reopen_min_s: {s.reopen_min_s} is above serial.reopen_max_s "
                   f"{s.reopen_max_s}; make reopen_min_s <= reopen_max_s")
    if k.file is None and not k.allow_unkeyed:
        out.append('keys.file: none given; set it to the keys file (lines `NODE HEX64`), or set '
                   "keys.allow_unkeyed = true on a bench")
    if m.reconnect_min_s > m.reconnect_max_s:
        out.append(f"mqtt.reconnect_min_s: {m.reconnect_min_s} is above mqtt.reconnect_max_s "
                   f"{m.reconnect_max_s}; make reconnect_min_s <= reconnect_max_s")
    if not m.host or any(ch in m.host for ch in " /@") or m.host.count(":") == 1:
        out.append(f"mqtt.host: {json.dumps(m.host)} is not a host name; use a name or address "
                   'without scheme or port, e.g. "broker.example.net" (the port is mqtt.port)')
    if m.password_file is not None and m.username is None:
        out.append("mqtt.password_file: set but mqtt.username is empty; set mqtt.username too")
    if (m.cert_file is None) != (m.key_file is None):
        have, lack = ("cert_file", "key_file") if m.key_file is None else ("key_file", "cert_file")
        out.append(f"mqtt.{have}: set without mqtt.{lack}; client TLS needs both (or neither)")
    if not m.tls:
        for name in ("ca_file", "cert_file", "key_file"):
            if getattr(m, name) is not None:
                out.append(f"mqtt.{name}: set while mqtt.tls = false; set mqtt.tls = true or "
                           f'{name} = ""')
    topic = m.topic_prefix
    if not topic or topic.startswith("/") or topic.endswith("/") or "//" in topic \
            or any(ch in topic for ch in "+#\0"):
        out.append(f"mqtt.topic_prefix: {json.dumps(topic)} is not a topic prefix; use levels "
                   'joined by "/" without wildcards or leading/trailing "/", e.g. "roadside/v1"')
    if c.metrics.listen:
        host, sep, num = c.metrics.listen.rpartition(":")
        if not (sep and host and num.isdigit() and 1 <= int(num) <= 65535):
            out.append(f"metrics.listen: {json.dumps(c.metrics.listen)} is not host:port; use "
                       'e.g. "127.0.0.1:9108", "0.0.0.0:9108", "[::1]:9108", or "" to disable')
    return out


def load(path: Path) -> Config:
    """Reads and validates the TOML file at `path`; raises ConfigError naming every fix."""
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such file; create one with `roadside-gateway print-config "
                          f"> {path}` and edit it") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it ({exc}); check the path and its permissions "
                          "(the gateway's user must be able to read it)") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}; strings need quotes, tables look like "
                          "[mqtt], ports like [[serial.ports]]") from exc
    loader = _Loader(path.parent)
    config = loader.table(Config, raw, "")
    problems = loader.problems or _cross_checks(config)
    if problems:
        raise ConfigError("\n".join(f"{path}: {p}" for p in problems))
    return config


# ---- checks of the outside world -----------------------------------------------------------

def check(config: Config) -> list[str]:
    """Problems with the files and devices `config` names, each with its fix; [] when all good."""
    out: list[str] = []
    m = config.mqtt
    secret = {"keys.file": config.keys.file, "mqtt.password_file": m.password_file,
              "mqtt.key_file": m.key_file}
    public = {"mqtt.ca_file": m.ca_file, "mqtt.cert_file": m.cert_file}
    fixes = {
        "keys.file": "write one `NODE HEX64` line per node there",
        "mqtt.password_file": "write the broker password on its first line",
        "mqtt.key_file": "copy the client's private key there",
        "mqtt.ca_file": "copy the broker's CA certificate there (PEM)",
        "mqtt.cert_file": "copy the client certificate there (PEM)",
    }
    for key, p in {**secret, **public}.items():
        if p is None:
            continue
        if not p.is_file():
            what = "is not a file" if p.exists() else "does not exist"
            out.append(f"{key}: {p} {what}; {fixes[key]} or change {key}")
        elif not os.access(p, os.R_OK):
            out.append(f"{key}: {p} is not readable by this user; chown/chmod it for the "
                       "gateway's user")
        elif key in secret and p.stat().st_mode & 0o077:
            out.append(f"{key}: {p} is readable by others; chmod 600 {p}")
    folder = config.store.path.parent
    if not folder.is_dir():
        out.append(f"store.path: folder {folder} does not exist; create it (systemd "
                   "StateDirectory=roadside does) or change store.path")
    elif not os.access(folder, os.W_OK | os.X_OK):
        out.append(f"store.path: folder {folder} is not writable by this user; chown it to the "
                   "gateway's user")
    for i, port in enumerate(config.serial.ports):
        if not os.path.exists(port.path):
            out.append(f"serial.ports[{i}].path: {port.path} does not exist now; plug the node "
                       "in, or list ports with `ls -l /dev/serial/by-id/`")
    return out


# ---- template -------------------------------------------------------------------------------

def _toml(v: object) -> str:
    if v is None:
        return '""'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"{v:_}" if abs(v) >= 1_000_000 else str(v)
    if isinstance(v, float):
        return repr(v)
    return json.dumps(str(v), ensure_ascii=False)


def _lines(obj: object, key: str, out: list[str]) -> None:
    tables: list[tuple[dataclasses.Field[Any], object]] = []
    for f in fields(cast(Any, obj)):
        v = getattr(obj, f.name)
        if isinstance(v, tuple):
            tables.append((f, v))
            continue
        spec = _spec(f)
        bounds = ""
        if spec.lo is not None and spec.hi is not None:
            bounds = f" Range {_num(spec.lo)}..{_num(spec.hi)}."
        if spec.choices:
            bounds = f" One of: {', '.join(spec.choices)}."
        out.extend(textwrap.wrap(spec.doc + bounds, 98, initial_indent="# ",
                                 subsequent_indent="# "))
        out.append(f"{f.name} = {_toml(v)}")
    for f, items in tables:
        assert isinstance(items, tuple)
        sub = _join(key, f.name)
        for item in items:
            out.append("")
            out.append(f"# {_spec(f).doc}")
            out.append(f"[[{sub}]]")
            _lines(item, sub, out)


def template() -> str:
    """The default configuration as TOML, every key commented; load() of it gives Config()."""
    out = [
        "# roadside-gateway configuration (TOML), made by `roadside-gateway print-config`.",
        "# Every key is shown with its default; a key left out takes that default.",
        '# Optional file and name keys take "" for none; relative paths are relative to this',
        "# file's folder. Check it with `roadside-gateway check-config`.",
    ]
    defaults = Config()
    for f in fields(defaults):
        out.append("")
        out.append(f"# {_spec(f).doc}")
        out.append(f"[{f.name}]")
        _lines(getattr(defaults, f.name), f.name, out)
    return "\n".join(out) + "\n"
