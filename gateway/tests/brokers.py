"""Real MQTT brokers started by the tests themselves, and a subscriber that records what arrived.

Every broker here is a real process (Mosquitto, nats-server with its MQTT listener, RabbitMQ with
the rabbitmq_mqtt plugin) listening on free loopback ports with all its files in a directory of
the caller's (pytest's ``tmp_path``). The system instances (Mosquitto 1883, NATS 4222, RabbitMQ
5672 and epmd 4369) are never used: every port is picked by :func:`free_port`, every config and
data path is private, RabbitMQ even gets its own epmd.

Life cycle of a :class:`Broker`:

- ``start()`` launches the process in its own process group, its output appended to
  ``<data_dir>/<kind>.log``, and returns only once a real MQTT CONNECT got CONNACK 0 (a raw
  MQTT 3.1.1 CONNECT, with the broker's TLS client certificate or credentials when it needs
  them). A broker that exits or does not answer within ``start_timeout`` is stopped and raises
  :class:`BrokerError` carrying the tail of its log.
- ``stop()`` asks politely (SIGTERM; ``rabbitmqctl stop`` for RabbitMQ), SIGKILLs the process
  group after ``stop_timeout``, then sweeps the group so no helper process (erl_child_setup,
  inet_gethost, epmd) outlives it. ``kill()`` is the crash: SIGKILL to the whole group at once.
- ``start()`` again reuses the SAME port, config and data directory, so retained messages and
  the queued QoS 1 messages of persistent sessions survive a restart (Mosquitto saves them on
  SIGTERM; after ``kill()`` only what its last autosave held survives).
- Brokers still running when the interpreter exits are killed (``atexit``), for scripts that
  are not pytest fixtures (``make demo``, the HIL rig).

:class:`Capture` is the test's view of what reached MQTT: an aiomqtt subscriber (QoS 1, a
persistent session by default) in a background thread with its own event loop. One design
serves both kinds of test: sync tests call ``cap.wait_for(lambda c: ...)`` (the predicate gets
the capture: ``c.messages``, ``c.connects``), async tests (``asyncio.run`` inside the test)
``await cap.wait_for_async(...)``, which waits in a worker thread so the test's own loop, and a
gateway running on it, keep going. The subscriber reconnects by itself
when its broker is stopped and started again, so a capture spans broker outages.

Nothing here imports pytest: ``gateway/tests/conftest.py`` turns :class:`BrokerNotInstalledError`
(a missing binary, the message names the Debian package) into a skip.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import functools
import hashlib
import ipaddress
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import aiomqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "KINDS",
    "Broker",
    "BrokerError",
    "BrokerNotInstalledError",
    "Capture",
    "Captured",
    "CertFiles",
    "Pki",
    "TlsInfo",
    "free_port",
    "mosquitto",
    "mosquitto_password_hash",
    "mqtt_connack",
    "nats_mqtt",
    "process_group",
    "rabbitmq_mqtt",
]

log = logging.getLogger(__name__)

KINDS = ("mosquitto", "nats", "rabbitmq")
LOOPBACK = "127.0.0.1"

_POLL_S = 0.05                  # between readiness probes and process checks
_PROBE_TIMEOUT_S = 2.0          # one raw MQTT CONNECT attempt
_SWEEP_TIMEOUT_S = 3.0          # per signal when sweeping a process group
_LOG_TAIL_LINES = 40
WAIT_TIMEOUT_S = 30.0           # default hang guard of Capture.wait_for


class BrokerError(RuntimeError):
    """A broker did not start or stop; the message carries the tail of its log."""


class BrokerNotInstalledError(BrokerError):
    """The broker's binary is missing; ``package`` is the Debian package that provides it."""

    def __init__(self, command: str, package: str) -> None:
        super().__init__(
            f"{command} not found; install the Debian package {package!r}: "
            f"sudo apt-get install {package} (or run `make sysdeps`)"
        )
        self.command = command
        self.package = package


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (bind port 0, read it back, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def process_group(pgid: int) -> list[int]:
    """Pids of the live (not zombie) processes in group ``pgid``; [] when it is gone."""
    proc = Path("/proc")
    if not proc.is_dir():                       # not Linux: ask the kernel about the group
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    pids = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:                         # exited while we looked
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def _find(command: str, package: str, *candidates: str) -> str:
    """The path of ``command``: explicit candidates first, then PATH, then /usr/sbin."""
    for path in (*candidates, shutil.which(command), f"/usr/sbin/{command}"):
        if path and os.access(path, os.X_OK):
            return path
    raise BrokerNotInstalledError(command, package)


def _wait_port(host: str, port: int, timeout: float) -> bool:
    """True once ``host:port`` accepts a TCP connection, False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S):
                return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(_POLL_S)


# --- a raw MQTT 3.1.1 CONNECT: the readiness probe -------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _mqtt_string(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def _connect_packet(client_id: str, username: str | None, password: str | None) -> bytes:
    flags = 0x02                                # clean session: the probe leaves nothing behind
    payload = _mqtt_string(client_id.encode())
    if username is not None:
        flags |= 0x80
        payload += _mqtt_string(username.encode())
    if password is not None:
        flags |= 0x40
        payload += _mqtt_string(password.encode())
    body = _mqtt_string(b"MQTT") + bytes((4, flags)) + (30).to_bytes(2, "big") + payload
    return b"\x10" + _varint(len(body)) + body


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} of {n} CONNACK bytes")
        data += chunk
    return data


def mqtt_connack(host: str, port: int, *, context: ssl.SSLContext | None = None,
                 username: str | None = None, password: str | None = None) -> int:
    """Return code of the CONNACK a raw MQTT 3.1.1 CONNECT gets (0: accepted, 4: bad user
    name or password, 5: not authorized); OSError (ssl.SSLError for a refused certificate)
    when there is none. The broker's readiness probe, and a precise check for tests.
    """
    raw = socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S)
    try:
        sock = context.wrap_socket(raw, server_hostname=host) if context else raw
    except BaseException:
        raw.close()
        raise
    with sock:
        sock.sendall(_connect_packet(f"roadside-probe-{uuid.uuid4().hex[:8]}", username,
                                     password))
        connack = _recv_exact(sock, 4)
        if connack[:2] != b"\x20\x02":
            raise ConnectionError(f"expected a CONNACK, got {connack.hex()}")
        if connack[3] == 0:
            sock.sendall(b"\xe0\x00")           # DISCONNECT: no will, no log noise
        return connack[3]


# --- certificates ------------------------------------------------------------------------------

@dataclass(frozen=True)
class CertFiles:
    """A PEM certificate and its PEM private key (mode 600)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class _Ca:
    """A CA as files plus the loaded key and certificate it signs with."""

    cert: Path
    key: Path
    private: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate


class Pki:
    """A test CA with a server and a client certificate, and a foreign CA with its own client.

    EC P-256 keys (fast to make, accepted by OpenSSL, Go and Erlang). The server certificate
    names 127.0.0.1 (IP) and localhost (DNS) in its SubjectAltName; client certificates carry
    the CN given (Mosquitto's ``use_identity_as_username`` turns it into the username). The
    foreign CA is trusted by nobody: its client certificate must be refused.
    """

    def __init__(self, directory: Path, *, client_cn: str = "roadside-gateway",
                 days: int = 30) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._days = days
        self._ca = self._new_ca("Roadside test CA", "ca")
        self._foreign = self._new_ca("Foreign test CA", "foreign-ca")
        self.ca: Path = self._ca.cert
        self.foreign_ca: Path = self._foreign.cert
        self.server: CertFiles = self._issue(
            "server", "localhost", self._ca, server=True,
            san=[x509.IPAddress(ipaddress.ip_address(LOOPBACK)),
                 x509.DNSName("localhost")])
        self.client: CertFiles = self.issue_client(client_cn)
        self.foreign_client: CertFiles = self.issue_client(client_cn, foreign=True)

    def issue_client(self, cn: str, *, foreign: bool = False) -> CertFiles:
        """A client certificate for ``cn``, signed by the test CA (or the foreign one)."""
        stem = ("foreign-client-" if foreign else "client-") + re.sub(r"[^\w.-]", "_", cn)
        return self._issue(stem, cn, self._foreign if foreign else self._ca, server=False)

    def _new_ca(self, cn: str, stem: str) -> _Ca:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        builder = self._builder(name, name, key.public_key())
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0),
                                        critical=True)
        builder = builder.add_extension(_key_usage(ca=True), critical=True)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        cert = builder.sign(key, hashes.SHA256())
        files = self._write(stem, cert, key)
        return _Ca(files.cert, files.key, key, cert)

    def _issue(self, stem: str, cn: str, ca: _Ca, *, server: bool,
               san: list[x509.GeneralName] | None = None) -> CertFiles:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        builder = self._builder(name, ca.certificate.subject, key.public_key())
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                        critical=True)
        builder = builder.add_extension(_key_usage(ca=False), critical=True)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private.public_key()),
            critical=False)
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return self._write(stem, builder.sign(ca.private, hashes.SHA256()), key)

    def _builder(self, subject: x509.Name, issuer: x509.Name,
                 public: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        now = datetime.now(UTC)
        return (x509.CertificateBuilder()
                .subject_name(subject).issuer_name(issuer).public_key(public)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(hours=1))
                .not_valid_after(now + timedelta(days=self._days))
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public),
                               critical=False))

    def _write(self, stem: str, cert: x509.Certificate,
               key: ec.EllipticCurvePrivateKey) -> CertFiles:
        cert_path = self.directory / f"{stem}.pem"
        key_path = self.directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        key_path.chmod(0o600)                   # also when the file already existed
        return CertFiles(cert_path, key_path)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=ca, crl_sign=ca, encipher_only=False,
                         decipher_only=False)


