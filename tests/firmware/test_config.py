# Portable tests of apps.config: config.json / board.json schemas, the checks across them,
# load/save, lanes <-> LaneCal, and a seeded fuzz of malformed configs.
import json
import os

from apps import config
from apps.config import check_board, check_config, parse, parse_url
from core.lane import LaneCal
from xorshift import Rng


def _board_esp32():
    return {"name": "esp32-devkitc-v4", "chip": "esp32",
            "hx711": {"sck": 4, "dout": [36, 39, 34, 35]},
            "scanner_uart": {"id": 2, "tx": 22, "rx": 21},
            "relay": 23, "beam": 19, "led": 18, "safe_mode_pin": 0}


def _board_s3():
    return {"name": "esp32-s3-devkitc-1", "chip": "esp32s3",
            "hx711": {"sck": 4, "dout": [5, 6, 7, 15, 16, 17, 18, 8]},
            "scanner_uart": {"id": 1, "tx": 9, "rx": 10},
            "relay": 11, "beam": 12, "led": 13, "safe_mode_pin": 0}


def _lane(sku="COKE-330", unit_g=350.0):
    return {"gain": 128, "offset": -120345, "counts_per_gram": 420.5, "sku": sku,
            "unit_g": unit_g, "capacity": 12}


def _shelf():
    return {"device": "shelf-01", "store": "store-7", "role": "shelf",
            "board": "esp32-devkitc-v4",
            "wifi": {"ssid": "store-iot", "password": "correct horse"},
            "broker": {"url": "mqtts://broker.store.example:8883", "username": "shelf-01",
                       "password": "secret", "ca_file": "ca.pem"},
            "lanes": [_lane(), _lane("PEPSI-330"), _lane("WATER-500", 510.0)]}


def _gate():
    return {"device": "gate-01", "store": "store-7", "role": "gate",
            "board": "esp32-devkitc-v4",
            "wifi": {"ssid": "store-iot"},
            "broker": {"url": "mqtt://10.0.0.2:1883"},
            "gate": {"scanner": {"baud": 115200}, "relay_pulse_ms": 800, "exit": "beam"}}


def _errors(cfg, board=None):
    b = None
    if board is not None:
        b, berrs, _ = check_board(board)
        assert berrs == [], berrs
    return check_config(cfg, b)[1]


def _scratch(name):
    # A fresh file path: a temporary directory in CPython, the VM's in-memory / otherwise.
    try:
        import tempfile
    except ImportError:
        path = "/" + name
    else:
        path = tempfile.mkdtemp() + "/" + name
    for p in (path, path + ".tmp"):
        try:
            os.remove(p)
        except OSError:
            pass
    return path


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


# -- valid configs -----------------------------------------------------------------------------

def test_valid_shelf_config_gets_defaults():
    cfg, errors, warnings = check_config(_shelf(), check_board(_board_esp32())[0])
    assert errors == [] and warnings == []
    assert cfg["broker"]["keepalive_s"] == 60
    assert cfg["broker"]["prefix"] == "store/v1"
    assert cfg["ntp"] == "pool.ntp.org"
    assert cfg["telemetry_s"] == 60
    assert cfg["outbox"] == {"budget_kb": 64}
    assert cfg["lanes"][2]["pins"] is None
    assert "gate" not in cfg


def test_valid_gate_config_gets_defaults():
    cfg, errors, _ = check_config(_gate(), check_board(_board_esp32())[0])
    assert errors == []
    assert cfg["wifi"]["password"] == ""
    assert cfg["broker"]["username"] is None and cfg["broker"]["ca_file"] is None
    assert cfg["gate"] == {"scanner": {"baud": 115200}, "relay_pulse_ms": 800, "exit": "beam"}
    g = _gate()
    del g["gate"]
    cfg, errors, _ = check_config(g)
    assert errors == []
    assert cfg["gate"] == {"scanner": {"baud": 9600}, "relay_pulse_ms": 500, "exit": "scan"}


# -- messages ----------------------------------------------------------------------------------

