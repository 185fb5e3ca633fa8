# Portable tests of apps.schema, the declarative validator (CPython and the MicroPython VM).
from apps.schema import Bool, Dict, Float, Int, List, Str, Value, add_error, show, validate
from xorshift import Rng

LANE = Dict(
    None,
    Int("gain", default=128, choices=(128, 64, 32)),
    Int("offset", default=0, min=-8388608, max=8388607),
    Float("counts_per_gram", nonzero=True),
    Str("sku", min_len=1, max_len=8, chars="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-",
        chars_desc="A-Z 0-9 -"),
    Float("unit_g", gt=0, max=1000),
    Dict("pins", Int("dout", min=0, max=39), optional=True),
)
ROOT = Dict(
    None,
    Str("name"),
    Bool("enabled", default=True),
    List("lanes", LANE, min_items=1, max_items=4),
    List("pins", Int(None, min=0, max=39), default=[], max_items=8, unique=True),
    Dict("outbox", Int("budget_kb", default=64, min=4, max=1024), default={}),
    Str("note", optional=True, max_len=10),
)


def _lane(**kw):
    lane = {"counts_per_gram": 420.5, "sku": "COKE-1", "unit_g": 350.0}
    for k in kw:
        lane[k] = kw[k]
    return lane


def _doc(**kw):
    doc = {"name": "x", "lanes": [_lane(), _lane(), _lane()]}
    for k in kw:
        doc[k] = kw[k]
    return doc


def test_valid_document_gets_defaults_and_is_a_copy():
    doc = _doc()
    cleaned, errors = validate(doc, ROOT)
    assert errors == []
    assert cleaned["enabled"] is True
    assert cleaned["pins"] == []
    assert cleaned["outbox"] == {"budget_kb": 64}
    assert cleaned["note"] is None
    lane = cleaned["lanes"][0]
    assert lane["gain"] == 128 and lane["offset"] == 0 and lane["pins"] is None
    assert type(lane["unit_g"]) is float
    lane["sku"] = "CHANGED"
    assert doc["lanes"][0]["sku"] == "COKE-1"  # no aliasing of the input
    assert "gain" not in doc["lanes"][0]
    cleaned2, _ = validate(_doc(), ROOT)
    cleaned2["pins"].append(1)
    assert validate(_doc(), ROOT)[0]["pins"] == []  # defaults are not shared


def test_the_documented_messages():
    doc = _doc()
    doc["lanes"][2]["gain"] = 40
    _, errors = validate(doc, ROOT)
    assert errors == ["lanes[2].gain: must be one of 128, 64, 32 (got 40)"]


def test_bool_is_not_an_int_and_int_is_not_a_bool():
    doc = _doc()
    doc["lanes"][0]["gain"] = True
    doc["lanes"][1]["offset"] = False
    doc["enabled"] = 1
    _, errors = validate(doc, ROOT)
    assert errors == [
        "enabled: must be true or false (got 1)",
        "lanes[0].gain: must be an integer (got true)",
        "lanes[1].offset: must be an integer (got false)",
    ]
    doc = _doc()
    doc["lanes"][0]["unit_g"] = True
    assert validate(doc, ROOT)[1] == ["lanes[0].unit_g: must be a number (got true)"]


def test_int_fields_refuse_floats_and_strings():
    doc = _doc()
    doc["lanes"][0]["gain"] = 128.0
    doc["lanes"][1]["gain"] = "128"
    doc["lanes"][2]["offset"] = [1]
    _, errors = validate(doc, ROOT)
    assert errors == [
        "lanes[0].gain: must be an integer (got 128)",
        'lanes[1].gain: must be an integer (got "128")',
        "lanes[2].offset: must be an integer (got a list)",
    ]


def test_float_fields_take_ints_and_refuse_non_finite_and_huge():
    doc = _doc()
    doc["lanes"][0]["counts_per_gram"] = 7
    cleaned, errors = validate(doc, ROOT)
    assert errors == []
    assert cleaned["lanes"][0]["counts_per_gram"] == 7.0
    assert type(cleaned["lanes"][0]["counts_per_gram"]) is float
    for bad, shown in ((float("inf"), "inf"), (float("-inf"), "-inf"), (float("nan"), "NaN"),
                       (10 ** 400, "a huge integer")):
        doc = _doc()
        doc["lanes"][1]["counts_per_gram"] = bad
        assert validate(doc, ROOT)[1] == [
            "lanes[1].counts_per_gram: must be a finite number (got " + shown + ")"]


