# config.json and board.json: their schemas, the checks across the two, loading and saving.
#
# Provisioning writes config.json (what this device is and where it reports) and copies one
# of boards/*.json to the board as board.json (which pin does what). load() never raises on
# bad content: it returns a Config whose `errors` are one-line messages, so the runtime can
# print them on the serial console and report a fault instead of crash-looping.
# docs/config.md describes every key.

import json
import os

from micropython import const

from apps.fields import (CAPACITY, MAX_GRAMS, SKU, SKU_CHARS, TELEMETRY_MAX_S,  # noqa: F401
                         TELEMETRY_MIN_S, UNIT_G, counts_per_gram_field, offset_field)
from apps.schema import Dict, Int, List, Str, add_error, join, printable, show, validate
from core.lane import LaneCal

CONFIG_FILE = "config.json"
BOARD_FILE = "board.json"
MAX_FILE_BYTES = const(16384)  # read at most this much: a bigger file is an error, not OOM
MAX_LANES = const(8)

ROLES = ("shelf", "gate")
CHIPS = ("esp32", "esp32s3", "virtual")
GAINS = (128, 64, 32)  # the HX711's channel A x128, A x64, B x32
BAUDS = (9600, 19200, 38400, 57600, 115200)
EXITS = ("scan", "beam")

_LOWER = "abcdefghijklmnopqrstuvwxyz"
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_DIGITS = "0123456789"
ID_CHARS = _LOWER + _DIGITS + "-"  # safe in MQTT topics and file names
HOST_CHARS = _LOWER + _UPPER + _DIGITS + "-."
PREFIX_CHARS = _LOWER + _DIGITS + "-_/"
FILE_CHARS = _LOWER + _UPPER + _DIGITS + "-_./"

# -- GPIO facts ------------------------------------------------------------------------------
# ESP32 (esp-idf GPIO reference and the ESP32 datasheet): GPIO0-19, 21-23, 25-27 and 32-39
# exist (GPIO20 only on the ESP32-PICO-V3, not on the WROOM/WROVER modules); 6-11 carry the
# module's SPI flash; 34-39 are input-only and have no internal pull-up/down; strapping pins
# are 0, 2, 5, 12 (selects the flash voltage: pulled high at reset, a 3.3 V module will not
# boot) and 15; UART0 (REPL, flashing) is 1 (TX) / 3 (RX); WROVER modules use 16/17 for PSRAM.
# ESP32-S3 (esp-idf GPIO reference, ESP32-S3-WROOM-1 datasheet): GPIO0-21 and 26-48 exist (no
# 22-25); 26-32 carry the SPI flash/PSRAM; 33-37 also do on modules with octal flash or PSRAM
# (-R8, -N32R8V); every GPIO can drive an output; strapping pins 0, 3, 45, 46; the native USB
# is 19 (D-) / 20 (D+); UART0 is 43 (TX) / 44 (RX).
# The virtual board (simulator, MicroPython VM) has GPIO0-63 with no restrictions.
_ESP32_STRAPPING = (0, 2, 5, 12, 15)
_S3_STRAPPING = (0, 3, 45, 46)
_MAX_PIN = const(63)


def _id_check(v, path, errors):
    if v[0] == "-" or v[-1] == "-":
        add_error(errors, path, "must not start or end with '-'" + " (got " + show(v) + ")")


def _ident(name):
    return Str(name, min_len=1, max_len=32, chars=ID_CHARS, chars_desc="a-z 0-9 -",
               check=_id_check)


# -- broker URL ------------------------------------------------------------------------------

