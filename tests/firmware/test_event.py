# Portable tests of core.event, the event envelope. The expected bytes are written out by
# hand: the same test runs in CPython and in the MicroPython VM, so both must produce
# exactly these payloads.
import json
import sys

from core.detector import Change
from core.event import MAX_EVENT_BYTES, centi, fault_event, jstr, shelf_event
from core.event_read import EventError, parse_event

PICK = Change(2, 123456, -1, -35012, 120034, 85022, 87, "COKE-330")
PICK_BYTES = (b'{"v":1,"device":"shelf-01","seq":42,"boot":7,"type":"pick",'
              b'"ts":1767225600123,"uptime_ms":123456,"lane":2,"sku":"COKE-330","count":-1,'
              b'"delta_g":-350.12,"before_g":1200.34,"after_g":850.22,"confidence":0.87}')

PUT = Change(0, 5, 2, 5, -5, 0, 100, "A")
PUT_BYTES = (b'{"v":1,"device":"d","seq":0,"boot":0,"type":"put","ts":null,"uptime_ms":5,'
             b'"lane":0,"sku":"A","count":2,"delta_g":0.05,"before_g":-0.05,"after_g":0.00,'
             b'"confidence":1.00}')

FOREIGN = Change(7, 0, None, 1234567, -100, 1234467, 50, "")
FOREIGN_BYTES = (b'{"v":1,"device":"shelf-99","seq":9007199254740991,"boot":65535,'
                 b'"type":"change","ts":0,"uptime_ms":2147483648,"lane":7,"sku":"",'
                 b'"count":null,"delta_g":12345.67,"before_g":-1.00,"after_g":12344.67,'
                 b'"confidence":0.50}')

ODD_SKU = Change(1, 10, -3, -1050, 3150, 2100, 1, 'a"b\\c\u00e9\U0001F600')
ODD_SKU_BYTES = (b'{"v":1,"device":"s","seq":1,"boot":1,"type":"pick","ts":1,"uptime_ms":10,'
                 b'"lane":1,"sku":"a\\"b\\\\c\\u00e9\\ud83d\\ude00","count":-3,'
                 b'"delta_g":-10.50,"before_g":31.50,"after_g":21.00,"confidence":0.01}')

FAULT_BYTES = (b'{"v":1,"device":"gate-01","seq":3,"boot":2,"type":"fault",'
               b'"ts":1767225600000,"uptime_ms":999,"code":"hx711",'
               b'"msg":"lane 3: no data \\"stuck\\"\\u00b0","lane":3}')
FAULT_NOLANE_BYTES = (b'{"v":1,"device":"shelf-01","seq":10,"boot":1,"type":"fault",'
                      b'"ts":null,"uptime_ms":0,"code":"config","msg":"","lane":null}')


def test_shelf_events_are_byte_identical():
    assert shelf_event("shelf-01", 42, 7, 1767225600123, 123456, PICK) == PICK_BYTES
    assert shelf_event("d", 0, 0, None, 5, PUT) == PUT_BYTES
    assert shelf_event("shelf-99", 9007199254740991, 65535, 0, 2147483648,
                       FOREIGN) == FOREIGN_BYTES
    assert shelf_event("s", 1, 1, 1, 10, ODD_SKU) == ODD_SKU_BYTES
    # deterministic: the same change gives the same bytes again
    assert shelf_event("shelf-01", 42, 7, 1767225600123, 123456, PICK) == PICK_BYTES


def test_fault_events_are_byte_identical():
    assert fault_event("gate-01", 3, 2, 1767225600000, 999, "hx711",
                       'lane 3: no data\n"stuck"\u00b0', 3) == FAULT_BYTES
    assert fault_event("shelf-01", 10, 1, None, 0, "config") == FAULT_NOLANE_BYTES
    long = fault_event("d", 1, 1, None, 1, "x", "m" * 500)
    assert b'"msg":"' + b"m" * 120 + b'","lane":null}' in long
    for code in ("", "HX711", "a-b", "x" * 25):
        try:
            fault_event("d", 1, 1, None, 1, code)
        except ValueError:
            pass
        else:
            raise AssertionError("accepted fault code " + repr(code))


def test_centi():
    cases = ((0, "0.00"), (1, "0.01"), (-1, "-0.01"), (9, "0.09"), (10, "0.10"),
             (99, "0.99"), (100, "1.00"), (-100, "-1.00"), (12345, "123.45"),
             (-12305, "-123.05"), (10 ** 12 + 7, "10000000000.07"))
    for n, text in cases:
        assert centi(n) == text, (n, centi(n))


def test_jstr_matches_cpython_json():
    samples = ("", "plain", 'q"uote', "back\\slash", "tab\tnl\ncr\r", "\x00\x1f\x7f",
               "\b\f", "caf\u00e9", "\u2603", "\U0001F600", "/")
    expected = ('""', '"plain"', '"q\\"uote"', '"back\\\\slash"', '"tab\\tnl\\ncr\\r"',
                '"\\u0000\\u001f\\u007f"', '"\\b\\f"', '"caf\\u00e9"', '"\\u2603"',
                '"\\ud83d\\ude00"', '"/"')
    for s, e in zip(samples, expected):
        assert jstr(s) == e, (s, jstr(s))
        if sys.implementation.name == "cpython":
            assert jstr(s) == json.dumps(s)


