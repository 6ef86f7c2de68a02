"""Tests of gateway/sdnotify.py against real AF_UNIX datagram sockets standing in for systemd's
notify socket (a path in tmp_path, and an abstract-namespace name)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.sdnotify import Notifier, watchdog_interval_s, watchdog_loop

GUARD_S = 10.0      # hang guard for a datagram that should arrive at once


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound in tmp_path, as systemd binds /run/systemd/notify."""
    path = str(tmp_path / "notify")
    assert len(path) < 100, f"{path} is too long for a unix socket"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(GUARD_S)
        yield sock, path


def drain(sock: socket.socket) -> list[bytes]:
    """Every datagram already queued on `sock`, without waiting."""
    got = []
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        while True:
            got.append(sock.recv(4096))
    except BlockingIOError:
        return got
    finally:
        sock.settimeout(timeout)


def test_messages_arrive_on_a_path_socket(listener: tuple[socket.socket, str]) -> None:
    """Each method sends its assignments as one datagram; newlines in a status are flattened."""
    sock, path = listener
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert n.enabled
    sent = [n.ready("2/2 ports open"), n.ready(), n.status("mqtt down\nretrying"),
            n.stopping(), n.stopping("draining"), n.watchdog(), n.notify("EXTEND_TIMEOUT_USEC=1")]
    assert all(sent)
    assert [sock.recv(4096) for _ in sent] == [
        b"READY=1\nSTATUS=2/2 ports open", b"READY=1", b"STATUS=mqtt down retrying",
        b"STOPPING=1", b"STOPPING=1\nSTATUS=draining", b"WATCHDOG=1", b"EXTEND_TIMEOUT_USEC=1"]
    assert n.failures == 0
    n.close()


def test_abstract_namespace_socket() -> None:
    """A NOTIFY_SOCKET starting with '@' reaches a socket bound in the abstract namespace."""
    name = f"roadside-test-{os.getpid()}-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(GUARD_S)
        n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert n.ready("up")
        assert sock.recv(4096) == b"READY=1\nSTATUS=up"
        n.close()


def test_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch,
                                   listener: tuple[socket.socket, str]) -> None:
    """Without an argument, from_env() reads NOTIFY_SOCKET from the process environment."""
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert Notifier.from_env().watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not Notifier.from_env().enabled


@pytest.mark.parametrize("env", [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "vsock:2:1"}],
                         ids=["unset", "empty", "vsock"])
def test_without_a_socket_every_call_is_a_no_op(env: dict[str, str]) -> None:
    """Without a usable NOTIFY_SOCKET, calls return False, open no socket and count nothing."""
    n = Notifier.from_env(env)
    assert not n.enabled
    assert not any((n.ready("x"), n.status("x"), n.stopping(), n.watchdog(), n.notify("A=1")))
    assert n._sock is None and n.failures == 0
    n.close()


def test_failed_sends_are_logged_once_and_never_raise(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Sends to a missing socket return False and warn once until a send succeeds again."""
    path = tmp_path / "notify"
    n = Notifier(str(path))
    with caplog.at_level(logging.INFO, logger="gateway.sdnotify"):
        assert not any(n.watchdog() for _ in range(3))
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(path))
            assert n.watchdog()
            assert sock.recv(4096) == b"WATCHDOG=1"
        path.unlink()
        assert not n.watchdog()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert n.failures == 4
    assert len(warnings) == 2 and str(path) in warnings[0]
    assert any("sent again (3 failed in all)" in r.getMessage() for r in caplog.records)


def test_a_full_socket_queue_fails_at_once_instead_of_blocking(
        listener: tuple[socket.socket, str]) -> None:
    """When systemd does not read its socket, sends fail (EAGAIN) rather than block the loop."""
    sock, path = listener
    n = Notifier(path)
    result: list[int] = []

    def flood() -> None:
        sends = 0
        while n.status("x" * 1000) and sends < 1_000_000:
            sends += 1
        result.append(sends)

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    thread.join(GUARD_S)
    blocked = thread.is_alive()
    sock.close()            # wakes a blocked send, so the thread ends either way
    thread.join(GUARD_S)
    assert not blocked, "a send blocked on a full notify socket"
    assert result and 0 < result[0] < 1_000_000 and n.failures == 1


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "30000000"}, 30.0),
    ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "30s"}, None),
    ({"WATCHDOG_PID": str(os.getpid())}, None),
], ids=["unset", "usec", "our-pid", "other-pid", "pid-1", "zero", "negative", "text",
        "pid-only"])
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    """WATCHDOG_USEC in seconds; None when unset, invalid, or WATCHDOG_PID names another PID."""
    assert watchdog_interval_s(env) == expected


def test_watchdog_loop_pings_only_while_healthy(
        listener: tuple[socket.socket, str], caplog: pytest.LogCaptureFixture) -> None:
    """WATCHDOG=1 arrives while healthy, none while health() gives a reason, then resumes."""
    sock, path = listener
    sock.setblocking(False)
    state: dict[str, str | None] = {"problem": None}
    seen = asyncio.Event()        # set by health() once it returned the current problem

    def health() -> str | None:
        if state["problem"] is not None:
            seen.set()
        return state["problem"]

    async def ping() -> bytes:
        async with asyncio.timeout(GUARD_S):
            return await asyncio.get_running_loop().sock_recv(sock, 4096)

    async def main() -> None:
        task = asyncio.create_task(watchdog_loop(Notifier(path), health, 0.05))
        assert await ping() == b"WATCHDOG=1"
        state["problem"] = "publisher: no PUBACK for 300 s"
        async with asyncio.timeout(GUARD_S):
            await seen.wait()
        drain(sock)                   # pings sent before health() saw the problem
        await asyncio.sleep(0.5)      # ten ping periods
        assert drain(sock) == [], "a ping was sent while unhealthy"
        state["problem"] = None
        assert await ping() == b"WATCHDOG=1"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.WARNING, logger="gateway.sdnotify"):
        asyncio.run(main())
    text = [r.getMessage() for r in caplog.records]
    assert sum("watchdog pings withheld: publisher: no PUBACK for 300 s" in t for t in text) == 1
    assert any("healthy again" in t for t in text)


def test_watchdog_loop_treats_a_raising_health_check_as_unhealthy(
        listener: tuple[socket.socket, str], caplog: pytest.LogCaptureFixture) -> None:
    """A health check that raises withholds the pings and logs the exception with its trace."""
    sock, path = listener
    calls = []

    def health() -> str | None:
        calls.append(1)
        raise KeyError("stage")

    async def main() -> None:
        task = asyncio.create_task(watchdog_loop(Notifier(path), health, 0.05))
        async with asyncio.timeout(GUARD_S):
            while len(calls) < 5:
                await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.ERROR, logger="gateway.sdnotify"):
        asyncio.run(main())
    assert drain(sock) == []
    errors = [r for r in caplog.records if "health check raised KeyError" in r.getMessage()]
    assert len(errors) == 1 and errors[0].exc_info is not None


def test_watchdog_loop_refuses_a_bad_interval() -> None:
    """A zero or negative interval raises ValueError instead of spinning."""
    with pytest.raises(ValueError, match="must be positive"):
        asyncio.run(watchdog_loop(Notifier(None), lambda: None, 0))
