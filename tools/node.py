"""A session with a node over its USB console: mpremote's raw REPL, used as a library.

    with NodeSession("/dev/ttyUSB0") as node:
        node.run("print(1 + 1)")          # -> "2\n"
        node.write_file("/config.json", b"...")
        node.reset()                      # machine.reset(): the firmware starts again

Entering the session interrupts the firmware (Ctrl-C) and soft-reboots into the raw REPL
(mpremote's default), so main.py is not running while the tools work. Errors are ToolErrors
naming the fix: no such port, port busy, no MicroPython answering, code failing on the node.
"""

from __future__ import annotations

import ast
import contextlib
import io
import time
from types import TracebackType

from mpremote.transport import TransportError, TransportExecError  # type: ignore[import-untyped]
from mpremote.transport_serial import SerialTransport  # type: ignore[import-untyped]

from tools import ports
from tools.errors import ToolError

EXEC_TIMEOUT_S = 120.0
CONNECT_ATTEMPTS = 3
CONNECT_TIMEOUT_S = 5.0


class NodeSession:
    """One raw-REPL session on a node's console port (a context manager)."""

    def __init__(self, port: str, soft_reset: bool = True) -> None:
        self.port = ports.check(port)
        self._soft_reset = soft_reset
        self._t: SerialTransport | None = None

    def __enter__(self) -> NodeSession:
        try:
            # a read timeout, so that a node that stays silent cannot hang mpremote's reads
            self._t = SerialTransport(self.port, baudrate=115200, timeout=1.0)
        except TransportError as exc:
            raise ToolError(f"port {self.port} cannot be opened ({exc}); is it busy?") from exc
        for attempt in range(CONNECT_ATTEMPTS):
            try:
                with contextlib.redirect_stdout(io.StringIO()):   # mpremote prints what it got
                    self._t.enter_raw_repl(soft_reset=self._soft_reset,
                                           timeout_overall=CONNECT_TIMEOUT_S)
                break
            except (TransportError, OSError) as exc:
                # a node still booting (just reset) may lose the first Ctrl-C: try again
                if attempt + 1 < CONNECT_ATTEMPTS:
                    continue
                self.close()
                raise ToolError(f"no MicroPython answered on {self.port}: flash it first "
                                f"(roadside flash --port {self.port} --firmware "
                                "ESP32_GENERIC-v1.29.bin --chip esp32), or this is not the "
                                "board's USB console (the link UART carries frames, not a "
                                "REPL)") from exc
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Leaves the raw REPL (if still in it) and closes the port."""
        t, self._t = self._t, None
        if t is None:
            return
        with contextlib.suppress(Exception):
            if t.in_raw_repl:
                t.exit_raw_repl()
        with contextlib.suppress(Exception):
            t.close()

    @property
    def transport(self) -> SerialTransport:
        if self._t is None:
            raise ToolError("the session with the node is closed")
        return self._t

    def run(self, code: str, timeout_s: float = EXEC_TIMEOUT_S) -> str:
        """Runs code on the node; its output. A traceback on the node becomes a ToolError."""
        try:
            out, err = self.transport.exec_raw(code, timeout=timeout_s)
        except TransportError as exc:
            raise ToolError(f"{self.port}: the node stopped answering ({exc}); check the "
                            "cable and power, then retry") from exc
        if err:
            last = (err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["?"])[0]
            if "ImportError" in last and ("firmware" in last or "protocol" in last):
                raise ToolError(f"{self.port}: no Roadside firmware on the node ({last}); "
                                f"run roadside deploy --port {self.port} --board BOARD first")
            raise ToolError(f"{self.port}: the node refused: {last}")
        text: str = out.decode("utf-8", "replace")
        return text

    def eval(self, expression: str) -> object:
        """A Python literal computed on the node (repr parsed on the host)."""
        return ast.literal_eval(self.run(f"print(repr({expression}))").strip())

    def read_file(self, path: str) -> bytes | None:
        """The file's bytes, or None if the node has no such file."""
        try:
            data: bytes = self.transport.fs_readfile(path)
        except (TransportExecError, OSError):
            return None
        return data

    def write_file(self, path: str, data: bytes) -> None:
        """Writes path atomically: to path + ".new", then renamed over path."""
        try:
            self.transport.fs_writefile(path + ".new", data)
        except (TransportError, OSError) as exc:
            raise ToolError(f"{self.port}: cannot write {path} on the node ({exc}); is its "
                            "flash full? (roadside verify shows its state)") from exc
        self.run(f"import os\ntry:\n os.remove({path!r})\nexcept OSError:\n pass\n"
                 f"os.rename({path + '.new'!r}, {path!r})")

    def machine(self) -> str:
        """What the board says it is (sys.implementation._machine)."""
        return str(self.eval("__import__('sys').implementation._machine"))

    def reset_and_watch(self, patterns: tuple[str, ...], timeout_s: float) -> str | None:
        """machine.reset(), then the first console line containing one of patterns within
        timeout_s (None if none came); the session ends. A native-USB port that vanishes
        while the chip reboots is opened again."""
        import serial  # noqa: PLC0415 - pyserial comes with mpremote; only needed here

        t = self.transport
        with contextlib.suppress(TransportError, OSError):
            t.exec_raw_no_follow("import machine\nmachine.reset()")
        t.in_raw_repl = False
        t.serial.timeout = 0.2
        line: serial.Serial | None = t.serial
        self._t = None
        deadline = time.monotonic() + timeout_s
        buf = b""
        try:
            while time.monotonic() < deadline:
                if line is None:
                    try:
                        line = serial.Serial(self.port, 115200, timeout=0.2)
                    except serial.SerialException:
                        time.sleep(0.2)
                        continue
                try:
                    buf += line.read(max(1, line.in_waiting))
                except serial.SerialException:
                    line.close()
                    line = None
                    continue
                *done, buf = buf.split(b"\n")
                for raw in done:
                    text = raw.decode("utf-8", "replace")
                    if any(p in text for p in patterns):
                        return text
            return None
        finally:
            if line is not None:
                line.close()

    def reset(self) -> None:
        """machine.reset(): the node reboots and runs its firmware; the session ends."""
        with contextlib.suppress(TransportError, OSError):
            self.transport.exec_raw_no_follow("import machine\nmachine.reset()")
        t, self._t = self._t, None
        if t is not None:
            with contextlib.suppress(Exception):
                t.close()