def parse_url(url):
    """Parse "mqtt://host[:port]" or "mqtts://host[:port]" -> (tls, host, port).

    Raises ValueError with a message that completes "broker.url: ..."."""
    got = " (got " + show(url) + ")"
    if type(url) is not str:
        raise ValueError("must be a string" + got)
    if url.startswith("mqtts://"):
        tls, rest, port = True, url[8:], 8883
    elif url.startswith("mqtt://"):
        tls, rest, port = False, url[7:], 1883
    else:
        raise ValueError("must start with mqtt:// or mqtts://" + got)
    if "@" in rest:
        raise ValueError("must not hold credentials: use broker.username/password" + got)
    if "/" in rest:
        raise ValueError("must be mqtt://host:port or mqtts://host:port, no path" + got)
    i = rest.rfind(":")
    host = rest
    if i >= 0:
        host = rest[:i]
        digits = rest[i + 1:]
        ok = 0 < len(digits) <= 5
        for c in digits:
            if c not in _DIGITS:
                ok = False
        if not ok or not 0 < int(digits) < 65536:
            raise ValueError("port must be 1..65535" + got)
        port = int(digits)
    if not host or len(host) > 253 or host[0] in "-." or host[-1] == "-":
        raise ValueError("must name a host: mqtt://host:port" + got)
    for c in host:
        if c not in HOST_CHARS:
            raise ValueError("host may use only A-Z a-z 0-9 - ." + got)
    return tls, host, port


def _url_check(v, path, errors):
    try:
        parse_url(v)
    except ValueError as exc:
        add_error(errors, path, str(exc))


def _broker_check(b, path, errors):
    url = b.get("url")
    if url is not None:
        tls = url.startswith("mqtts://")
        if tls and b.get("ca_file") is None:
            add_error(errors, join(path, "ca_file"),
                      "required for mqtts:// (the broker's CA certificate, a file on the board)")
        if not tls and b.get("ca_file") is not None:
            add_error(errors, join(path, "ca_file"),
                      "set, but broker.url is plain mqtt://: use mqtts:// or drop ca_file")
    if b.get("password") is not None and b.get("username") is None:
        add_error(errors, join(path, "password"), "needs broker.username (MQTT has no "
                                                  "password without a user name)")


def _prefix_check(v, path, errors):
    if v[0] == "/" or v[-1] == "/" or "//" in v:
        add_error(errors, path, "must be topic levels joined by '/', no empty level"
                  + " (got " + show(v) + ")")


def _wpa_check(v, path, errors):
    if 0 < len(v) < 8:
        add_error(errors, path, "must be empty (open network) or 8-63 characters (WPA2)"
                  + " (got %d characters)" % len(v))


# -- schemas -----------------------------------------------------------------------------------
# The calibration and planogram fields live in apps.fields, shared with the commands.
GAIN = Int("gain", default=128, choices=GAINS)
OFFSET = offset_field(default=0)
COUNTS_PER_GRAM = counts_per_gram_field()
LANE = Dict(None, GAIN, OFFSET, COUNTS_PER_GRAM, SKU, UNIT_G, CAPACITY,
            Dict("pins", Int("dout", min=0, max=_MAX_PIN), optional=True))

_COMMON = (
    _ident("device"),
    _ident("store"),
    Str("role", choices=ROLES),
    _ident("board"),
    Dict("wifi",
         Str("ssid", min_len=1, max_len=32),
         Str("password", default="", max_len=63, check=_wpa_check)),
    Dict("broker",
         Str("url", check=_url_check),
         Str("username", optional=True, min_len=1, max_len=64),
         Str("password", optional=True, max_len=128),
         Str("ca_file", optional=True, min_len=1, max_len=64, chars=FILE_CHARS,
             chars_desc="A-Z a-z 0-9 - _ . /"),
         Int("keepalive_s", default=60, min=10, max=1200),
         Str("prefix", default="store/v1", min_len=1, max_len=64, chars=PREFIX_CHARS,
             chars_desc="a-z 0-9 - _ /", check=_prefix_check),
         check=_broker_check),
    Str("ntp", default="pool.ntp.org", min_len=1, max_len=253, chars=HOST_CHARS,
        chars_desc="A-Z a-z 0-9 - ."),
    Int("telemetry_s", default=60, min=TELEMETRY_MIN_S, max=TELEMETRY_MAX_S),
    Dict("outbox", Int("budget_kb", default=64, min=4, max=1024), default={}),
)


def _lanes(optional):
    if optional:
        return List("lanes", LANE, min_items=1, max_items=MAX_LANES, optional=True)
    return List("lanes", LANE, min_items=1, max_items=MAX_LANES)


