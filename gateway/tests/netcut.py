"""A TCP relay between the gateway and its broker that a test can cut, like a dead uplink.

Stopping the broker to simulate an outage also disconnects the test's own subscriber, which
then races the gateway to reconnect. The relay cuts only the gateway's path: the broker and
the subscriber stay up. `cut()` resets every relayed connection and refuses new ones (the
gateway sees its TCP connection die and its reconnects refused, as with a cellular modem that
lost its carrier); `restore()` lets connections through again. One thread accepts, two
threads per connection pump bytes; `close()` stops them all.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

from gateway.tests.brokers import LOOPBACK


def _reset(sock: socket.socket) -> None:
    # SO_LINGER 0: close() sends RST, the way a dead path looks to the peer.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class Relay:
    """Listens on a free loopback port and relays to (host, port) until cut or closed."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port = self._listener.getsockname()[1]
        self.host = LOOPBACK
        self._open = True
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self.accepted = 0
        self.refused = 0
        self._thread = threading.Thread(target=self._accept_loop, name="relay", daemon=True)
        self._thread.start()

    def cut(self) -> None:
        """Resets every relayed connection and refuses new ones until restore()."""
        with self._lock:
            self._open = False
            conns, self._conns = self._conns, []
        for s in conns:
            _reset(s)

    def restore(self) -> None:
        with self._lock:
            self._open = True

    def close(self) -> None:
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                allowed = self._open
            if not allowed:
                self.refused += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), name="relay.pump",
                                 daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _reset(src)
            _reset(dst)
