"""The systemd notify protocol (sd_notify(3)) without libsystemd: readiness, status, watchdog.

Under ``Type=notify`` systemd puts the path of a datagram socket in ``NOTIFY_SOCKET`` (a file
path, or an abstract-namespace name when it starts with ``@``); the service sends newline
separated ``KEY=value`` assignments to it: ``READY=1`` once it works, ``STATUS=...`` for
``systemctl status``, ``STOPPING=1`` when it begins to stop, ``WATCHDOG=1`` as a keep-alive.

`Notifier.from_env()` reads the variable once. Without it (a shell, a test, a container)
every method is a no-op returning False, so the service runs the same outside systemd. Sends
are single non-blocking datagrams: they never wait, and a failure (socket gone, queue full) is
logged once until a send succeeds again and counted in `Notifier.failures`, never raised: the
gateway must not die because systemd or journald hiccups.

Watchdog. With ``WatchdogSec=`` systemd sets ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``, the
process meant; `watchdog_interval_s` ignores the variables when it names another process) and
restarts the service when no ``WATCHDOG=1`` arrives within that time. `watchdog_loop` pings
every half interval (systemd's advice) from the event loop, so a blocked loop stops the pings
too, and only while ``health()`` returns None. ``health`` is the caller's check: it returns
None when all is well, else a short reason ("publisher: no PUBACK for 300 s"), which is
logged (each new reason once) while the pings are withheld; a health check that raises counts
as unhealthy. The loop runs until cancelled (name its task `TASK_NAME`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

TASK_NAME = "gateway.watchdog"


def _line(text: str) -> str:
    # One assignment per line: a newline inside a value would start a new one.
    return " ".join(text.splitlines())


class Notifier:
    """Sends notifications to systemd's notify socket, or nothing when there is none."""

    def __init__(self, address: str | None) -> None:
        """`address`: a socket path, ``@name`` (abstract namespace) or None (disabled)."""
        self.address = address
        self.failures = 0           # sends that failed, for metrics
        self._target = b""
        if address is not None:
            raw = os.fsencode(address)
            self._target = b"\0" + raw[1:] if raw.startswith(b"@") else raw
        self._sock: socket.socket | None = None
        self._failing = False       # the last send failed (and was logged)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """A notifier for ``NOTIFY_SOCKET`` of `environ` (default `os.environ`)."""
        value = (os.environ if environ is None else environ).get("NOTIFY_SOCKET") or None
        if value is not None and not value.startswith(("/", "@")):
            log.warning("NOTIFY_SOCKET=%s is neither a socket path nor an @abstract name "
                        "(vsock is not supported); systemd notifications are off", value)
            value = None
        return cls(value)

    @property
    def enabled(self) -> bool:
        """True when there is a notify socket to send to."""
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Sends ``KEY=value`` assignments in one datagram; True if it was sent."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(assignments).encode(), self._target)
        except OSError as exc:
            self.failures += 1
            if not self._failing:
                log.warning("systemd notification to %s failed: %s (not logged again until one "
                            "is sent)", self.address, exc)
            self._failing = True
            return False
        if self._failing:
            log.info("systemd notifications sent again (%d failed in all)", self.failures)
            self._failing = False
        return True

    def ready(self, status: str = "") -> bool:
        """The service is up (``READY=1``), with an optional status line."""
        return self.notify("READY=1", *([f"STATUS={_line(status)}"] if status else []))

    def status(self, text: str) -> bool:
        """A one-line status for ``systemctl status`` (``STATUS=``)."""
        return self.notify(f"STATUS={_line(text)}")

    def stopping(self, status: str = "") -> bool:
        """The service begins to stop (``STOPPING=1``), with an optional status line."""
        return self.notify("STOPPING=1", *([f"STATUS={_line(status)}"] if status else []))

    def watchdog(self) -> bool:
        """A watchdog keep-alive (``WATCHDOG=1``)."""
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        """Closes the socket (a later send opens it again)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """``WATCHDOG_USEC`` in seconds, or None when unset, invalid or meant for another PID."""
    env = os.environ if environ is None else environ
    usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec:
        return None
    if pid and pid.strip() != str(os.getpid()):
        log.debug("WATCHDOG_PID=%s is not this process (%d); no watchdog", pid, os.getpid())
        return None
    if not usec.isdigit() or int(usec) == 0:
        log.warning("WATCHDOG_USEC=%s is not a positive number of microseconds; no watchdog "
                    "pings (check WatchdogSec= in the unit)", usec)
        return None
    return int(usec) / 1e6


async def watchdog_loop(notifier: Notifier, health: Callable[[], str | None],
                        interval_s: float) -> None:
    """Sends ``WATCHDOG=1`` every `interval_s` / 2 while `health()` returns None; never ends."""
    if not interval_s > 0:
        raise ValueError(f"watchdog interval {interval_s} s: must be positive")
    withheld: str | None = None     # the reason logged for the pings now withheld
    while True:
        error: Exception | None = None
        try:
            problem = health()
        except Exception as exc:
            problem, error = f"the health check raised {exc!r}", exc
        if problem is None:
            notifier.watchdog()
            if withheld is not None:
                log.warning("healthy again (was: %s); watchdog pings resume", withheld)
                withheld = None
        elif problem != withheld:
            log.error("watchdog pings withheld: %s; systemd restarts the service if this "
                      "lasts WatchdogSec (%g s)", problem, interval_s, exc_info=error)
            withheld = problem
        await asyncio.sleep(interval_s / 2)
