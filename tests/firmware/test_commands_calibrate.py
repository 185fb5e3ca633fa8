# Portable tests of calibrating over MQTT: `calibrate` with offset + counts_per_gram (set as
# given; the host averaged the lane's raw level) and what `status` reports per lane for it.
# The command core with a fake handler first, then the device's own handler (apps.device)
# on a fake shelf whose detector is fed by hand.
import json
import os

from apps.commands import Commands, Handler, ack_error, ack_ok, encode_ack
from xorshift import Rng


class FakeShelf(Handler):
    """Records what the core dispatches to it."""

    def __init__(self, lanes=4):
        self.lanes = lanes
        self.calls = []

    def calibrate(self, lane, grams):
        self.calls.append(("calibrate", lane, grams))
        return {"lane": lane, "counts_per_gram": 420.5}

    def set_calibration(self, lane, offset, counts_per_gram):
        self.calls.append(("set_calibration", lane, offset, counts_per_gram))
        return {"lane": lane, "offset": offset, "counts_per_gram": counts_per_gram}


def _cmd(**fields):
    return json.dumps(fields).encode()


def test_offset_and_counts_per_gram_set_a_calibration():
    h = FakeShelf()
    c = Commands(h)
    ack = c.handle(_cmd(id="c1", cmd="calibrate", lane=2, offset=-92000, counts_per_gram=420))
    assert ack == ack_ok("c1", {"lane": 2, "offset": -92000, "counts_per_gram": 420.0}), ack
    assert c.handle(_cmd(id="c2", cmd="calibrate", lane=0, offset=0,
                         counts_per_gram=-0.001))["ok"] is True
    # the grams form still goes to calibrate()
    assert c.handle(_cmd(id="c3", cmd="calibrate", lane=1, grams=1000))["ok"] is True
    assert h.calls == [("set_calibration", 2, -92000, 420.0),
                       ("set_calibration", 0, 0, -0.001), ("calibrate", 1, 1000.0)]
    assert type(h.calls[0][2]) is int and type(h.calls[0][3]) is float
    # a redelivery is answered from memory, as for any command
    again = c.handle(_cmd(id="c1", cmd="calibrate", lane=2, offset=-92000, counts_per_gram=420))
    assert again == ack and len(h.calls) == 3


def test_exactly_one_form_with_one_line_errors():
    h = FakeShelf()
    c = Commands(h)
    cases = (
        ({"lane": 1}, "grams: required"),
        ({"lane": 1, "grams": None}, "grams: required"),
        ({"lane": 1, "grams": 500, "offset": 3},
         "offset: not with grams (give grams, or offset and counts_per_gram)"),
        ({"lane": 1, "grams": 500, "counts_per_gram": 420},
         "counts_per_gram: not with grams (give grams, or offset and counts_per_gram)"),
        ({"lane": 1, "offset": 3}, "counts_per_gram: required with offset"),
        ({"lane": 1, "counts_per_gram": 420}, "offset: required with counts_per_gram"),
        ({"lane": 1, "offset": 3, "counts_per_gram": None},
         "counts_per_gram: required with offset"),
        ({"offset": 3, "counts_per_gram": 420}, "lane: required"),
        ({"lane": 4, "offset": 3, "counts_per_gram": 420}, "lane: must be 0..3 (got 4)"),
        ({"lane": 1, "offset": 8388608, "counts_per_gram": 420},
         "offset: must be -8388608..8388607 (got 8388608)"),
        ({"lane": 1, "offset": 12.5, "counts_per_gram": 420},
         "offset: must be an integer (got 12.5)"),
        ({"lane": 1, "offset": "9", "counts_per_gram": 420},
         'offset: must be an integer (got "9")'),
        ({"lane": 1, "offset": 0, "counts_per_gram": 0}, "counts_per_gram: must not be 0"),
        ({"lane": 1, "offset": 0, "counts_per_gram": 0.0004},
         "counts_per_gram: must be at least 0.001 in magnitude (got 0.0004)"),
        ({"lane": 1, "offset": 0, "counts_per_gram": -2000000},
         "counts_per_gram: must be -1000000..1000000 (got -2e+06)"),
        ({"lane": 1, "offset": 0, "counts_per_gram": True},
         "counts_per_gram: must be a number (got true)"),
        ({"lane": 1, "offset": 0, "counts_per_gram": 420, "cpg": 1},
         "cpg: unknown key"),
        ({"lane": 1, "offset": "x", "counts_per_gram": 0},
         'offset: must be an integer (got "x"); counts_per_gram: must not be 0'),
    )
    for i, (args, error) in enumerate(cases):
        body = dict(args, id=i, cmd="calibrate")
        ack = c.handle(json.dumps(body).encode())
        assert ack == ack_error(i, error), (args, ack)
    assert h.calls == []