def test_config_error_messages():
    cases = (
        (("lanes", 2, "gain"), 40, "lanes[2].gain: must be one of 128, 64, 32 (got 40)"),
        (("broker", "url"), "tcp://x:1883",
         'broker.url: must start with mqtt:// or mqtts:// (got "tcp://x:1883")'),
        (("device",), "Shelf_1",
         "device: must use only a-z 0-9 - (got \"Shelf_1\": 'S' not allowed)"),
        (("device",), "-shelf", "device: must not start or end with '-' (got \"-shelf\")"),
        (("store",), "", "store: must not be empty"),
        (("role",), "door", 'role: must be one of "shelf", "gate" (got "door")'),
        (("wifi", "password"), "short",
         "wifi.password: must be empty (open network) or 8-63 characters (WPA2) "
         "(got 5 characters)"),
        (("telemetry_s",), 1, "telemetry_s: must be 5..3600 (got 1)"),
        (("lanes", 0, "counts_per_gram"), 0, "lanes[0].counts_per_gram: must not be 0"),
        (("lanes", 0, "counts_per_gram"), 0.0001,
         "lanes[0].counts_per_gram: must be at least 0.001 in magnitude (got 0.0001)"),
        (("lanes", 1, "unit_g"), -1, "lanes[1].unit_g: must be > 0 and <= 100000 (got -1)"),
        (("lanes", 1, "offset"), 8388608, "lanes[1].offset: must be -8388608..8388607 "
                                          "(got 8388608)"),
        (("lanes", 0, "capacity"), -1, "lanes[0].capacity: must be 0..10000 (got -1)"),
        (("broker", "prefix"), "store//v1",
         "broker.prefix: must be topic levels joined by '/', no empty level "
         "(got \"store//v1\")"),
        (("broker", "keepalive_s"), True, "broker.keepalive_s: must be an integer (got true)"),
        (("outbox",), {"budget_kb": 2}, "outbox.budget_kb: must be 4..1024 (got 2)"),
        (("ntp",), "pool ntp", "ntp: must use only A-Z a-z 0-9 - . "
                               "(got \"pool ntp\": ' ' not allowed)"),
    )
    for path, value, message in cases:
        cfg = _shelf()
        node = cfg
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        assert _errors(cfg) == [message], (path, _errors(cfg))


def test_broker_rules():
    cfg = _shelf()
    del cfg["broker"]["ca_file"]
    assert _errors(cfg) == ["broker.ca_file: required for mqtts:// (the broker's CA "
                            "certificate, a file on the board)"]
    cfg = _gate()
    cfg["broker"]["ca_file"] = "ca.pem"
    assert _errors(cfg) == ["broker.ca_file: set, but broker.url is plain mqtt://: use "
                            "mqtts:// or drop ca_file"]
    cfg = _gate()
    cfg["broker"]["password"] = "x"
    assert _errors(cfg) == ["broker.password: needs broker.username (MQTT has no password "
                            "without a user name)"]
    cfg = _gate()
    cfg["broker"]["tls"] = True
    assert _errors(cfg) == ["broker.tls: unknown key"]
    cfg = _gate()
    cfg["broker"]["usrname"] = "x"
    assert _errors(cfg) == ['broker.usrname: unknown key (did you mean "username"?)']


def test_parse_url():
    assert parse_url("mqtt://broker.local") == (False, "broker.local", 1883)
    assert parse_url("mqtts://broker.local") == (True, "broker.local", 8883)
    assert parse_url("mqtt://10.0.0.2:1884") == (False, "10.0.0.2", 1884)
    assert parse_url("mqtts://Broker-1.example.com:443") == (True, "Broker-1.example.com", 443)
    bad = (
        ("http://x", "must start with mqtt:// or mqtts://"),
        ("mqtt://", "must name a host"),
        ("mqtt://:1883", "must name a host"),
        ("mqtt://x:", "port must be 1..65535"),
        ("mqtt://x:0", "port must be 1..65535"),
        ("mqtt://x:65536", "port must be 1..65535"),
        ("mqtt://x:12a", "port must be 1..65535"),
        ("mqtt://x:1883/topic", "no path"),
        ("mqtt://u:p@x:1883", "must not hold credentials"),
        ("mqtt://bad_host:1883", "host may use only"),
        ("mqtt://-x", "must name a host"),
        (5, "must be a string"),
    )
    for url, why in bad:
        try:
            parse_url(url)
        except ValueError as exc:
            assert why in str(exc), (url, str(exc))
        else:
            raise AssertionError("accepted " + repr(url))


