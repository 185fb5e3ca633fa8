# The command core: one MQTT command in, one ack out (docs/commands.md).
#
#   cmds = Commands(handler)             # handler: the device side, see Handler
#   ack = cmds.handle(payload)           # never raises; publish encode_ack(ack)
#   cmds.after_ack()                     # then: performs a reboot/safe mode the ack announced
#
# Pure: parsing, validation (apps.schema) and dispatch only. Everything a command does to
# the device is the handler's job, so the same core serves shelves and gates, the runtime
# and the tests.

import json

from micropython import const

from apps.fields import (CAPACITY, MAX_GRAMS, SKU, TELEMETRY_MAX_S, TELEMETRY_MIN_S,
                         UNIT_G, counts_per_gram_field, offset_field)
from apps.schema import Dict, Float, Int, Str, Value, add_error, printable, show, validate

MAX_BYTES = const(1024)  # larger payloads are refused before parsing (heap on the ESP32)
MAX_ID_CHARS = const(64)
_REMEMBER = const(8)  # acks kept to answer a redelivered command without running it again
_MAX_ID_INT = 9007199254740991  # 2**53 - 1: exact in every JSON consumer
_MAX_TEXT = const(120)

COMMANDS = ("tare", "calibrate", "planogram", "telemetry", "status", "reboot", "safe_mode")
LANE_COMMANDS = ("tare", "calibrate", "planogram")
RESTARTS = ("reboot", "safe_mode")


class CommandError(Exception):
    """Raised by a handler to refuse a command; its message becomes the ack's error."""


class Handler:
    """The device side of the commands. Subclass it and override what the device supports;
    the rest answer "not supported on this device".

    `lanes`: the number of lanes (0 on a gate); lane numbers are 0..lanes-1 and are checked
    before a method is called, as are all other arguments (docs/commands.md gives ranges).
    Methods return a dict (the ack's result; None means {}) that json.dumps accepts, or raise
    CommandError / ValueError (e.g. core.lane.CalibrationError) to refuse with a message.
    Any other exception becomes an "internal error" ack.
    """

    lanes = 0

    def tare(self, lane):
        """Zero lane `lane` (None: every lane) at its current reading; persist it."""
        raise CommandError("not supported on this device")

    def calibrate(self, lane, grams):
        """`grams` (> 0) lie on the tared lane: set its counts per gram; persist it."""
        raise CommandError("not supported on this device")

    def set_calibration(self, lane, offset, counts_per_gram):
        """`calibrate` with `offset` (int counts) and `counts_per_gram` (a float, validated
        as config.json's) instead of `grams`: a calibration computed elsewhere (the host
        averaged the lane's raw level); set both at once and persist them."""
        raise CommandError("not supported on this device")

    def planogram(self, lane, sku, unit_g, capacity):
        """The lane now holds `sku`, `unit_g` grams each, up to `capacity` (0: unknown)."""
        raise CommandError("not supported on this device")

    def telemetry(self, period_s):
        """Publish telemetry every `period_s` seconds from now on; persist it."""
        raise CommandError("not supported on this device")

    def status(self):
        """A dict describing the device now (firmware, uptime, lanes, faults...)."""
        raise CommandError("not supported on this device")

    def reboot(self):
        """Get ready to restart (or refuse): called while handling the command. The restart
        itself is restart("reboot"), once the ack is out."""
        raise CommandError("not supported on this device")

    def safe_mode(self):
        """Get ready to restart into safe mode (REPL, no application), e.g. persist the flag
        boot.py looks for; or refuse. Then restart("safe_mode") follows, as for reboot."""
        raise CommandError("not supported on this device")

    def restart(self, kind):
        """Restart now (kind: "reboot" or "safe_mode"). Called by Commands.after_ack() once
        the ack has been published, never by handle(): the ack must leave first."""
        raise CommandError("not supported on this device")


def ack_ok(cid, result):
    return {"id": cid, "ok": True, "result": result}


def ack_error(cid, error):
    return {"id": cid, "ok": False, "error": error}


