# Replay window and selective acknowledgement.

from protocol.errors import ProtocolError
from protocol.replay import WINDOW, ReplayGuard, covered
from protocol.tests.vecio import Failures, rows


def test_replay_vectors():
    """Each step gives the expected verdict, skipped count and ack (floor, map)."""
    fails = Failures()
    for v in rows("replay.jsonl"):
        g = ReplayGuard(v["boots"])
        for i, s in enumerate(v["steps"]):
            name = "%s step %d" % (v["name"], i)
            try:
                skipped = g.accept(s["node"], s["boot"], s["seq"])
                verdict = "ok"
            except ProtocolError as e:
                verdict = e.reason
                skipped = 0
            fails.check(verdict == s["expect"], name, "verdict " + verdict)
            fails.check(skipped == s["skipped"], name, "skipped %d" % skipped)
            ack = list(g.ack(s["node"], s["boot"]))
            fails.check(ack == s["ack"], name, "ack %r" % (ack,))
    fails.done(30)


def test_state_saved_and_loaded_gives_the_same_verdicts():
    """rows() then load() into a new guard refuses the same replays."""
    g = ReplayGuard()
    for seq in (1, 2, 3, 7):
        g.accept(9, 2, seq)
    g2 = ReplayGuard()
    g2.load(g.rows())
    assert g2.ack(9, 2) == g.ack(9, 2) == (3, 1 << 3)
    for seq in (1, 3, 7):
        try:
            g2.check(9, 2, seq)
            raise AssertionError("seq %d accepted after load" % seq)
        except ProtocolError as e:
            assert e.reason == "replay"
    g2.check(9, 2, 4)


def test_node_side_covered_matches_the_guard():
    """covered(floor, map, seq) is true exactly for the seqs the guard has accepted."""
    g = ReplayGuard()
    accepted = (1, 2, 4, 9, 60, 66)
    for s in accepted:
        g.accept(3, 1, s)
    floor, sack = g.ack(3, 1)
    for s in range(1, 70 + WINDOW):
        assert covered(floor, sack, s) == (s in accepted), s