def test_role_specific_keys():
    cfg = _shelf()
    cfg["gate"] = {"exit": "scan"}
    assert _errors(cfg) == ['gate: only for role "gate" (role is "shelf")']
    cfg = _gate()
    cfg["lanes"] = [_lane()]
    assert _errors(cfg) == ['lanes: only for role "shelf" (role is "gate")']
    cfg = _shelf()
    del cfg["lanes"]
    assert _errors(cfg) == ["lanes: required"]
    cfg = _shelf()
    cfg["lanes"] = [_lane()] * 9
    assert _errors(cfg) == ["lanes: must have 1..8 items (got 9)"]
    cfg = _shelf()
    cfg["role"] = 7  # unknown role: both roles' keys are allowed, the role is the error
    assert _errors(cfg) == ["role: must be a string (got 7)"]
    cfg["role"] = "door"
    assert _errors(cfg) == ['role: must be one of "shelf", "gate" (got "door")']
    cfg = _gate()
    cfg["gate"]["exit"] = "door"
    cfg["gate"]["scanner"]["baud"] = 1234
    assert _errors(cfg) == [
        "gate.scanner.baud: must be one of 9600, 19200, 38400, 57600, 115200 (got 1234)",
        'gate.exit: must be one of "scan", "beam" (got "door")']


def test_lanes_share_one_gain():
    cfg = _shelf()
    cfg["lanes"][2]["gain"] = 64
    assert _errors(cfg) == ["lanes[2].gain: must equal lanes[0].gain (128): the lanes share "
                            "one clock, so one gain (got 64)"]
    cfg = _shelf()
    for lane in cfg["lanes"]:
        lane["gain"] = 32
    assert _errors(cfg) == []


# -- config against board ------------------------------------------------------------------------

def test_config_against_board():
    board = _board_esp32()  # 4 DOUT pins
    cfg = _shelf()
    cfg["board"] = "esp32-s3-devkitc-1"
    assert _errors(cfg, board) == ['board: is "esp32-s3-devkitc-1" but board.json describes '
                                   '"esp32-devkitc-v4"']
    cfg = _shelf()
    cfg["lanes"] = [_lane() for _ in range(6)]
    assert _errors(cfg, board) == [
        'lanes[4].pins.dout: required: board "esp32-devkitc-v4" has only 4 hx711.dout pins',
        'lanes[5].pins.dout: required: board "esp32-devkitc-v4" has only 4 hx711.dout pins']
    cfg["lanes"][4]["pins"] = {"dout": 25}
    cfg["lanes"][5]["pins"] = {"dout": 26}
    assert _errors(cfg, board) == []
    cfg["lanes"][5]["pins"] = {"dout": 25}
    assert _errors(cfg, board) == ["lanes[5].pins.dout: GPIO25 is already used by "
                                   "lanes[4].pins.dout"]
    cfg["lanes"][5]["pins"] = {"dout": 23}
    assert _errors(cfg, board) == ["lanes[5].pins.dout: GPIO23 is already used by "
                                   "board relay"]
    cfg["lanes"][5]["pins"] = {"dout": 7}
    assert _errors(cfg, board) == ["lanes[5].pins.dout: GPIO7 is wired to the module's SPI "
                                   "flash"]
    cfg["lanes"][5]["pins"] = {"dout": 2}
    cfg_clean, errors, warnings = check_config(cfg, check_board(board)[0])
    assert errors == []
    assert warnings == ["lanes[5].pins.dout: GPIO2 is a strapping pin: a level forced at "
                        "reset can stop the boot"]
    cfg = _shelf()
    cfg["lanes"][0]["pins"] = {"dout": 39}  # lane 1 uses the board's 39 too
    assert _errors(cfg, board) == ["lanes[1]: GPIO39 is already used by lanes[0].pins.dout"]
    bare = _board_esp32()
    del bare["hx711"]
    assert _errors(_shelf(), bare) == ['board: "esp32-devkitc-v4" has no hx711 '
                                       '(role "shelf" needs one)']
    gateless = _board_esp32()
    del gateless["beam"]
    del gateless["scanner_uart"]
    assert _errors(_gate(), gateless) == [
        'board: "esp32-devkitc-v4" has no scanner_uart (role "gate" needs one)',
        'gate.exit: "beam" needs a beam pin, and board "esp32-devkitc-v4" has none']