def test_range_messages():
    cases = (
        ("offset", 8388608, "lanes[0].offset: must be -8388608..8388607 (got 8388608)"),
        ("offset", -10 ** 30, "lanes[0].offset: must be -8388608..8388607 "
                              "(got a huge integer)"),
        ("unit_g", 0, "lanes[0].unit_g: must be > 0 and <= 1000 (got 0)"),
        ("unit_g", 1000.5, "lanes[0].unit_g: must be > 0 and <= 1000 (got 1000.5)"),
        ("counts_per_gram", 0.0, "lanes[0].counts_per_gram: must not be 0"),
    )
    for key, value, message in cases:
        doc = _doc()
        doc["lanes"][0][key] = value
        assert validate(doc, ROOT)[1] == [message], (key, value)
    single = Dict(None, Int("a", min=1), Int("b", max=5))
    assert validate({"a": 0, "b": 6}, single)[1] == ["a: must be >= 1 (got 0)",
                                                     "b: must be <= 5 (got 6)"]


def test_string_checks():
    cases = (
        ("", "lanes[0].sku: must not be empty"),
        ("ABCDEFGHI", "lanes[0].sku: must be at most 8 characters (got 9)"),
        ("AB_1", "lanes[0].sku: must use only A-Z 0-9 - (got \"AB_1\": '_' not allowed)"),
        ("A B", "lanes[0].sku: must use only A-Z 0-9 - (got \"A B\": ' ' not allowed)"),
        ("A\nB", "lanes[0].sku: must use only A-Z 0-9 - (got \"A?B\": code 10 not allowed)"),
        ("\u00e9", "lanes[0].sku: must use only A-Z 0-9 - (got \"?\": code 233 not allowed)"),
        (5, "lanes[0].sku: must be a string (got 5)"),
    )
    for value, message in cases:
        doc = _doc()
        doc["lanes"][0]["sku"] = value
        assert validate(doc, ROOT)[1] == [message], value
    assert validate({"s": "ab"}, Dict(None, Str("s", min_len=3)))[1] == [
        "s: must be at least 3 characters (got 2)"]


def test_required_optional_and_null():
    doc = _doc()
    del doc["name"]
    del doc["lanes"][1]["sku"]
    _, errors = validate(doc, ROOT)
    assert errors == ["name: required", "lanes[1].sku: required"]
    # null: accepted for optional fields only
    doc = _doc(note=None)
    doc["lanes"][0]["pins"] = None
    cleaned, errors = validate(doc, ROOT)
    assert errors == [] and cleaned["note"] is None and cleaned["lanes"][0]["pins"] is None
    doc = _doc(enabled=None, name=None)
    assert validate(doc, ROOT)[1] == ["name: must be a string (got null)",
                                      "enabled: must be true or false (got null)"]


def test_unknown_keys_are_errors_sorted_with_suggestions():
    doc = _doc(zeta=1, alpha=2, lanse=[], Name="y")
    doc["lanes"][0]["gian"] = 64
    doc["lanes"][0]["pins"] = {"dout": 4, "sck": 5}
    _, errors = validate(doc, ROOT)
    assert errors == [
        'lanes[0].pins.sck: unknown key',
        'lanes[0].gian: unknown key (did you mean "gain"?)',
        'Name: unknown key (did you mean "name"?)',
        'alpha: unknown key',
        'lanse: unknown key (did you mean "lanes"?)',
        'zeta: unknown key',
    ]


def test_lists():
    assert validate(_doc(lanes=[]), ROOT)[1] == ["lanes: must have 1..4 items (got 0)"]
    assert validate(_doc(lanes=[_lane()] * 5), ROOT)[1] == [
        "lanes: must have 1..4 items (got 5)"]
    assert validate(_doc(lanes={"0": _lane()}), ROOT)[1] == [
        "lanes: must be a list (got an object)"]
    assert validate(_doc(lanes=[_lane(), 3, None]), ROOT)[1] == [
        "lanes[1]: must be an object (got 3)", "lanes[2]: must be an object (got null)"]
    assert validate(_doc(pins=[4, 5, 4, 40, 5]), ROOT)[1] == [
        "pins[3]: must be 0..39 (got 40)",
        "pins[2]: duplicate of pins[0] (got 4)",
        "pins[4]: duplicate of pins[1] (got 5)",
    ]
    exact = Dict(None, List("xy", Int(None), min_items=2, max_items=2))
    assert validate({"xy": [1]}, exact)[1] == ["xy: must have exactly 2 items (got 1)"]
    open_ended = Dict(None, List("xs", Int(None), min_items=1))
    assert validate({"xs": []}, open_ended)[1] == ["xs: must have at least 1 items (got 0)"]


