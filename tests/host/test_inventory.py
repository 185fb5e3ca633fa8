"""`shelfctl provision` input, no boards: the examples, every row checked with the firmware's
own schema and reported with its line, secrets only by reference and never shown."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from host_tools import cli
from host_tools.errors import UserError
from host_tools.firmware import REPO
from host_tools.mosquitto import ToolMissing, make_certs
from host_tools.provision_config import MASK, DevicePlan, with_board_calibration
from host_tools.provision_inventory import plan_config, plan_inventory

WIFI_PW = "wifi-Secret-7731"
MQTT_PW = {"shelf-a1": "mqtt-Secret-a1-0042", "shelf-a2": "mqtt-Secret-a2-0042",
           "gate-entrance": "mqtt-Secret-gate-0042", "shelf-b7": "mqtt-Secret-b7-0042"}


@pytest.fixture(scope="module")
def ca_pem(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    try:
        return make_certs(tmp_path_factory.mktemp("certs")).ca.read_bytes()
    except ToolMissing as exc:
        pytest.skip(str(exc))


@pytest.fixture
def examples(tmp_path: Path, ca_pem: bytes, monkeypatch: pytest.MonkeyPatch) -> Path:
    """examples/ as a technician sets it up: the CA and one password file per device next to
    it, the WiFi password in the environment."""
    d = tmp_path / "examples"
    shutil.copytree(REPO / "examples", d)
    (d / "certs").mkdir()
    (d / "certs" / "store-ca.pem").write_bytes(ca_pem)
    (d / "secrets").mkdir()
    for device, pw in MQTT_PW.items():
        (d / "secrets" / f"{device}.mqtt").write_text(pw + "\n")  # as an editor saves it
    monkeypatch.setenv("SHELF_WIFI_PASSWORD", WIFI_PW)
    return d


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A site without TLS or per-device passwords: for rows that test something else."""
    monkeypatch.setenv("SHELF_WIFI_PASSWORD", WIFI_PW)
    return write(tmp_path / "site.toml", "\n".join([
        'store = "store-1"', 'board = "virtual"',
        '[wifi]', 'ssid = "store-wifi"', 'password_env = "SHELF_WIFI_PASSWORD"',
        '[broker]', 'url = "mqtt://10.0.0.2:1883"',
        '[lane_defaults]', 'counts_per_gram = 420.0']) + "\n")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def errors_of(path: Path, site: Path | None = None) -> list[str]:
    with pytest.raises(UserError) as info:
        plan_inventory(path, site)
    return str(info.value).splitlines()


# ---- the examples ------------------------------------------------------------------------

def test_csv_example_makes_three_valid_configs(examples: Path, ca_pem: bytes):
    plans = plan_inventory(examples / "inventory.csv", examples / "site.toml")
    by_id = {p.device: p for p in plans}
    assert list(by_id) == ["shelf-a1", "shelf-a2", "gate-entrance"]
    a1, a2, gate = by_id.values()
    assert a1.where.endswith("inventory.csv:7") and gate.where.endswith("inventory.csv:9")
    assert gate.port == "5C0A91F2" and gate.board_name == "esp32-s3-devkitc-1"
    assert a1.chip == "esp32" and gate.chip == "esp32s3"
    assert a1.config["wifi"] == {"ssid": "store-iot", "password": WIFI_PW}
    assert a1.config["broker"]["username"] == "shelf-a1"
    assert a1.config["broker"]["password"] == MQTT_PW["shelf-a1"]  # the file's newline dropped
    assert a1.config["broker"]["ca_file"] == "ca.pem" and a1.files == {"/ca.pem": ca_pem}
    assert [lane["sku"] for lane in a1.config["lanes"]] == ["COKE-330", "WATER-500",
                                                            "CHIPS-SALT-150", "GUM-MINT"]
    assert a1.config["lanes"][0] == {"gain": 128, "counts_per_gram": 420.0, "sku": "COKE-330",
                                     "unit_g": 350.0, "capacity": 12}
    assert a1.calibrated == set()
    assert a2.config["lanes"][1]["offset"] == 80211
    assert a2.config["lanes"][1]["counts_per_gram"] == -418.9
    assert a2.calibrated == {0, 1}
    assert "lanes" not in gate.config and gate.config["role"] == "gate"


def test_toml_example_describes_the_same_fleet(examples: Path):
    csv_plans = plan_inventory(examples / "inventory.csv", examples / "site.toml")
    toml_plans = plan_inventory(examples / "inventory.toml", examples / "site.toml")
    assert [p.where.rsplit(":", 1)[1] for p in toml_plans] == ["8", "15", "29"]
    for a, b in zip(csv_plans, toml_plans):
        assert (a.device, a.port, a.board_name) == (b.device, b.port, b.board_name)
        assert a.config.get("lanes") == b.config.get("lanes")
        assert b.config["telemetry_s"] == 30  # the inventory's top level over the site
    assert toml_plans[1].config["sps"] == 80
    assert toml_plans[2].config["gate"] == {"exit": "beam", "relay_pulse_ms": 800}


