"""One message as one JSON line (host_tools/monitor/record.py): what `monitor --json` prints
and `--record` writes, and what `replay` reads back, byte for byte."""

from __future__ import annotations

import json

import pytest

from host_tools.monitor.record import NOT_JSON, LineWriter, parse_line

EVENT = (b'{"v":1,"device":"shelf-01","seq":43,"boot":8,"type":"put","ts":null,'
         b'"uptime_ms":5120,"lane":0,"sku":"WATER-500","count":2,"delta_g":1024.80,'
         b'"before_g":512.40,"after_g":1537.20,"confidence":0.93}')


def round_trip(payload: bytes, topic: str = "store/v1/s1/shelf-01/event", retain: bool = False,
               qos: int = 1):
    line, value = LineWriter().line(1767225600.1234, topic, payload, retain, qos)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    obj = json.loads(line)
    record = parse_line(line.decode())
    return obj, value, record


def test_a_json_payload_is_the_message_as_it_came():
    obj, value, record = round_trip(EVENT, retain=True)
    assert obj["payload"] == value == json.loads(EVENT)
    assert (obj["t"], obj["topic"], obj["retain"], obj["qos"]) == (
        1767225600.123, "store/v1/s1/shelf-01/event", True, 1)
    assert record.payload == EVENT  # 1024.80 stays 1024.80
    assert (record.topic, record.retain, record.qos) == ("store/v1/s1/shelf-01/event", True, 1)


@pytest.mark.parametrize("payload", [b"hello world", b"", b"NaN", b'{"a":1', b"tab\there"])
def test_text_that_is_not_json_is_flagged_and_comes_back(payload):
    obj, value, record = round_trip(payload)
    assert obj["text"] is True and obj["payload"] == value == payload.decode()
    assert record.payload == payload


def test_binary_is_base64_and_comes_back():
    obj, value, record = round_trip(b"\xff\x00\x01")
    assert obj["base64"] is True and value is NOT_JSON
    assert record.payload == b"\xff\x00\x01"


def test_json_over_several_lines_becomes_one_line_with_the_same_value():
    payload = b'{\n  "state": "online",\n  "list": [1, 2]\r\n}'
    obj, value, record = round_trip(payload)
    assert obj["payload"] == value == {"state": "online", "list": [1, 2]}
    assert json.loads(record.payload) == value


def test_a_payload_holding_a_payload_key_and_odd_topics():
    payload = b'{"payload":{"x":"\\"payload\\":"},"n":1.50}'
    _, _, record = round_trip(payload, topic='store/v1/s"1/d,"payload":/x')
    assert record.payload == payload and record.topic == 'store/v1/s"1/d,"payload":/x'
    _, _, record = round_trip("{\"sku\":\"caf\u00e9\u2028\"}".encode())
    assert record.payload == "{\"sku\":\"caf\u00e9\u2028\"}".encode()


@pytest.mark.parametrize("line, reason", [
    ("{", "not JSON"),
    ("[1]", "not a JSON object"),
    ('{"topic":"a","payload":1}', '"t" must be a number'),
    ('{"t":true,"topic":"a","payload":1}', '"t" must be a number'),
    ('{"t":1,"topic":"a/#","payload":1}', "no wildcards"),
    ('{"t":1,"topic":"a","retain":1,"payload":1}', '"retain" must be true or false'),
    ('{"t":1,"topic":"a","qos":3,"payload":1}', '"qos" must be 0, 1 or 2'),
    ('{"t":1,"topic":"a"}', 'no "payload"'),
    ('{"t":1,"topic":"a","base64":true,"payload":"%%%"}', "not valid base64"),
    ('{"t":1,"topic":"a","text":true,"payload":5}', "must be a string"),
])
def test_bad_lines_say_why(line, reason):
    with pytest.raises(ValueError, match=reason.replace("(", r"\(")):
        parse_line(line)