@dataclass(frozen=True)
class TlsInfo:
    """What a client needs to reach a TLS broker: the CA, and a client certificate if required."""

    ca: Path
    client_cert: Path | None = None
    client_key: Path | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying client context (hostname checked against the server's SAN)."""
        context = ssl.create_default_context(cafile=str(self.ca))
        if self.client_cert is not None:
            context.load_cert_chain(str(self.client_cert),
                                    str(self.client_key) if self.client_key else None)
        return context

    def tls_params(self) -> aiomqtt.TLSParameters:
        """The same, as aiomqtt's TLS parameters."""
        return aiomqtt.TLSParameters(
            ca_certs=str(self.ca),
            certfile=str(self.client_cert) if self.client_cert else None,
            keyfile=str(self.client_key) if self.client_key else None)


# --- the broker process ------------------------------------------------------------------------

_LIVE: set[Broker] = set()


@atexit.register
def _kill_leftovers() -> None:
    for broker in list(_LIVE):
        with contextlib.suppress(Exception):
            broker.kill()


class Broker:
    """One broker process on a fixed loopback port; see the module docstring for the life cycle.

    ``username``/``password`` are what the readiness probe and :meth:`client` log in with
    (None: anonymous); ``tls`` is None for a plain listener; ``pki`` the certificates a TLS
    broker was made with.
    """

    def __init__(self, kind: str, *, port: int, data_dir: Path, argv: Sequence[str],
                 env: Mapping[str, str] | None = None, host: str = LOOPBACK,
                 tls: TlsInfo | None = None, pki: Pki | None = None,
                 username: str | None = None, password: str | None = None,
                 start_timeout: float = 10.0, stop_timeout: float = 10.0) -> None:
        if kind not in KINDS:
            raise ValueError(f"broker kind {kind!r} is not one of {KINDS}")
        self.kind = kind
        self.host = host
        self.port = port
        self.data_dir = data_dir
        self.log_path = data_dir / f"{kind}.log"
        self.tls = tls
        self.pki = pki
        self.username = username
        self.password = password
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.starts = 0                         # start() calls so far
        self.last_start_s = 0.0                 # how long the last start() took
        self._argv = list(argv)
        self._env = dict(env) if env is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._aux: list[subprocess.Popen[bytes]] = []
        self._pgid: int | None = None

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_running else "stopped"
        return f"<Broker {self.kind} {self.host}:{self.port} {state}>"

    # -- state --

    @property
    def is_running(self) -> bool:
        """The main process has been started and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Pid of the main process while started, else None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def pgid(self) -> int | None:
        """The process group every process of this broker runs in, while started."""
        return self._pgid

    @property
    def url(self) -> str:
        """``mqtt://host:port`` or ``mqtts://host:port``."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the broker's log file."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 32768))
                text = f.read().decode(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    # -- clients --

    def client(self, **kwargs: Any) -> aiomqtt.Client:
        """An aiomqtt client for this broker: host, port, TLS and credentials filled in.

        Keyword arguments go to ``aiomqtt.Client`` and override the defaults (e.g.
        ``identifier=``, ``clean_session=False``, ``tls_params=`` of a foreign certificate).
        """
        options: dict[str, Any] = {"username": self.username, "password": self.password,
                                   "tls_params": self.tls.tls_params() if self.tls else None}
        options.update(kwargs)
        return aiomqtt.Client(self.host, self.port, **options)

    # -- life cycle --

    def start(self) -> Self:
        """Launch the broker and return once an MQTT CONNECT succeeds (BrokerError if not)."""
        if self.is_running:
            raise BrokerError(f"{self!r} is already running")
        self._reap()                            # a previous run that died by itself
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        began = time.monotonic()
        with self.log_path.open("ab") as out:
            out.write(f"=== roadside test: start {self.starts} of {self.kind} on "
                      f"{self.host}:{self.port}: {' '.join(self._argv)}\n".encode())
            out.flush()
            _LIVE.add(self)
            try:
                self._aux = self._start_aux(out)
                self._pgid = self._aux[0].pid if self._aux else None
                self._proc = subprocess.Popen(
                    self._argv, env=self._env, cwd=self.data_dir, stdin=subprocess.DEVNULL,
                    stdout=out, stderr=subprocess.STDOUT,
                    process_group=0 if self._pgid is None else self._pgid)
            except BaseException:
                self.kill()
                raise
            self._pgid = self._pgid if self._pgid is not None else self._proc.pid
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        self.last_start_s = time.monotonic() - began
        log.info("%s started in %.2f s", self, self.last_start_s)
        return self

    def stop(self) -> None:
        """Stop gracefully, SIGKILL after ``stop_timeout``; no process of the broker survives."""
        if self._proc is None:
            return
        try:
            if self._proc.poll() is None:
                self._request_stop()
                try:
                    self._proc.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    log.warning("%s ignored the stop request for %.0f s: SIGKILL", self,
                                self.stop_timeout)
                    self._signal_group(signal.SIGKILL)
            for aux in self._aux:
                if aux.poll() is None:
                    aux.terminate()
        finally:
            self._reap()

    def kill(self) -> None:
        """SIGKILL every process of the broker at once (a crash, a power cut)."""
        self._signal_group(signal.SIGKILL)
        self._reap()

    def restart(self) -> Self:
        """stop() then start() on the same port and data."""
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        return self if self.is_running else self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- hooks for brokers made of more than one process --

    def _start_aux(self, out: IO[bytes]) -> list[subprocess.Popen[bytes]]:
        """Helper processes to start first; the first one leads the process group."""
        return []

    def _request_stop(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGTERM)

    def _ready(self) -> str | None:
        """None when the broker is ready, else what it is still waiting for."""
        context = self.tls.ssl_context() if self.tls else None
        try:
            rc = mqtt_connack(self.host, self.port, context=context, username=self.username,
                               password=self.password)
        except OSError as exc:
            return f"MQTT CONNECT failed: {exc!r}"
        return None if rc == 0 else f"CONNACK return code {rc}"

    # -- internals --

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            rc = self._proc.poll()
            if rc is not None:
                raise BrokerError(f"{self.kind} on port {self.port} exited with status {rc} "
                                  f"while starting; {self.log_path} ends with:\n"
                                  f"{self.log_tail()}")
            waiting = self._ready()
            if waiting is None:
                return
            if time.monotonic() > deadline:
                raise BrokerError(f"{self.kind} on port {self.port} not ready after "
                                  f"{self.start_timeout:.0f} s ({waiting}); {self.log_path} "
                                  f"ends with:\n{self.log_tail()}")
            time.sleep(_POLL_S)

    def _signal_group(self, sig: signal.Signals) -> None:
        if self._pgid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._pgid, sig)
        for proc in (self._proc, *self._aux):   # also when not (yet) in the group
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    def _reap(self) -> None:
        """Wait for our children, then sweep the group of anything they left behind."""
        try:
            for proc in (self._proc, *self._aux):
                if proc is None:
                    continue
                try:
                    proc.wait(_SWEEP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(_SWEEP_TIMEOUT_S)
            if self._pgid is not None:
                self._sweep(self._pgid)
        finally:
            self._proc = None
            self._aux = []
            self._pgid = None
            _LIVE.discard(self)

    def _sweep(self, pgid: int) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not process_group(pgid):
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
            deadline = time.monotonic() + _SWEEP_TIMEOUT_S
            while process_group(pgid) and time.monotonic() < deadline:
                time.sleep(_POLL_S)
        left = process_group(pgid)
        if left:
            raise BrokerError(f"{self.kind}: processes {left} of group {pgid} survive SIGKILL")


# --- Mosquitto ---------------------------------------------------------------------------------

def mosquitto_password_hash(password: str, salt: bytes | None = None) -> str:
    """A Mosquitto 2 password file hash: ``$7$101$<salt b64>$<pbkdf2-sha512 b64>``."""
    salt = os.urandom(12) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    return f"$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def _write_password_file(path: Path, users: Mapping[str, str]) -> None:
    """Hashed with ``mosquitto_passwd -b`` when installed, else in the same documented format."""
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if os.access(tool, os.X_OK):
        path.write_text("")
        for user, password in users.items():
            subprocess.run([tool, "-b", str(path), user, password], check=True,
                           capture_output=True, timeout=30)
    else:
        path.write_text("".join(f"{user}:{mosquitto_password_hash(password)}\n"
                                for user, password in users.items()))
    path.chmod(0o600)


def mosquitto(tmp_dir: Path, *, tls: bool = False, require_certificate: bool = False,
              use_identity_as_username: bool = False, users: Mapping[str, str] | None = None,
              persistence: bool = True, pki: Pki | None = None,
              client_cn: str = "roadside-gateway", port: int | None = None,
              start: bool = True) -> Broker:
    """A Mosquitto 2 broker on a free loopback port, files in ``tmp_dir/mosquitto-<port>``.

    Anonymous unless ``users`` ({name: password}) is given; the first user is the one the
    probe and :meth:`Broker.client` log in with. ``tls`` (implied by ``require_certificate``)
    uses ``pki`` or a fresh :class:`Pki` (client CN ``client_cn``); with ``require_certificate``
    clients must present a certificate of the test CA, and ``use_identity_as_username`` makes
    its CN the username. ``persistence`` keeps retained messages and persistent sessions'
    queued QoS 1 messages across :meth:`Broker.stop`/:meth:`Broker.start` (saved on SIGTERM).
    """
    binary = _find("mosquitto", "mosquitto")
    port = free_port() if port is None else port
    data = tmp_dir / f"mosquitto-{port}"
    data.mkdir(parents=True, exist_ok=True)
    tls = tls or require_certificate
    lines = ["# Written by gateway/tests/brokers.py for one test; never the system broker."]
    if os.geteuid() == 0:
        # As root Mosquitto drops to user "mosquitto", who cannot write our tmp dir.
        lines.append(f"user {pwd.getpwuid(os.geteuid()).pw_name}")
    lines += [f"listener {port} {LOOPBACK}",
              f"allow_anonymous {'false' if users else 'true'}",
              "max_queued_messages 0",          # a test broker drops nothing it was given
              "log_dest stderr",
              "log_timestamp_format %Y-%m-%dT%H:%M:%S"]
    username = password = None
    if users:
        _write_password_file(data / "passwords", users)
        lines.append(f"password_file {data / 'passwords'}")
        username, password = next(iter(users.items()))
    info = None
    if tls:
        pki = Pki(data / "pki", client_cn=client_cn) if pki is None else pki
        lines += [f"cafile {pki.ca}", f"certfile {pki.server.cert}",
                  f"keyfile {pki.server.key}"]
        if require_certificate:
            lines.append("require_certificate true")
            if use_identity_as_username:
                lines.append("use_identity_as_username true")
        info = TlsInfo(pki.ca, pki.client.cert, pki.client.key) if require_certificate \
            else TlsInfo(pki.ca)
    if persistence:
        lines += ["persistence true", f"persistence_location {data}/"]
    conf = data / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    broker = Broker("mosquitto", port=port, data_dir=data, argv=[binary, "-c", str(conf)],
                    tls=info, pki=pki, username=username, password=password)
    return broker.start() if start else broker


# --- NATS --------------------------------------------------------------------------------------

def nats_mqtt(tmp_dir: Path, *, port: int | None = None, start: bool = True) -> Broker:
    """nats-server with JetStream and its MQTT listener on free loopback ports.

    Files in ``tmp_dir/nats-<port>`` (JetStream store included, so sessions and retained
    messages survive a restart); the NATS client listener is on a free port too, no HTTP
    monitoring. ``server_name`` is set because the MQTT listener requires one.
    """
    binary = _find("nats-server", "nats-server")
    port = free_port() if port is None else port
    data = tmp_dir / f"nats-{port}"
    data.mkdir(parents=True, exist_ok=True)
    conf = data / "nats.conf"
    conf.write_text(
        "# Written by gateway/tests/brokers.py for one test; never the system server.\n"
        f"server_name: roadside_test_{port}\n"
        f"listen: {LOOPBACK}:{free_port()}\n"
        f'jetstream {{\n  store_dir: "{data / "jetstream"}"\n}}\n'
        f"mqtt {{\n  listen: {LOOPBACK}:{port}\n}}\n")
    broker = Broker("nats", port=port, data_dir=data, argv=[binary, "-c", str(conf)])
    return broker.start() if start else broker


# --- RabbitMQ ----------------------------------------------------------------------------------

# The Debian package's /usr/sbin wrappers su to user rabbitmq and log to /var/log: call the
# real scripts under /usr/lib/rabbitmq/bin.
_RABBIT_BIN = "/usr/lib/rabbitmq/bin"


class _RabbitMQ(Broker):
    """RabbitMQ plus the private epmd it registers with (the epmd leads the process group)."""

    def __init__(self, *, node: str, ctl: str, epmd: str, epmd_port: int, amqp_port: int,
                 **kwargs: Any) -> None:
        super().__init__("rabbitmq", **kwargs)
        self.node = node
        self.amqp_port = amqp_port
        self.epmd_port = epmd_port
        self._ctl = ctl
        self._epmd = epmd

    def _start_aux(self, out: IO[bytes]) -> list[subprocess.Popen[bytes]]:
        epmd = subprocess.Popen(
            [self._epmd, "-port", str(self.epmd_port), "-address", LOOPBACK],
            env=self._env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            process_group=0)
        # The node must find its epmd listening (it is told not to start one: -start_epmd).
        deadline = time.monotonic() + self.start_timeout
        while not _wait_port(LOOPBACK, self.epmd_port, 0):
            if epmd.poll() is not None or time.monotonic() > deadline:
                epmd.kill()
                epmd.wait()
                raise BrokerError(f"epmd on port {self.epmd_port} did not listen (status "
                                  f"{epmd.returncode}); {self.log_path} ends with:\n"
                                  f"{self.log_tail()}")
            time.sleep(_POLL_S)
        return [epmd]

    def _ready(self) -> str | None:
        # The MQTT listener may come up before the AMQP one fails and the node halts: ready
        # means both listen and MQTT answers.
        if not _wait_port(LOOPBACK, self.amqp_port, 0):
            return f"AMQP port {self.amqp_port} not listening yet"
        return super()._ready()

    def _request_stop(self) -> None:
        with self.log_path.open("ab") as out:
            try:
                subprocess.run([self._ctl, "-n", self.node, "stop"], env=self._env,
                               stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                               timeout=self.stop_timeout, check=False)
            except subprocess.TimeoutExpired:
                log.warning("rabbitmqctl stop of %s timed out", self.node)
        if self.is_running:                     # rabbitmqctl failed or halting takes a while
            with contextlib.suppress(subprocess.TimeoutExpired):
                assert self._proc is not None
                self._proc.wait(self.stop_timeout / 2)
        if self.is_running:
            super()._request_stop()             # the start script turns SIGTERM into a stop


def rabbitmq_mqtt(tmp_dir: Path, *, port: int | None = None, start: bool = True) -> Broker:
    """A private RabbitMQ node with the rabbitmq_mqtt plugin on free loopback ports.

    Everything lives in ``tmp_dir/rabbitmq-<port>``: config, enabled plugins, Mnesia, logs,
    and HOME (so the Erlang cookie is private). The node (``roadside-<port>@localhost``)
    registers with its own epmd on a free port and uses a free AMQP and distribution port;
    ``/etc/rabbitmq`` is not read. Anonymous MQTT clients are mapped to guest, allowed
    from loopback. Starting takes several seconds (Erlang boot): guard of 60 s.

    Unlike Mosquitto and NATS, RabbitMQ 3.10 did not give back retained messages after a
    stop()/start() in our checks (its DETS retained store file is there; not investigated).
    """
    server = _find("rabbitmq-server", "rabbitmq-server", f"{_RABBIT_BIN}/rabbitmq-server")
    ctl = _find("rabbitmqctl", "rabbitmq-server", f"{_RABBIT_BIN}/rabbitmqctl")
    epmd = _find("epmd", "erlang-base", *sorted(
        str(p) for p in Path("/usr/lib/erlang").glob("erts-*/bin/epmd")))
    port = free_port() if port is None else port
    data = tmp_dir / f"rabbitmq-{port}"
    home = data / "home"
    home.mkdir(parents=True, exist_ok=True)
    amqp_port, epmd_port, dist_port = free_port(), free_port(), free_port()
    node = f"roadside-{port}@localhost"
    (data / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
    (data / "rabbitmq-env.conf").write_text("# empty: /etc/rabbitmq/rabbitmq-env.conf unread\n")
    (data / "rabbitmq.conf").write_text(
        "# Written by gateway/tests/brokers.py for one test; never the system broker.\n"
        f"listeners.tcp.default = {LOOPBACK}:{amqp_port}\n"
        f"mqtt.listeners.tcp.default = {LOOPBACK}:{port}\n"
        "mqtt.allow_anonymous = true\n"
        "mqtt.default_user = guest\n"
        "mqtt.default_pass = guest\n"
        "loopback_users = none\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
    env.update(
        HOME=str(home),
        RABBITMQ_NODENAME=node,
        RABBITMQ_NODE_IP_ADDRESS=LOOPBACK,
        RABBITMQ_NODE_PORT=str(amqp_port),
        RABBITMQ_DIST_PORT=str(dist_port),
        RABBITMQ_MNESIA_BASE=str(data / "mnesia"),
        RABBITMQ_LOG_BASE=str(data / "log"),
        RABBITMQ_ENABLED_PLUGINS_FILE=str(data / "enabled_plugins"),
        RABBITMQ_CONFIG_FILE=str(data / "rabbitmq.conf"),
        RABBITMQ_ADVANCED_CONFIG_FILE=str(data / "advanced.config"),   # absent on purpose
        RABBITMQ_CONF_ENV_FILE=str(data / "rabbitmq-env.conf"),
        ERL_EPMD_PORT=str(epmd_port),
        ERL_EPMD_ADDRESS=LOOPBACK,
        # Server and rabbitmqctl: never spawn an epmd daemon (it would outlive the test), and
        # keep Erlang distribution on loopback.
        ERL_FLAGS="-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}",
    )
    broker = _RabbitMQ(node=node, ctl=ctl, epmd=epmd, epmd_port=epmd_port, amqp_port=amqp_port,
                       port=port, data_dir=data, argv=[server], env=env,
                       start_timeout=60.0, stop_timeout=30.0)
    return broker.start() if start else broker


# --- Capture -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Captured:
    """One message as the subscriber received it."""

    topic: str
    payload: bytes
    retain: bool
    qos: int


class Capture:
    """Records every message matching ``topic_filter`` (subscribed at ``qos``) on ``broker``.

    The aiomqtt client runs in a daemon thread with its own event loop; ``start()`` returns
    after the SUBACK. It reconnects every 0.2 s while the broker is down; with ``persistent``
    (the default) its session is kept by the broker, so QoS 1 messages published while it was
    away are delivered when it is back, possibly twice (QoS 1 is at least once): compare
    sets when duplicates do not matter. Use as ``with Capture(...) as cap`` (sync) or
    ``async with`` (async); ``cap.wait_for(lambda c: ...)`` (sync) or ``await
    cap.wait_for_async(...)`` (async) block until a predicate on the capture holds.
    """

    def __init__(self, broker: Broker, topic_filter: str = "#", *, qos: int = 1,
                 persistent: bool = True, identifier: str | None = None,
                 connect_timeout: float = 10.0) -> None:
        self.broker = broker
        self.topic_filter = topic_filter
        self.qos = qos
        self.persistent = persistent
        self.identifier = identifier or f"roadside-capture-{uuid.uuid4().hex[:8]}"
        self.connect_timeout = connect_timeout
        self.connects = 0                       # SUBACKs received: 1 + reconnections
        self._messages: list[Captured] = []
        self._version = 0                       # bumped at every message and SUBACK
        self._changed = threading.Condition()
        self._subscribed = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._loop_ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error: BaseException | None = None

    @property
    def messages(self) -> list[Captured]:
        """A copy of everything received so far, in arrival order."""
        with self._changed:
            return list(self._messages)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False,
                qos: int = 1) -> None:
        """Publishes one message from a separate, short-lived client (an operator's tool)."""

        async def once() -> None:
            async with self.broker.client(identifier=f"{self.identifier}-pub") as client:
                await client.publish(topic, payload, qos=qos, retain=retain)

        asyncio.run(once())

    def clear(self) -> None:
        """Forget what was received so far."""
        with self._changed:
            self._messages.clear()

    def start(self) -> Self:
        """Start the subscriber; returns after SUBACK, BrokerError after ``connect_timeout``."""
        if self._thread is not None:
            raise RuntimeError("Capture already started")
        self._thread = threading.Thread(target=self._run, name=f"capture {self.identifier}",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.connect_timeout
        while not self._subscribed.wait(_POLL_S):
            if time.monotonic() < deadline and self._thread.is_alive():
                continue
            self.stop()
            raise BrokerError(f"capture of {self.topic_filter!r} on {self.broker!r}: no SUBACK "
                              f"within {self.connect_timeout:.0f} s (last error: "
                              f"{self._last_error!r})")
        return self

    def stop(self) -> None:
        """Disconnect and end the thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._loop_ready.wait(self.connect_timeout)
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):         # loop already closed
                self._loop.call_soon_threadsafe(self._stopping.set)
        thread.join(self.connect_timeout)

    def wait_for(self, predicate: Callable[[Capture], bool],
                 timeout: float = WAIT_TIMEOUT_S) -> list[Captured]:
        """Block until ``predicate(capture)`` is true; return the messages received so far.

        The predicate looks at ``capture.messages`` (or ``connects``); it is called now and
        again after each new message or reconnection (several at a time when it is slower
        than they arrive), outside the capture's lock. TimeoutError, naming what did arrive,
        after ``timeout`` seconds: a hang guard, not a measurement.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                version = self._version
            if predicate(self):
                return self.messages
            remaining = deadline - time.monotonic()
            with self._changed:
                if remaining <= 0 or not self._changed.wait_for(
                        functools.partial(self._changed_since, version), remaining):
                    raise TimeoutError(
                        f"capture of {self.topic_filter!r} on {self.broker!r}: condition not "
                        f"met within {timeout} s; {len(self._messages)} messages, "
                        f"{self.connects} connections, the last (topic, bytes): "
                        f"{[(m.topic, len(m.payload)) for m in self._messages[-3:]]}")

    def wait_message(self, match: Callable[[Captured], bool],
                     timeout: float = WAIT_TIMEOUT_S) -> Captured:
        """Block until a message satisfying ``match`` has arrived; return the first one."""
        found = self.wait_for(lambda cap: any(match(m) for m in cap.messages), timeout)
        return next(m for m in found if match(m))

    def _changed_since(self, version: int) -> bool:
        return self._version != version

    async def wait_for_async(self, predicate: Callable[[Capture], bool],
                             timeout: float = WAIT_TIMEOUT_S) -> list[Captured]:
        """:meth:`wait_for` in a worker thread, leaving the caller's event loop running."""
        return await asyncio.to_thread(self.wait_for, predicate, timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.to_thread(self.stop)

    # -- the thread --

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._loop_ready.set()
        task = asyncio.create_task(self._subscribe_loop(), name="capture.subscriber")
        stop = asyncio.create_task(self._stopping.wait(), name="capture.stop")
        await asyncio.wait((task, stop), return_when=asyncio.FIRST_COMPLETED)
        if task.done():                         # the subscriber crashed: keep the reason
            self._last_error = task.exception()
            stop.cancel()
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _subscribe_loop(self) -> None:
        while True:
            try:
                async with self.broker.client(identifier=self.identifier,
                                              clean_session=not self.persistent) as client:
                    await client.subscribe(self.topic_filter, qos=self.qos)
                    with self._changed:
                        self.connects += 1
                        self._version += 1
                        self._changed.notify_all()
                    self._subscribed.set()
                    async for message in client.messages:
                        payload = message.payload
                        data = payload if isinstance(payload, bytes) else str(payload).encode()
                        with self._changed:
                            self._messages.append(Captured(message.topic.value, data,
                                                           bool(message.retain), message.qos))
                            self._version += 1
                            self._changed.notify_all()
            except aiomqtt.MqttError as exc:
                self._last_error = exc
                log.debug("capture %s: %s; reconnecting", self.identifier, exc)
            await asyncio.sleep(0.2)
