# Portable tests of apps.commands, the command core: parse, validate, dispatch, ack.
import json

from apps.commands import MAX_BYTES, CommandError, Commands, Handler, ack_error, ack_ok, encode_ack
from core.lane import CalibrationError
from xorshift import Rng


class FakeHandler(Handler):
    """A shelf with `lanes` lanes that records every call."""

    def __init__(self, lanes=6):
        self.lanes = lanes
        self.calls = []
        self.restarted = []
        self.period_s = 60

    def tare(self, lane):
        self.calls.append(("tare", lane))
        return {"lanes": list(range(self.lanes)) if lane is None else [lane]}

    def calibrate(self, lane, grams):
        self.calls.append(("calibrate", lane, grams))
        if grams > 5000:
            raise CalibrationError("no change from tare: is the weight on the lane?")
        return {"lane": lane, "counts_per_gram": 420.5}

    def planogram(self, lane, sku, unit_g, capacity):
        self.calls.append(("planogram", lane, sku, unit_g, capacity))

    def telemetry(self, period_s):
        self.calls.append(("telemetry", period_s))
        self.period_s = period_s
        return {"period_s": period_s}

    def status(self):
        self.calls.append(("status",))
        return {"lanes": self.lanes, "uptime_ms": 1234, "faults": []}

    def reboot(self):
        self.calls.append(("reboot",))

    def safe_mode(self):
        self.calls.append(("safe_mode",))
        return {"flag": "written"}

    def restart(self, kind):
        self.restarted.append(kind)


def _cmd(**fields):
    return json.dumps(fields).encode()


def _setup(lanes=6):
    h = FakeHandler(lanes)
    return h, Commands(h)


def test_each_command_dispatches_and_acks():
    h, c = _setup()
    assert c.handle(_cmd(id="t1", cmd="tare", lane=2)) == ack_ok("t1", {"lanes": [2]})
    assert c.handle(_cmd(id="t2", cmd="tare")) == ack_ok("t2", {"lanes": [0, 1, 2, 3, 4, 5]})
    assert c.handle(_cmd(id="t3", cmd="tare", lane=None))["ok"] is True
    assert c.handle(_cmd(id="c1", cmd="calibrate", lane=1, grams=1000)) == ack_ok(
        "c1", {"lane": 1, "counts_per_gram": 420.5})
    assert c.handle(_cmd(id="p1", cmd="planogram", lane=5, sku="COKE-330", unit_g=350,
                         capacity=12)) == ack_ok("p1", {})
    assert c.handle(_cmd(id="p2", cmd="planogram", lane=0, sku="X", unit_g=1.5)) == ack_ok(
        "p2", {})
    assert c.handle(_cmd(id=7, cmd="telemetry", period_s=30)) == ack_ok(7, {"period_s": 30})
    assert c.handle(_cmd(id="s", cmd="status")) == ack_ok(
        "s", {"lanes": 6, "uptime_ms": 1234, "faults": []})
    assert h.calls == [("tare", 2), ("tare", None), ("tare", None), ("calibrate", 1, 1000.0),
                       ("planogram", 5, "COKE-330", 350.0, 12),
                       ("planogram", 0, "X", 1.5, 0), ("telemetry", 30), ("status",)]
    assert type(h.calls[3][2]) is float  # grams arrive as a float, whatever the JSON
    assert c.after_ack() is None and h.restarted == []


def test_restart_happens_only_after_the_ack():
    h, c = _setup()
    ack = c.handle(_cmd(id="r", cmd="reboot"))
    assert ack == ack_ok("r", {"then": "reboot"})
    assert h.calls == [("reboot",)] and h.restarted == []  # ready, not restarted yet
    assert c.after_ack() == "reboot"
    assert h.restarted == ["reboot"]
    assert c.after_ack() is None and h.restarted == ["reboot"]  # once
    ack = c.handle(_cmd(id="sm", cmd="safe_mode"))
    assert ack == ack_ok("sm", {"flag": "written", "then": "safe_mode"})
    assert c.after_ack() == "safe_mode"
    assert h.restarted == ["reboot", "safe_mode"]


