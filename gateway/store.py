"""Durable queue of the gateway: verified uplink records on disk between the node's ack and PUBACK.

The store is one SQLite file in WAL mode. Its promises, and how each is kept:

Persist before ack.
    `add_batch` writes many records in one transaction (group commit) and returns only after
    COMMIT. The connection runs with ``synchronous=FULL``: in WAL mode that syncs the WAL on
    every commit, so a committed batch survives a power cut. ``NORMAL`` would sync only at
    checkpoints and a commit could roll back after power loss; the ack we send the node is a
    promise that the node may now forget the frame, so only ``FULL`` keeps it. Group commit
    pays the one fsync per batch instead of per record.

Stored once (SPEC section 6).
    Per (node, boot) the store keeps a floor and a 64-bit map of every seq it ever accepted
    (``protocol.replay.ReplayGuard`` logic, persisted in table ``seen`` in the same transaction
    as the records). A record covered by it is a duplicate whether it is still queued or was
    published and deleted long ago, also across restarts: `add_batch` reports it as not new and
    the caller acks it again. A seq more than 64 above the floor moves the floor; SPEC 9.3 keeps
    a conforming node from ever sending a seq it still holds below that. The rows are small and
    never pruned (one per boot of each node). Table ``frames`` itself has no UNIQUE (node,
    boot, seq) index since schema 2: ``seen`` already decides in the same transaction, and the
    index cost a third of every insert and delete (a store of schema 1 is migrated on open).

Delete on PUBACK only.
    `take` hands records out (alarms first, then the oldest) and remembers them as in flight
    until `confirm` (PUBACK: delete) or `release` (publish failed: hand out again). In-flight
    state lives in memory: after a restart every record is handed out again (at least once).
    The bound policy never drops an in-flight record.

Bounded by bytes and age; overflow policy (`enforce_bounds`), in this order:
    1. Age: routine records (priority 0) older than ``max_age_s`` are dropped (reason
       ``age``); alarms and hellos (priority 1) are kept ``ALARM_AGE_FACTOR`` (10) times
       longer, because they are rare, small and still evidence long after the event.
    2. Thinning: while the accounted bytes exceed ``max_bytes``, a sweep walks the oldest
       half of the routine records (by arrival) and drops every second record of each
       stream (node, boot, kind), halving their resolution (reason ``thinned``). A sweep
       stops as soon as enough is freed and resumes where it stopped on the next call (its
       cursor is persisted), so the oldest half is halved once before any sweep starts over;
       the older the data, the coarser it gets, and recent data keeps full resolution.
       When a half sweep finds nothing to thin, one sweep covers all routine records.
    3. Overflow: if every routine stream is down to one record, routine records are dropped
       oldest first, and only then alarms, oldest first (reason ``overflow``).
    Accounted bytes are payload bytes plus ``ROW_OVERHEAD_B`` per record (row, indexes and
    page slack, measured); the file does not shrink when records are deleted, SQLite reuses
    the free pages. Between calls the store can exceed ``max_bytes`` by what arrived since,
    so call `enforce_bounds` after each `add_batch` (it is cheap when within bounds).
    Ages use the gateway's clock (``received_ms``); a record stamped in the future (the clock
    stepped back) is never too old, but a clock stepping forward (first NTP sync on a Pi
    without RTC) ages everything at once: call `enforce_bounds` with a synchronised clock.

Every drop counted and reported.
    Each dropped record is counted per (node, reason) in table ``drops`` and its seq joins a
    gap report (node, boot, reason, seq ranges), merged into the newest pending report of the
    same key while that one is not in flight. Gap reports persist until `confirm_gaps`.

Downlink seq (SPEC 8).
    `next_downlink_seq` never repeats a seq for a (node, boot), across restarts included: it
    reserves blocks of ``DOWNLINK_BLOCK`` seqs on disk (committed before any is handed out),
    so a restart skips at most one block.

Disk full.
    SQLite's "database or disk is full" surfaces as `StoreFullError`; the transaction is rolled
    back whole (nothing of that batch is stored, so nothing of it may be acked), and the store
    stays usable once space is freed (by `confirm`, `enforce_bounds` or the operator). After
    any failed write the WAL is checkpointed and truncated, so that deletes (which need WAL
    room too) can free space again.

Threads: a Store is not thread-safe. Calls must never overlap; the gateway makes them from one
worker (a single-thread executor, or `asyncio.to_thread` with calls awaited one at a time).
The connection is opened with ``check_same_thread=False`` because that worker thread may differ
from the one that opened it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import GatewayError
from protocol.errors import ProtocolError
from protocol.replay import ReplayGuard

SCHEMA_VERSION = 2
ALARM_AGE_FACTOR = 10        # alarms and hellos are kept this many times max_age_s
ROW_OVERHEAD_B = 96          # accounted bytes per record on top of its payload (see module doc)
DOWNLINK_BLOCK = 32          # downlink seqs reserved on disk per commit
GAP_RANGES_MAX = 256         # seq ranges per gap report, so each is a modest MQTT message
ROUTINE = 0
ALARM = 1
DROP_AGE = "age"
DROP_THINNED = "thinned"
DROP_OVERFLOW = "overflow"

_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF
_SWEEP_ROWS = 256            # rows read per step of a thinning sweep
_DELETE_CHUNK = 500          # ids per DELETE statement (one statement per batch, not per id)
_ALARMS_BY_ID = "INDEXED BY frames_alarms WHERE priority = 1 ORDER BY id"
_ALL_BOOTS = 1 << 31         # ReplayGuard never forgets a boot here: the store is the last judge

_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE frames (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: a stale id cannot hit a new row
    node INTEGER NOT NULL, boot INTEGER NOT NULL, seq INTEGER NOT NULL,
    kind INTEGER NOT NULL, priority INTEGER NOT NULL, received_ms INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX frames_alarms ON frames (id) WHERE priority = 1;
CREATE INDEX frames_age ON frames (priority, received_ms);
CREATE TABLE seen (node INTEGER, boot INTEGER, floor INTEGER NOT NULL, bits INTEGER NOT NULL,
                   PRIMARY KEY (node, boot)) WITHOUT ROWID;
CREATE TABLE downlink (node INTEGER, boot INTEGER, reserved INTEGER NOT NULL,
                       PRIMARY KEY (node, boot)) WITHOUT ROWID;
CREATE TABLE replay (node INTEGER, boot INTEGER, floor INTEGER NOT NULL, bits INTEGER NOT NULL,
                     PRIMARY KEY (node, boot)) WITHOUT ROWID;
CREATE TABLE drops (node INTEGER, reason TEXT, count INTEGER NOT NULL,
                    PRIMARY KEY (node, reason)) WITHOUT ROWID;
CREATE TABLE gaps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node INTEGER NOT NULL, boot INTEGER NOT NULL, reason TEXT NOT NULL,
    ranges TEXT NOT NULL, count INTEGER NOT NULL, first_ms INTEGER NOT NULL,
    last_ms INTEGER NOT NULL
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
"""
# Schema 1 -> 2: frames without UNIQUE (node, boot, seq), alarms in a partial index. Routine
# records are read in rowid order (queries write ``+priority`` so that the planner walks the
# rowid instead of an index and a sort).
_MIGRATE_1_2 = """
CREATE TABLE frames_v2 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node INTEGER NOT NULL, boot INTEGER NOT NULL, seq INTEGER NOT NULL,
    kind INTEGER NOT NULL, priority INTEGER NOT NULL, received_ms INTEGER NOT NULL,
    payload BLOB NOT NULL
);
INSERT INTO frames_v2 SELECT * FROM frames;
DROP TABLE frames;
ALTER TABLE frames_v2 RENAME TO frames;
CREATE INDEX frames_alarms ON frames (id) WHERE priority = 1;
CREATE INDEX frames_age ON frames (priority, received_ms);
UPDATE schema_version SET version = 2;
"""