def test_single_device_config_with_the_site(examples: Path):
    plan = plan_config(examples / "shelf-config.json", "/dev/ttyUSB3", examples / "site.toml")
    assert plan.port == "/dev/ttyUSB3" and plan.device == "shelf-b7"
    assert plan.config["store"] == "store-0042"
    assert plan.config["lanes"][0]["counts_per_gram"] == 420.52
    assert plan.calibrated is None  # a whole config.json: its calibration is what it says


# ---- rows the firmware would refuse, with their lines --------------------------------------

def test_bad_rows_are_reported_with_their_lines_all_at_once(tmp_path: Path, site: Path):
    inv = write(tmp_path / "bad.csv", "\n".join([
        "port,id,role,lanes,planogram",
        "/dev/ttyUSB0,shelf-1,shelf,2,0:A-1:100;1:B-2:200",
        "# a comment line",
        "/dev/ttyUSB1,shelf-2,shelf,12,0:A-1:100",
        "/dev/ttyUSB2,shelf-3,shelf,1,0:COKE 330:100",
        "/dev/ttyUSB3,Shelf_4,shelf,1,0:A-1:100",
        "/dev/ttyUSB4,shelf-5,shelf,2,0:A-1:100",
        "/dev/ttyUSB5,shelf-6,shelf,1,0:A-1:-5",
    ]) + "\n")
    errors = errors_of(inv, site)
    assert errors == [
        f"{inv}:4: lanes: must be 1..8 (got 12)",
        f"{inv}:5: lanes[0].sku: must use only A-Z a-z 0-9 - _ . : (got \"COKE 330\": ' ' "
        f"not allowed)",
        f"{inv}:6: device: must use only a-z 0-9 - (got \"Shelf_4\": 'S' not allowed)",
        f"{inv}:7: planogram: no entry for lane 1 (every lane needs LANE:SKU:UNIT_G)",
        f"{inv}:8: lanes[0].unit_g: must be > 0 and <= 100000 (got -5)",
    ]


def test_bad_row_fails_the_verb_before_any_board(tmp_path: Path, site: Path,
                                                 capsys: pytest.CaptureFixture[str]):
    inv = write(tmp_path / "bad.csv", "port,id,role,lanes,planogram\n"
                                      "/dev/ttyNOPE0,shelf-1,shelf,1,0:A:1\n"
                                      "/dev/ttyNOPE1,shelf-2,shelf,12,0:A:1\n")
    code = cli.main(["provision", "--inventory", str(inv), "--site",
                     str(site)])
    err = capsys.readouterr().err
    # the good row's port does not exist either: had a board been tried, it would say so
    assert code == 2
    assert err == f"shelfctl: {inv}:3: lanes: must be 1..8 (got 12)\n"


@pytest.mark.parametrize("planogram,calibration,message", [
    ("0:A:1;0:B:2", "", "planogram: lane 0 given twice"),
    ("0:A", "", "planogram: '0:A' must be LANE:SKU:UNIT_G[:CAPACITY]"),
    ("0:A:heavy", "", "planogram: lane 0 unit_g: must be a number (got 'heavy')"),
    ("0:A:1", "3:0:420", "calibration: lane 3 is beyond lanes = 1 (0..0)"),
    ("0:A:1", "0:420", "calibration: '0:420' must be LANE:OFFSET:COUNTS_PER_GRAM"),
    ("0:A:1", "0:0:0", "lanes[0].counts_per_gram: must not be 0"),
])
def test_planogram_and_calibration_mistakes(tmp_path: Path, site: Path, planogram: str,
                                            calibration: str, message: str):
    inv = write(tmp_path / "inv.csv", "port,id,role,planogram,calibration\n"
                                      f"/dev/ttyUSB0,shelf-1,shelf,{planogram},{calibration}\n")
    assert errors_of(inv, site) == [f"{inv}:2: {message}"]


def test_a_shelf_without_calibration_or_nominal_value_is_refused(tmp_path: Path):
    inv = write(tmp_path / "inv.toml", '\n'.join([
        'store = "s1"', 'board = "virtual"', '[wifi]', 'ssid = "x"',
        '[broker]', 'url = "mqtt://10.0.0.2"',
        '[[device]]', 'port = "/dev/ttyUSB0"', 'id = "shelf-1"', 'role = "shelf"',
        'planogram = "0:A:100"']) + "\n")
    assert errors_of(inv) == [
        f"{inv}:7: calibration: lane 0 has none: give LANE:OFFSET:COUNTS_PER_GRAM, or "
        f"lane_defaults.counts_per_gram (nominal) in the site"]