def test_documented_error_acks():
    h, c = _setup()
    cases = (
        (_cmd(id="a", cmd="tare", lane=9), ack_error("a", "lane: must be 0..5 (got 9)")),
        (_cmd(id="a", cmd="tare", lane=-1), ack_error("a", "lane: must be 0..5 (got -1)")),
        (_cmd(id="a", cmd="tare", lane=True), ack_error("a", "lane: must be an integer "
                                                             "(got true)")),
        (_cmd(id="a", cmd="tare", lane="2"), ack_error("a", 'lane: must be an integer '
                                                            '(got "2")')),
        (_cmd(id="a", cmd="calibrate", lane=1), ack_error("a", "grams: required")),
        (_cmd(id="a", cmd="calibrate", grams=100), ack_error("a", "lane: required")),
        (_cmd(id="a", cmd="calibrate", lane=1, grams=0),
         ack_error("a", "grams: must be > 0 and <= 100000 (got 0)")),
        (_cmd(id="a", cmd="calibrate", lane=1, grams=100, weight=3),
         ack_error("a", "weight: unknown key")),
        (_cmd(id="a", cmd="planogram", lane=1, sku="A B", unit_g=-2),
         ack_error("a", "sku: must use only A-Z a-z 0-9 - _ . : (got \"A B\": ' ' not "
                        "allowed); unit_g: must be > 0 and <= 100000 (got -2)")),
        (_cmd(id="a", cmd="telemetry", period_s=1),
         ack_error("a", "period_s: must be 5..3600 (got 1)")),
        (_cmd(id="a", cmd="telemetry", period_s=30.0),
         ack_error("a", "period_s: must be an integer (got 30)")),
        (_cmd(id="a", cmd="status", lane=1), ack_error("a", "lane: unknown key")),
        (_cmd(id="a", cmd="tara"),
         ack_error("a", 'cmd: must be one of tare, calibrate, planogram, telemetry, status, '
                        'reboot, safe_mode (got "tara")')),
        (_cmd(id="a", cmd=3), ack_error("a", "cmd: must be one of tare, calibrate, "
                                             "planogram, telemetry, status, reboot, "
                                             "safe_mode (got 3)")),
        (_cmd(id="a"), ack_error("a", "cmd: required")),
        (_cmd(cmd="status"), ack_error(None, "id: required")),
        (_cmd(id=None, cmd="status"),
         ack_error(None, "id: must be 1-64 printable ASCII characters or an integer "
                         "(got null)")),
        (_cmd(id="", cmd="status"),
         ack_error(None, 'id: must be 1-64 printable ASCII characters or an integer '
                         '(got "")')),
        (_cmd(id=1.5, cmd="status"),
         ack_error(None, "id: must be 1-64 printable ASCII characters or an integer "
                         "(got 1.5)")),
        (_cmd(id=True, cmd="status"),
         ack_error(None, "id: must be 1-64 printable ASCII characters or an integer "
                         "(got true)")),
        (_cmd(id="x" * 65, cmd="status"),
         ack_error(None, 'id: must be 1-64 printable ASCII characters or an integer '
                         '(got "xxxxxxxxxxxxxxxxxxxxxxxx...")')),
        (b"{nope", ack_error(None, "payload: not valid JSON")),
        (b"", ack_error(None, "payload: empty")),
        (b"\xff{}", ack_error(None, "payload: not UTF-8 text")),
        (b"[1, 2]", ack_error(None, "payload: must be a JSON object (got a list)")),
        (b'"status"', ack_error(None, 'payload: must be a JSON object (got "status")')),
        (b"null", ack_error(None, "payload: must be a JSON object (got null)")),
        (None, ack_error(None, "payload: must be bytes (got null)")),
        (12, ack_error(None, "payload: must be bytes (got 12)")),
    )
    for raw, expected in cases:
        assert c.handle(raw) == expected, (raw, c.handle(raw))
    assert h.calls == []


def test_payload_size_is_bounded_before_parsing():
    h, c = _setup()
    pad = " " * (MAX_BYTES - len(_cmd(id="a", cmd="status")))
    ok = _cmd(id="a", cmd="status") + pad.encode()
    assert len(ok) == MAX_BYTES
    assert c.handle(ok)["ok"] is True
    big = ok + b" "
    assert c.handle(big) == ack_error(None, "payload: too large (1025 bytes, at most 1024)")
    assert c.handle(b"[" * 5000) == ack_error(None, "payload: too large (5000 bytes, at "
                                                    "most 1024)")
    assert c.handle(bytearray(b'{"id": "b", "cmd": "status"}'))["ok"] is True
    assert c.handle(memoryview(b'{"id": "c", "cmd": "status"}'))["ok"] is True
    assert c.handle('{"id": "d", "cmd": "status"}')["ok"] is True
    assert c.handle(b"[" * 1000)["error"] == "payload: not valid JSON"  # deep nesting


