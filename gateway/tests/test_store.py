"""Tests of gateway/store.py on real SQLite files."""

from __future__ import annotations

import itertools
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.store import (
    ALARM,
    ALARM_AGE_FACTOR,
    DOWNLINK_BLOCK,
    DROP_AGE,
    DROP_OVERFLOW,
    DROP_THINNED,
    ROUTINE,
    ROW_OVERHEAD_B,
    Record,
    Store,
    StoreError,
    StoreFullError,
)
from protocol.replay import ReplayGuard

T0 = 1_760_000_000_000          # a gateway UTC time in ms
BIG = 1 << 40                   # max_bytes that is never reached
DAY_S = 86400.0
PAYLOAD_B = 40
ROOT = Path(__file__).resolve().parents[2]


def rec(seq: int, node: int = 7, *, boot: int = 1, priority: int = ROUTINE, kind: int = 2,
        t: int = T0) -> Record:
    """A record whose payload names its identity, PAYLOAD_B bytes long."""
    body = b"%d/%d#%d" % (node, boot, seq)
    return Record(node, boot, seq, kind, priority, t, body.ljust(PAYLOAD_B, b"."))


def open_store(tmp_path: Path, max_bytes: int = BIG, max_age_s: float = DAY_S) -> Store:
    return Store(tmp_path / "queue.db", max_bytes, max_age_s)


def all_seqs(store: Store) -> list[int]:
    """Seqs of every stored record (hands them out, then gives them back)."""
    recs = store.take(1 << 30, 1 << 40, alarms_first=False)
    store.release(r.id for r in recs)
    return [r.seq for r in recs]


def size_of(n: int) -> int:
    return n * (PAYLOAD_B + ROW_OVERHEAD_B)


def test_wal_and_full_sync(tmp_path: Path) -> None:
    """The store runs in WAL mode with synchronous=FULL (2)."""
    with open_store(tmp_path) as s:
        assert s._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s._db.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_duplicates_in_store_and_in_batch(tmp_path: Path) -> None:
    """A (node, boot, seq) already stored, or twice in one batch, is reported as not new."""
    with open_store(tmp_path) as s:
        assert s.add_batch([rec(1), rec(2), rec(3)]) == [True, True, True]
        assert s.add_batch([rec(2), rec(4), rec(4), rec(2, boot=2)]) == [False, True, False, True]
        assert all_seqs(s) == [1, 2, 3, 4, 2]
        assert s.stats(T0).records == 5


def test_duplicate_after_publish_and_delete(tmp_path: Path) -> None:
    """A record published and deleted is still recognised when it arrives again."""
    with open_store(tmp_path) as s:
        s.add_batch([rec(q) for q in (1, 2, 5)])
        s.confirm(r.id for r in s.take(10, 1 << 20))
        assert s.stats(T0).records == 0
        assert s.add_batch([rec(1), rec(2), rec(3), rec(5)]) == [False, False, True, False]


def test_duplicate_across_reopen(tmp_path: Path) -> None:
    """Stored and published-then-deleted records stay duplicates after the store reopens."""
    with open_store(tmp_path) as s:
        s.add_batch([rec(q) for q in range(1, 11)])
        s.confirm(r.id for r in s.take(5, 1 << 20))
    with open_store(tmp_path) as s:
        assert s.add_batch([rec(3), rec(8), rec(11)]) == [False, False, True]
        assert all_seqs(s) == [6, 7, 8, 9, 10, 11]


def test_group_commit_of_1000(tmp_path: Path) -> None:
    """One add_batch stores 1000 records, all present after reopening."""
    with open_store(tmp_path) as s:
        assert s.add_batch([rec(q, node=q % 10) for q in range(1, 1001)]) == [True] * 1000
    with open_store(tmp_path) as s:
        st = s.stats(T0)
        assert (st.records, st.bytes) == (1000, size_of(1000))
        assert sorted(all_seqs(s)) == list(range(1, 1001))


