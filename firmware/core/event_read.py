# Reading events (docs/events.md): parse_event() validates a payload for consumers (the host
# monitor, tests). Kept apart from core.event, which the device imports to write events, so
# the device's heap does not hold these schemas.

import json

from micropython import const

from apps.schema import Dict, Float, Int, Str, validate
from core.event import MAX_EVENT_BYTES, TYPES, VERSION, _jint

_MAX_SEQ = 9007199254740991  # 2**53 - 1: exact in every JSON consumer
_MAX_MSG = const(120)
_CODE_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"
_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-"


class EventError(ValueError):
    """An event payload that is not a valid envelope; the message names the field."""



_ENVELOPE = (
    Int("v", choices=(VERSION,)),
    Str("device", min_len=1, max_len=32, chars=_ID_CHARS, chars_desc="a-z 0-9 -"),
    Int("seq", min=0, max=_MAX_SEQ),
    Int("boot", min=0, max=_MAX_SEQ),
    Str("type", choices=TYPES),
    Int("ts", min=0, max=_MAX_SEQ, optional=True),
    Int("uptime_ms", min=0, max=_MAX_SEQ),
)
_GRAMS = 1000000  # no shelf event moves a tonne
SHELF_EVENT = Dict(None, *(_ENVELOPE + (
    Int("lane", min=0, max=15),
    Str("sku", max_len=32),
    Int("count", min=-10000, max=10000, optional=True),
    Float("delta_g", min=-_GRAMS, max=_GRAMS),
    Float("before_g", min=-_GRAMS, max=_GRAMS),
    Float("after_g", min=-_GRAMS, max=_GRAMS),
    Float("confidence", min=0, max=1),
)))
FAULT_EVENT = Dict(None, *(_ENVELOPE + (
    Str("code", min_len=1, max_len=24, chars=_CODE_CHARS, chars_desc="a-z 0-9 _"),
    Str("msg", max_len=_MAX_MSG),
    Int("lane", min=0, max=15, optional=True),
)))


SCAN_EVENT = Dict(None, *(_ENVELOPE + (
    Str("code", min_len=1, max_len=256),
    Str("source", min_len=1, max_len=24, chars=_CODE_CHARS, chars_desc="a-z 0-9 _"),
)))


def _loads(data):
    # JSON -> value; EventError (a class, never a JSON value) when it is not JSON
    try:
        return json.loads(bytes(data).decode("utf-8"))
    except Exception:  # ValueError, UnicodeError; RuntimeError for absurd nesting
        return EventError


def parse_event(data):
    """JSON bytes (or str) -> the event dict, validated. Raises EventError (one line)."""
    t = type(data)
    if t is str:
        data = data.encode()
    elif t is not bytes and t is not bytearray and t is not memoryview:
        raise EventError("event: must be bytes")
    if len(data) > MAX_EVENT_BYTES:
        raise EventError("event: too large (%d bytes, at most %d)"
                         % (len(data), MAX_EVENT_BYTES))
    obj = _loads(data)
    if obj is EventError:  # raised here, outside the except: one exception, no chain
        raise EventError("event: not valid JSON")
    if not isinstance(obj, dict):
        raise EventError("event: must be a JSON object")
    typ = obj.get("type")
    schema = FAULT_EVENT if typ == "fault" else SCAN_EVENT if typ == "scan" else SHELF_EVENT
    ev, errors = validate(obj, schema)
    if not errors:
        count = ev["count"] if typ not in ("fault", "scan") else None
        if typ == "pick" and not (type(count) is int and count < 0):
            errors.append("count: a pick takes items: must be < 0 (got %s)" % _jint(count))
        elif typ == "put" and not (type(count) is int and count > 0):
            errors.append("count: a put adds items: must be > 0 (got %s)" % _jint(count))
        elif typ == "change" and count is not None:
            errors.append("count: a foreign change has no count: must be null")
    if errors:
        raise EventError(errors[0])
    return ev