def test_board_pin_rules():
    cases = (
        ("esp32", ("hx711", "sck"), 38,
         "hx711.sck: GPIO38 is input-only on the esp32 (34-39 cannot drive an output)"),
        ("esp32", ("relay",), 39,
         "relay: GPIO39 is input-only on the esp32 (34-39 cannot drive an output)"),
        ("esp32", ("scanner_uart", "tx"), 36, "scanner_uart.tx: GPIO36 is input-only on the "
                                              "esp32 (34-39 cannot drive an output)"),
        ("esp32", ("led",), 6, "led: GPIO6 is wired to the module's SPI flash"),
        ("esp32", ("beam",), 24, "beam: GPIO24 does not exist on the esp32"),
        ("esp32", ("beam",), 40, "beam: GPIO40 does not exist on the esp32"),
        ("esp32", ("beam",), 64, "beam: must be 0..63 (got 64)"),
        ("esp32", ("beam",), 21, "beam: GPIO21 is already used by scanner_uart.rx"),
        ("esp32s3", ("relay",), 22, "relay: GPIO22 does not exist on the esp32s3"),
        ("esp32s3", ("relay",), 49, "relay: GPIO49 does not exist on the esp32s3"),
        ("esp32s3", ("beam",), 30, "beam: GPIO30 is wired to the module's SPI flash/PSRAM"),
        ("esp32s3", ("led",), 4, "led: GPIO4 is already used by hx711.sck"),
    )
    for chip, path, pin, message in cases:
        board = _board_esp32() if chip == "esp32" else _board_s3()
        node = board
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = pin
        errors = check_board(board)[1]
        assert errors == [message], (path, pin, errors)
    board = _board_esp32()
    board["hx711"]["dout"] = [36, 36]
    assert check_board(board)[1] == ["hx711.dout[1]: GPIO36 is already used by hx711.dout[0]"]
    board["hx711"]["dout"] = [36] * 9
    assert check_board(board)[1] == ["hx711.dout: must have 1..8 items (got 9)"]
    board = _board_esp32()
    board["scanner_uart"]["id"] = 0
    assert check_board(board)[1] == ["scanner_uart.id: must be one of 1, 2 (got 0)"]
    board = _board_esp32()
    board["chip"] = "esp8266"
    assert check_board(board)[1] == [
        'chip: must be one of "esp32", "esp32s3", "virtual" (got "esp8266")']


def test_board_pin_warnings():
    board = _board_esp32()
    board["relay"] = 12
    board["led"] = 1
    board["beam"] = 16
    assert check_board(board)[1:] == ([], [
        "relay: GPIO12 is a strapping pin: a level forced at "
        "reset can stop the boot",
        "beam: GPIO16 drives the PSRAM on WROVER modules",
        "led: GPIO1 is UART0 (REPL console, flashing)"])
    s3 = _board_s3()
    s3["relay"] = 46
    s3["beam"] = 35
    s3["led"] = 20
    s3["safe_mode_pin"] = 43
    assert check_board(s3)[2] == [
        "relay: GPIO46 is a strapping pin: a level forced at reset can stop the boot",
        "beam: GPIO35 carries octal flash/PSRAM on -R8 and -N32 modules",
        "led: GPIO20 is the native USB port",
        "safe_mode_pin: GPIO43 is UART0 (console)"]
    virtual = {"name": "virtual", "chip": "virtual", "hx711": {"sck": 0, "dout": [6, 34]},
               "relay": 35}
    assert check_board(virtual)[1:] == ([], [])