class StoreError(GatewayError):
    """The durable store failed (cannot open, corrupt, I/O error); the message says where."""


class StoreFullError(StoreError):
    """The disk or the database is full: the batch was not stored and must not be acked."""


# Made per frame: slots and no frozen (a frozen dataclass sets each field through
# object.__setattr__, 4x the cost of this one's __init__). Treat it as read-only.
@dataclass(slots=True)
class Record:
    """One verified uplink record; `payload` is the authenticated message as received."""

    node: int
    boot: int
    seq: int
    kind: int                # message type (SPEC 5.1 kind)
    priority: int            # ROUTINE (0) or ALARM (1: alarm, hello)
    received_ms: int         # gateway UTC milliseconds at reception
    payload: bytes
    id: int = 0              # row id once stored; 0 for a record not read from the store


@dataclass(frozen=True)
class GapReport:
    """Records of one (node, boot) dropped for one reason: seq ranges, both ends included."""

    id: int
    node: int
    boot: int
    reason: str
    ranges: tuple[tuple[int, int], ...]
    count: int
    first_ms: int            # gateway time of the first and last drop it reports
    last_ms: int


@dataclass(frozen=True)
class DropReport:
    """What one `enforce_bounds` call dropped."""

    dropped: dict[str, int] = field(default_factory=dict)     # reason -> records
    by_node: dict[int, int] = field(default_factory=dict)     # node -> records
    freed_bytes: int = 0
    over_bytes: int = 0      # accounted bytes still above max_bytes (all of it in flight)
    gaps: int = 0            # gap reports created or extended

    @property
    def total(self) -> int:
        """Records dropped by this call."""
        return sum(self.dropped.values())


