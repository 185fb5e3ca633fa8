"""Every boards/*.json validates with the firmware's own board schema (apps.config), and its
pin choices follow boards/README.md: unique pins, no flash or missing GPIOs, outputs on
output-capable pins, no strapping pin except the BOOT button as safe_mode_pin, 8 HX711 lanes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from host_tools.firmware import REPO, use_firmware

use_firmware()

from apps import config  # noqa: E402  (firmware import after use_firmware())

BOARDS_DIR = REPO / "boards"
BOARD_FILES = sorted(BOARDS_DIR.glob("*.json"))
README = BOARDS_DIR / "README.md"


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_three_boards_exist() -> None:
    assert {p.stem for p in BOARD_FILES} >= {"esp32-devkitc-v4", "esp32-s3-devkitc-1",
                                             "virtual"}


@pytest.fixture(params=BOARD_FILES, ids=[p.stem for p in BOARD_FILES])
def board_file(request: pytest.FixtureRequest) -> Path:
    return request.param


def test_board_validates_without_errors_or_warnings(board_file: Path) -> None:
    board, errors, warnings = config.check_board(load(board_file))
    assert errors == []
    assert warnings == []
    assert board is not None
    assert board["name"] == board_file.stem  # config.json names the board by file name


def test_board_pins(board_file: Path) -> None:
    board, _, _ = config.check_board(load(board_file))
    uses = config.board_pins(board)
    pins = [pin for _, pin, _ in uses]
    assert len(pins) == len(set(pins)), "a pin serves two functions"
    assert len(board["hx711"]["dout"]) == 8
    for key in ("scanner_uart", "relay", "beam", "led", "safe_mode_pin"):
        assert board[key] is not None, key
    assert board["safe_mode_pin"] == 0  # the BOOT button on every devkit
    chip = board["chip"]
    for path, pin, output in uses:
        assert config.pin_error(chip, pin, output) is None, path
        if chip == "esp32":
            assert pin not in range(6, 12), f"{path}: flash pin"
            if output:
                assert pin < 34, f"{path}: input-only pin as an output"
            if path != "safe_mode_pin":
                assert pin not in (0, 2, 5, 12, 15), f"{path}: strapping pin"
                assert pin not in (1, 3), f"{path}: UART0"
        if chip == "esp32s3":
            assert pin not in range(22, 26), f"{path}: no such GPIO"
            assert pin not in range(26, 38), f"{path}: flash/PSRAM pin"
            if path != "safe_mode_pin":
                assert pin not in (0, 3, 45, 46), f"{path}: strapping pin"
                assert pin not in (19, 20, 43, 44), f"{path}: USB / UART0"


def test_board_is_in_the_readme(board_file: Path) -> None:
    text = README.read_text(encoding="utf-8")
    board = load(board_file)
    assert f"`{board_file.name}`" in text
    # the README's table row for each function carries the same pin numbers
    rows = {line.split("|")[1].strip(): line for line in text.splitlines()
            if line.startswith("|") and line.count("|") >= 5}
    column = {"esp32-devkitc-v4": 2, "esp32-s3-devkitc-1": 3, "virtual": 4}[board_file.stem]
    expected = {
        "HX711 SCK": str(board["hx711"]["sck"]),
        "HX711 DOUT (lanes 0-7)": ", ".join(str(p) for p in board["hx711"]["dout"]),
        "Scanner UART (id, TX, RX)": "{}, {}, {}".format(board["scanner_uart"]["id"],
                                                        board["scanner_uart"]["tx"],
                                                        board["scanner_uart"]["rx"]),
        "Relay": str(board["relay"]),
        "Beam": str(board["beam"]),
        "LED": str(board["led"]),
        "Safe mode": str(board["safe_mode_pin"]),
    }
    for function, pins in expected.items():
        assert function in rows, function
        cell = rows[function].split("|")[column].strip()
        assert cell.startswith(pins), (function, cell, pins)


def _shelf_config(board: dict, lanes: int) -> dict:
    lane = {"counts_per_gram": 420.5, "sku": "COKE-330", "unit_g": 350.0}
    return {"device": "shelf-01", "store": "store-1", "role": "shelf", "board": board["name"],
            "wifi": {"ssid": "iot", "password": "12345678"},
            "broker": {"url": "mqtt://broker:1883"}, "lanes": [dict(lane)] * lanes}


def test_every_board_carries_a_full_shelf_and_a_beam_gate(board_file: Path) -> None:
    raw = load(board_file)
    cfg = config.parse(json.dumps(_shelf_config(raw, 8)).encode(), board_file.read_bytes(),
                       board_path=board_file.name)
    assert cfg.errors == []
    sck, douts, gain = cfg.hx711()
    assert (sck, douts, gain) == (raw["hx711"]["sck"], raw["hx711"]["dout"], 128)
    gate = {"device": "gate-01", "store": "store-1", "role": "gate", "board": raw["name"],
            "wifi": {"ssid": "iot"}, "broker": {"url": "mqtt://broker"},
            "gate": {"exit": "beam"}}
    cfg = config.parse(json.dumps(gate).encode(), board_file.read_bytes())
    assert cfg.errors == []


def test_nine_lanes_do_not_fit() -> None:
    raw = load(BOARDS_DIR / "esp32-devkitc-v4.json")
    cfg = config.parse(json.dumps(_shelf_config(raw, 9)).encode(), json.dumps(raw).encode())
    assert cfg.errors == ["config.json: lanes: must have 1..8 items (got 9)"]


@pytest.mark.parametrize(
    ("name", "path", "pin", "message"),
    [
        ("esp32-devkitc-v4", ("hx711", "sck"), 37,
         "hx711.sck: GPIO37 is input-only on the esp32 (34-39 cannot drive an output)"),
        ("esp32-devkitc-v4", ("relay",), 9, "relay: GPIO9 is wired to the module's SPI flash"),
        ("esp32-devkitc-v4", ("led",), 21, "led: GPIO21 is already used by scanner_uart.rx"),
        ("esp32-s3-devkitc-1", ("beam",), 24, "beam: GPIO24 does not exist on the esp32s3"),
        ("esp32-s3-devkitc-1", ("relay",), 27,
         "relay: GPIO27 is wired to the module's SPI flash/PSRAM"),
        ("virtual", ("relay",), 64, "relay: must be 0..63 (got 64)"),
    ],
)
def test_broken_board_files_are_caught(name: str, path: tuple[str, ...], pin: int,
                                       message: str) -> None:
    board = load(BOARDS_DIR / f"{name}.json")
    node = board
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = pin
    assert config.check_board(board)[1] == [message]


def _json_blocks(doc: str) -> list[str]:
    text = (REPO / "docs" / doc).read_text(encoding="utf-8")
    return [block.split("```", 1)[0] for block in text.split("```json\n")[1:]]


def test_config_examples_in_the_docs_validate() -> None:
    blocks = _json_blocks("config.md")
    assert len(blocks) == 2
    for block in blocks:
        data = json.loads(block)
        board = (BOARDS_DIR / f"{data['board']}.json").read_bytes()
        cfg = config.parse(block.encode(), board)
        assert cfg.errors == [], cfg.errors


def test_event_examples_in_the_docs_parse() -> None:
    from core.event_read import parse_event

    lines = [ln for block in _json_blocks("events.md") for ln in block.splitlines() if ln]
    assert len(lines) == 5
    for line in lines:
        event = parse_event(line.encode())
        if event["type"] not in ("fault", "scan"):
            cg = [round(event[k] * 100) for k in ("delta_g", "before_g", "after_g")]
            assert cg[0] == cg[2] - cg[1], line
