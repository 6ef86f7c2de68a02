"""Prometheus metrics: a registry of families and a small HTTP server for ``GET /metrics``.

No third-party server: text format 0.0.4 is simple to write. All on the event loop's thread.

A `Registry` holds families fed two ways: objects updated as things happen (`Counter.inc`,
`Gauge.set`, `Histogram.observe`), label values as keywords (``refused.inc(reason="tag")``);
and collectors, ``registry.collector(fn)``, called at each scrape to return `Family` objects
(counters, gauges) built from state kept elsewhere; an ``async def`` one (the store is read on
its worker thread) has ``collect_timeout_s``. A collector that raises, times out or returns a
taken name is left out of that scrape, logged (traceback the first time) and counted in
``roadside_gateway_metrics_collector_errors_total``. Registration checks names (Prometheus
regexes; no ``__`` labels, ``le`` on histograms, ``amount``/``value`` shadowing a parameter)
and refuses sample names clashing with a registered family's. Counters are named without
``_total`` and written as ``x_total``, TYPE line too, as prometheus_client does.

`MetricsServer` (async context manager): one task and one request per connection, always
``Connection: close``. The request head (<= ``max_head_b``, else 431) must arrive within
``read_timeout_s`` (else 408), so a silent or slow client never delays another scrape; at
most ``max_clients`` at once (else 503). ``GET``/``HEAD /metrics`` -> 200, ``/`` -> a link
to it, other paths 404, other methods 405, malformed 400. After an error reply the server
half-closes and discards the client's leftovers a moment, so it reads the reply, not a reset.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import errno
import itertools
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Literal, Self, TypeVar

from gateway.errors import GatewayError

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
COLLECTOR_ERRORS = "roadside_gateway_metrics_collector_errors"   # exposed with _total
COLLECT_TIMEOUT_S = 5.0      # an async collector's time to answer, per scrape
READ_TIMEOUT_S = 5.0         # a client's time to send its request head (and read the reply)
MAX_HEAD_B = 8192            # request line + headers
MAX_CLIENTS = 16             # connections served at once
_LINGER_S = 1.0              # after an error reply: discard the client's leftovers this long

Kind = Literal["counter", "gauge", "histogram"]
LabelValue = str | int
_Labels = tuple[tuple[str, str], ...]
_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_SUFFIXES: Mapping[Kind, tuple[str, ...]] = {
    "counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
_RESERVED = frozenset({"amount", "value"})   # parameter names of inc/set/observe


def _num(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return str(int(v)) if v == int(v) and abs(v) < 1e15 else repr(float(v))


def _esc(s: str, quote: bool) -> str:
    s = s.replace("\\", "\\\\").replace("\n", "\\n")
    return s.replace('"', '\\"') if quote else s


class Family:
    """One metric family and its samples: what collectors return and what is rendered.

    ``Family.counter("roadside_gateway_frames_bad", "Refused frames.", ("reason",))`` then
    ``.add(n, reason="tag")`` per sample (`add` returns the family). Counters and gauges only.
    """

    def __init__(self, kind: Kind, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        if kind == "counter" and name.endswith("_total"):
            name = name[:-6]
        if not _NAME_RE.match(name):
            raise ValueError(f"metric name {name!r} is invalid; use [a-zA-Z_:][a-zA-Z0-9_:]*")
        for label in labelnames:
            if not _LABEL_RE.match(label) or label.startswith("__"):
                raise ValueError(f"{name}: label name {label!r} is invalid; use "
                                 "[a-zA-Z_][a-zA-Z0-9_]* not starting with __")
            if label in _RESERVED or (kind == "histogram" and label == "le"):
                raise ValueError(f"{name}: label name {label!r} is reserved; rename it")
        if len(set(labelnames)) != len(labelnames):
            raise ValueError(f"{name}: label names {list(labelnames)} repeat a name")
        self.kind: Kind = kind
        self.name, self.help, self.labelnames = name, help, tuple(labelnames)
        self.samples: list[tuple[str, _Labels, float]] = []   # (suffix, labels, value)

    @classmethod
    def counter(cls, name: str, help: str, labelnames: Sequence[str] = ()) -> Family:
        """An empty counter family (name without ``_total``)."""
        return cls("counter", name, help, labelnames)

    @classmethod
    def gauge(cls, name: str, help: str, labelnames: Sequence[str] = ()) -> Family:
        """An empty gauge family."""
        return cls("gauge", name, help, labelnames)

    def sample_names(self) -> set[str]:
        """The names its samples are written under."""
        return {self.name + s for s in _SUFFIXES[self.kind]}

    def labels(self, labels: Mapping[str, LabelValue]) -> _Labels:
        """Label pairs in label-name order; raises ValueError unless exactly the label names."""
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name}: labels {sorted(labels)} given, "
                             f"{list(self.labelnames)} expected")
        return tuple((n, str(labels[n])) for n in self.labelnames)

    def add(self, value: float, **labels: LabelValue) -> Family:
        """Adds one counter or gauge sample; returns the family."""
        if self.kind == "histogram":
            raise ValueError(f"{self.name}: collectors return counters and gauges; "
                             "make histograms with Registry.histogram")
        self.samples.append((_SUFFIXES[self.kind][0], self.labels(labels), float(value)))
        return self

    def render(self, out: list[str]) -> None:
        """Appends the family's exposition lines to `out`."""
        head = self.name + ("_total" if self.kind == "counter" else "")
        out.append(f"# HELP {head} {_esc(self.help, False)}\n# TYPE {head} {self.kind}\n")
        for suffix, labels, value in self.samples:
            text = ",".join(f'{n}="{_esc(v, True)}"' for n, v in labels)
            out.append(f"{self.name}{suffix}{{{text}}} {_num(value)}\n" if text
                       else f"{self.name}{suffix} {_num(value)}\n")


