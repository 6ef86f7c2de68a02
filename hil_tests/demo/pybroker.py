"""An embedded Python MQTT broker (amqtt) for machines without Mosquitto.

`start(folder)` runs ``python -m hil_tests.demo.pybroker --port P`` as a real process on a
free loopback port, with the same life cycle as the Mosquitto of gateway/tests/brokers.py
(its own process group, ready once a raw MQTT CONNECT gets CONNACK 0, SIGTERM then SIGKILL,
the group swept). It needs the PyPI package ``amqtt`` (0.12.1), which the project does not
install by default: `available()` says whether it is there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import signal
import sys
from pathlib import Path

from gateway.tests.brokers import LOOPBACK, Broker, BrokerError, free_port

INSTALL_HINT = ".venv/bin/pip install amqtt==0.12.1"


def available() -> bool:
    """True when the amqtt package can be imported."""
    return importlib.util.find_spec("amqtt") is not None


class PythonBroker(Broker):
    """brokers.Broker running amqtt: start/stop/kill, pid and process group as for Mosquitto."""

    def __init__(self, folder: Path, port: int) -> None:
        super().__init__("mosquitto", port=port, data_dir=folder, argv=[
            sys.executable, "-m", "hil_tests.demo.pybroker", "--port", str(port)])
        self.kind = "amqtt"                  # brokers.KINDS lists the test brokers only
        self.log_path = folder / "amqtt.log"


def start(folder: Path) -> Broker:
    """An amqtt broker on a free loopback port, started and ready."""
    if not available():
        raise BrokerError(f"the embedded broker needs amqtt: {INSTALL_HINT} (or install "
                          "Mosquitto: sudo apt-get install mosquitto)")
    folder.mkdir(parents=True, exist_ok=True)
    return PythonBroker(folder, free_port()).start()


async def _serve(port: int) -> None:
    from amqtt.broker import Broker as Amqtt  # type: ignore[import-not-found,import-untyped,unused-ignore]  # noqa: PLC0415 - optional

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{LOOPBACK}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                    {"allow_anonymous": True}},
    }
    broker = Amqtt(config)
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    with contextlib.suppress(Exception):
        await broker.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil_tests.demo.pybroker",
                                     description="An amqtt MQTT broker on 127.0.0.1.")
    parser.add_argument("--port", type=int, required=True, help="TCP port, e.g. 1884")
    args = parser.parse_args(argv)
    if not available():
        print(f"pybroker: amqtt is not installed; {INSTALL_HINT}", file=sys.stderr)
        return 1
    asyncio.run(_serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