@dataclass(frozen=True)
class StoreStats:
    """Queue size and drop counters, for metrics."""

    records: int
    bytes: int               # accounted bytes (payload + ROW_OVERHEAD_B per record)
    routine: int
    alarms: int
    in_flight: int
    oldest_age_s: float | None
    gap_reports: int
    dropped: dict[tuple[int, str], int]   # (node, reason) -> records dropped, ever
    full_errors: int         # StoreFullError raised since open


_Victim = tuple[int, int, int, int, int, int]   # id, node, boot, seq, priority, payload bytes


class Store:
    """The gateway's durable queue (see the module documentation). Not thread-safe."""

    def __init__(self, path: Path, max_bytes: int, max_age_s: float) -> None:
        if max_bytes <= 0 or max_age_s <= 0:
            raise ValueError("max_bytes and max_age_s must be positive")
        self.path = path
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._inflight: dict[int, tuple[int, int]] = {}     # id -> (priority, payload bytes)
        self._next_routine = 0      # routine ids below it are in flight or gone (take's cursor)
        self._gaps_inflight: set[int] = set()
        self._downlink: dict[tuple[int, int], list[int]] = {}   # -> [next, reserved]
        self._parity: dict[tuple[int, int, int], bool] = {}
        self.full_errors = 0
        try:
            self._db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=5.0
            )
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot open store {path}: {exc}; check that its directory exists and is writable"
            ) from exc
        try:
            self._open()
        except BaseException:
            self._db.close()
            raise

    def _open(self) -> None:
        db = self._db
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"store {self.path}: WAL mode refused (got {mode})")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA journal_size_limit=4194304")
            with self._txn("create schema"):
                have = db.execute(
                    "SELECT 1 FROM sqlite_master WHERE name = 'schema_version'"
                ).fetchone()
                if have is None:
                    for stmt in _SCHEMA.split(";"):
                        if stmt.strip():
                            db.execute(stmt)
                    db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            version = db.execute("SELECT version FROM schema_version").fetchone()[0]
            if version == 1:
                with self._txn("migrate schema 1 to 2"):
                    for stmt in _MIGRATE_1_2.split(";"):
                        if stmt.strip():
                            db.execute(stmt)
                version = 2
        except sqlite3.Error as exc:
            raise self._error(exc, "open") from exc
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path} has schema {version}, this gateway knows {SCHEMA_VERSION};"
                " use a newer gateway or a new file"
            )
        self._seen = ReplayGuard(_ALL_BOOTS)
        self._seen.load(
            (n, b, f, b_ & _U64) for n, b, f, b_ in db.execute("SELECT * FROM seen")
        )
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        self._cursor = int(meta.get("sweep_cursor", 0))
        self._end = int(meta.get("sweep_end", 0))
        self._swept = bool(meta.get("sweep_dropped", 0))
        self._wide = bool(meta.get("sweep_wide", 0))
        self._count, self._alarms, self._bytes = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(priority), 0), COALESCE(SUM(length(payload)), 0)"
            " FROM frames"
        ).fetchone()
        self._bytes += self._count * ROW_OVERHEAD_B

    @property
    def alarms_stored(self) -> int:
        """Alarms and hellos stored, in flight included (a plain read, safe from any thread)."""
        return int(self._alarms)

    def close(self) -> None:
        """Close the database; committed data is already on disk."""
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions and errors -------------------------------------------------------------

    @contextmanager
    def _txn(self, what: str, durable: bool = True) -> Iterator[sqlite3.Connection]:
        # durable=False: this commit does not fsync the WAL (see confirm); the connection is
        # back at synchronous=FULL before anything else runs.
        try:
            if not durable:
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("BEGIN IMMEDIATE")
            yield self._db
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            self._reclaim_wal()
            raise self._error(exc, what) from exc
        except BaseException:
            self._rollback()
            raise
        finally:
            if not durable:
                with suppress(sqlite3.Error):
                    self._db.execute("PRAGMA synchronous=FULL")

    def _reclaim_wal(self) -> None:
        # A write failed (full disk, quota, I/O error). Every later write, a DELETE included,
        # needs room in the WAL; a checkpoint that truncates it gives that room back, so the
        # PUBACKs that follow can delete rows and the store recovers by itself.
        with suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def _rollback(self) -> None:
        if self._db.in_transaction:
            with suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def _error(self, exc: sqlite3.Error, what: str) -> StoreError:
        code = getattr(exc, "sqlite_errorcode", None)
        if code == sqlite3.SQLITE_FULL or "is full" in str(exc):
            self.full_errors += 1
            return StoreFullError(f"store {self.path}: {what} failed: {exc}")
        return StoreError(f"store {self.path}: {what} failed: {exc}")

    # -- uplink records ------------------------------------------------------------------------

    def add_batch(self, records: Sequence[Record]) -> list[bool]:
        """Store records in one transaction; per record True if new, False if a duplicate.

        Acks may go out only after this returns. Raises StoreFullError (nothing stored).
        """
        for r in records:
            if not (0 <= r.node <= _U32 and 0 <= r.boot <= _U32 and 1 <= r.seq <= _U32):
                raise ValueError(f"record {r.node}/{r.boot}#{r.seq}: identity out of range")
            if r.priority not in (ROUTINE, ALARM):
                raise ValueError(f"record priority must be 0 or 1, not {r.priority!r}")
        if not records:
            return []
        before: dict[tuple[int, int], tuple[int, int]] = {}
        new: list[bool] = []
        rows: list[tuple[int, int, int, int, int, int, bytes]] = []
        alarms = size = 0
        seen = self._seen
        try:
            with self._txn(f"add_batch of {len(records)} records") as db:
                for r in records:
                    key = (r.node, r.boot)
                    if key not in before:
                        before[key] = seen.ack(r.node, r.boot)
                    try:
                        seen.accept(r.node, r.boot, r.seq)
                    except ProtocolError:
                        new.append(False)       # stored before (queued or published)
                        continue
                    new.append(True)
                    rows.append((r.node, r.boot, r.seq, r.kind, r.priority, r.received_ms,
                                 r.payload))
                    alarms += r.priority
                    size += len(r.payload)
                db.executemany(
                    "INSERT INTO frames (node, boot, seq, kind, priority, received_ms, payload)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                db.executemany(
                    "INSERT OR REPLACE INTO seen VALUES (?, ?, ?, ?)",
                    [(n, b, *_signed(*self._seen.ack(n, b))) for n, b in before],
                )
        except BaseException:
            self._seen.load((n, b, f, m) for (n, b), (f, m) in before.items())
            raise
        self._count += len(rows)
        self._alarms += alarms
        self._bytes += size + len(rows) * ROW_OVERHEAD_B
        return new

    def take(self, limit_count: int, limit_bytes: int, alarms_first: bool = True) -> list[Record]:
        """Next records to publish, not yet in flight: alarms first, then oldest first.

        Stops at limit_count records or before limit_bytes of payload (one record at least).
        The records stay stored and in flight until `confirm` or `release`.
        """
        if not alarms_first:
            return self._take(["ORDER BY id"], (), limit_count, limit_bytes)
        # Routine records from the cursor on: the ones below it are in flight (or gone), so a
        # deep in-flight window is not read again at every take.
        out = self._take([_ALARMS_BY_ID,
                          f"WHERE +priority = 0 AND id >= {self._next_routine} ORDER BY id"],
                         (), limit_count, limit_bytes)
        for r in out:
            if r.priority == ROUTINE and r.id >= self._next_routine:
                self._next_routine = r.id + 1
        return out

    def take_alarms(self, limit_count: int, limit_bytes: int) -> list[Record]:
        """Like `take`, but alarms and hellos only (none: an empty list), oldest first.

        Ingest takes the alarms it has just committed in the same worker call, so that they
        reach the batcher without waiting for a take of their own (ingest.py).
        """
        if not self._alarms:
            return []
        try:
            return self._take([_ALARMS_BY_ID], (), limit_count, limit_bytes)
        except sqlite3.Error as exc:
            raise self._error(exc, "take_alarms") from exc

    def take_since(self, limit_count: int, limit_bytes: int, since_ms: int) -> list[Record]:
        """Like `take`, but only routine records received at or after since_ms, oldest first.

        The batcher's live turn while a backlog drains (batcher.py: `take_since`).
        """
        return self._take(
            ["WHERE priority = 0 AND received_ms >= ? ORDER BY priority, received_ms"],
            (since_ms,), limit_count, limit_bytes)

    def _take(self, queries: list[str], args: tuple[int, ...], limit_count: int,
              limit_bytes: int) -> list[Record]:
        out: list[Record] = []
        size = 0
        full = limit_count <= 0
        for where in queries:
            if full:
                break
            with closing(self._db.execute("SELECT * FROM frames " + where, args)) as cur:
                for row in cur:
                    if row[0] in self._inflight:
                        continue
                    n = len(row[7])
                    if out and size + n > limit_bytes:
                        full = True
                        break
                    out.append(Record(row[1], row[2], row[3], row[4], row[5], row[6], row[7],
                                      row[0]))
                    size += n
                    if len(out) >= limit_count:
                        full = True
                        break
        self._inflight.update((r.id, (r.priority, len(r.payload))) for r in out)
        return out

    def ack_state(self, node: int, boot: int) -> tuple[int, int]:
        """(floor, sack) of every seq of (node, boot) ever stored: what an ack says (SPEC 9.2)."""
        return self._seen.ack(node, boot)

    def release(self, ids: Iterable[int]) -> None:
        """Give records back (publishing failed): `take` hands them out again."""
        ids = list(ids)
        for i in ids:
            self._inflight.pop(i, None)
        if ids:
            self._next_routine = min(self._next_routine, *ids)

    def confirm(self, ids: Iterable[int]) -> None:
        """Delete published records (their batch's PUBACK arrived).

        Committed without an fsync of its own (``synchronous=NORMAL`` for this transaction):
        a delete lost to a power cut only publishes its records again, with the same
        (node, boot, seq), which at-least-once delivery allows; the next add_batch's fsync
        makes it durable anyway. The records' sizes come from `take` (no RETURNING).
        """
        inflight = self._inflight
        known = [i for i in ids if i in inflight]
        unknown = [i for i in ids if i not in inflight]     # not taken: sizes from the rows
        gone: list[tuple[int, int]] = []
        with self._txn("confirm", durable=False) as db:
            for part in _chunks(known):
                db.execute("DELETE FROM frames WHERE id IN (" + ",".join("?" * len(part)) + ")",
                           part)
            for part in _chunks(unknown):
                gone.extend(db.execute(
                    "DELETE FROM frames WHERE id IN (" + ",".join("?" * len(part)) + ")"
                    " RETURNING priority, length(payload)", part
                ).fetchall())
        gone.extend(inflight.pop(i) for i in known)
        self._forget(gone)

    def _forget(self, gone: Iterable[tuple[int, int]]) -> None:
        for priority, n in gone:
            self._count -= 1
            self._alarms -= priority
            self._bytes -= n + ROW_OVERHEAD_B

    # -- bounds --------------------------------------------------------------------------------

    def enforce_bounds(self, now_ms: int) -> DropReport:
        """Apply the overflow policy of the module documentation; returns what was dropped."""
        max_age_ms = int(self.max_age_s * 1000)
        cut = {ROUTINE: now_ms - max_age_ms, ALARM: now_ms - ALARM_AGE_FACTOR * max_age_ms}
        oldest = self._oldest()
        expired = any(t is not None and t < cut[p] for p, t in oldest.items())
        if self._bytes <= self.max_bytes and not expired:
            return DropReport()
        sweep = (self._cursor, self._end, self._swept, self._wide, dict(self._parity))
        victims: list[tuple[_Victim, str]] = []
        try:
            with self._txn("enforce_bounds") as db:
                for p in (ROUTINE, ALARM):
                    rows = db.execute(
                        "SELECT id, node, boot, seq, priority, length(payload) FROM frames"
                        " WHERE priority = ? AND received_ms < ?", (p, cut[p])
                    ).fetchall()
                    victims += [(v, DROP_AGE) for v in rows if v[0] not in self._inflight]
                excess = self._bytes - self.max_bytes - _freed(v for v, _ in victims)
                if excess > 0:
                    thinned = self._thin(db, excess, {v[0] for v, _ in victims})
                    victims += [(v, DROP_THINNED) for v in thinned]
                    excess -= _freed(thinned)
                for p in (ROUTINE, ALARM):
                    if excess > 0:
                        over = self._oldest_first(db, p, excess, {v[0] for v, _ in victims})
                        victims += [(v, DROP_OVERFLOW) for v in over]
                        excess -= _freed(over)
                db.executemany("DELETE FROM frames WHERE id = ?", [(v[0],) for v, _ in victims])
                gaps = self._record_drops(db, victims, now_ms)
                db.executemany(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    [("sweep_cursor", self._cursor), ("sweep_end", self._end),
                     ("sweep_dropped", int(self._swept)), ("sweep_wide", int(self._wide))],
                )
        except BaseException:
            self._cursor, self._end, self._swept, self._wide, self._parity = sweep
            raise
        self._forget((v[4], v[5]) for v, _ in victims)
        dropped: dict[str, int] = {}
        by_node: dict[int, int] = {}
        for v, reason in victims:
            dropped[reason] = dropped.get(reason, 0) + 1
            by_node[v[1]] = by_node.get(v[1], 0) + 1
        return DropReport(dropped, by_node, _freed(v for v, _ in victims),
                          max(0, self._bytes - self.max_bytes), gaps)

    def _oldest(self) -> dict[int, int | None]:
        return {
            p: self._db.execute(
                "SELECT MIN(received_ms) FROM frames WHERE priority = ?", (p,)
            ).fetchone()[0]
            for p in (ROUTINE, ALARM)
        }

    def _thin(self, db: sqlite3.Connection, excess: int, skip: set[int]) -> list[_Victim]:
        # One or more sweeps over the oldest routine records, dropping every second record of
        # each (node, boot, kind) stream, until `excess` bytes are freed (module documentation).
        out: list[_Victim] = []
        freed = 0
        while freed < excess:
            if self._cursor >= self._end:
                if self._end and not self._swept:       # the last sweep found nothing to thin
                    if self._wide:
                        self._end = self._cursor = 0
                        self._wide = False
                        break
                    self._wide = True
                else:
                    self._wide = False
                (count,) = db.execute("SELECT COUNT(*) FROM frames WHERE priority = 0").fetchone()
                if count == 0:
                    break
                offset = count - 1 if self._wide else count // 2
                (self._end,) = db.execute(
                    "SELECT id FROM frames WHERE +priority = 0 ORDER BY id"
                    " LIMIT 1 OFFSET ?", (offset,)
                ).fetchone()
                self._cursor = 0
                self._swept = False
                self._parity = {}
            rows = db.execute(
                "SELECT id, node, boot, seq, priority, length(payload), kind FROM frames"
                " WHERE +priority = 0 AND id > ? AND id <= ? ORDER BY id LIMIT ?",
                (self._cursor, self._end, _SWEEP_ROWS),
            ).fetchall()
            if not rows:
                self._cursor = self._end
                continue
            for row in rows:
                self._cursor = row[0]
                if row[0] in skip or row[0] in self._inflight:
                    continue
                key = (row[1], row[2], row[6])
                odd = self._parity.get(key, False)
                self._parity[key] = not odd
                if odd:
                    out.append(row[:6])
                    freed += row[5] + ROW_OVERHEAD_B
                    self._swept = True
                    if freed >= excess:
                        break
        return out

    def _oldest_first(
        self, db: sqlite3.Connection, priority: int, excess: int, skip: set[int]
    ) -> list[_Victim]:
        out: list[_Victim] = []
        freed = 0
        with closing(db.execute(
            "SELECT id, node, boot, seq, priority, length(payload) FROM frames"
            + (" " + _ALARMS_BY_ID if priority == ALARM
               else " WHERE +priority = 0 ORDER BY id")
        )) as cur:
            for row in cur:
                if freed >= excess:
                    break
                if row[0] in skip or row[0] in self._inflight:
                    continue
                out.append(row)
                freed += row[5] + ROW_OVERHEAD_B
        return out

    def _record_drops(
        self, db: sqlite3.Connection, victims: list[tuple[_Victim, str]], now_ms: int
    ) -> int:
        # Counts per (node, reason) and gap reports per (node, boot, reason); returns how many
        # gap reports were created or extended.
        counts: dict[tuple[int, str], int] = {}
        seqs: dict[tuple[int, int, str], list[int]] = {}
        for v, reason in victims:
            counts[(v[1], reason)] = counts.get((v[1], reason), 0) + 1
            seqs.setdefault((v[1], v[2], reason), []).append(v[3])
        db.executemany(
            "INSERT INTO drops VALUES (?, ?, ?)"
            " ON CONFLICT (node, reason) DO UPDATE SET count = count + excluded.count",
            [(n, r, c) for (n, r), c in counts.items()],
        )
        touched = 0
        for (node, boot, reason), s in seqs.items():
            ranges = _merge([(q, q) for q in s])
            last = db.execute(
                "SELECT id, ranges, count FROM gaps WHERE node = ? AND boot = ? AND reason = ?"
                " ORDER BY id DESC LIMIT 1", (node, boot, reason)
            ).fetchone()
            if last is not None and last[0] not in self._gaps_inflight:
                merged = _merge([(a, b) for a, b in json.loads(last[1])] + ranges)
                if len(merged) <= GAP_RANGES_MAX:
                    db.execute(
                        "UPDATE gaps SET ranges = ?, count = ?, last_ms = ? WHERE id = ?",
                        (json.dumps(merged), last[2] + len(s), now_ms, last[0]),
                    )
                    touched += 1
                    continue
            for i in range(0, len(ranges), GAP_RANGES_MAX):
                part = ranges[i:i + GAP_RANGES_MAX]
                db.execute(
                    "INSERT INTO gaps (node, boot, reason, ranges, count, first_ms, last_ms)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (node, boot, reason, json.dumps(part), sum(b - a + 1 for a, b in part),
                     now_ms, now_ms),
                )
                touched += 1
        return touched

    # -- gap reports ---------------------------------------------------------------------------

    def take_gaps(self, limit: int) -> list[GapReport]:
        """Pending gap reports not in flight, oldest first; in flight until confirmed/released."""
        out: list[GapReport] = []
        with closing(self._db.execute("SELECT * FROM gaps ORDER BY id")) as cur:
            for row in cur:
                if len(out) >= limit:
                    break
                if row[0] in self._gaps_inflight:
                    continue
                ranges = tuple((a, b) for a, b in json.loads(row[4]))
                out.append(GapReport(row[0], row[1], row[2], row[3], ranges, row[5], row[6],
                                     row[7]))
        self._gaps_inflight.update(g.id for g in out)
        return out

    def release_gaps(self, ids: Iterable[int]) -> None:
        """Give gap reports back (publishing failed)."""
        self._gaps_inflight.difference_update(ids)

    def confirm_gaps(self, ids: Iterable[int]) -> None:
        """Delete published gap reports."""
        ids = list(ids)
        with self._txn("confirm_gaps") as db:
            db.executemany("DELETE FROM gaps WHERE id = ?", [(i,) for i in ids])
        self._gaps_inflight.difference_update(ids)

    # -- downlink seq and replay state ---------------------------------------------------------

    def next_downlink_seq(self, node: int, boot: int) -> int:
        """Next downlink seq for (node, boot): from 1, strictly increasing across restarts."""
        key = (node, boot)
        st = self._downlink.get(key)
        if st is None:
            row = self._db.execute(
                "SELECT reserved FROM downlink WHERE node = ? AND boot = ?", key
            ).fetchone()
            reserved = 0 if row is None else int(row[0])
            st = [reserved + 1, reserved]
            self._downlink[key] = st
        if st[0] > st[1]:
            reserved = min(st[1] + DOWNLINK_BLOCK, _U32)
            if st[0] > reserved:
                raise StoreError(f"downlink seq of {node}/{boot} exhausted")
            with self._txn("next_downlink_seq") as db:
                db.execute("INSERT OR REPLACE INTO downlink VALUES (?, ?, ?)", (*key, reserved))
            st[1] = reserved
        seq = st[0]
        st[0] = seq + 1
        return seq

    def save_replay(self, rows: Iterable[tuple[int, int, int, int]]) -> None:
        """Replace the saved replay state with `ReplayGuard.rows()` (node, boot, floor, map)."""
        data = [(n, b, *_signed(f, m)) for n, b, f, m in rows]
        with self._txn("save_replay") as db:
            db.execute("DELETE FROM replay")
            db.executemany("INSERT INTO replay VALUES (?, ?, ?, ?)", data)

    def load_replay(self) -> list[tuple[int, int, int, int]]:
        """The saved replay state, for `ReplayGuard.load`."""
        rows = self._db.execute("SELECT node, boot, floor, bits FROM replay ORDER BY node, boot")
        return [(n, b, f, m & _U64) for n, b, f, m in rows]

    # -- metrics -------------------------------------------------------------------------------

    def stats(self, now_ms: int) -> StoreStats:
        """Current size, age and drop counters."""
        known = [t for t in self._oldest().values() if t is not None]
        age = max(0, now_ms - min(known)) / 1000 if known else None
        dropped = {
            (n, r): c for n, r, c in self._db.execute("SELECT node, reason, count FROM drops")
        }
        (gaps,) = self._db.execute("SELECT COUNT(*) FROM gaps").fetchone()
        return StoreStats(self._count, self._bytes, self._count - self._alarms, self._alarms,
                          len(self._inflight), age, gaps, dropped, self.full_errors)


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    # One DELETE statement per _DELETE_CHUNK ids (SQLite's bound-parameter limit is 32766).
    for k in range(0, len(ids), _DELETE_CHUNK):
        yield ids[k:k + _DELETE_CHUNK]


def _signed(floor: int, bits: int) -> tuple[int, int]:
    # SQLite integers are signed 64-bit: store the map's top bit as the sign.
    return floor, bits - (1 << 64) if bits >> 63 else bits


def _freed(victims: Iterable[_Victim]) -> int:
    return sum(v[5] + ROW_OVERHEAD_B for v in victims)


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    # Sorted, with overlapping and adjacent ranges joined.
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out
