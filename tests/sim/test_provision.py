"""`shelfctl provision` against virtual boards through their ptys and a real mosquitto that
checks each device's own user name and password: deploy, config, CA, verify, reset, `online`;
one board failing does not stop the others; the one-line errors; no secret in any output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_tools.board import ports
from host_tools.deploy import put_json
from host_tools.firmware import REPO
from host_tools.mosquitto import Broker, make_certs, tool
from host_tools.sim.board import VirtualBoard
from tests.sim.conftest import start_broker

SHELFCTL = [sys.executable, "-m", "host_tools.cli"]
WIFI_PW = "store-secret"  # what the virtual board's access point takes
MQTT_PW = {"shelf-1": "mqtt-Secret-shelf-1-77", "gate-1": "mqtt-Secret-gate-1-77",
           "gate-9": "mqtt-Secret-gate-9-77", "observer": "mqtt-Secret-observer-77"}
SECRETS = [WIFI_PW, *MQTT_PW.values()]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("provision")


@pytest.fixture(scope="module")
def broker(work: Path) -> Iterator[Broker]:
    b = start_broker(work / "broker", users=MQTT_PW)
    yield b
    b.stop()


@pytest.fixture(scope="module")
def boards(work: Path) -> Iterator[list[VirtualBoard]]:
    """Two blank boards (MicroPython, nothing else), shared by the tests of this module."""
    made = [VirtualBoard(work / f"board-{i}", baud=0) for i in range(2)]
    for b in made:
        b.start()
    yield made
    for b in made:
        b.stop()


@pytest.fixture(scope="module")
def site(work: Path, broker: Broker) -> Path:
    (work / "secrets").mkdir()
    for device, pw in MQTT_PW.items():
        (work / "secrets" / f"{device}.mqtt").write_text(pw + "\n")
    path = work / "site.toml"
    path.write_text("\n".join([
        'store = "store-9"', 'board = "virtual"', 'telemetry_s = 30',
        '[wifi]', 'ssid = "store-wifi"', 'password_env = "T_WIFI_PW"',
        '[broker]', f'url = "{broker.url}"', 'username = "{device}"',
        'password_file = "secrets/{device}.mqtt"', 'keepalive_s = 30',
        '[lane_defaults]', 'counts_per_gram = 420.0']) + "\n")
    return path


def shelfctl(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, T_WIFI_PW=WIFI_PW)
    return subprocess.run([*SHELFCTL, *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=REPO)


def assert_no_secret(p: subprocess.CompletedProcess[str]) -> None:
    for secret in SECRETS:
        assert secret not in p.stdout and secret not in p.stderr


def flash_json(board: VirtualBoard, name: str) -> dict:
    return json.loads((board.dir / name).read_text())


def flash_files(board: VirtualBoard) -> dict[str, bytes]:
    """What provisioning writes: config.json, board.json, the CA."""
    return {p.name: p.read_bytes() for p in board.dir.iterdir()
            if p.suffix in (".json", ".pem")}


def retained_status(broker: Broker, count: int) -> dict[str, dict]:
    """The retained status of every device, as a store's monitor would see it."""
    out = subprocess.run([tool("mosquitto_sub"), "-h", broker.host, "-p", str(broker.port),
                          "-u", "observer", "-P", MQTT_PW["observer"], "-t", "store/v1/+/+/status",
                          "-v", "-C", str(count), "-W", "10"],
                         capture_output=True, text=True, timeout=20).stdout
    return {line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1])
            for line in out.splitlines()}


def test_a_fleet_is_deployed_provisioned_and_comes_online(work: Path, site: Path,
                                                          broker: Broker,
                                                          boards: list[VirtualBoard]):
    inventory = work / "fleet.csv"
    inventory.write_text("port,id,role,lanes,planogram\n"
                         f"{boards[0].port},shelf-1,shelf,2,0:COKE-330:350:12;1:WATER-500:512\n"
                         f"{boards[1].port},gate-1,gate,,\n")
    p = shelfctl("provision", "--inventory", str(inventory), "--site", str(site), "--deploy",
                 "--wait-online", "60", "--verbose")
    assert p.returncode == 0, p.stderr
    assert "provisioned 2 of 2 board(s)" in p.stdout
    assert f"{boards[0].port} shelf-1: deploy" in p.stdout  # the boards were blank
    assert_no_secret(p)  # not even --verbose shows one
    shelf = flash_json(boards[0], "config.json")
    assert shelf["device"] == "shelf-1" and shelf["store"] == "store-9"
    assert [lane["sku"] for lane in shelf["lanes"]] == ["COKE-330", "WATER-500"]
    assert shelf["broker"]["password"] == MQTT_PW["shelf-1"]  # on the board, where it belongs
    assert flash_json(boards[1], "config.json")["role"] == "gate"
    assert flash_json(boards[1], "board.json") == json.loads(
        (REPO / "boards" / "virtual.json").read_text())
    # what --wait-online waited for, seen independently: both logged in with their passwords
    status = retained_status(broker, 2)
    assert status["store/v1/store-9/shelf-1/status"]["state"] == "online"
    assert status["store/v1/store-9/gate-1/status"]["state"] == "online"