def test_parse_round_trip():
    ev = parse_event(PICK_BYTES)
    assert ev["v"] == 1 and ev["device"] == "shelf-01" and ev["seq"] == 42
    assert ev["boot"] == 7 and ev["type"] == "pick" and ev["ts"] == 1767225600123
    assert ev["uptime_ms"] == 123456 and ev["lane"] == 2 and ev["sku"] == "COKE-330"
    assert ev["count"] == -1
    as_dict = PICK.as_dict()
    for key in ("delta_g", "before_g", "after_g", "confidence"):
        # the same centigrams as the detector's own view (floats compared as integers)
        assert int(round(ev[key] * 100)) == int(round(as_dict[key] * 100)), key
    put = parse_event(PUT_BYTES)
    assert put["ts"] is None and put["count"] == 2 and put["after_g"] == 0
    assert parse_event(FOREIGN_BYTES)["count"] is None
    sku = parse_event(ODD_SKU_BYTES)["sku"]
    assert sku.startswith('a"b\\c\u00e9')
    if sys.implementation.name == "cpython":  # MicroPython's json leaves surrogates unpaired
        assert sku == 'a"b\\c\u00e9\U0001F600'
    fault = parse_event(FAULT_BYTES)
    assert fault["code"] == "hx711" and fault["lane"] == 3
    assert fault["msg"] == 'lane 3: no data "stuck"\u00b0'
    assert parse_event(FAULT_NOLANE_BYTES)["lane"] is None
    assert parse_event(bytearray(PICK_BYTES))["seq"] == 42
    assert parse_event(PICK_BYTES.decode())["seq"] == 42


def _replace(raw, old, new):
    assert old in raw
    return raw.replace(old, new)


def test_parse_rejects_bad_events():
    cases = (
        (b"nope", "event: not valid JSON"),
        (b"\xff", "event: not valid JSON"),
        (b"[]", "event: must be a JSON object"),
        (None, "event: must be bytes"),
        (b" " * (MAX_EVENT_BYTES + 1), "event: too large (1025 bytes, at most 1024)"),
        (_replace(PICK_BYTES, b'"v":1', b'"v":2'), "v: must be one of 1 (got 2)"),
        (_replace(PICK_BYTES, b'"pick"', b'"entry"'),
         'type: must be one of "pick", "put", "change", "fault", "scan" (got "entry")'),
        (_replace(PICK_BYTES, b'"count":-1', b'"count":1'),
         "count: a pick takes items: must be < 0 (got 1)"),
        (_replace(PUT_BYTES, b'"count":2', b'"count":null'),
         "count: a put adds items: must be > 0 (got null)"),
        (_replace(FOREIGN_BYTES, b'"count":null', b'"count":3'),
         "count: a foreign change has no count: must be null"),
        (_replace(PICK_BYTES, b'"v":1,', b'"v":1,"x":0,'), "x: unknown key"),
        (_replace(PICK_BYTES, b'"seq":42,', b''), "seq: required"),
        (_replace(PICK_BYTES, b'"seq":42', b'"seq":-1'),
         "seq: must be 0..9007199254740991 (got -1)"),
        (_replace(PICK_BYTES, b'"seq":42', b'"seq":true'), "seq: must be an integer (got true)"),
        (_replace(PICK_BYTES, b'0.87', b'1.5'), "confidence: must be 0..1 (got 1.5)"),
        (_replace(PICK_BYTES, b'"shelf-01"', b'"Shelf 01"'),
         "device: must use only a-z 0-9 - (got \"Shelf 01\": 'S' not allowed)"),
        (_replace(FAULT_BYTES, b'"hx711"', b'"HX"'),
         "code: must use only a-z 0-9 _ (got \"HX\": 'H' not allowed)"),
        (_replace(FAULT_BYTES, b'"lane":3', b'"lane":"3"'),
         'lane: must be an integer (got "3")'),
    )
    for raw, message in cases:
        try:
            parse_event(raw)
        except EventError as exc:
            assert str(exc) == message, (raw, str(exc))
            assert isinstance(exc, ValueError)
        else:
            raise AssertionError("accepted " + repr(raw))


def test_scan_event_bytes_and_parse():
    from core.event import scan_event

    data = scan_event("gate-1", 3, 2, None, 5012, "SHOPPER-42")
    assert data == (b'{"v":1,"device":"gate-1","seq":3,"boot":2,"type":"scan","ts":null,'
                    b'"uptime_ms":5012,"code":"SHOPPER-42","source":"scanner"}')
    ev = parse_event(data)
    assert ev["type"] == "scan" and ev["code"] == "SHOPPER-42" and ev["ts"] is None
    try:
        parse_event(data.replace(b'"SHOPPER-42"', b'""'))
    except EventError as exc:
        assert "code" in str(exc)
    else:
        raise AssertionError("an empty code must be refused")
