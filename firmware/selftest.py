# Bench self-test of a node, run by the technician's tools over the console while the
# firmware is stopped (roadside verify, roadside calibrate); never imported by main.py.
#
#   ranges(n)  one air temperature and n ranger pings with the node's own drivers:
#              "TEMP <cc|none>" then "RANGE <mm>" per ping (temperature compensated;
#              0 wiring fault, -1 no echo)
#   run(n)     one line per check, "CHECK <name> PASS|FAIL <detail>": config, board,
#              ranger (n pings echo, agree, within the sensor's reach and h0), temp,
#              mag_a, mag_b (when traffic is on), battery; then "SELFTEST PASS|FAIL"

import time

import machine
from micropython import const

from firmware import config, health, qmc5883l, ranger

_MIN_MM = const(250)            # the SR04T's blind zone; the MB7389 reads 300 at least
_MAX_MM = const(6000)
_SPREAD_MM = const(30)          # pings of a still scene agree to a few mm
_ABOVE_H0_MM = const(100)       # a range longer than h0 by more: wrong h0 or a bad echo
_CONVERSION_MS = const(750)
_MIN_MV = const(3000)
_MAX_MV = const(5500)


def _board(cfg):
    return __import__(cfg.module_name(), None, None, ("NAME",))


def _temp(b):
    t = ranger.AirTemp(b.ONEWIRE_PIN)
    if not t.start():
        return None
    time.sleep_ms(_CONVERSION_MS)
    return t.read_cc()


def _pings(b, n, cc):
    r = ranger.make_ranger(b)
    r.begin()
    out = []
    for _ in range(n):
        time.sleep_ms(r.GAP_MS)
        out.append(ranger.tof_to_range_mm(r.ping(), cc))
    return r.NAME, out


def ranges(n):
    b = _board(config.Config().load())
    cc = _temp(b)
    print("TEMP", "none" if cc is None else cc)
    for mm in _pings(b, n, cc)[1]:
        print("RANGE", mm)


def _say(ok, name, detail):
    print("CHECK", name, "PASS" if ok else "FAIL", detail)
    return ok


def run(n=7):
    cfg = config.Config().load()
    ok = _say(not cfg.error, "config", cfg.error or "node %d site %s h0_mm %d" % (
        cfg.get("node"), cfg.get("site") or "-", cfg.get("h0_mm")))
    try:
        b = _board(cfg)
    except ImportError:
        _say(False, "board", "no module %s" % cfg.module_name())
        print("SELFTEST FAIL")
        return
    ok &= _say(True, "board", b.NAME)
    cc = _temp(b)
    ok &= _say(cc is not None, "temp", "no DS18B20 answers" if cc is None else
               "%d.%02d C" % (cc // 100, cc % 100))
    name, mm = _pings(b, n, cc)
    good = [x for x in mm if _MIN_MM <= x <= _MAX_MM]
    h0 = cfg.get("h0_mm")
    top = h0 + _ABOVE_H0_MM if h0 else _MAX_MM
    ok &= _say(len(good) == n and max(good) - min(good) <= _SPREAD_MM and max(good) <= top,
               "ranger", "%s %d/%d echoes %s mm" % (name, len(good), n,
                                                   " ".join(str(x) for x in mm)))
    if cfg.get("traffic"):
        mags = qmc5883l.make_magnetometers(b)
        xyz = [0, 0, 0]
        for i in range(2):
            m = mags[i]
            got = False
            if m is not None:
                for _ in range(20):
                    try:
                        got = m.read_mg(xyz)
                    except OSError:
                        break
                    if got:
                        break
                    time.sleep_ms(5)
            got = got and xyz != [0, 0, 0]
            ok &= _say(got, "mag_a" if i == 0 else "mag_b", "%d %d %d mG" % tuple(xyz)
                       if got else "no QMC5883L answers (or it reads 0 0 0)")
    mv = None
    try:
        adc = machine.ADC(machine.Pin(b.BATTERY_ADC))
        adc.atten(machine.ADC.ATTN_11DB)
        mv = health.battery_mv(adc, b)
    except Exception:
        pass
    ok &= _say(mv is not None and _MIN_MV <= mv <= _MAX_MV, "battery",
               "%s mV" % mv)
    print("SELFTEST", "PASS" if ok else "FAIL")