def test_handler_failures_become_error_acks():
    class Broken(FakeHandler):
        def status(self):
            return {"n": 1} if self.lanes == 6 else 1 / 0

        def telemetry(self, period_s):
            raise CommandError("period locked by the operator")

        def tare(self, lane):
            return [lane]

        def planogram(self, lane, sku, unit_g, capacity):
            return {"bad": b"bytes"}

    h = Broken(6)
    c = Commands(h)
    assert c.handle(_cmd(id=1, cmd="calibrate", lane=0, grams=9000)) == ack_error(
        1, "calibrate: no change from tare: is the weight on the lane?")
    assert c.handle(_cmd(id=2, cmd="telemetry", period_s=10)) == ack_error(
        2, "telemetry: period locked by the operator")
    assert c.handle(_cmd(id=3, cmd="tare")) == ack_error(
        3, "tare: internal error (handler returned a list)")
    assert c.handle(_cmd(id=4, cmd="planogram", lane=0, sku="A", unit_g=1)) == ack_error(
        4, "planogram: internal error (result is not JSON)")
    h.lanes = 5
    assert c.handle(_cmd(id=5, cmd="status")) == ack_error(
        5, "status: internal error (ZeroDivisionError: " + _zde_text() + ")")


def _zde_text():
    try:
        _ = 1 / 0
    except ZeroDivisionError as exc:
        return str(exc) or "ZeroDivisionError"
    return ""


def test_base_handler_and_gates():
    c = Commands(Handler())  # nothing supported, no lanes: a gate without commands yet
    assert c.handle(_cmd(id=1, cmd="status")) == ack_error(
        1, "status: not supported on this device")
    assert c.handle(_cmd(id=2, cmd="tare")) == ack_error(
        2, "tare: not supported: this device has no lanes")
    assert c.handle(_cmd(id=3, cmd="reboot")) == ack_error(
        3, "reboot: not supported on this device")
    assert c.after_ack() is None
    h, c = _setup(lanes=0)
    assert c.handle(_cmd(id=4, cmd="calibrate", lane=0, grams=5)) == ack_error(
        4, "calibrate: not supported: this device has no lanes")
    assert c.handle(_cmd(id=5, cmd="status"))["ok"] is True


def test_lane_range_follows_the_handler():
    h, c = _setup(lanes=2)
    assert c.handle(_cmd(id=1, cmd="tare", lane=2))["error"] == "lane: must be 0..1 (got 2)"
    h.lanes = 8
    assert c.handle(_cmd(id=2, cmd="tare", lane=7))["ok"] is True
    h.lanes = 1
    assert c.handle(_cmd(id=3, cmd="tare", lane=1))["error"] == "lane: must be 0..0 (got 1)"


def test_redelivered_command_is_answered_not_rerun():
    h, c = _setup()
    first = c.handle(_cmd(id="cal-1", cmd="calibrate", lane=0, grams=500))
    again = c.handle(_cmd(id="cal-1", cmd="calibrate", lane=0, grams=500))
    assert first == again and first["ok"] is True
    assert len(h.calls) == 1
    assert c.handle(_cmd(id="cal-1", cmd="calibrate", lane=1, grams=500)) == ack_error(
        "cal-1", "id: already used for a different command")
    # a failed command may be retried with the same id (e.g. once the weight is on)
    bad = c.handle(_cmd(id="cal-2", cmd="calibrate", lane=0, grams=9000))
    assert bad["ok"] is False
    assert c.handle(_cmd(id="cal-2", cmd="calibrate", lane=0, grams=900))["ok"] is True
    # only the last few are remembered
    for i in range(10):
        c.handle(_cmd(id="s" + str(i), cmd="status"))
    n = len(h.calls)
    assert c.handle(_cmd(id="cal-1", cmd="calibrate", lane=0, grams=500))["ok"] is True
    assert len(h.calls) == n + 1
    # 1 and "1" are different ids
    assert c.handle(_cmd(id=1, cmd="status"))["ok"] is True
    assert c.handle(_cmd(id="1", cmd="tare"))["ok"] is True


def test_is_json():
    from apps.commands import is_json
    for good in (None, True, 0, -1.5, "x", [1, "a", None], {"a": {"b": [1.0]}}, (1, 2)):
        assert is_json(good), good
    deep = [1]
    for _ in range(10):
        deep = [deep]
    for bad in (b"x", float("nan"), float("inf"), {1: 2}, {"a": object()}, [set()], deep,
                bytearray(2)):
        assert not is_json(bad), bad


