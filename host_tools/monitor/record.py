"""One MQTT message as one line of JSON: what `monitor --json` prints, `--record` writes and
`replay` reads.

    {"t":1767225600.123,"topic":"store/v1/s1/shelf-1/event","retain":false,"qos":1,"payload":{...}}

`t`: when the monitor received it (UNIX seconds). `payload`: the message itself when it is
JSON, written exactly as it came (so a replay sends the same bytes back; a payload spread
over several lines is re-written compactly, which keeps its value, not its bytes). Other
payloads are a string, flagged before it: `"text":true` for UTF-8 text, `"base64":true` for
anything else.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, NamedTuple

NOT_JSON = object()  # the parsed value of a payload that is not JSON


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's json accepts NaN and Infinity


class Record(NamedTuple):
    t: float
    topic: str
    payload: bytes
    retain: bool
    qos: int


_STRICT = json.JSONDecoder(parse_constant=_no_constant)  # one decoder: json.loads(**kw) makes
# a new one per call, which costs more than the decoding


class LineWriter:
    """Formats received messages as lines; keeps the JSON form of each topic seen."""

    def __init__(self) -> None:
        self._heads: dict[tuple[str, bool, int], bytes] = {}

    def line(self, t: float, topic: str, payload: bytes, retain: bool,
             qos: int) -> tuple[bytes, Any]:
        """(the line with its newline, the payload parsed: a JSON value, or the text, or
        NOT_JSON for binary)."""
        return self.line_at(b"%.3f" % t, topic, payload, retain, qos)

    def line_at(self, t_text: bytes, topic: str, payload: bytes, retain: bool,
                qos: int) -> tuple[bytes, Any]:
        """line() with the time already formatted (once for all messages of one read)."""
        key = (topic, retain, qos)
        head = self._heads.get(key)
        if head is None:
            head = self._heads[key] = b',"topic":%s,"retain":%s,"qos":%d,' % (
                json.dumps(topic).encode(), b"true" if retain else b"false", qos)
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            b64 = base64.b64encode(payload)
            return (b'{"t":' + t_text + head + b'"base64":true,"payload":"' + b64 + b'"}\n',
                    NOT_JSON)
        try:
            value = _STRICT.decode(text)
        except ValueError:
            return (b'{"t":' + t_text + head + b'"text":true,"payload":'
                    + json.dumps(text).encode() + b"}\n", text)
        if b"\n" in payload or b"\r" in payload:  # one message, one line
            payload = json.dumps(value, separators=(",", ":")).encode()
        return b'{"t":' + t_text + head + b'"payload":' + payload + b"}\n", value


_PAYLOAD_KEY = '"payload":'
_decoder = json.JSONDecoder()


def parse_line(line: str) -> Record:
    """A Record from one line; ValueError with a short reason."""
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise ValueError(f"not JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    t, topic = obj.get("t"), obj.get("topic")
    if isinstance(t, bool) or not isinstance(t, int | float):
        raise ValueError('"t" must be a number (seconds)')
    if not isinstance(topic, str) or not topic or "+" in topic or "#" in topic:
        raise ValueError('"topic" must be a topic name (no wildcards)')
    retain = obj.get("retain", False)
    if not isinstance(retain, bool):
        raise ValueError('"retain" must be true or false')
    qos = obj.get("qos", 0)
    if qos not in (0, 1, 2) or isinstance(qos, bool):
        raise ValueError('"qos" must be 0, 1 or 2')
    if "payload" not in obj:
        raise ValueError('no "payload"')
    value = obj["payload"]
    if obj.get("base64") is True:
        if not isinstance(value, str):
            raise ValueError('a "base64" payload must be a string')
        try:
            payload = base64.b64decode(value, validate=True)
        except binascii.Error:
            raise ValueError("payload is not valid base64") from None
    elif obj.get("text") is True:
        if not isinstance(value, str):
            raise ValueError('a "text" payload must be a string')
        payload = value.encode()
    else:
        payload = _raw_payload(line, value).encode()
    return Record(float(t), topic, payload, retain, qos)


def _raw_payload(line: str, value: Any) -> str:
    """The payload's JSON text exactly as written in the line (e.g. 1024.80 stays 1024.80).
    The first '"payload":' in a line is the record's own key: the keys before it hold a
    number, a string and booleans, and inside a JSON string the quote before the colon would
    be escaped."""
    start = line.index(_PAYLOAD_KEY) + len(_PAYLOAD_KEY)
    while line[start] in " \t":
        start += 1
    parsed, end = _decoder.raw_decode(line, start)
    if parsed != value:  # not the record's key after all: fall back to the value
        return json.dumps(value, separators=(",", ":"))
    return line[start:end]
