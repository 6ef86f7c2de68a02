"""The real `roadside-gateway run` as a subprocess, for service tests, the HIL suite and demos.

`GatewayProcess` writes a TOML config (every value a test sets is an ordinary config key),
starts ``python -m gateway run --config FILE`` with ``NOTIFY_SOCKET`` pointing at a datagram
socket it owns, and waits for ``READY=1`` exactly as systemd would. It can stop the gateway
with SIGTERM (clean) or SIGKILL (a crash) and start it again on the same files. `scrape()`
reads ``/metrics`` over HTTP and parses it with prometheus_client's parser (an independent
reader of the format). The gateway's stderr goes to ``gateway.log`` in the folder.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from gateway.tests.brokers import free_port

ROOT = Path(__file__).resolve().parents[2]
GUARD_S = 30.0


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, tables: Mapping[str, Mapping[str, object]],
                 ports: Sequence[str]) -> None:
    lines: list[str] = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml(v)}" for k, v in table.items()]
        lines.append("")
    for p in ports:
        lines += ["[[serial.ports]]", f"path = {_toml(p)}", ""]
    path.write_text("\n".join(lines))


def write_keys(path: Path, keys: Mapping[int, bytes]) -> None:
    path.write_text("".join(f"{n} {k.hex()}\n" for n, k in keys.items()))
    path.chmod(0o600)


class GatewayProcess:
    """One gateway process on files in `folder` (see the module documentation)."""

    def __init__(self, folder: Path, *, broker_host: str, broker_port: int,
                 ports: Sequence[str], keys: Mapping[int, bytes],
                 extra: Mapping[str, Mapping[str, object]] | None = None,
                 tls: Mapping[str, object] | None = None) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.config_path = folder / "gateway.toml"
        self.log_path = folder / "gateway.log"
        self.metrics_port = free_port()
        write_keys(folder / "node-keys", keys)
        tables: dict[str, dict[str, object]] = {
            "gateway": {"id": "gw-test", "site": "test-site", "log_level": "debug"},
            "serial": {"reopen_min_s": 0.1, "reopen_max_s": 1.0},
            "keys": {"file": "node-keys"},
            "store": {"path": "queue.sqlite3", "commit_interval_ms": 20},
            "mqtt": {"host": broker_host, "port": broker_port, "tls": False,
                     "ca_file": "", "keepalive_s": 5, "reconnect_min_s": 0.2,
                     "reconnect_max_s": 2.0, **(tls or {})},
            "batch": {"max_age_ms": 200},
            "metrics": {"listen": f"127.0.0.1:{self.metrics_port}"},
        }
        for name, table in (extra or {}).items():
            tables.setdefault(name, {}).update(table)
        write_config(self.config_path, tables, ports)
        self.proc: subprocess.Popen[bytes] | None = None
        self.notify_path = folder / "notify.sock"
        self.notices: list[str] = []
        self._sock: socket.socket | None = None

    def start(self, *, wait_ready: bool = True, env: Mapping[str, str] | None = None,
              fsize_limit_b: int | None = None) -> None:
        """Starts the gateway; fsize_limit_b sets RLIMIT_FSIZE (a disk quota: writes beyond
        it fail with EFBIG, which SQLite reports as a full disk)."""
        self.notify_path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(self.notify_path))
        self._sock = sock
        full_env = {**os.environ, "NOTIFY_SOCKET": str(self.notify_path),
                    "PYTHONPATH": str(ROOT), **(env or {})}
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it

        # The quota is set in the child itself (no preexec_fn: unsafe beside threads).
        q = fsize_limit_b or 0
        launch = ("import resource, runpy, sys\n"
                  f"if {q}: resource.setrlimit(resource.RLIMIT_FSIZE, ({q}, {q}))\n"
                  "sys.argv = ['gateway'] + sys.argv[1:]\n"
                  "runpy.run_module('gateway', run_name='__main__')\n")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", launch, "run", "--config", str(self.config_path)],
            cwd=self.folder, env=full_env, stdout=log, stderr=log, start_new_session=True)
        log.close()
        if wait_ready:
            self.wait_notice("READY=1")

    def wait_notice(self, what: str, timeout_s: float = GUARD_S) -> str:
        """Waits for a notify message containing `what`; returns it."""
        assert self._sock is not None
        deadline = time.monotonic() + timeout_s
        for n in self.notices:
            if what in n:
                return n
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"gateway never said {what}; log:\n{self.log_tail()}")
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode} before {what}; "
                                   f"log:\n{self.log_tail()}")
            self._sock.settimeout(min(left, 0.2))
            try:
                text = self._sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.notices.append(text)
            if what in text:
                return text

    def drain(self) -> None:
        """Reads every notify message already queued into `notices`."""
        if self._sock is None:
            return
        self._sock.settimeout(0)
        with contextlib.suppress(OSError):
            while True:
                self.notices.append(self._sock.recv(4096).decode())

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = GUARD_S) -> int:
        """Sends `sig` and waits for the exit; returns the exit status."""
        proc = self.proc
        assert proc is not None
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            code = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError(f"gateway ignored signal {sig}; log:\n{self.log_tail()}"
                                 ) from None
        self.drain()
        return code

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> GatewayProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no log)"

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The metrics: (sample name, sorted labels) -> value."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        """One sample's value (0 when absent)."""
        return self.scrape().get(
            ("roadside_gateway_" + name, tuple(sorted(labels.items()))), 0.0)
