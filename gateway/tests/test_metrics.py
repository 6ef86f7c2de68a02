"""Tests of gateway/metrics.py: the exposition read back by prometheus_client's parser (an
independent implementation), and the HTTP endpoint over real TCP on loopback (port 0)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from gateway.errors import GatewayError
from gateway.metrics import (
    COLLECTOR_ERRORS,
    CONTENT_TYPE,
    Family,
    MetricsServer,
    Registry,
)

GUARD_S = 10.0      # hang guard for anything that should happen at once
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def parse(text: str) -> dict[str, Metric]:
    families = {m.name: m for m in text_string_to_metric_families(text)}
    # A sample name that does not match its TYPE line comes back as an untyped family.
    assert all(m.type not in {"unknown", "untyped"} for m in families.values()), text
    return families


def samples(metric: Metric) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in metric.samples}


def errors_of(reg_text: str, collector: str) -> float:
    fam = parse(reg_text)[COLLECTOR_ERRORS]
    return samples(fam).get((COLLECTOR_ERRORS + "_total", (("collector", collector),)), 0.0)


async def http(port: int, request: bytes, host: str = "127.0.0.1"
               ) -> tuple[int, dict[str, str], bytes]:
    """Sends `request`, reads the reply to EOF; returns status, headers (lower-case), body."""
    async with asyncio.timeout(GUARD_S):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        await writer.drain()
        data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return int(lines[0].split(" ")[1]), headers, body


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()


def test_exposition_parses_to_recorded_values() -> None:
    """Counters, gauges and histograms read back by prometheus_client equal what was recorded."""
    reg = Registry()
    bad = reg.counter("rs_frames_bad", "Refused frames.", ("reason", "node"))
    accepted = reg.counter("rs_frames_accepted_total", "Accepted frames.")   # _total dropped
    reg.counter("rs_idle", "Never incremented.")
    temp = reg.gauge("rs_temp_celsius", "Board temperature.", ("board",))
    lat = reg.histogram("rs_latency_seconds", "Publish latency.", (0.1, 1, 10), ("topic",))
    bad.inc(reason="tag", node=7)
    bad.inc(2, reason="tag", node=7)
    bad.inc(reason="crc", node=8)
    accepted.inc(0.5)
    temp.set(-3.25, board="a")
    temp.set(1e20, board="b")
    for v in (0.05, 0.1, 0.5, 5, 50):      # 0.1 falls in le="0.1": the bound is inclusive
        lat.observe(v, topic="data")
    lat.observe(0.2, topic="alarm")
    fams = parse(asyncio.run(reg.render()))

    assert (fams["rs_frames_bad"].type, fams["rs_frames_bad"].documentation) == \
        ("counter", "Refused frames.")
    assert samples(fams["rs_frames_bad"]) == {
        ("rs_frames_bad_total", (("node", "7"), ("reason", "tag"))): 3.0,
        ("rs_frames_bad_total", (("node", "8"), ("reason", "crc"))): 1.0}
    assert samples(fams["rs_frames_accepted"]) == {("rs_frames_accepted_total", ()): 0.5}
    assert samples(fams["rs_idle"]) == {("rs_idle_total", ()): 0.0}
    assert fams["rs_temp_celsius"].type == "gauge"
    assert samples(fams["rs_temp_celsius"]) == {
        ("rs_temp_celsius", (("board", "a"),)): -3.25,
        ("rs_temp_celsius", (("board", "b"),)): 1e20}
    hist = fams["rs_latency_seconds"]
    assert hist.type == "histogram"
    got = samples(hist)
    data = {k[1][0][1] if k[0].endswith("_bucket") else k[0]: v for k, v in got.items()
            if ("topic", "data") in k[1]}
    assert data == pytest.approx({"0.1": 2, "1": 3, "10": 4, "+Inf": 5,
                                  "rs_latency_seconds_sum": 55.65, "rs_latency_seconds_count": 5})
    assert got[("rs_latency_seconds_bucket", (("le", "0.1"), ("topic", "alarm")))] == 0
    assert got[("rs_latency_seconds_bucket", (("le", "1"), ("topic", "alarm")))] == 1
    assert got[("rs_latency_seconds_count", (("topic", "alarm"),))] == 1


def test_label_values_and_help_are_escaped() -> None:
    """Quotes, backslashes and newlines in label values and help text survive the round trip."""
    nasty = 'say "hi"\\path\\n\nnext line ü'
    reg = Registry()
    reg.gauge("rs_port_open", 'Ports; help with \\ and\na newline and "quotes".',
              ("port",)).set(1, port=nasty)
    reg.collector(lambda: [Family.counter("rs_c", "C.", ("x",)).add(2, x=nasty)], name="c")
    fams = parse(asyncio.run(reg.render()))
    assert fams["rs_port_open"].documentation == \
        'Ports; help with \\ and\na newline and "quotes".'
    assert samples(fams["rs_port_open"]) == {("rs_port_open", (("port", nasty),)): 1.0}
    assert samples(fams["rs_c"]) == {("rs_c_total", (("x", nasty),)): 2.0}


def test_sync_and_async_collectors_render_at_scrape_time() -> None:
    """Collectors run at each scrape; an async one may await another thread (the store's)."""
    bad = {"tag": 1}
    records = [5]

    def verifier() -> list[Family]:
        fam = Family.counter("rs_bad", "Refused.", ("reason",))
        for reason, n in bad.items():
            fam.add(n, reason=reason)
        return [fam]

    async def store() -> list[Family]:
        n = await asyncio.to_thread(lambda: records[0])
        return [Family.gauge("rs_queue_records", "Records.").add(n)]

    reg = Registry()
    assert reg.collector(verifier) is verifier
    reg.collector(store)
    first = asyncio.run(reg.render())
    bad.update(tag=4, crc=2)
    records[0] = 0
    fams = parse(asyncio.run(reg.render()))
    assert samples(parse(first)["rs_queue_records"]) == {("rs_queue_records", ()): 5}
    assert samples(fams["rs_bad"]) == {("rs_bad_total", (("reason", "tag"),)): 4,
                                       ("rs_bad_total", (("reason", "crc"),)): 2}
    assert samples(fams["rs_queue_records"]) == {("rs_queue_records", ()): 0}
    assert errors_of(asyncio.run(reg.render()), "verifier") == 0


def test_failing_collectors_are_counted_and_the_rest_renders(
        caplog: pytest.LogCaptureFixture) -> None:
    """Raising, hanging, mistyped and name-clashing collectors are left out, counted, logged."""
    def boom() -> list[Family]:
        raise RuntimeError("store closed")

    async def hangs() -> list[Family]:
        await asyncio.Event().wait()
        return []

    def mistyped() -> list[Family]:
        return ["not a family"]   # type: ignore[list-item]

    def clash() -> list[Family]:
        return [Family.gauge("rs_ok", "Taken by the registered gauge.").add(9),
                Family.gauge("rs_extra", "Fine.").add(3)]

    reg = Registry(collect_timeout_s=0.05)
    reg.gauge("rs_ok", "Registered.").set(1)
    for fn in (boom, hangs, mistyped, clash):
        reg.collector(fn)
    reg.collector(lambda: [Family.gauge("rs_good", "Good.").add(2)], name="good")
    with caplog.at_level(logging.WARNING, logger="gateway.metrics"):
        asyncio.run(reg.render())
        text = asyncio.run(reg.render())
    fams = parse(text)
    assert samples(fams["rs_ok"]) == {("rs_ok", ()): 1}
    assert samples(fams["rs_extra"]) == {("rs_extra", ()): 3}
    assert samples(fams["rs_good"]) == {("rs_good", ()): 2}
    for name in ("boom", "hangs", "mistyped", "clash"):
        assert errors_of(text, name) == 2, name
    assert errors_of(text, "good") == 0
    boom_logs = [r for r in caplog.records if "collector boom failed" in r.getMessage()]
    assert len(boom_logs) == 2 and "store closed" in boom_logs[0].getMessage()
    assert boom_logs[0].exc_info is not None and not boom_logs[1].exc_info   # traceback once


@pytest.mark.parametrize(("make", "message"), [
    (lambda r: r.counter("1abc", "h"), "metric name '1abc' is invalid"),
    (lambda r: r.gauge("a-b", "h"), "metric name 'a-b' is invalid"),
    (lambda r: r.gauge("g", "h", ("__x",)), "label name '__x' is invalid"),
    (lambda r: r.gauge("g", "h", ("a-b",)), "label name 'a-b' is invalid"),
    (lambda r: r.gauge("g", "h", ("a", "a")), "repeat a name"),
    (lambda r: r.histogram("h", "h", (1,), ("le",)), "label name 'le' is reserved"),
    (lambda r: r.counter("c", "h", ("amount",)), "label name 'amount' is reserved"),
    (lambda r: r.histogram("h", "h", ()), "must be finite and strictly ascending"),
    (lambda r: r.histogram("h", "h", (2, 1)), "must be finite and strictly ascending"),
    (lambda r: r.histogram("h", "h", (1, 1)), "must be finite and strictly ascending"),
    (lambda r: r.histogram("h", "h", (float("nan"),)), "must be finite and strictly ascending"),
    (lambda r: (r.gauge("x", "h"), r.gauge("x", "h")), "['x'] already registered"),
    (lambda r: (r.counter("x", "h"), r.counter("x_total", "h")), "already registered"),
    (lambda r: (r.histogram("x", "h", (1,)), r.gauge("x_count", "h")), "already registered"),
    (lambda r: r.counter(COLLECTOR_ERRORS, "h"), "already registered"),
    (lambda r: r.counter("c", "h", ("port",)).inc(port="a", node=1), "labels ['node', 'port']"),
    (lambda r: r.counter("c", "h", ("port",)).inc(), "labels [] given, ['port'] expected"),
    (lambda r: r.counter("c", "h").inc(-1), "a counter only goes up"),
    (lambda r: Family("histogram", "h", "h").add(1), "make histograms with Registry"),
    (lambda r: (r.collector(list), r.collector(list)), "collector 'list' already registered"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_names_labels_and_updates_are_refused(make: Callable[[Registry], object],
                                                  message: str) -> None:
    """Invalid or duplicate names, wrong labels and bad updates raise ValueError naming them."""
    with pytest.raises(ValueError) as info:
        make(Registry())
    assert message in str(info.value)


def test_scrape_over_http() -> None:
    """GET /metrics serves the rendered text with the 0.0.4 content type; / links to it."""
    async def main() -> None:
        reg = Registry()
        reg.counter("rs_frames", "Frames.", ("port",)).inc(3, port="/dev/ttyUSB0")
        async with MetricsServer(reg, "127.0.0.1", 0) as server:
            status, headers, body = await http(server.port, get("/metrics"))
            assert (status, headers["content-type"]) == (200, CONTENT_TYPE)
            assert headers["connection"] == "close"
            assert int(headers["content-length"]) == len(body)
            assert samples(parse(body.decode())["rs_frames"]) == \
                {("rs_frames_total", (("port", "/dev/ttyUSB0"),)): 3}
            status, _, body2 = await http(server.port, get("/metrics?debug=1"))
            assert status == 200 and body2 == body
            status, headers, page = await http(server.port, get("/"))
            assert status == 200 and b'href="/metrics"' in page
            assert headers["content-type"].startswith("text/html")
            status, headers, empty = await http(server.port, b"HEAD /metrics HTTP/1.0\r\n\r\n")
            assert (status, empty, int(headers["content-length"])) == (200, b"", len(body))
    run(main())


@pytest.mark.parametrize(("request_bytes", "status"), [
    (get("/nope"), 404),
    (get("/metrics/"), 404),
    (b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 405),
    (b"DELETE / HTTP/1.1\r\n\r\n", 405),
    (b"garbage\r\n\r\n", 400),
    (b"GET /metrics HTTP/2.0\r\n\r\n", 400),
    (b"GET metrics HTTP/1.1\r\n\r\n", 400),
    (b"GET  /metrics HTTP/1.1\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n", 431),
], ids=["404", "404-slash", "405-post", "405-delete", "400-garbage", "400-version",
        "400-target", "400-spaces", "400-header", "431-oversize"])
def test_http_errors(request_bytes: bytes, status: int) -> None:
    """Unknown paths, other methods, malformed and oversized heads get their status and close."""
    async def main() -> None:
        async with MetricsServer(Registry(), "127.0.0.1", 0) as server:
            got, headers, body = await http(server.port, request_bytes)
            assert (got, headers["connection"]) == (status, "close"), body
            if status == 405:
                assert headers["allow"] == "GET, HEAD"
            # The server is still fine afterwards.
            assert (await http(server.port, get("/metrics")))[0] == 200
    run(main())


def test_silent_client_does_not_block_other_scrapes() -> None:
    """A connected client that sends nothing does not delay another client's scrape."""
    async def main() -> None:
        async with MetricsServer(Registry(), "127.0.0.1", 0, read_timeout_s=3600) as server:
            silent_r, silent_w = await asyncio.open_connection("127.0.0.1", server.port)
            assert (await http(server.port, get("/metrics")))[0] == 200
        # Leaving the context closed the silent connection too.
        async with asyncio.timeout(GUARD_S):
            assert await silent_r.read() == b""
        silent_w.close()
    run(main())


def test_silent_and_slow_clients_are_dropped_after_the_timeout() -> None:
    """Clients that send nothing, or dribble their head, get 408 and are disconnected."""
    async def dribble(writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            for byte in b"GET /metrics HTTP/1.1\r\n":
                writer.write(bytes([byte]))
                await asyncio.sleep(0.05)

    async def main() -> None:
        async with MetricsServer(Registry(), "127.0.0.1", 0, read_timeout_s=0.2) as server:
            silent_r, silent_w = await asyncio.open_connection("127.0.0.1", server.port)
            slow_r, slow_w = await asyncio.open_connection("127.0.0.1", server.port)
            writer_task = asyncio.create_task(dribble(slow_w))
            async with asyncio.timeout(GUARD_S):
                silent = await silent_r.read()
                slow = await slow_r.read()
            writer_task.cancel()
            assert silent.startswith(b"HTTP/1.1 408 ") and slow.startswith(b"HTTP/1.1 408 ")
            silent_w.close()
            slow_w.close()
    run(main())


def test_too_many_clients_get_503() -> None:
    """Beyond max_clients connections at once, a client gets 503 instead of being queued."""
    async def main() -> None:
        async with MetricsServer(Registry(), "127.0.0.1", 0, read_timeout_s=3600,
                                 max_clients=1) as server:
            _, held = await asyncio.open_connection("127.0.0.1", server.port)
            assert (await http(server.port, get("/metrics")))[0] == 503
            held.close()
    run(main())


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
def test_ipv6_loopback() -> None:
    """The server listens on an IPv6 host such as ::1 (metrics.listen = "[::1]:9108")."""
    async def main() -> None:
        async with MetricsServer(Registry(), "::1", 0) as server:
            assert (await http(server.port, get("/metrics"), host="::1"))[0] == 200
    run(main())


def test_port_in_use_names_the_config_key_and_the_fix() -> None:
    """Binding a port another socket listens on raises GatewayError naming metrics.listen."""
    async def main() -> None:
        with socket.socket() as other:
            other.bind(("127.0.0.1", 0))
            other.listen()
            port = other.getsockname()[1]
            with pytest.raises(GatewayError) as info:
                async with MetricsServer(Registry(), "127.0.0.1", port):
                    pass
        message = str(info.value)
        assert message.startswith(f"metrics.listen: cannot listen on 127.0.0.1:{port} ")
        assert "set metrics.listen to a free port" in message and "ss -ltnp" in message
    run(main())


def test_foreign_address_names_the_fix() -> None:
    """Listening on an address this machine does not have says so (EADDRNOTAVAIL)."""
    async def main() -> None:
        with pytest.raises(GatewayError, match=r"metrics.listen: cannot listen on "
                           r"192\.0\.2\.1:9108 .*192\.0\.2\.1 is no address of this machine"):
            async with MetricsServer(Registry(), "192.0.2.1", 9108):
                pass
    run(main())