def _gate(optional):
    fields = (Dict("scanner", Int("baud", default=9600, choices=BAUDS), default={}),
              Int("relay_pulse_ms", default=500, min=50, max=10000),
              Str("exit", default="scan", choices=EXITS))
    if optional:
        return Dict("gate", *fields, optional=True)
    return Dict("gate", *fields, default={})


# The HX711s' output rate, set by their RATE pin on the amplifier board (10 or 80 SPS): the
# detector's windows are sized from it.
SPS = Int("sps", default=10, choices=(10, 80))
SHELF_CONFIG = Dict(None, *(_COMMON + (_lanes(False), SPS)))
GATE_CONFIG = Dict(None, *(_COMMON + (_gate(False),)))
_ANY_CONFIG = Dict(None, *(_COMMON + (_lanes(True), _gate(True),
                                      Int("sps", optional=True, choices=(10, 80)))))
_ROLE_KEYS = (("lanes", "shelf"), ("sps", "shelf"), ("gate", "gate"))


def _pin(name):
    return Int(name, min=0, max=_MAX_PIN, optional=True)


BOARD = Dict(
    None,
    _ident("name"),
    Str("chip", choices=CHIPS),
    Str("description", default="", max_len=200),
    Dict("hx711",
         Int("sck", min=0, max=_MAX_PIN),
         List("dout", Int(None, min=0, max=_MAX_PIN), min_items=1, max_items=MAX_LANES),
         optional=True),
    Dict("scanner_uart",
         Int("id", choices=(1, 2)),  # UART0 is the REPL console
         Int("tx", min=0, max=_MAX_PIN),
         Int("rx", min=0, max=_MAX_PIN),
         optional=True),
    _pin("relay"),
    _pin("beam"),
    _pin("led"),
    _pin("safe_mode_pin"),
)


# -- pins --------------------------------------------------------------------------------------

def pin_error(chip, pin, output):
    """Why `pin` cannot serve on `chip` (as an output if `output`), or None."""
    if chip == "esp32":
        if pin > 39 or pin == 20 or pin == 24 or 28 <= pin <= 31:
            return "GPIO%d does not exist on the esp32" % pin
        if 6 <= pin <= 11:
            return "GPIO%d is wired to the module's SPI flash" % pin
        if output and pin >= 34:
            return "GPIO%d is input-only on the esp32 (34-39 cannot drive an output)" % pin
    elif chip == "esp32s3":
        if pin > 48 or 22 <= pin <= 25:
            return "GPIO%d does not exist on the esp32s3" % pin
        if 26 <= pin <= 32:
            return "GPIO%d is wired to the module's SPI flash/PSRAM" % pin
    return None


def pin_warning(chip, pin, path):
    """A pin that works but deserves care (boot straps, console, PSRAM), or None."""
    if path == "safe_mode_pin" and pin == 0:
        return None  # the BOOT button: held at reset it enters the ROM loader, as it should
    if chip == "esp32":
        if pin in _ESP32_STRAPPING:
            return "GPIO%d is a strapping pin: a level forced at reset can stop the boot" % pin
        if pin == 1 or pin == 3:
            return "GPIO%d is UART0 (REPL console, flashing)" % pin
        if pin == 16 or pin == 17:
            return "GPIO%d drives the PSRAM on WROVER modules" % pin
    elif chip == "esp32s3":
        if pin in _S3_STRAPPING:
            return "GPIO%d is a strapping pin: a level forced at reset can stop the boot" % pin
        if 33 <= pin <= 37:
            return "GPIO%d carries octal flash/PSRAM on -R8 and -N32 modules" % pin
        if pin == 19 or pin == 20:
            return "GPIO%d is the native USB port" % pin
        if pin == 43 or pin == 44:
            return "GPIO%d is UART0 (console)" % pin
    return None


def board_pins(board):
    """[(path, pin, is_output)] for every pin a (validated) board assigns."""
    uses = []
    hx = board.get("hx711")
    if hx is not None:
        uses.append(("hx711.sck", hx.get("sck"), True))
        dout = hx.get("dout") or []
        for i in range(len(dout)):
            uses.append(("hx711.dout[%d]" % i, dout[i], False))
    uart = board.get("scanner_uart")
    if uart is not None:
        uses.append(("scanner_uart.tx", uart.get("tx"), True))
        uses.append(("scanner_uart.rx", uart.get("rx"), False))
    for name, output in (("relay", True), ("beam", False), ("led", True),
                         ("safe_mode_pin", False)):
        uses.append((name, board.get(name), output))
    return [u for u in uses if u[1] is not None]


