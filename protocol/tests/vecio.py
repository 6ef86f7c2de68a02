# Reading the golden vectors on both interpreters (plain json, one vector a line).

import json
import os

from protocol.frame import KeyRing


def vector_dir():
    d = os.getenv("ROADSIDE_VECTORS")
    if d:
        return d
    here = __file__.rsplit("/", 1)[0]
    return here.rsplit("/", 1)[0] + "/vectors"


def rows(name):
    with open(vector_dir() + "/" + name) as f:
        for line in f:
            line = line.strip()
            if line:
                yield json.loads(line)


def keyring(open_nodes):
    with open(vector_dir() + "/keys.json") as f:
        keys = json.load(f)["keys"]
    ring = KeyRing(open_nodes=open_nodes)
    for node in keys:
        ring.add(int(node), bytes.fromhex(keys[node]))
    return ring


def value(j):
    # Inverse of generate.jsonable.
    if isinstance(j, list):
        return [value(x) for x in j]
    if isinstance(j, dict):
        if "bytes" in j:
            return bytes.fromhex(j["bytes"])
        if "float" in j:
            return float(j["float"])
        if "map" in j:
            d = {}
            for k, v in j["map"]:
                d[value(k)] = value(v)
            return d
    return j


def same(a, b):
    # Deep equality where NaN equals NaN and -0.0 differs from 0.0 only in bytes (not here).
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (a != a and b != b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return False
        for i in range(len(a)):
            if not same(a[i], b[i]):
                return False
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        if len(a) != len(b):
            return False
        for k in a:
            if k not in b or not same(a[k], b[k]):
                return False
        return True
    return type(a) is type(b) and a == b


class Failures:
    # Collects per-vector failures so one run names every broken vector, then asserts.
    def __init__(self):
        self.items = []
        self.count = 0

    def check(self, ok, name, why):
        self.count += 1
        if not ok:
            self.items.append(name + ": " + why)

    def done(self, minimum=1):
        assert self.count >= minimum, "only %d checks ran" % self.count
        assert not self.items, "%d failed:\n  %s" % (len(self.items), "\n  ".join(self.items))