def test_gate_rows_take_no_planogram(tmp_path: Path, site: Path):
    inv = write(tmp_path / "inv.csv", "port,id,role,planogram\n"
                                      "/dev/ttyUSB0,gate-1,gate,0:A:1\n")
    assert errors_of(inv, site) == [
        f"{inv}:2: planogram: only for role \"shelf\" (role is \"gate\")"]


def test_two_rows_for_one_device_or_one_port(tmp_path: Path, site: Path):
    inv = write(tmp_path / "inv.csv", "port,id,role\n/dev/ttyUSB0,gate-1,gate\n"
                                      "/dev/ttyUSB1,gate-1,gate\n")
    assert errors_of(inv, site) == [
        f"{inv}:3: id: gate-1 is already on {inv}:2"]
    inv = write(tmp_path / "inv.csv", "port,id,role\n/dev/ttyUSB0,gate-1,gate\n"
                                      "/dev/ttyUSB0,gate-2,gate\n")
    assert errors_of(inv, site) == [
        f"{inv}:3: port: /dev/ttyUSB0 is already on {inv}:2"]


def test_unknown_column_and_unknown_board(tmp_path: Path, site: Path):
    inv = write(tmp_path / "inv.csv", "port,id,role,lane\n/dev/ttyUSB0,gate-1,gate,1\n")
    assert errors_of(inv)[0].startswith(f"{inv}:1: unknown column 'lane' (columns: port, id,")
    inv = write(tmp_path / "inv.csv", "port,id,role,board\n/dev/ttyUSB0,gate-1,gate,esp8266\n")
    assert errors_of(inv, site) == [
        f"{inv}:2: board: no board definition 'esp8266' in boards/ (have: esp32-devkitc-v4, "
        f"esp32-s3-devkitc-1, virtual)"]


def test_toml_syntax_error_names_the_line(tmp_path: Path):
    inv = write(tmp_path / "inv.toml", '[[device]]\nport = "/dev/ttyUSB0\n')
    assert "line 2" in errors_of(inv)[0]


# ---- TLS ---------------------------------------------------------------------------------

def test_mqtts_needs_a_ca_and_the_ca_must_be_a_certificate(examples: Path):
    site = examples / "site.toml"
    write(site, site.read_text().replace('ca = "certs/store-ca.pem"', ''))
    assert errors_of(examples / "inventory.csv", site)[0].endswith(
        "broker.ca: required for mqtts:// (the broker's CA certificate on this computer; "
        "provision copies it to the board)")
    write(examples / "certs" / "bad.pem", "-----BEGIN CERTIFICATE-----\nnot one\n")
    write(site, site.read_text().replace("[broker]", '[broker]\nca = "certs/bad.pem"'))
    assert errors_of(examples / "inventory.csv", site)[0].endswith(
        f"broker.ca: {examples}/certs/bad.pem is not a PEM or DER certificate")


def test_client_certificates_are_refused_plainly(examples: Path):
    site = examples / "site.toml"
    write(site, site.read_text().replace("[broker]", '[broker]\nclient_cert = "certs/a.pem"'))
    assert "the firmware cannot use a client certificate" in errors_of(
        examples / "inventory.csv", site)[0]


# ---- secrets -------------------------------------------------------------------------------

def test_a_password_in_the_site_file_is_refused_without_showing_it(examples: Path):
    site = examples / "site.toml"
    write(site, site.read_text().replace('password_env = "SHELF_WIFI_PASSWORD"',
                                         'password = "inline-Secret-99"'))
    with pytest.raises(UserError) as info:
        plan_inventory(examples / "inventory.csv", site)
    assert str(info.value) == (
        f"{site}: wifi.password: a secret is not accepted in the file: use "
        f"wifi.password_env = \"VARIABLE\" or wifi.password_file = \"PATH\"")


def test_a_password_in_a_device_table_or_a_csv_column_is_refused(examples: Path):
    inv = examples / "inventory.toml"
    write(inv, inv.read_text().replace('id = "shelf-a1"',
                                       'id = "shelf-a1"\nbroker = {password = "inline-Secret-9"}'))
    errors = errors_of(inv, examples / "site.toml")
    assert errors == [f"{inv}:8: broker.password: a secret is not accepted in the file: use "
                      f"broker.password_env = \"VARIABLE\" or broker.password_file = \"PATH\""]
    csv = write(examples / "inv.csv", "port,id,role,mqtt_password\n/dev/ttyUSB0,g-1,gate,x\n")
    assert errors_of(csv) == [f"{csv}:1: column 'mqtt_password': a secret is not accepted in "
                              f"the file: use mqtt_password_env or mqtt_password_file"]