def test_alarms_first_then_oldest(tmp_path: Path) -> None:
    """take hands out alarms before routine records, each oldest first; or in arrival order."""
    with open_store(tmp_path) as s:
        s.add_batch([rec(1), rec(2), rec(3, priority=ALARM), rec(4), rec(5, priority=ALARM)])
        assert [r.seq for r in s.take(3, 1 << 20)] == [3, 5, 1]
        s.release(range(1, 100))
        assert [r.seq for r in s.take(3, 1 << 20, alarms_first=False)] == [1, 2, 3]


def test_take_release_confirm(tmp_path: Path) -> None:
    """In-flight records are not handed out again until released; confirmed ones are gone."""
    with open_store(tmp_path) as s:
        s.add_batch([rec(q) for q in range(1, 6)])
        first = s.take(2, 1 << 20)
        assert [r.seq for r in first] == [1, 2]
        assert [r.seq for r in s.take(2, 1 << 20)] == [3, 4]
        s.release([first[1].id])
        assert [r.seq for r in s.take(10, 1 << 20)] == [2, 5]
        assert s.take(10, 1 << 20) == []
        assert s.stats(T0).in_flight == 5
        s.confirm([first[0].id])
        assert s.stats(T0).records == 4
    with open_store(tmp_path) as s:    # in-flight state is not kept: all handed out again
        got = s.take(10, 1 << 20)
        assert [r.seq for r in got] == [2, 3, 4, 5]
        assert got[0].payload == rec(2).payload and got[0].received_ms == T0


def test_take_alarms_hands_out_alarms_only(tmp_path: Path) -> None:
    """take_alarms: alarms and hellos not in flight, oldest first, never a routine record."""
    with open_store(tmp_path) as s:
        assert s.take_alarms(10, 1 << 20) == []
        s.add_batch([rec(1), rec(2, priority=ALARM), rec(3), rec(4, priority=ALARM)])
        assert [r.seq for r in s.take_alarms(1, 1 << 20)] == [2]
        assert [r.seq for r in s.take_alarms(10, 1 << 20)] == [4]
        assert s.take_alarms(10, 1 << 20) == []
        assert [r.seq for r in s.take(10, 1 << 20)] == [1, 3]


def test_take_limits_bytes(tmp_path: Path) -> None:
    """take stops before limit_bytes of payload but always hands out at least one record."""
    with open_store(tmp_path) as s:
        s.add_batch([rec(q) for q in range(1, 6)])
        assert len(s.take(10, 2 * PAYLOAD_B + 1)) == 2
        assert len(s.take(10, 1)) == 1
        s.add_batch([Record(7, 1, 6, 4, ALARM, T0, bytes(3 * PAYLOAD_B))])
        s.release(range(100))
        assert [r.seq for r in s.take(10, 2 * PAYLOAD_B)] == [6]   # no smaller record after it
        assert s.take(0, 1 << 20) == []