class _Metric:
    """A family whose values live here, updated by the code; unlabelled ones start at 0."""

    kind: Kind = "gauge"

    def __init__(self, name: str, help: str, labelnames: Sequence[str]) -> None:
        self._proto = Family(self.kind, name, help, labelnames)
        self.name = self._proto.name
        self._values: dict[_Labels, float] = {} if labelnames else {(): 0.0}

    def _bump(self, amount: float, labels: Mapping[str, LabelValue]) -> None:
        key = self._proto.labels(labels)
        self._values[key] = self._values.get(key, 0.0) + amount

    def collect(self) -> Family:
        """A snapshot as a family."""
        fam = Family(self.kind, self.name, self._proto.help, self._proto.labelnames)
        fam.samples = [(_SUFFIXES[self.kind][0], k, v) for k, v in self._values.items()]
        return fam


class Counter(_Metric):
    """A total that only goes up."""

    kind: Kind = "counter"

    def inc(self, amount: float = 1.0, **labels: LabelValue) -> None:
        """Adds `amount` (>= 0) to the counter with these labels."""
        if not amount >= 0:
            raise ValueError(f"{self.name}: a counter only goes up; inc({amount}) refused")
        self._bump(amount, labels)


class Gauge(_Metric):
    """A value that goes up and down."""

    def set(self, value: float, **labels: LabelValue) -> None:
        """Sets the gauge with these labels."""
        self._values[self._proto.labels(labels)] = float(value)


class Histogram(_Metric):
    """Observations counted in fixed buckets (upper bounds, ``le``), and their sum."""

    kind: Kind = "histogram"

    def __init__(self, name: str, help: str, buckets: Sequence[float],
                 labelnames: Sequence[str]) -> None:
        super().__init__(name, help, labelnames)
        bounds = [float(b) for b in buckets if b != math.inf]
        if not bounds or bounds != sorted(set(bounds)) or not all(map(math.isfinite, bounds)):
            raise ValueError(f"{name}: buckets {list(buckets)} must be finite and strictly "
                             "ascending, e.g. (0.01, 0.1, 1, 10)")
        self.bounds = tuple(bounds)
        # Per label set: counts per bucket (not cumulative; the last is +Inf); sums in _values.
        self._counts = {k: [0] * (len(bounds) + 1) for k in self._values}

    def observe(self, value: float, **labels: LabelValue) -> None:
        """Counts `value` in the first bucket whose bound is >= value."""
        key = self._proto.labels(labels)
        counts = self._counts.setdefault(key, [0] * (len(self.bounds) + 1))
        counts[bisect.bisect_left(self.bounds, value)] += 1
        self._bump(value, labels)

    def collect(self) -> Family:
        """A snapshot as a family, buckets cumulative."""
        fam = Family("histogram", self.name, self._proto.help, self._proto.labelnames)
        for key, counts in self._counts.items():
            cumulative = itertools.accumulate(counts)
            for bound, n in zip((*self.bounds, math.inf), cumulative, strict=True):
                fam.samples.append(("_bucket", (*key, ("le", _num(bound))), n))
            fam.samples += [("_sum", key, self._values[key]), ("_count", key, sum(counts))]
        return fam