def test_partial_result_keeps_what_validated():
    doc = _doc()
    doc["lanes"][1]["gain"] = 7
    cleaned, errors = validate(doc, ROOT)
    assert len(errors) == 1
    assert "gain" not in cleaned["lanes"][1]
    assert cleaned["lanes"][1]["sku"] == "COKE-1"
    assert cleaned["name"] == "x"


def test_root_of_any_shape():
    for data, got in ((None, "null"), ([], "a list"), ("x", '"x"'), (3, "3"), (1.5, "1.5"),
                      (True, "true"), (b"{}", "a bytes")):
        cleaned, errors = validate(data, ROOT)
        assert cleaned is None
        assert errors == ["must be an object (got " + got + ")"], errors
    _, errors = validate(3, ROOT, "config")
    assert errors == ["config: must be an object (got 3)"]


def test_check_hooks_and_value():
    def even(v, path, errors):
        if v % 2:
            add_error(errors, path, "must be even")

    def pair(d, path, errors):
        if d.get("a") is not None and d.get("a") == d.get("b"):
            add_error(errors, path + ".b", "must differ from a")

    schema = Dict("p", Int("a", check=even), Int("b"), Value("any", optional=True),
                  check=pair)
    assert validate({"a": 2, "b": 3, "any": [1, {"x": None}]}, schema, "p") == (
        {"a": 2, "b": 3, "any": [1, {"x": None}]}, [])
    assert validate({"a": 3, "b": 3}, schema, "p")[1] == ["p.a: must be even"]
    assert validate({"a": 4, "b": 4}, schema, "p")[1] == ["p.b: must differ from a"]


def test_errors_are_capped():
    doc = {}
    for i in range(100):
        doc["k" + ("00" + str(i))[-3:]] = i
    _, errors = validate(doc, Dict(None))
    assert len(errors) == 21
    assert errors[0] == "k000: unknown key"
    assert errors[-1] == "(more errors not shown)"


def test_show_is_short_and_one_line():
    assert show("a" * 100) == '"' + "a" * 24 + '..."'
    assert show("x\ty\u2603") == '"x?y?"'
    assert show(0.1) == "0.1"
    assert show(1e30) == "1e+30"
    assert show(-7) == "-7"


def test_unknown_field_option_is_a_schema_bug():
    try:
        Int("a", maximum=3)
    except TypeError as exc:
        assert "maximum" in str(exc)
    else:
        raise AssertionError("an unknown option must raise")


def _random_value(rng, depth):
    k = rng.below(12 if depth < 3 else 8)
    if k == 0:
        return None
    if k == 1:
        return rng.below(2) == 1
    if k == 2:
        return rng.below(300) - 150
    if k == 3:
        return (rng.below(2000) - 1000) / 8
    if k == 4:
        return ("gain", "lanes", "name", "sku", "", "\u00e9\x00", "x" * 40)[rng.below(7)]
    if k == 5:
        return 10 ** (rng.below(40) + 10) * (1 if rng.below(2) else -1)
    if k == 6:
        return (float("inf"), float("-inf"), float("nan"))[rng.below(3)]
    if k == 7:
        return 128
    if k < 10:
        return [_random_value(rng, depth + 1) for _ in range(rng.below(6))]
    keys = ("name", "lanes", "pins", "gain", "offset", "sku", "unit_g", "counts_per_gram",
            "outbox", "budget_kb", "dout", "enabled", "note", "junk")
    out = {}
    for _ in range(rng.below(7)):
        out[keys[rng.below(len(keys))]] = _random_value(rng, depth + 1)
    return out


def test_random_shapes_never_raise():
    rng = Rng(12345)
    for _ in range(600):
        data = _random_value(rng, 0)
        if rng.below(2):  # graft random values into a valid document
            doc = _doc()
            doc["lanes"][rng.below(3)]["gain"] = data
            doc["outbox"] = _random_value(rng, 1)
            data = doc
        cleaned, errors = validate(data, ROOT)
        assert type(errors) is list
        for e in errors:
            assert type(e) is str and "\n" not in e and "internal" not in e, e