def test_board_optional_parts():
    minimal = {"name": "shelf-only", "chip": "esp32", "hx711": {"sck": 4, "dout": [36]}}
    board, errors, warnings = check_board(minimal)
    assert errors == [] and warnings == []
    assert board["relay"] is None and board["scanner_uart"] is None
    assert board["description"] == ""
    assert check_board({"name": "x", "chip": "esp32", "pins": {}})[1] == [
        "pins: unknown key"]


# -- load / parse / save -----------------------------------------------------------------------

def _dump(obj):
    return json.dumps(obj).encode()


def test_parse_reports_file_problems_with_their_names():
    board = _dump(_board_esp32())
    cases = (
        (b"", "config.json: not valid JSON"),
        (b'{"device": ', "config.json: not valid JSON"),
        (b"\xff\xfe{}", "config.json: not UTF-8 text"),
        (b"[1, 2]", "config.json: must be an object (got a list)"),
        (b"null", "config.json: must be an object (got null)"),
        (b" " * 16385, "config.json: too large (more than 16384 bytes)"),
    )
    for raw, message in cases:
        cfg = parse(raw, board)
        assert not cfg.ok
        assert cfg.errors[0].startswith(message), (raw[:20], cfg.errors)
    cfg = parse(_dump(_shelf()), b"{oops")
    assert cfg.errors[0].startswith("board.json: not valid JSON"), cfg.errors
    assert len(cfg.errors) == 1  # the config itself is fine, checked without the board
    cfg = parse(_dump(_shelf()), _dump({"name": "x", "chip": "esp32"}))
    assert cfg.errors == ['config.json: board: is "esp32-devkitc-v4" but board.json '
                          'describes "x"', 'config.json: board: "x" has no hx711 (role '
                          '"shelf" needs one)']


def test_parse_keeps_partial_data_for_the_fault_report():
    cfg_doc = _shelf()
    cfg_doc["lanes"][1]["gain"] = 40
    cfg = parse(_dump(cfg_doc), _dump(_board_esp32()))
    assert cfg.errors == ["config.json: lanes[1].gain: must be one of 128, 64, 32 (got 40)"]
    assert cfg.data["device"] == "shelf-01"
    assert cfg.data["broker"]["url"].startswith("mqtts://")
    try:
        cfg.lane_cals()
    except ValueError as exc:
        assert "lanes[1].gain" in str(exc)
    else:
        raise AssertionError("an invalid config must not yield calibrations")


def test_load_missing_files():
    path = _scratch("no-config.json")
    bpath = _scratch("no-board.json")
    cfg = config.load(path, bpath)
    assert cfg.errors == [bpath + ": file not found", path + ": file not found"]
    assert cfg.data is None and cfg.raw is None and not cfg.ok
    _write(bpath, _dump(_board_esp32()))
    cfg = config.load(path, bpath)
    assert cfg.errors == [path + ": file not found"]
    assert cfg.board["name"] == "esp32-devkitc-v4"
    os.remove(bpath)