Collector = Callable[[], Iterable[Family] | Awaitable[Iterable[Family]]]
_C = TypeVar("_C", bound=Collector)
_M = TypeVar("_M", bound=_Metric)


class Registry:
    """The families one endpoint exposes (see the module documentation)."""

    def __init__(self, *, collect_timeout_s: float = COLLECT_TIMEOUT_S) -> None:
        self._metrics: list[_Metric] = []
        self._names: set[str] = set()
        self._collectors: dict[str, Collector] = {}
        self._failed: set[str] = set()          # collectors whose traceback was logged
        self._collect_timeout_s = collect_timeout_s
        self.collector_errors = self.counter(
            COLLECTOR_ERRORS, "Metrics collectors that failed during a scrape (left out).",
            ("collector",))

    def _add(self, metric: _M) -> _M:
        names = metric.collect().sample_names()
        if taken := names & self._names:
            raise ValueError(f"metric {metric.name}: {sorted(taken)} already registered; "
                             "choose another name")
        self._names |= names
        self._metrics.append(metric)
        return metric

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        """Registers a counter (name without ``_total``)."""
        return self._add(Counter(name, help, labelnames))

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        """Registers a gauge."""
        return self._add(Gauge(name, help, labelnames))

    def histogram(self, name: str, help: str, buckets: Sequence[float],
                  labelnames: Sequence[str] = ()) -> Histogram:
        """Registers a histogram with these bucket upper bounds (``+Inf`` is added)."""
        return self._add(Histogram(name, help, buckets, labelnames))

    def collector(self, fn: _C, *, name: str | None = None) -> _C:
        """Registers `fn` (sync or async, returning families); `name` labels its errors."""
        key = name or str(getattr(fn, "__name__", fn))
        if key in self._collectors:
            raise ValueError(f"collector {key!r} already registered; pass name=")
        self._collectors[key] = fn
        return fn

    async def _collect(self, key: str, fn: Collector) -> list[Family]:
        result = fn()
        if isinstance(result, Awaitable):
            async with asyncio.timeout(self._collect_timeout_s):
                families = list(await result)
        else:
            families = list(result)
        for fam in families:
            if not isinstance(fam, Family):
                raise TypeError(f"collector {key} returned {type(fam).__name__}, not Family")
        return families

    def _failure(self, key: str, exc: Exception | str) -> None:
        self.collector_errors.inc(collector=key)
        first, text = key not in self._failed, exc if isinstance(exc, str) else repr(exc)
        self._failed.add(key)   # the traceback only the first time (called in an except:)
        log.warning("metrics collector %s failed, left out of this scrape: %s", key, text,
                    exc_info=first and not isinstance(exc, str))

    async def render(self) -> str:
        """Runs the collectors and returns the exposition text (format 0.0.4)."""
        used = set(self._names)
        collected: list[Family] = []
        for key, fn in list(self._collectors.items()):
            try:
                families = await self._collect(key, fn)
            except TimeoutError:
                self._failure(key, f"no answer within {self._collect_timeout_s} s")
                continue
            except Exception as exc:
                self._failure(key, exc)
                continue
            for fam in families:
                if taken := fam.sample_names() & used:
                    self._failure(key, f"family {fam.name}: {sorted(taken)} already taken")
                    continue
                used |= fam.sample_names()
                collected.append(fam)
        out: list[str] = []
        for fam in [m.collect() for m in self._metrics] + collected:
            fam.render(out)
        return "".join(out)


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}
_INDEX = b'<html><body>roadside-gateway: <a href="/metrics">/metrics</a></body></html>\n'


class _HTTPError(Exception):
    """An error reply; args: (status, text)."""


_BIND_FIXES = {
    errno.EADDRINUSE: "another process listens there (`ss -ltnp 'sport = :{port}'` names it); "
                      'stop it, or set metrics.listen to a free port, or "" to disable metrics',
    errno.EADDRNOTAVAIL: '{host} is no address of this machine; use "127.0.0.1:{port}"',
    errno.EACCES: "ports below 1024 need privileges; use one above, the default is 9108"}