def test_missing_secret_sources_are_named(examples: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SHELF_WIFI_PASSWORD")
    errors = errors_of(examples / "inventory.csv", examples / "site.toml")
    assert errors[0].endswith(":7: wifi.password_env: environment variable "
                              "SHELF_WIFI_PASSWORD is not set")
    monkeypatch.setenv("SHELF_WIFI_PASSWORD", WIFI_PW)
    (examples / "secrets" / "shelf-a2.mqtt").unlink()
    assert errors_of(examples / "inventory.csv", examples / "site.toml") == [
        f"{examples / 'inventory.csv'}:8: broker.password_file: cannot read "
        f"{examples}/secrets/shelf-a2.mqtt (No such file or directory)"]


def test_per_row_secret_from_the_environment(tmp_path: Path, site: Path,
                                             monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GATE_PW", "gate-env-Secret-1")
    inv = write(tmp_path / "inv.csv", "port,id,role,mqtt_username,mqtt_password_env\n"
                                      "/dev/ttyUSB0,gate-1,gate,gates,GATE_PW\n")
    (plan,) = plan_inventory(inv, site)
    assert plan.config["broker"]["username"] == "gates"
    assert plan.config["broker"]["password"] == "gate-env-Secret-1"


def test_a_bad_password_is_described_never_quoted(examples: Path):
    (examples / "secrets" / "shelf-a1.mqtt").write_text("too-long-Secret-" * 10)
    monkey_short = "short"  # WPA2 needs 8..63 characters
    (examples / "wifi.pw").write_text(monkey_short)
    site = examples / "site.toml"
    write(site, site.read_text().replace('password_env = "SHELF_WIFI_PASSWORD"',
                                         'password_file = "wifi.pw"'))
    errors = errors_of(examples / "inventory.csv", site)
    assert errors[:2] == [
        f"{examples / 'inventory.csv'}:7: wifi.password: must be empty (open network) or "
        f"8-63 characters (WPA2)",
        f"{examples / 'inventory.csv'}:7: broker.password: must be at most 128 characters"]
    assert not any("too-long-Secret" in e for e in errors)


def test_masked_config_and_scrubbed_text(examples: Path):
    plan = plan_inventory(examples / "inventory.csv", examples / "site.toml")[0]
    masked = json.dumps(plan.masked())
    assert WIFI_PW not in masked and MQTT_PW["shelf-a1"] not in masked
    assert masked.count(MASK) == 2
    assert plan.scrub(f"board said {MQTT_PW['shelf-a1']}!") == f"board said {MASK}!"
    assert plan.config["wifi"]["password"] == WIFI_PW  # the plan itself keeps the real one


def test_dry_run_shows_everything_but_the_passwords(examples: Path,
                                                    capsys: pytest.CaptureFixture[str]):
    code = cli.main(["provision", "--inventory", str(examples / "inventory.csv"), "--site",
                     str(examples / "site.toml"), "--dry-run", "--verbose"])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    assert "would provision 3 device(s)" in out
    assert '"sku": "GUM-MINT"' in out and '"ca_file": "ca.pem"' in out
    assert out.count(f'"password": "{MASK}"') == 6
    for secret in [WIFI_PW, *MQTT_PW.values()]:
        assert secret not in out


# ---- a board that was calibrated already ----------------------------------------------------

def test_reprovisioning_keeps_the_boards_calibration_of_uncalibrated_lanes(examples: Path):
    a1, a2, _ = plan_inventory(examples / "inventory.csv", examples / "site.toml")
    on_board = json.loads(json.dumps(a1.config))
    on_board["lanes"][1].update(offset=-5000, counts_per_gram=401.5, sku="OLD-SKU")
    cfg, kept = with_board_calibration(a1, on_board)
    assert kept == [0, 1, 2, 3]
    assert cfg["lanes"][1]["offset"] == -5000 and cfg["lanes"][1]["counts_per_gram"] == 401.5
    assert cfg["lanes"][1]["sku"] == "WATER-500"  # the planogram is the inventory's
    # another device's config, or lanes the inventory calibrated: nothing is kept
    assert with_board_calibration(a1, {**on_board, "device": "shelf-zz"}) == (a1.config, [])
    a2_board = json.loads(json.dumps(a2.config))
    a2_board["lanes"][0]["counts_per_gram"] = 999.0
    assert with_board_calibration(a2, a2_board) == (a2.config, [])


def test_a_board_config_that_no_longer_fits_is_not_kept(examples: Path):
    plan: DevicePlan = plan_inventory(examples / "inventory.csv", examples / "site.toml")[0]
    on_board = json.loads(json.dumps(plan.config))
    on_board["lanes"][2]["gain"] = 64  # the lanes must share one gain: invalid once merged
    assert with_board_calibration(plan, on_board) == (plan.config, [])