def check_board(data):
    """board.json content -> (cleaned, errors, warnings)."""
    board, errors = validate(data, BOARD)
    warnings = []
    if board is None or board.get("chip") is None:
        return board, errors, warnings
    chip = board["chip"]
    taken = {}
    for path, pin, output in board_pins(board):
        why = pin_error(chip, pin, output)
        if why is not None:
            add_error(errors, path, why)
        elif pin in taken:
            add_error(errors, path, "GPIO%d is already used by %s" % (pin, taken[pin]))
        else:
            note = pin_warning(chip, pin, path)
            if note is not None:
                warnings.append(path + ": " + note)
        taken[pin] = path
    return board, errors, warnings


# -- config ------------------------------------------------------------------------------------

def check_config(data, board=None):
    """config.json content -> (cleaned, errors, warnings).

    board: a cleaned board (from check_board) to check the config against, or None."""
    errors = []
    warnings = []
    role = data.get("role") if type(data) is dict else None
    schema = _ANY_CONFIG
    if role == "shelf":
        schema = SHELF_CONFIG
    elif role == "gate":
        schema = GATE_CONFIG
    if schema is not _ANY_CONFIG:
        data = dict(data)  # a shallow copy: the other role's keys are dropped from it
        for key, owner in _ROLE_KEYS:
            if owner != role and key in data:
                add_error(errors, key, "only for role \"%s\" (role is \"%s\")" % (owner, role))
                del data[key]
    cleaned, errs = validate(data, schema)
    for e in errs:
        add_error(errors, "", e)
    if cleaned is not None:
        _check_lanes(cleaned, errors)
        if board is not None:
            _check_against_board(cleaned, board, errors, warnings)
    return cleaned, errors, warnings


def _check_lanes(cfg, errors):
    # One HX711 bank shares one clock, and the number of pulses on it sets the gain of all.
    lanes = cfg.get("lanes")
    if not lanes or lanes[0] is None or "gain" not in lanes[0]:
        return
    gain = lanes[0]["gain"]
    for i in range(1, len(lanes)):
        lane = lanes[i]
        if lane is not None and "gain" in lane and lane["gain"] != gain:
            add_error(errors, "lanes[%d].gain" % i, "must equal lanes[0].gain (%d): the "
                      "lanes share one clock, so one gain (got %d)" % (gain, lane["gain"]))


def _check_against_board(cfg, board, errors, warnings):
    name = board.get("name")
    if cfg.get("board") is not None and name is not None and cfg["board"] != name:
        add_error(errors, "board", "is %s but board.json describes %s"
                  % (show(cfg["board"]), show(name)))
    role = cfg.get("role")
    if role == "shelf":
        _check_lane_pins(cfg, board, errors, warnings)
    elif role == "gate":
        for key in ("scanner_uart", "relay"):
            if board.get(key) is None:
                add_error(errors, "board", "%s has no %s (role \"gate\" needs one)"
                          % (show(name), key))
        gate = cfg.get("gate") or {}
        if gate.get("exit") == "beam" and board.get("beam") is None:
            add_error(errors, "gate.exit", "\"beam\" needs a beam pin, and board %s has none"
                      % show(name))