def test_load_and_save_round_trip():
    path = _scratch("config.json")
    bpath = _scratch("board.json")
    ca = _scratch("ca.pem")
    doc = _shelf()
    doc["broker"]["ca_file"] = ca
    _write(bpath, _dump(_board_esp32()))
    config.save(path, doc)
    assert not _exists(path + ".tmp")
    cfg = config.load(path, bpath)
    assert cfg.errors == [path + ": broker.ca_file: file not found: " + ca]
    _write(ca, b"-----BEGIN CERTIFICATE-----\n")
    cfg = config.load(path, bpath)
    assert cfg.ok, cfg.errors
    assert cfg.raw == doc
    assert cfg.hx711() == (4, [36, 39, 34], 128)
    cals = cfg.lane_cals()
    assert [c.sku for c in cals] == ["COKE-330", "PEPSI-330", "WATER-500"]
    assert cals[0].offset == -120345 and cals[0].counts_per_gram == 420.5
    # a calibration and a planogram change, persisted and read back
    cal = cals[1]
    cal.tare(-100000)
    cal.set_planogram("FANTA-330", 345.5, 10)
    cfg.set_lane_cal(1, cal)
    cfg.set_telemetry(30)
    cfg.save()
    assert not _exists(path + ".tmp")
    again = config.load(path, bpath)
    assert again.ok, again.errors
    lane = again.data["lanes"][1]
    assert lane["offset"] == -100000 and lane["sku"] == "FANTA-330"
    assert lane["unit_g"] == 345.5 and lane["capacity"] == 10
    assert again.data["telemetry_s"] == 30
    assert "keepalive_s" not in again.raw["broker"]  # defaults are not frozen into the file
    # a change that would not load again is refused, the file untouched
    cal.sku = "bad sku"
    again.set_lane_cal(1, cal)
    try:
        again.save()
    except ValueError as exc:
        assert str(exc).startswith("lanes[1].sku: must use only"), str(exc)
    else:
        raise AssertionError("save() must refuse an invalid config")
    assert config.load(path, bpath).data["lanes"][1]["sku"] == "FANTA-330"
    for p in (path, bpath, ca):
        os.remove(p)


def test_save_replaces_atomically():
    path = _scratch("state.json")
    config.save(path, {"a": 1})
    config.save(path, {"a": 2, "b": [1, 2]})
    with open(path) as f:
        assert json.loads(f.read()) == {"a": 2, "b": [1, 2]}
    assert not _exists(path + ".tmp")
    os.remove(path)


def test_lane_cal_conversions():
    lane = check_config(_shelf())[0]["lanes"][0]
    cal = config.lane_cal(lane)
    assert isinstance(cal, LaneCal)
    assert (cal.offset, cal.counts_per_gram, cal.unit_g, cal.sku, cal.capacity) == (
        -120345, 420.5, 350.0, "COKE-330", 12)
    cal.span(-120345 + 420500 * 2, 2000)
    updated = config.lane_update(lane, cal)
    assert updated["counts_per_gram"] == 420.5 and updated["gain"] == 128
    assert updated["pins"] is None
    assert updated is not lane
    lane2 = dict(lane)
    lane2["pins"] = {"dout": 25}
    assert config.lane_update(lane2, cal)["pins"] == {"dout": 25}


# -- fuzz --------------------------------------------------------------------------------------


def _nodes(obj, out, parent=None, key=None):
    # every (container, key) below obj, depth first
    if parent is not None:
        out.append((parent, key))
    if type(obj) is dict:
        for k in sorted(obj):
            _nodes(obj[k], out, obj, k)
    elif type(obj) is list:
        for i in range(len(obj)):
            _nodes(obj[i], out, obj, i)
    return out


def _wrong_type(value, rng):
    # a replacement of another JSON type that the field cannot accept (numbers: no int for
    # a float field, as the base config writes every float field as a float)
    t = type(value)
    if t is str:
        pool = (5, 1.5, True, [], {})
    elif t is int:
        pool = ("5", 1.5, False, [1], {})
    elif t is float:
        pool = ("1.5", True, [], {"x": 1})
    elif t is list:
        pool = ({}, "x", 3, True)
    else:
        pool = ([], "x", 3, True)
    return rng.pick(pool)


_REQUIRED = (("device",), ("store",), ("role",), ("board",), ("wifi",), ("wifi", "ssid"),
             ("broker",), ("broker", "url"))
_SHELF_REQUIRED = (("lanes",), ("lanes", 0, "counts_per_gram"), ("lanes", 1, "sku"),
                   ("lanes", 2, "unit_g"))
