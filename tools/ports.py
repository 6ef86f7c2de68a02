"""Serial ports as a technician names them: aliases, and the errors that name the fix.

`u0` is /dev/ttyUSB0 (CP210x/CH340 USB-UART bridges of ESP32 DevKitC boards), `a0`
/dev/ttyACM0 (the ESP32-S3's native USB); anything else is used as given (/dev/pts/7, COM3).
"""

from __future__ import annotations

import errno
import os
import re

import serial

from tools.errors import ToolError

_ALIASES = {"u": "/dev/ttyUSB", "a": "/dev/ttyACM"}
_LIST = "list them with `ls /dev/ttyUSB* /dev/ttyACM*`"


def resolve(port: str) -> str:
    """The device path for a port or alias ("u0" -> "/dev/ttyUSB0", "a1" -> "/dev/ttyACM1")."""
    m = re.fullmatch(r"([ua])(\d+)", port)
    return _ALIASES[m.group(1)] + m.group(2) if m else port


def check(port: str) -> str:
    """Resolves port and makes sure it exists and nobody else holds it; returns its path."""
    path = resolve(port)
    if not os.path.exists(path):
        raise ToolError(f"port {path} does not exist: plug the board in (or name another "
                        f"--port); {_LIST}")
    try:
        probe = serial.Serial(path, 115200, exclusive=True, timeout=0)
    except serial.SerialException as exc:
        if "lock" in str(exc) or getattr(exc, "errno", None) in (errno.EBUSY, errno.EAGAIN):
            raise ToolError(f"port {path} is busy: another program has it open (a gateway, "
                            "screen, minicom, mpremote, another roadside); close it and retry"
                            ) from exc
        if getattr(exc, "errno", None) == errno.EACCES:
            raise ToolError(f"port {path}: permission denied; add yourself to the dialout "
                            "group (sudo usermod -aG dialout $USER) and log in again") from exc
        raise ToolError(f"port {path} cannot be opened ({exc}); {_LIST}") from exc
    probe.close()
    return path