def test_age_bound_keeps_alarms_longer(tmp_path: Path) -> None:
    """Routine records expire after max_age_s, alarms only after ALARM_AGE_FACTOR times it."""
    age_ms = 3_600_000
    now = T0 + 20 * age_ms
    with open_store(tmp_path, max_age_s=age_ms / 1000) as s:
        s.add_batch([
            rec(1, t=now - 2 * age_ms),                                      # expired
            rec(2, t=now - 2 * age_ms, priority=ALARM),                     # kept
            rec(3, t=now - (ALARM_AGE_FACTOR + 1) * age_ms, priority=ALARM),  # expired
            rec(4, t=now - age_ms // 2),                                     # kept
            rec(5, t=now + age_ms * 100),                                    # future: kept
        ])
        report = s.enforce_bounds(now)
        assert report.dropped == {DROP_AGE: 2}
        assert report.by_node == {7: 2}
        assert report.freed_bytes == size_of(2)
        assert sorted(all_seqs(s)) == [2, 4, 5]
        assert s.enforce_bounds(now).total == 0


def test_thinning_halves_oldest_half_and_keeps_alarms(tmp_path: Path) -> None:
    """Over max_bytes, every second routine record of the oldest half goes; no alarm does."""
    with open_store(tmp_path) as s:
        alarms = {10, 30, 50, 70, 90}
        s.add_batch([rec(q, priority=ALARM if q in alarms else ROUTINE) for q in range(1, 101)])
        s.max_bytes = size_of(100 - 20)
        report = s.enforce_bounds(T0)
        assert report.dropped == {DROP_THINNED: 20}
        left = set(all_seqs(s))
        assert alarms <= left
        dropped = set(range(1, 101)) - left
        routine = [q for q in range(1, 101) if q not in alarms]
        assert dropped == set(routine[1:40:2])      # 2nd, 4th, ... routine record, oldest first
        assert s.stats(T0).bytes <= s.max_bytes


def test_thinning_resumes_instead_of_eating_the_oldest(tmp_path: Path) -> None:
    """Small repeated excesses halve the oldest half once, not drop a run of oldest records."""
    with open_store(tmp_path) as s:
        s.add_batch([rec(q) for q in range(1, 101)])
        for i in range(1, 4):
            s.max_bytes = size_of(100 - 5 * i)
            assert s.enforce_bounds(T0).dropped == {DROP_THINNED: 5}
    with open_store(tmp_path) as s:            # the sweep cursor survives a restart
        for i in range(4, 6):
            s.max_bytes = size_of(100 - 5 * i)
            assert s.enforce_bounds(T0).dropped == {DROP_THINNED: 5}
        s.max_bytes = size_of(74)
        assert s.enforce_bounds(T0).dropped == {DROP_THINNED: 1}
        dropped = set(range(1, 101)) - set(all_seqs(s))
        # 2, 4 .. 50: the oldest half (seqs 1..51) halved; then a new sweep from the oldest
        assert dropped == set(range(2, 51, 2)) | {3}


def test_thinning_per_stream(tmp_path: Path) -> None:
    """Thinning halves each (node, boot, kind) stream, not the interleaved sequence."""
    with open_store(tmp_path) as s:
        s.add_batch([rec(q, node=1 + q % 2, kind=2) for q in range(1, 41)])
        s.max_bytes = size_of(30)
        s.enforce_bounds(T0)
        left = s.take(100, 1 << 20)
        per_node = {n: sum(1 for r in left if r.node == n) for n in (1, 2)}
        assert per_node == {1: 15, 2: 15}


def test_overflow_drops_routine_then_oldest_alarms(tmp_path: Path) -> None:
    """When no stream can be thinned, routine records go first, then the oldest alarms."""
    with open_store(tmp_path) as s:
        s.add_batch([rec(1, node=1), rec(2, node=2, priority=ALARM), rec(3, node=3),
                     rec(4, node=4, priority=ALARM), rec(5, node=5, priority=ALARM)])
        s.max_bytes = size_of(2)
        report = s.enforce_bounds(T0)
        assert report.dropped == {DROP_OVERFLOW: 3}
        assert report.by_node == {1: 1, 2: 1, 3: 1}
        assert [(r.node, r.priority) for r in s.take(10, 1 << 20)] == [(4, ALARM), (5, ALARM)]


def test_in_flight_records_are_never_dropped(tmp_path: Path) -> None:
    """Bounds skip records handed out for publishing and report what is still over."""
    with open_store(tmp_path, max_age_s=1.0) as s:
        s.add_batch([rec(q) for q in range(1, 11)])
        s.take(10, 1 << 20)
        s.max_bytes = size_of(2)
        report = s.enforce_bounds(T0 + 10_000_000)
        assert report.total == 0
        assert report.over_bytes == size_of(8)


def test_gap_reports(tmp_path: Path) -> None:
    """Drops become gap reports with exact seq ranges, merged, persisted until confirmed."""
    with open_store(tmp_path, max_age_s=1.0) as s:
        s.add_batch([rec(q, t=T0 - 5000 if q <= 3 else T0) for q in range(1, 11)]
                    + [rec(1, node=8, t=T0 - 5000)])
        s.enforce_bounds(T0)
        s.add_batch([rec(11, t=T0 - 5000)])
        s.enforce_bounds(T0)                   # merged into the pending report of node 7
        gaps = s.take_gaps(10)
        assert [(g.node, g.boot, g.reason, g.ranges, g.count) for g in gaps] == [
            (7, 1, DROP_AGE, ((1, 3), (11, 11)), 4),
            (8, 1, DROP_AGE, ((1, 1),), 1),
        ]
        s.add_batch([rec(12, t=T0 - 5000)])
        s.enforce_bounds(T0)                   # node 7's report is in flight: a new one
        s.release_gaps([gaps[1].id])
        s.confirm_gaps([gaps[0].id])
    with open_store(tmp_path) as s:
        left = s.take_gaps(10)
        assert [(g.node, g.ranges) for g in left] == [(8, ((1, 1),)), (7, ((12, 12),))]
        assert s.stats(T0).dropped == {(7, DROP_AGE): 5, (8, DROP_AGE): 1}
        s.confirm_gaps(g.id for g in left)
        assert s.take_gaps(10) == [] and s.stats(T0).gap_reports == 0


def test_gap_report_of_thinning_matches_missing_seqs(tmp_path: Path) -> None:
    """The ranges of a thinning gap report are exactly the seqs no longer stored."""
    with open_store(tmp_path) as s:
        s.add_batch([rec(q) for q in range(1, 201)])
        s.max_bytes = size_of(150)
        s.enforce_bounds(T0)
        s.max_bytes = size_of(120)
        s.enforce_bounds(T0)
        (gap,) = s.take_gaps(10)
        missing = set(range(1, 201)) - set(all_seqs(s))
        assert {q for a, b in gap.ranges for q in range(a, b + 1)} == missing
        assert gap.count == len(missing) == 80 and gap.reason == DROP_THINNED


def test_downlink_seq_strictly_increasing_across_reopen(tmp_path: Path) -> None:
    """Downlink seqs start at 1 per (node, boot) and never repeat, restarts included."""
    seen: list[int] = []
    other: list[int] = []
    for _ in range(3):
        with open_store(tmp_path) as s:
            seen += [s.next_downlink_seq(7, 1) for _ in range(DOWNLINK_BLOCK + 3)]
            other.append(s.next_downlink_seq(7, 2))
    assert seen[0] == 1 and other[0] == 1
    assert all(a < b for a, b in itertools.pairwise(seen))
    assert all(a < b for a, b in itertools.pairwise(other))
    with open_store(tmp_path) as s:
        assert s.next_downlink_seq(9, 1) == 1


def test_replay_rows_round_trip(tmp_path: Path) -> None:
    """ReplayGuard rows, 64-bit maps included, survive a reopen; saving replaces them."""
    guard = ReplayGuard()
    for seq in (1, 2, 5, 66, 100):
        guard.accept(3, 1, seq)
    guard.accept(4, 9, 1)
    rows = guard.rows()
    assert any(m >> 63 for _, _, _, m in rows)
    with open_store(tmp_path) as s:
        s.save_replay([(1, 1, 1, 0)])
        s.save_replay(rows)
    with open_store(tmp_path) as s:
        restored = ReplayGuard()
        restored.load(s.load_replay())
        assert sorted(restored.rows()) == sorted(rows)


def test_disk_full_raises_and_recovers(tmp_path: Path) -> None:
    """SQLITE_FULL becomes StoreFullError, stores nothing of the batch, and is recoverable."""
    with open_store(tmp_path) as s:
        pages = s._db.execute("PRAGMA page_count").fetchone()[0]
        s._db.execute(f"PRAGMA max_page_count = {pages + 8}")   # a real SQLITE_FULL soon
        seq = 0
        with pytest.raises(StoreFullError, match="full"):
            for _ in range(1000):
                s.add_batch([rec(seq + i + 1) for i in range(50)])
                seq += 50
        assert s.stats(T0).full_errors == 1
        assert sorted(all_seqs(s)) == list(range(1, seq + 1))
        failed = [rec(seq + i + 1) for i in range(50)]
        s.confirm(r.id for r in s.take(seq // 2, 1 << 30))       # frees pages for reuse
        assert s.add_batch(failed) == [True] * 50               # not remembered as seen
        s._db.execute(f"PRAGMA max_page_count = {pages + 1000}")
        assert s.add_batch([rec(seq + 51 + i) for i in range(200)]) == [True] * 200
        assert s.stats(T0).records == seq - seq // 2 + 250


_CHILD = """
import sys
from pathlib import Path
from gateway.store import Record, Store
store = Store(Path(sys.argv[1]), 1 << 40, 1e9)
seq = 0
while True:
    store.add_batch([Record(7, 1, seq + i + 1, 2, 0, 0, bytes(40)) for i in range(100)])
    seq += 100
    print(seq, flush=True)
"""


def test_sigkill_loses_no_acknowledged_batch(tmp_path: Path) -> None:
    """A writer killed mid-stream keeps every batch whose add_batch had returned."""
    db = tmp_path / "queue.db"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(db)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    lines = [child.stdout.readline() for _ in range(30)]
    child.send_signal(signal.SIGKILL)
    rest, _ = child.communicate()
    assert child.returncode == -signal.SIGKILL
    last = max(int(x) for x in lines + rest.split() if x.strip())
    with Store(db, BIG, DAY_S) as s:
        seqs = all_seqs(s)
        assert len(seqs) >= last and sorted(seqs)[:last] == list(range(1, last + 1))
        assert s.add_batch([rec(last), rec(len(seqs) + 1)]) == [False, True]


def test_open_errors(tmp_path: Path) -> None:
    """A missing directory or a newer schema is refused with a message naming the fix."""
    with pytest.raises(StoreError, match="directory exists"):
        Store(tmp_path / "nowhere" / "queue.db", BIG, DAY_S)
    open_store(tmp_path).close()
    with sqlite3.connect(tmp_path / "queue.db") as db:
        db.execute("UPDATE schema_version SET version = 99")
    db.close()
    with pytest.raises(StoreError, match="schema 99"):
        open_store(tmp_path)


def test_invalid_records_are_refused(tmp_path: Path) -> None:
    """Seq 0, an identity beyond uint32 or an unknown priority raise ValueError, store nothing."""
    with open_store(tmp_path) as s:
        bad = [rec(0), rec(1, node=1 << 32), Record(7, 1, 1, 2, 5, T0, b"x")]
        for r in bad:
            with pytest.raises(ValueError):
                s.add_batch([rec(9), r])
        assert s.stats(T0).records == 0


def test_stats(tmp_path: Path) -> None:
    """stats counts records by priority, accounted bytes and the oldest record's age."""
    with open_store(tmp_path) as s:
        assert s.stats(T0).oldest_age_s is None
        s.add_batch([rec(1, t=T0 - 4000), rec(2, priority=ALARM, t=T0 - 2000), rec(3)])
        st = s.stats(T0)
        assert (st.records, st.routine, st.alarms) == (3, 2, 1)
        assert st.bytes == size_of(3) and st.oldest_age_s == 4.0
        assert st.dropped == {} and st.gap_reports == 0


def test_take_since_skips_the_backlog_and_alarms(tmp_path: Path) -> None:
    """take_since hands out only routine records received at or after the cut, oldest first."""
    with open_store(tmp_path) as store:
        store.add_batch([rec(1, t=T0), rec(2, t=T0 + 10), rec(3, t=T0 + 5),
                         rec(4, t=T0 + 20, priority=ALARM), rec(5, t=T0 + 30)])
        got = store.take_since(10, 1 << 20, T0 + 5)
        assert [r.seq for r in got] == [3, 2, 5]
        assert store.take_since(10, 1 << 20, T0 + 5) == []      # in flight now
        assert [r.seq for r in store.take(10, 1 << 20)] == [4, 1]


def test_ack_state_covers_what_was_stored(tmp_path: Path) -> None:
    """ack_state reports the floor and sack of stored seqs, across a reopen."""
    with open_store(tmp_path) as store:
        store.add_batch([rec(1), rec(2), rec(4)])
        assert store.ack_state(7, 1) == (2, 0b10)      # seq 4: bit 4 - 2 - 1
        assert store.ack_state(7, 9) == (0, 0)
    with open_store(tmp_path) as store:
        assert store.ack_state(7, 1) == (2, 0b10)      # seq 4: bit 4 - 2 - 1


_SCHEMA_1 = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version VALUES (1);
CREATE TABLE frames (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node INTEGER NOT NULL, boot INTEGER NOT NULL, seq INTEGER NOT NULL,
    kind INTEGER NOT NULL, priority INTEGER NOT NULL, received_ms INTEGER NOT NULL,
    payload BLOB NOT NULL,
    UNIQUE (node, boot, seq)
);
CREATE INDEX frames_order ON frames (priority, id);
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


def test_schema_1_store_is_migrated_with_its_records_and_ids(tmp_path: Path) -> None:
    """A store written by schema 1 opens as schema 2: same records, ids, seen state."""
    path = tmp_path / "queue.db"
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA_1)
    db.executemany("INSERT INTO frames VALUES (?, 7, 1, ?, 2, ?, ?, ?)",
                   [(10 + s, s, s % 2, T0 + s, rec(s).payload) for s in (1, 2, 3)])
    db.execute("INSERT INTO sqlite_sequence VALUES ('frames', 13)")
    db.execute("INSERT INTO seen VALUES (7, 1, 3, 0)")
    db.commit()
    db.close()
    with Store(path, BIG, DAY_S) as store:
        assert [(r.id, r.seq, r.priority) for r in store.take(10, BIG)] == [
            (11, 1, 1), (13, 3, 1), (12, 2, 0)]
        assert store.add_batch([rec(2), rec(4)]) == [False, True]
        assert store.stats(T0).records == 4
    db = sqlite3.connect(path)
    assert db.execute("SELECT version FROM schema_version").fetchone() == (2,)
    assert db.execute("SELECT MAX(id) FROM frames").fetchone() == (14,)
    names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "frames_order" not in names and "frames_alarms" in names
    db.close()


def test_routine_reads_walk_the_rowid_without_a_sort(tmp_path: Path) -> None:
    """take's and the sweeps' queries use the rowid or an index, never a temporary sort."""
    with open_store(tmp_path) as store:
        db = store._db
        for q in ("SELECT * FROM frames WHERE +priority = 0 AND id >= 5 ORDER BY id",
                  "SELECT * FROM frames INDEXED BY frames_alarms WHERE priority = 1 ORDER BY id",
                  "SELECT * FROM frames WHERE priority = 0 AND received_ms >= 5"
                  " ORDER BY priority, received_ms",
                  "SELECT MIN(received_ms) FROM frames WHERE priority = 0"):
            plan = " ".join(str(r[-1]) for r in db.execute("EXPLAIN QUERY PLAN " + q))
            assert "TEMP B-TREE" not in plan and ("USING" in plan or "rowid" in plan), (q, plan)


def test_take_after_release_hands_out_the_given_back_records_again(tmp_path: Path) -> None:
    """The routine cursor never skips a record: released ones come back, oldest first."""
    with open_store(tmp_path) as store:
        store.add_batch([rec(s) for s in range(1, 11)])
        a = store.take(3, BIG)
        b = store.take(3, BIG)
        assert [r.seq for r in a + b] == [1, 2, 3, 4, 5, 6]
        store.release(r.id for r in a)
        store.confirm(r.id for r in b)
        assert [r.seq for r in store.take(5, BIG)] == [1, 2, 3, 7, 8]
        store.add_batch([rec(11, priority=ALARM)])
        assert [r.seq for r in store.take(5, BIG)] == [11, 9, 10]


def test_confirm_accounts_taken_and_untaken_ids_and_restores_full_sync(tmp_path: Path) -> None:
    """confirm deletes without its own fsync, frees the right bytes, then runs FULL again."""
    with open_store(tmp_path) as store:
        store.add_batch([rec(s) for s in range(1, 7)] + [rec(7, priority=ALARM)])
        taken = store.take(3, BIG)                        # the alarm and seqs 1, 2
        every = store.take(1 << 20, BIG, alarms_first=False)
        store.release(r.id for r in every)                # 3..6 handed out, then given back
        store.confirm([r.id for r in taken] + [every[-1].id])
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2
        st = store.stats(T0)
        assert (st.records, st.alarms, st.bytes) == (3, 0, size_of(3))
        assert all_seqs(store) == [3, 4, 5]