_OUT_OF_RANGE = (
    (("lanes", 0, "gain"), 40), (("lanes", 1, "offset"), 1 << 24), (("telemetry_s",), 0),
    (("telemetry_s",), 99999), (("lanes", 2, "counts_per_gram"), 0.0),
    (("lanes", 0, "unit_g"), -1.0), (("lanes", 1, "capacity"), -3),
    (("broker", "keepalive_s"), 1), (("device",), "Bad_Id"), (("device",), "x" * 33),
    (("broker", "url"), "http://x"), (("wifi", "password"), "short"), (("role",), "tester"),
    (("board",), "other-board"), (("lanes", 0, "sku"), ""), (("ntp",), ""),
    (("broker", "prefix"), "/x"), (("lanes", 0, "pins"), {"dout": 6}),
    (("lanes", 1, "pins"), {"dout": 99}), (("lanes", 2, "pins"), {"dout": 23}),
    (("lanes",), []), (("outbox",), {"budget_kb": 1}), (("lanes", 1, "gain"), 64),
)
_GATE_OUT_OF_RANGE = (
    (("gate", "relay_pulse_ms"), 5), (("gate", "scanner", "baud"), 1234),
    (("gate", "exit"), "door"), (("lanes",), [_lane()]), (("broker", "ca_file"), "ca.pem"),
)


def _set(doc, path, value):
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _delete(doc, path):
    node = doc
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]


def _mutate(doc, gate, rng):
    kind = rng.below(4)
    if kind == 0:  # a value of the wrong type
        container, key = rng.pick(_nodes(doc, []))
        container[key] = _wrong_type(container[key], rng)
    elif kind == 1:  # a required key gone
        _delete(doc, rng.pick(_REQUIRED if gate else _REQUIRED + _SHELF_REQUIRED))
    elif kind == 2:  # an unknown key, anywhere an object is
        dicts = [c[k] for c, k in _nodes(doc, []) if type(c[k]) is dict] + [doc]
        rng.pick(dicts)["extra_" + str(rng.below(100))] = rng.below(5)
    else:  # out of range / not allowed
        path, value = rng.pick(_GATE_OUT_OF_RANGE if gate else _OUT_OF_RANGE)
        _set(doc, path, json.loads(json.dumps(value)))


def _assert_errors(cfg, what):
    assert not cfg.ok, what
    for e in cfg.errors:
        assert type(e) is str and "\n" not in e, e
        assert "internal" not in e, (e, what)


def test_fuzz_malformed_configs():
    rng = Rng(20240601)
    board = _dump(_board_esp32())
    shelf_text = json.dumps(_shelf())
    gate_text = json.dumps(_gate())
    n = 0
    for i in range(1200):
        gate = i % 3 == 2
        text = gate_text if gate else shelf_text
        kind = rng.below(10)
        if kind < 7:  # 1-3 structural mutations, each on its own invalid
            doc = json.loads(text)
            for _ in range(1 + rng.below(3)):
                try:
                    _mutate(doc, gate, rng)
                except (KeyError, IndexError, TypeError):
                    pass  # the path is gone or no longer a container: mutated already
            raw = json.dumps(doc).encode()
        elif kind < 9:  # truncated: the closing brace is always cut off
            raw = text.encode()[:rng.below(len(text) - 1)]
        else:  # random bytes
            raw = bytes([rng.below(256) for _ in range(rng.below(120))])
        cfg = parse(raw, board)
        _assert_errors(cfg, raw[:80])
        n += 1
    assert n == 1200


def test_fuzz_malformed_boards():
    rng = Rng(777)
    text = json.dumps(_board_s3())
    for _ in range(300):
        doc = json.loads(text)
        nodes = _nodes(doc, [])
        container, key = rng.pick(nodes)
        before = container[key]
        choice = rng.below(3)
        if choice == 0:
            container[key] = _wrong_type(before, rng)
        elif choice == 1:
            container[key] = rng.pick((22, 23, 26, 30, 49, 64, -1, 4, 9))  # bad or taken
            if container[key] == before:
                continue  # unchanged
        else:
            doc["x" + str(rng.below(9))] = 1
        board, errors, _ = check_board(doc)
        assert errors, (key, container[key])
        for e in errors:
            assert "\n" not in e and "internal" not in e, e