def test_encode_ack():
    ack = ack_ok("x", {"lanes": [1, 2], "name": "caf\u00e9"})
    assert json.loads(encode_ack(ack)) == ack
    bad = ack_ok("x", {"b": b"raw"})
    assert json.loads(encode_ack(bad)) == ack_error(None, "internal error (ack not JSON)")
    assert json.loads(encode_ack(ack_error(None, "id: required"))) == {
        "id": None, "ok": False, "error": "id: required"}


# -- fuzz --------------------------------------------------------------------------------------


_VALID = (
    {"cmd": "tare", "lane": 1},
    {"cmd": "tare"},
    {"cmd": "calibrate", "lane": 2, "grams": 500.0},
    {"cmd": "planogram", "lane": 3, "sku": "COKE-330", "unit_g": 350.5, "capacity": 10},
    {"cmd": "telemetry", "period_s": 60},
    {"cmd": "status"},
    {"cmd": "reboot"},
    {"cmd": "safe_mode"},
)
# (key, values that are never acceptable for it)
_BAD_VALUES = {
    "cmd": ("tara", "", "TARE", 1, None, ["tare"], {}),
    "lane": (6, -1, 99, 2 ** 40, "1", 1.0, True, [], {}),
    "grams": (0, -5.0, 100001, 1e300, "500", True, None, []),
    "sku": ("", "has space", "x" * 33, "caf\u00e9", 5, None, []),
    "unit_g": (0, -1.0, "350", False, None, {}),
    "capacity": (-1, 10001, 2.5, "3", True, None),
    "period_s": (0, 4, 3601, 60.0, "60", None, []),
    "id": (None, "", "x" * 65, 1.5, True, [], {}, "tab\there", 2 ** 60),
}
_REQUIRED = {"calibrate": ("lane", "grams"), "planogram": ("lane", "sku", "unit_g"),
             "telemetry": ("period_s",)}


def _malformed(rng, n):
    base = dict(rng.pick(_VALID))
    base["id"] = "f" + str(n)
    kind = rng.below(8)
    if kind == 0:  # a bad value for a key the command has (or id / cmd)
        keys = [k for k in base if k in _BAD_VALUES]
        key = rng.pick(keys)
        base[key] = rng.pick(_BAD_VALUES[key])
        return json.dumps(base).encode()
    if kind == 1:  # a required key missing
        required = ("id", "cmd") + _REQUIRED.get(base["cmd"], ())
        del base[rng.pick(required)]
        return json.dumps(base).encode()
    if kind == 2:  # an unknown key
        base[rng.pick(("lanes", "gram", "force", "Lane", "x", "then"))] = rng.below(3)
        return json.dumps(base).encode()
    if kind == 3:  # truncated JSON: the closing brace is always cut off
        text = json.dumps(base).encode()
        return text[:rng.below(len(text) - 1)]
    if kind == 4:  # random bytes
        return bytes([rng.below(256) for _ in range(rng.below(64))])
    if kind == 5:  # oversized
        base["pad"] = "p" * (MAX_BYTES + rng.below(200))
        return json.dumps(base).encode()
    if kind == 6:  # not an object
        return json.dumps(rng.pick(([base], "tare", 3, None, True, 1.5))).encode()
    # random JSON-ish fragments
    parts = ('{"id":', '"x"', '"cmd":', '"tare"', ",", ":", "}", "{", "[", "]", "null",
             "1e999", "-", '"\\u', "true")
    return "".join([rng.pick(parts) for _ in range(rng.below(12))]).encode()


def test_fuzz_malformed_commands():
    h, c = _setup()
    rng = Rng(4242)
    for n in range(1500):
        raw = _malformed(rng, n)
        ack = c.handle(raw)
        assert type(ack) is dict and sorted(ack) == ["error", "id", "ok"], (raw, ack)
        assert ack["ok"] is False, (raw, ack)
        err = ack["error"]
        assert type(err) is str and err and "\n" not in err and len(err) < 400, ack
        assert "internal" not in err, (raw, ack)
        assert ack["id"] is None or ack["id"] == "f" + str(n), (raw, ack)
        json.loads(encode_ack(ack))
    assert h.calls == [] and h.restarted == []
    assert c.after_ack() is None
