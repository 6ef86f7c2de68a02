"""The embedded broker (amqtt) the demo falls back to without Mosquitto: a real process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.tests.brokers import BrokerError, Capture, process_group
from hil_tests.demo import pybroker


@pytest.mark.skipif(not pybroker.available(),
                    reason=f"amqtt not installed ({pybroker.INSTALL_HINT})")
def test_the_embedded_broker_carries_qos1_messages_and_stops_its_whole_group(
        tmp_path: Path) -> None:
    """A QoS 1 message goes through the amqtt process; stop() leaves nothing of its group."""
    broker = pybroker.start(tmp_path / "amqtt")
    pgid = broker.pgid
    try:
        assert pgid is not None and process_group(pgid)
        with Capture(broker, "roadside/#", persistent=False) as cap:
            cap.publish("roadside/v1/demo/gw/data", b"\x80", qos=1)
            got = cap.wait_message(lambda m: m.topic == "roadside/v1/demo/gw/data")
        assert got.payload == b"\x80" and got.qos == 1
    finally:
        broker.stop()
    assert process_group(pgid) == []


@pytest.mark.skipif(pybroker.available(), reason="amqtt is installed here")
def test_without_amqtt_the_embedded_broker_names_the_install(tmp_path: Path) -> None:
    """Without amqtt, the embedded broker (function or command) fails naming the pip line."""
    with pytest.raises(BrokerError, match=r"pip install amqtt==0\.12\.1"):
        pybroker.start(tmp_path / "amqtt")
    done = subprocess.run([sys.executable, "-m", "hil_tests.demo.pybroker", "--port", "1"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == f"pybroker: amqtt is not installed; {pybroker.INSTALL_HINT}"