def test_the_checks_are_config_json_s():
    # The same value refused with the same words as in config.json's lanes (apps.config).
    from apps.config import LANE
    from apps.schema import validate

    c = Commands(FakeShelf())
    lane = {"sku": "A", "unit_g": 100}
    for offset, cpg in ((-8388609, 420), (0, 0), (0, 1e7), (0, -0.0009), (1.5, 420),
                        (None, 420), (0, "420")):
        _, config_errors = validate(dict(lane, offset=offset, counts_per_gram=cpg), LANE)
        ack = c.handle(_cmd(id=1, cmd="calibrate", lane=0, offset=offset, counts_per_gram=cpg))
        if offset is None:  # config.json: absent or null is a type error; here "required"
            assert config_errors == ["offset: must be an integer (got null)"], config_errors
            assert ack["error"] == "offset: required with counts_per_gram"
            continue
        assert len(config_errors) == 1 and ack == ack_error(1, config_errors[0]), \
            (offset, cpg, config_errors, ack)


def test_a_handler_without_the_direct_form_says_so():
    class GramsOnly(Handler):
        lanes = 2

        def calibrate(self, lane, grams):
            return {"lane": lane}

    c = Commands(GramsOnly())
    assert c.handle(_cmd(id=1, cmd="calibrate", lane=0, grams=5))["ok"] is True
    assert c.handle(_cmd(id=2, cmd="calibrate", lane=0, offset=1, counts_per_gram=2)) == \
        ack_error(2, "calibrate: not supported on this device")
    gate = Commands(Handler())
    assert gate.handle(_cmd(id=3, cmd="calibrate", lane=0, offset=1, counts_per_gram=2)) == \
        ack_error(3, "calibrate: not supported: this device has no lanes")


def test_fuzz_the_direct_form():
    h = FakeShelf()
    c = Commands(h)
    rng = Rng(777)
    bad = {"offset": (8388608, -8388609, 2 ** 40, 1.5, "0", True, [], {}),
           "counts_per_gram": (0, 0.0, 0.0009, -0.0005, 1000001, 1e300, "420", False, [], {}),
           "grams": (1, 500.0)}  # grams beside the direct form: either form, not both
    good = {"offset": (0, -92000, 8388607, -8388608), "counts_per_gram": (420, -0.5, 1e6)}
    for n in range(600):
        body = {"id": "z" + str(n), "cmd": "calibrate", "lane": rng.below(4)}
        for key in ("offset", "counts_per_gram"):
            body[key] = rng.pick(good[key])
        broken = rng.pick(("offset", "counts_per_gram", "grams", "drop"))
        if broken == "drop":
            del body[rng.pick(("offset", "counts_per_gram", "lane"))]
        else:
            body[broken] = rng.pick(bad[broken])
        ack = c.handle(json.dumps(body).encode())
        assert ack["ok"] is False and ack["id"] == body["id"], (body, ack)
        err = ack["error"]
        assert err and "\n" not in err and "internal" not in err, (body, ack)
        json.loads(encode_ack(ack))
    assert h.calls == []


# -- the device's handler ------------------------------------------------------------------------

BOARD = {"name": "virtual", "chip": "virtual", "hx711": {"sck": 1, "dout": [10, 11, 12, 13,
                                                                              14, 15, 16, 17]}}
SPS = 10


class IdleBank:
    """An HX711 bank nobody polls here: the test feeds the detector itself."""

    def __init__(self, n):
        self.n = n
        self.status = bytearray(n)


def _scratch():
    try:
        import tempfile
    except ImportError:  # the VM: an in-memory filesystem
        path = "/tmp_cal_" + str(len(os.listdir("/")))
        os.mkdir(path)
        return path
    return tempfile.mkdtemp(prefix="cal")