def is_json(v, depth=0):
    """Is v plain JSON data (None, bool, int, finite float, str, list, str-keyed dict)?
    MicroPython's json.dumps writes anything (bytes, sets, NaN, reprs), so ask first."""
    t = type(v)
    if v is None or t is bool or t is int or t is str:
        return True
    if t is float:
        return v - v == 0  # not inf, not NaN
    if depth >= 8:
        return False
    if t is list or t is tuple:
        for x in v:
            if not is_json(x, depth + 1):
                return False
        return True
    if t is dict:
        for k in v:
            if type(k) is not str or not is_json(v[k], depth + 1):
                return False
        return True
    return False


def encode_ack(ack):
    """The ack as JSON bytes for MQTT."""
    if not is_json(ack):  # handle() checks results, so only a hand-made ack gets here
        ack = ack_error(None, "internal error (ack not JSON)")
    return json.dumps(ack).encode()


def _text(exc):
    # An exception's message as one short printable line.
    return printable(str(exc), _MAX_TEXT) or type(exc).__name__


def _decode(raw, limit):
    # payload -> (message, None) or (None, error)
    t = type(raw)
    if t is str:
        raw = raw.encode()
    elif t is not bytes and t is not bytearray and t is not memoryview:
        return None, "payload: must be bytes (got " + show(raw) + ")"
    n = len(raw)
    if n > limit:
        return None, "payload: too large (%d bytes, at most %d)" % (n, limit)
    if n == 0:
        return None, "payload: empty"
    try:
        text = bytes(raw).decode("utf-8")
    except Exception:
        return None, "payload: not UTF-8 text"
    try:
        return json.loads(text), None
    except Exception:  # ValueError; RuntimeError for absurd nesting in MicroPython
        return None, "payload: not valid JSON"


def _command_id(msg):
    # -> (id, None) or (None, error); the id is echoed in the ack, so it is checked first
    if "id" not in msg:
        return None, "id: required"
    v = msg["id"]
    t = type(v)
    if t is int and -_MAX_ID_INT <= v <= _MAX_ID_INT:
        return v, None
    if t is str and 0 < len(v) <= MAX_ID_CHARS:
        for c in v:
            if not " " <= c <= "~":
                break
        else:
            return v, None
    return None, ("id: must be 1-%d printable ASCII characters or an integer (got %s)"
                  % (MAX_ID_CHARS, show(v)))


def _schema(cmd, lanes):
    top = lanes - 1 if lanes > 0 else 0
    fields = (Value("id"), Str("cmd"))
    if cmd == "tare":
        fields += (Int("lane", min=0, max=top, optional=True),)
    elif cmd == "calibrate":
        fields += (Int("lane", min=0, max=top),
                   Float("grams", gt=0, max=MAX_GRAMS, optional=True),
                   offset_field(optional=True), counts_per_gram_field(optional=True))
        return Dict(None, *fields, check=_one_calibration)
    elif cmd == "planogram":
        fields += (Int("lane", min=0, max=top), SKU, UNIT_G, CAPACITY)
    elif cmd == "telemetry":
        fields += (Int("period_s", min=TELEMETRY_MIN_S, max=TELEMETRY_MAX_S),)
    return Dict(None, *fields)


def _one_calibration(args, path, errors):
    # calibrate takes grams (a span the device measures) or offset + counts_per_gram (set
    # as given): exactly one of the two. A field that failed has said so already.
    if errors:
        return
    direct = [k for k in ("offset", "counts_per_gram") if args.get(k) is not None]
    if args.get("grams") is not None:
        if direct:
            add_error(errors, direct[0], "not with grams (give grams, or offset and "
                                         "counts_per_gram)")
    elif not direct:
        add_error(errors, "grams", "required")
    elif len(direct) == 1:
        other = "counts_per_gram" if direct[0] == "offset" else "offset"
        add_error(errors, other, "required with " + direct[0])