def _bind_message(host: str, port: int, exc: OSError) -> str:
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    fix = _BIND_FIXES.get(exc.errno or 0, 'use e.g. "127.0.0.1:9108", or "" to disable metrics')
    return (f"metrics.listen: cannot listen on {where} ({exc.strerror or exc}); "
            + fix.format(host=host, port=port))


class MetricsServer:
    """Serves a registry over HTTP/1.1 on host:port while the context is open."""

    def __init__(self, registry: Registry, host: str, port: int, *,
                 read_timeout_s: float = READ_TIMEOUT_S, max_head_b: int = MAX_HEAD_B,
                 max_clients: int = MAX_CLIENTS) -> None:
        self._registry, self._host, self._port = registry, host, port
        self._read_timeout_s, self._max_head_b = read_timeout_s, max_head_b
        self._max_clients = max_clients
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None, "MetricsServer is not running"
        return int(self._server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> Self:
        try:
            self._server = await asyncio.start_server(
                self._client, self._host, self._port, limit=self._max_head_b)
        except OSError as exc:
            raise GatewayError(_bind_message(self._host, self._port, exc)) from exc
        host = f"[{self._host}]" if ":" in self._host else self._host or "0.0.0.0"
        log.info("metrics served at http://%s:%d/metrics", host, self.port)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in self._clients:
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            try:
                if len(self._clients) > self._max_clients:
                    raise _HTTPError(503, f"over {self._max_clients} clients at once; retry\n")
                method, path = await self._request(reader)
                status, body, head_only = 200, await self._body(path), method == "HEAD"
                ctype = CONTENT_TYPE if path == "/metrics" else "text/html; charset=utf-8"
            except _HTTPError as exc:
                status, body, head_only = exc.args[0], exc.args[1].encode(), False
                ctype = "text/plain; charset=utf-8"
            await self._send(writer, status, body, ctype, head_only=head_only)
            if status >= 400 and status != 408:
                await self._linger(reader, writer)
        except (ConnectionError, TimeoutError) as exc:
            log.debug("metrics client dropped: %r", exc)
        finally:
            self._clients.discard(task)
            writer.close()

    async def _request(self, reader: asyncio.StreamReader) -> tuple[str, str]:
        try:
            async with asyncio.timeout(self._read_timeout_s):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            raise _HTTPError(408, f"no request within {self._read_timeout_s} s\n") from None
        except asyncio.LimitOverrunError:
            raise _HTTPError(431, f"request head over {self._max_head_b} bytes\n") from None
        except asyncio.IncompleteReadError:
            raise ConnectionResetError("closed before a full request head") from None
        lines = head[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not _TOKEN_RE.match(parts[0]) or not parts[1].startswith("/") \
                or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
            raise _HTTPError(400, "malformed request line; expected GET /metrics HTTP/1.1\n")
        method, target, _ = parts
        for line in lines[1:]:
            name, colon, _ = line.partition(":")
            if not colon or not _TOKEN_RE.match(name):
                raise _HTTPError(400, f"malformed header line {line[:80]!r}\n")
        if method not in ("GET", "HEAD"):
            raise _HTTPError(405, "only GET and HEAD\n")
        return method, target.partition("?")[0]

    async def _body(self, path: str) -> bytes:
        if path == "/":
            return _INDEX
        if path != "/metrics":
            raise _HTTPError(404, "not found; metrics are at /metrics\n")
        try:
            return (await self._registry.render()).encode()
        except Exception:
            log.exception("metrics rendering failed")
            raise _HTTPError(500, "metrics rendering failed; see the gateway log\n") from None

    async def _send(self, writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str,
                    *, head_only: bool) -> None:
        head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n")
        if status == 405:
            head += "Allow: GET, HEAD\r\n"
        writer.write(head.encode() + b"\r\n" + (b"" if head_only else body))
        try:
            async with asyncio.timeout(self._read_timeout_s):
                await writer.drain()
        except TimeoutError:
            writer.transport.abort()     # a client that does not read its reply
            raise

    async def _linger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Half-close, then discard what the client still sends: closing a socket with unread
        # input would reset the connection, and the client could lose the reply.
        with contextlib.suppress(TimeoutError, OSError):
            writer.write_eof()
            async with asyncio.timeout(_LINGER_S):
                while await reader.read(65536):
                    pass