def _device(lanes):
    """A shelf Device built in a scratch directory (its flash), which stays the cwd: call
    _done() after."""
    from apps import config, device
    from loopback_broker import LoopbackBroker

    # what Device() imports itself, imported while the cwd is still where the VM finds them
    import apps.sampler  # noqa: F401
    import net.clock  # noqa: F401
    import net.mqtt  # noqa: F401

    cfg = {"device": "shelf-" + "x" * 26, "store": "s1", "role": "shelf", "board": "virtual",
           "wifi": {"ssid": "w"}, "broker": {"url": "mqtt://127.0.0.1:1883"}, "sps": SPS,
           "lanes": [{"offset": 1000 * i, "counts_per_gram": 400, "sku": "S" * 32,
                      "unit_g": 250.0, "capacity": 12} for i in range(lanes)]}
    raw = json.dumps(cfg).encode()
    cwd = os.getcwd()
    os.chdir(_scratch())
    with open("config.json", "wb") as f:
        f.write(raw)
    parsed = config.parse(raw, json.dumps(BOARD).encode())
    assert parsed.ok, parsed.errors
    dev = device.Device(parsed, device.Parts(transport=LoopbackBroker(), bank=IdleBank(lanes)))
    return dev, cwd


def _feed(dev, lane, raw, n, t0=0):
    det = dev.sampler.detector
    for k in range(n):
        det.feed(lane, t0 + k * (1000 // SPS), raw)
    return t0 + n * (1000 // SPS)


def test_status_reports_what_a_host_needs_to_calibrate():
    from core.detector import ACTIVE

    dev, cwd = _device(8)
    try:
        st = dev.status()
        first = st["lanes"][0]  # nothing read yet
        assert first["raw"] is None and first["grams"] is None and first["still"] is False
        assert (first["offset"], first["counts_per_gram"]) == (0, 400.0)
        t = _feed(dev, 1, 121000, 40)  # 300 g on a lane with offset 1000, 400 counts per gram
        lane = dev.status()["lanes"][1]
        assert (lane["raw"], lane["offset"], lane["counts_per_gram"]) == (121000, 1000, 400.0)
        assert lane["grams"] == 300 and lane["still"] is True and lane["faulted"] is False
        dev.sampler.detector.feed(1, t, 141000)  # a weight coming down: not still
        assert dev.sampler.detector.state(1) == ACTIVE
        assert dev.status()["lanes"][1]["still"] is False
        # 8 lanes, every text at its longest: the ack stays small
        size = len(encode_ack(ack_ok("x" * 64, dev.status())))
        assert size < 2048, size
    finally:
        os.chdir(cwd)


def test_set_calibration_persists_and_keeps_the_detector_going():
    dev, cwd = _device(2)
    try:
        det = dev.sampler.detector
        t = _feed(dev, 0, 51000, 40)  # 125 g with the old calibration (offset 0, 400/g)
        level, state, seen = det.level(0), det.state(0), det._seen[0]
        before = json.loads(open("config.json").read())
        result = dev.set_calibration(0, 1000, 200.0)
        assert result == {"lane": 0, "offset": 1000, "counts_per_gram": 200.0}
        saved = json.loads(open("config.json").read())
        assert saved["lanes"][0]["offset"] == 1000
        assert saved["lanes"][0]["counts_per_gram"] == 200.0
        # only the calibration changed, in the file and in the device's own copy
        for key in ("sku", "unit_g", "capacity"):
            assert saved["lanes"][0].get(key) == before["lanes"][0].get(key), key
        assert saved["lanes"][1] == before["lanes"][1]
        assert dev.data["lanes"][0]["offset"] == 1000 and dev.cals[0] is det.lanes[0]
        # the detector keeps its level and state (no new warm-up), read with the new scale
        assert (det.level(0), det.state(0), det._seen[0]) == (level, state, seen)
        lane = dev.status()["lanes"][0]
        assert lane["grams"] == 250 and (lane["offset"], lane["counts_per_gram"]) == (1000, 200)
        # ...and goes on counting: one 250 g item (50000 counts now) comes off
        events = []
        for k in range(60):
            ev = det.feed(0, t + k * 100, 51000 - 50000 * min(1, k // 3))
            if ev is not None:
                events.append(ev)
        assert [e.count for e in events] == [-1], [e.as_dict() for e in events]
        # the grams form persists the same keys
        _feed(dev, 1, 41000, 40, t)
        dev.calibrate(1, 100)
        grams_form = json.loads(open("config.json").read())["lanes"][1]
        assert sorted(grams_form) == sorted(saved["lanes"][0])
    finally:
        os.chdir(cwd)
