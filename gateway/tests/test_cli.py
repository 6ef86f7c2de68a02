"""Tests of gateway/cli.py: the roadside-gateway verbs as a user runs them (real subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gateway import config
from gateway.tests.gwproc import write_keys

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_print_config_is_the_loadable_template(tmp_path: Path) -> None:
    """print-config writes the commented defaults, which load back to Config()."""
    out = run("print-config", cwd=tmp_path)
    assert out.returncode == 0
    assert out.stdout == config.template()
    path = tmp_path / "gateway.toml"
    path.write_text(out.stdout)
    assert config.load(path) == config.Config()


def test_check_config_names_every_problem(tmp_path: Path) -> None:
    """check-config of the template on a bare machine lists what is missing, exit 1."""
    path = tmp_path / "gateway.toml"
    path.write_text(config.template())
    out = run("check-config", "--config", str(path), cwd=tmp_path)
    assert out.returncode == 1
    assert "keys.file: /etc/roadside/node-keys does not exist" in out.stderr
    assert "serial.ports[0].path" in out.stderr and "ls -l /dev/serial/by-id/" in out.stderr
    assert "problem(s)" in out.stderr


def test_check_config_passes_on_a_good_setup(tmp_path: Path) -> None:
    """A config whose files and ports exist passes with a one-line summary."""
    port = tmp_path / "ttyFake"
    port.write_text("")
    write_keys(tmp_path / "keys", {7: bytes(32)})
    path = tmp_path / "gateway.toml"
    path.write_text(f'[keys]\nfile = "keys"\n[store]\npath = "q.sqlite3"\n'
                    f'[mqtt]\ntls = false\nca_file = ""\nport = 1883\n'
                    f'[[serial.ports]]\npath = "{port}"\n')
    out = run("check-config", "--config", str(path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "OK (1 serial ports, mqtt localhost:1883" in out.stdout


def test_run_with_a_bad_config_says_what_to_fix(tmp_path: Path) -> None:
    """run refuses a broken file in one message naming key and fix, no traceback."""
    path = tmp_path / "gateway.toml"
    path.write_text('[mqtt]\nport = "eighty"\n')
    out = run("run", "--config", str(path), cwd=tmp_path)
    assert out.returncode == 1
    assert "mqtt.port" in out.stderr and "Traceback" not in out.stderr
    missing = run("run", "--config", str(tmp_path / "nope.toml"), cwd=tmp_path)
    assert missing.returncode == 1
    assert "roadside-gateway print-config" in missing.stderr