def test_reprovisioning_keeps_the_calibration_and_changes_the_planogram(
        work: Path, site: Path, boards: list[VirtualBoard]):
    inventory = work / "fleet.toml"
    inventory.write_text("\n".join([
        "[[device]]", f'port = "{boards[0].port}"', 'id = "shelf-1"', 'role = "shelf"',
        'planogram = "0:COLA-500:520:8;1:WATER-500:512"']) + "\n")
    p = shelfctl("provision", "--inventory", str(inventory), "--site", str(site), "--deploy")
    assert p.returncode == 0, p.stderr
    # the technician calibrates lane 1 (the firmware saves it in config.json), then the
    # planogram changes: the new config keeps lane 1's calibration
    with ports.connect(boards[0].port) as t:
        cfg = json.loads(t.exec("print(open('/config.json').read())"))
        cfg["lanes"][1].update(offset=-4321, counts_per_gram=-398.25)
        put_json(t, cfg, "/config.json")
    inventory.write_text(inventory.read_text().replace("COLA-500:520:8", "LEMON-330:345:10"))
    p = shelfctl("provision", "--inventory", str(inventory), "--site", str(site), "-v")
    assert p.returncode == 0, p.stderr
    assert "kept the board's calibration of lane(s) 0, 1" in p.stdout
    lanes = flash_json(boards[0], "config.json")["lanes"]
    assert lanes[0]["sku"] == "LEMON-330"
    assert (lanes[1]["offset"], lanes[1]["counts_per_gram"]) == (-4321, -398.25)


def test_one_board_failing_does_not_stop_the_others(work: Path, site: Path,
                                                    boards: list[VirtualBoard]):
    master, slave = os.openpty()  # a port where nothing answers: no MicroPython there
    silent = os.ttyname(slave)
    inventory = work / "mixed.csv"
    inventory.write_text("port,id,role\n"
                         f"{silent},gate-9,gate\n"
                         f"{boards[1].port},gate-1,gate\n")
    try:
        p = shelfctl("provision", "--inventory", str(inventory), "--site", str(site),
                     "--deploy")
    finally:
        os.close(master)
        os.close(slave)
    assert p.returncode == 1
    assert "provisioned 1 of 2 board(s)" in p.stdout
    assert p.stderr.splitlines() == [
        f"shelfctl: {inventory}:2: gate-9 on {silent}: not a MicroPython board (no "
        f"raw REPL answer at 115200 baud; flash MicroPython with `shelfctl flash`, or check "
        f"--baud)"]
    assert f"{boards[1].port} gate-1: ok" in p.stdout
    assert_no_secret(p)


def test_one_device_over_tls_gets_the_ca_and_a_config_pointing_at_it(
        work: Path, site: Path, boards: list[VirtualBoard]):
    certs = make_certs(work / "certs")
    config = work / "gate.toml"
    config.write_text("\n".join([
        'device = "gate-1"', 'role = "gate"',
        '[broker]', 'url = "mqtts://127.0.0.1:8883"', f'ca = "{certs.ca}"']) + "\n")
    p = shelfctl("provision", "--config", str(config), "--site", str(site),
                 "--port", boards[1].port, "--deploy")
    assert p.returncode == 0, p.stderr
    assert (boards[1].dir / "ca.pem").read_bytes() == certs.ca.read_bytes()
    broker = flash_json(boards[1], "config.json")["broker"]
    assert broker["url"] == "mqtts://127.0.0.1:8883" and broker["ca_file"] == "ca.pem"
    assert_no_secret(p)


def test_a_busy_port_is_one_line_and_exit_code_2(work: Path, site: Path,
                                                 boards: list[VirtualBoard]):
    config = work / "gate.json"
    config.write_text(json.dumps({"device": "gate-1", "role": "gate"}))
    holder = ports.open_port(boards[1].port)  # a console, say, has it
    try:
        p = shelfctl("provision", "--config", str(config), "--site", str(site),
                     "--port", boards[1].port)
    finally:
        holder.serial.close()
    assert p.returncode == 2
    assert p.stderr.splitlines()[-1] == (
        f"shelfctl: {boards[1].port}: port busy (another program has it open: a console, "
        f"mpremote, a monitor?)")


def test_the_wrong_chip_is_refused_before_anything_is_written(work: Path, site: Path,
                                                              boards: list[VirtualBoard]):
    config = work / "gate.json"
    config.write_text(json.dumps({"device": "gate-1", "role": "gate"}))
    before = flash_files(boards[1])
    p = shelfctl("provision", "--config", str(config), "--site", str(site),
                 "--port", boards[1].port, "--board", "esp32-devkitc-v4")
    assert p.returncode == 2
    assert p.stderr.splitlines()[-1] == (
        f"shelfctl: {boards[1].port}: wrong chip: boards/esp32-devkitc-v4.json is for esp32, "
        f"the board is MicroPython 1.29.0 on virtual (JS with Emscripten)")
    assert flash_files(boards[1]) == before


def test_ports_probe_names_a_virtual_board_by_path(boards: list[VirtualBoard]):
    p = shelfctl("ports", boards[1].port, "--probe")
    assert p.returncode == 0, p.stderr
    head, line = p.stdout.splitlines()
    assert head.split()[0] == "PORT" and head.endswith("FIRMWARE")
    assert line.split()[:5] == [boards[1].port, "-", "-", "-", "-"]  # a pty: no USB ids
    assert line.endswith("MicroPython 1.29.0 on virtual (JS with Emscripten)")
