# The event envelope: what a device publishes for each pick, put-back, foreign change or
# fault (docs/events.md). One JSON object, keys in a fixed order, no spaces.
#
# The JSON is written here by hand rather than by json.dumps, so that CPython and MicroPython
# give byte-identical payloads: their dicts order keys differently (MicroPython's are
# unordered), they print floats differently (and an ESP32 float is single precision), and
# only CPython escapes non-ASCII characters. Grams travel as integer centigrams and are
# written as decimals with exactly two places; no float is involved.
#
# Consumers (the host monitor too) read events with core.event_read.parse_event(), which
# validates them; it lives apart so the device does not carry the schema in its heap.
# Duplicates (an outbox resending after a lost ack) share (device, seq): drop on that pair.

from micropython import const

VERSION = const(1)
MAX_EVENT_BYTES = const(1024)
SHELF_TYPES = ("pick", "put", "change")
TYPES = ("pick", "put", "change", "fault", "scan")
_MAX_MSG = const(120)
_HEX = "0123456789abcdef"
_CODE_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"


# -- writing ---------------------------------------------------------------------------------

def centi(n):
    """Integer hundredths -> decimal text with two places: -5 -> "-0.05", 1234 -> "12.34"."""
    n = int(n)
    sign = "-" if n < 0 else ""
    if n < 0:
        n = -n
    frac = n % 100
    return sign + str(n // 100) + (".0" if frac < 10 else ".") + str(frac)


def jstr(s):
    """A JSON string literal, ASCII only, as CPython's json.dumps writes it."""
    out = ['"']
    for c in s:
        o = ord(c)
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif 0x20 <= o < 0x7F:
            out.append(c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif c == "\t":
            out.append("\\t")
        elif c == "\b":
            out.append("\\b")
        elif c == "\f":
            out.append("\\f")
        elif o > 0xFFFF:  # outside the BMP: a UTF-16 surrogate pair
            o -= 0x10000
            out.append(_u4(0xD800 + (o >> 10)))
            out.append(_u4(0xDC00 + (o & 0x3FF)))
        else:
            out.append(_u4(o))
    out.append('"')
    return "".join(out)


def _u4(o):
    return ("\\u" + _HEX[(o >> 12) & 15] + _HEX[(o >> 8) & 15] + _HEX[(o >> 4) & 15]
            + _HEX[o & 15])


def _jint(v):
    return "null" if v is None else str(int(v))


def _head(typ, device, seq, boot, ts, uptime_ms):
    return ('{"v":' + str(VERSION) + ',"device":' + jstr(device) + ',"seq":' + str(int(seq))
            + ',"boot":' + str(int(boot)) + ',"type":' + jstr(typ) + ',"ts":' + _jint(ts)
            + ',"uptime_ms":' + str(int(uptime_ms)))


def shelf_event(device, seq, boot, ts, uptime_ms, change):
    """A pick / put / change event from a core.detector.Change, as JSON bytes.

    ts: UTC milliseconds when the clock is synced, else None."""
    return (_head(change.kind, device, seq, boot, ts, uptime_ms)
            + ',"lane":' + str(int(change.lane))
            + ',"sku":' + jstr(change.sku or "")
            + ',"count":' + _jint(change.count)
            + ',"delta_g":' + centi(change.delta_cg)
            + ',"before_g":' + centi(change.before_cg)
            + ',"after_g":' + centi(change.after_cg)
            + ',"confidence":' + centi(change.confidence)
            + "}").encode()


def fault_event(device, seq, boot, ts, uptime_ms, code, msg="", lane=None):
    """A fault event as JSON bytes. code: short [a-z0-9_] identifier (e.g. "hx711",
    "config", "outbox_full"); msg: one human line (cut to 120 characters); lane: the lane
    concerned, or None. ValueError for a code consumers would refuse."""
    if not 0 < len(code) <= 24 or [c for c in code if c not in _CODE_CHARS]:
        raise ValueError("fault code must be 1-24 of a-z 0-9 _")
    line = []
    for c in str(msg)[:_MAX_MSG]:
        line.append(c if c >= " " else " ")  # one line: control characters become spaces
    return (_head("fault", device, seq, boot, ts, uptime_ms)
            + ',"code":' + jstr(code)
            + ',"msg":' + jstr("".join(line))
            + ',"lane":' + _jint(lane)
            + "}").encode()


def scan_event(device, seq, boot, ts, uptime_ms, code, source="scanner"):
    """A code read at a gate as JSON bytes (what a gate does with it is the gate's logic).
    source: "scanner" (the QR reader) or another input of the gate."""
    return (_head("scan", device, seq, boot, ts, uptime_ms)
            + ',"code":' + jstr(code)
            + ',"source":' + jstr(source)
            + "}").encode()