class Commands:
    def __init__(self, handler, max_bytes=MAX_BYTES):
        self.handler = handler
        self.max_bytes = max_bytes
        self.pending = None  # "reboot" / "safe_mode" once its ack is out: see after_ack()
        self._schemas = {}
        self._schema_lanes = -1
        self._recent = []  # [(id, message, ack)] of commands that succeeded, newest last

    def handle(self, raw):
        """One command payload (bytes) -> its ack dict. Never raises."""
        try:
            return self._handle(raw)
        except Exception as exc:
            return ack_error(None, "internal error (" + type(exc).__name__ + ")")

    def after_ack(self):
        """Call after publishing each ack: performs the restart that a reboot/safe_mode ack
        announced (result {"then": ...}) through handler.restart(). Returns its kind or
        None. Unlike handle(), lets the handler's exceptions through."""
        then = self.pending
        self.pending = None
        if then is not None:
            self.handler.restart(then)
        return then

    def _lanes(self):
        n = getattr(self.handler, "lanes", 0)
        return n if type(n) is int and n > 0 else 0

    def _schema(self, cmd, lanes):
        if lanes != self._schema_lanes:  # lane ranges live in the schemas: rebuild
            self._schemas = {}
            self._schema_lanes = lanes
        s = self._schemas.get(cmd)
        if s is None:
            s = _schema(cmd, lanes)
            self._schemas[cmd] = s
        return s

    def _handle(self, raw):
        msg, err = _decode(raw, self.max_bytes)
        if err is not None:
            return ack_error(None, err)
        if type(msg) is not dict:
            return ack_error(None, "payload: must be a JSON object (got " + show(msg) + ")")
        cid, err = _command_id(msg)
        if err is not None:
            return ack_error(None, err)
        for rid, rmsg, rack in self._recent:
            if rid == cid and type(rid) is type(cid):
                if rmsg == msg:
                    return rack  # a redelivery (MQTT QoS 1): answered, not run again
                return ack_error(cid, "id: already used for a different command")
        if "cmd" not in msg:
            return ack_error(cid, "cmd: required")
        cmd = msg["cmd"]
        if type(cmd) is not str or cmd not in COMMANDS:
            return ack_error(cid, "cmd: must be one of " + ", ".join(COMMANDS)
                             + " (got " + show(cmd) + ")")
        lanes = self._lanes()
        if lanes == 0 and cmd in LANE_COMMANDS:
            return ack_error(cid, cmd + ": not supported: this device has no lanes")
        args, errs = validate(msg, self._schema(cmd, lanes))
        if errs:
            return ack_error(cid, "; ".join(errs[:4]))
        ack = self._run(cid, cmd, args)
        if ack["ok"]:
            self._recent.append((cid, msg, ack))
            if len(self._recent) > _REMEMBER:
                self._recent.pop(0)
        return ack

    def _run(self, cid, cmd, args):
        direct = cmd == "calibrate" and args["grams"] is None  # offset + counts_per_gram
        fn = getattr(self.handler, "set_calibration" if direct else cmd, None)
        if fn is None:
            return ack_error(cid, cmd + ": not supported on this device")
        try:
            if cmd == "tare":
                result = fn(args["lane"])
            elif direct:
                result = fn(args["lane"], args["offset"], args["counts_per_gram"])
            elif cmd == "calibrate":
                result = fn(args["lane"], args["grams"])
            elif cmd == "planogram":
                result = fn(args["lane"], args["sku"], args["unit_g"], args["capacity"])
            elif cmd == "telemetry":
                result = fn(args["period_s"])
            else:
                result = fn()  # status; reboot/safe_mode only get ready here
        except (CommandError, ValueError) as exc:  # a refusal, with the handler's reason
            return ack_error(cid, cmd + ": " + _text(exc))
        except Exception as exc:
            return ack_error(cid, cmd + ": internal error (" + type(exc).__name__ + ": "
                             + _text(exc) + ")")
        if result is None:
            result = {}
        if type(result) is not dict:
            return ack_error(cid, cmd + ": internal error (handler returned "
                             + show(result) + ")")
        if not is_json(result):
            return ack_error(cid, cmd + ": internal error (result is not JSON)")
        if cmd in RESTARTS:
            result = dict(result)
            result["then"] = cmd
            self.pending = cmd  # after_ack() restarts once this ack is published
        return ack_ok(cid, result)