def _check_lane_pins(cfg, board, errors, warnings):
    hx = board.get("hx711")
    if hx is None:
        add_error(errors, "board", "%s has no hx711 (role \"shelf\" needs one)"
                  % show(board.get("name")))
        return
    chip = board.get("chip")
    dout = hx.get("dout") or []
    taken = {}
    for path, pin, _ in board_pins(board):
        if not path.startswith("hx711.dout"):
            taken[pin] = "board " + path
    lanes = cfg.get("lanes") or []
    for i in range(len(lanes)):
        lane = lanes[i]
        if lane is None:
            continue
        pins = lane.get("pins")
        own = pins.get("dout") if pins is not None else None
        if own is not None:
            path = "lanes[%d].pins.dout" % i
            why = pin_error(chip, own, False)
            if why is not None:
                add_error(errors, path, why)
                continue
            note = pin_warning(chip, own, path)
            if note is not None:
                warnings.append(path + ": " + note)
            pin = own
        elif i < len(dout):
            path = "lanes[%d]" % i
            pin = dout[i]
        else:
            add_error(errors, "lanes[%d].pins.dout" % i, "required: board %s has only %d "
                      "hx711.dout pins" % (show(board.get("name")), len(dout)))
            continue
        if pin in taken:
            add_error(errors, path, "GPIO%d is already used by %s" % (pin, taken[pin]))
        taken[pin] = path if own is not None else "board hx711.dout[%d]" % i


def lane_dout(cfg, board, i):
    """The DOUT pin of lane i: its own override, else the board's i-th."""
    pins = cfg["lanes"][i].get("pins")
    if pins is not None and pins.get("dout") is not None:
        return pins["dout"]
    return board["hx711"]["dout"][i]


# -- lanes <-> LaneCal -------------------------------------------------------------------------

def lane_cal(lane):
    """A validated lane dict -> LaneCal."""
    return LaneCal(lane.get("offset", 0), lane["counts_per_gram"], lane["unit_g"],
                   lane["sku"], lane.get("capacity", 0))


def lane_update(lane, cal):
    """A copy of lane dict `lane` carrying the calibration and planogram of `cal`."""
    out = dict(lane)
    out["offset"] = cal.offset
    out["counts_per_gram"] = cal.counts_per_gram
    out["unit_g"] = cal.unit_g
    out["sku"] = cal.sku
    out["capacity"] = cal.capacity
    return out


# -- files -------------------------------------------------------------------------------------

class Config:
    """What load() found. Trust `data` and `board` only when `ok`; with errors they hold
    the parts that did validate (e.g. `device` and `broker` to report the fault)."""

    def __init__(self, path=CONFIG_FILE, board_path=BOARD_FILE):
        self.path = path
        self.board_path = board_path
        self.raw = None  # config.json as read: what save() writes back (defaults not frozen)
        self.data = None  # cleaned, defaults filled in
        self.board = None  # cleaned board.json
        self.errors = []
        self.warnings = []

    @property
    def ok(self):
        return not self.errors

    def _valid(self):
        # (data, raw, board) of a config that loaded without errors
        if self.errors or self.data is None or self.raw is None:
            raise ValueError("config did not load: " + (self.errors or ["no data"])[0])
        return self.data, self.raw, self.board

    def lane_cals(self):
        data = self._valid()[0]
        return [lane_cal(lane) for lane in data["lanes"]]

    def hx711(self):
        """(sck, [dout per lane], gain) for drivers.hx711.HX711Bank."""
        data, _, board = self._valid()
        if board is None:
            raise ValueError("no board")
        lanes = data["lanes"]
        douts = [lane_dout(data, board, i) for i in range(len(lanes))]
        return board["hx711"]["sck"], douts, lanes[0]["gain"]

    def set_lane_cal(self, i, cal):
        """Record lane i's calibration/planogram (after tare, calibrate, planogram); save()
        writes it."""
        data, raw, _ = self._valid()
        raw["lanes"][i] = lane_update(raw["lanes"][i], cal)
        data["lanes"][i] = lane_update(data["lanes"][i], cal)

    def set_telemetry(self, period_s):
        data, raw, _ = self._valid()
        raw["telemetry_s"] = period_s
        data["telemetry_s"] = period_s

    def save(self):
        """Validate the changed config and write it atomically; ValueError if invalid."""
        cleaned, errors, _ = check_config(self.raw, self.board)
        if errors:
            raise ValueError(errors[0])
        save(self.path, self.raw)
        self.data = cleaned


def _errno(exc):
    return exc.args[0] if exc.args else None


def _not_found(path, exc):
    # ENOENT is 2 on the ESP32 and in CPython, but not in every port (the WebAssembly VM's
    # filesystem reports the host's number): when in doubt, look in the directory.
    if _errno(exc) == 2:
        return True
    i = path.rfind("/")
    try:
        names = os.listdir(path[:i] or "/") if i >= 0 else os.listdir()
    except OSError:
        return True  # the directory is missing too
    return path[i + 1:] not in names


def _read(path, label, errors):
    # -> raw bytes, or None (reason in errors)
    try:
        f = open(path, "rb")
    except OSError as exc:
        add_error(errors, label, "file not found" if _not_found(path, exc)
                  else "cannot open (OSError %s)" % _errno(exc))
        return None
    try:
        return f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        add_error(errors, label, "cannot read (OSError %s)" % _errno(exc))
        return None
    finally:
        f.close()


def _decode(raw, label, errors):
    # JSON bytes -> (True, value) or (False, None) with the reason in errors
    if len(raw) > MAX_FILE_BYTES:
        add_error(errors, label, "too large (more than %d bytes)" % MAX_FILE_BYTES)
        return False, None
    try:
        text = raw if type(raw) is str else bytes(raw).decode("utf-8")
    except Exception:
        add_error(errors, label, "not UTF-8 text")
        return False, None
    try:
        return True, json.loads(text)
    except Exception as exc:  # ValueError; RuntimeError for absurd nesting in MicroPython
        why = str(exc)
        add_error(errors, label, "not valid JSON" + (" (" + printable(why, 80) + ")" if why
                                                     else ""))
        return False, None


def _merge(into, label, msgs):
    for m in msgs:
        add_error(into, label, m)


def parse(config_raw, board_raw=None, path=CONFIG_FILE, board_path=BOARD_FILE):
    """Config from JSON bytes; None for either: not there (no board: no board checks).

    Never raises."""
    cfg = Config(path, board_path)
    try:
        _parse(cfg, config_raw, board_raw)
    except Exception as exc:  # a bug must not crash-loop the device: report it
        add_error(cfg.errors, path, "internal error (" + type(exc).__name__ + ")")
    return cfg


def _parse(cfg, config_raw, board_raw):
    board = None
    if board_raw is not None:
        errs = []
        ok, value = _decode(board_raw, cfg.board_path, errs)
        if ok:
            board, berrs, warns = check_board(value)
            _merge(errs, cfg.board_path, berrs)
            _merge(cfg.warnings, cfg.board_path, warns)
            cfg.board = board
        cfg.errors.extend(errs)
        if errs:
            board = None  # an invalid board cannot vouch for the config's pins
    if config_raw is None:
        return
    ok, value = _decode(config_raw, cfg.path, cfg.errors)
    if not ok:
        return
    if type(value) is dict:
        cfg.raw = value
    data, errs, warns = check_config(value, board)
    cfg.data = data
    _merge(cfg.errors, cfg.path, errs)
    _merge(cfg.warnings, cfg.path, warns)


def load(path=CONFIG_FILE, board_path=BOARD_FILE):
    """Read and check config.json and board.json. Never raises: see Config.errors."""
    errors = []
    board_raw = _read(board_path, board_path, errors)
    config_raw = _read(path, path, errors)
    cfg = parse(config_raw, board_raw, path, board_path)
    cfg.errors = errors + cfg.errors
    try:
        _check_files(cfg)
    except Exception as exc:
        add_error(cfg.errors, path, "internal error (" + type(exc).__name__ + ")")
    return cfg


def _check_files(cfg):
    # Files the config names must be on the board (a missing CA fails only at connect time).
    broker = (cfg.data or {}).get("broker") or {}
    ca = broker.get("ca_file")
    if ca is None:
        return
    try:
        os.stat(ca)
    except OSError:
        add_error(cfg.errors, cfg.path, "broker.ca_file: file not found: " + ca)


def save(path, data):
    """Write `data` as JSON to `path` atomically: a power cut leaves the old or the new file,
    never half of one (write a temporary file, then rename it over)."""
    text = json.dumps(data)
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        try:
            os.rename(tmp, path)
        except OSError:
            os.remove(path)  # a filesystem that will not rename over an existing file
            os.rename(tmp, path)
    except OSError:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
