"""`shelfctl ports`: the table, the board guess from USB ids, ports named by USB serial number,
and the chip a MicroPython board reports (synthetic ports; a virtual board's pty is probed in
tests/sim/test_provision.py)."""

from __future__ import annotations

import json

import pytest

from host_tools import cli, ports_cmd
from host_tools.board import ports
from host_tools.board.ports import PortInfo
from host_tools.errors import UserError

CP2102 = PortInfo("/dev/ttyUSB0", 0x10C4, 0xEA60, "0001A7F3", "CP2102 USB to UART Bridge",
                  ports.guess_board(0x10C4, 0xEA60))
S3_NATIVE = PortInfo("/dev/ttyACM0", 0x303A, 0x1001, "F4:12:FA:43:9B:10",
                     "USB JTAG/serial debug unit", ports.guess_board(0x303A, 0x1001))
PTY = PortInfo("/dev/pts/7", None, None, None, "", "")


def test_usb_bridges_are_guessed_and_unknown_ids_are_not():
    assert CP2102.guess == "ESP32 (CP210x bridge)"
    assert S3_NATIVE.guess == "ESP32-S3/C3 (native USB-serial/JTAG)"
    assert ports.guess_board(0x1234, 0x5678) == ""
    assert ports.guess_board(None, None) == ""


def test_usb_id_is_vid_colon_pid_and_empty_without_usb():
    assert CP2102.usb_id == "10c4:ea60"
    assert PortInfo("/dev/ttyUSB1", 0x1A86, 0, None, "", "").usb_id == "1a86:0000"
    assert PTY.usb_id == ""


def test_table_has_one_aligned_line_per_port_and_dashes_for_what_is_unknown():
    lines = ports_cmd.format_table([CP2102, S3_NATIVE, PTY]).splitlines()
    assert lines[0].split("  ")[0] == "PORT"
    assert len(lines) == 4
    assert lines[1].split()[:3] == ["/dev/ttyUSB0", "10c4:ea60", "0001A7F3"]
    assert "ESP32 (CP210x bridge)" in lines[1]
    assert lines[3].split() == ["/dev/pts/7", "-", "-", "-", "-"]
    # columns line up: the USB ID column starts at the same place on every line
    starts = {line.index(token) for line, token in zip(lines, ["USB ID", "10c4", "303a", "-"])}
    assert len(starts) == 1


def test_probed_table_adds_what_the_board_said():
    table = ports_cmd.format_table([CP2102, PTY], {"/dev/pts/7": "MicroPython 1.29.0 on virtual"})
    lines = table.splitlines()
    assert lines[0].endswith("FIRMWARE")
    assert lines[2].endswith("MicroPython 1.29.0 on virtual")
    assert lines[1].endswith("-")


def test_json_line_per_port():
    obj = json.loads(ports_cmd.as_json(CP2102, None))
    assert obj == {"port": "/dev/ttyUSB0", "usb_id": "10c4:ea60", "vid": 0x10C4, "pid": 0xEA60,
                   "serial_number": "0001A7F3", "guess": "ESP32 (CP210x bridge)",
                   "description": "CP2102 USB to UART Bridge"}
    assert json.loads(ports_cmd.as_json(PTY, "busy"))["firmware"] == "busy"


@pytest.fixture
def two_usb_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "list_serial", lambda: [CP2102, S3_NATIVE])


@pytest.mark.usefixtures("two_usb_ports")
def test_a_board_is_named_by_its_usb_serial_number():
    assert ports.resolve("0001A7F3") == "/dev/ttyUSB0"
    assert ports_cmd.selected(["F4:12:FA:43:9B:10"]) == [S3_NATIVE]


@pytest.mark.usefixtures("two_usb_ports")
def test_an_unknown_serial_number_lists_the_known_ones():
    with pytest.raises(UserError, match="0001A7F3, F4:12:FA:43:9B:10"):
        ports_cmd.selected(["NOPE1234"])


@pytest.mark.usefixtures("two_usb_ports")
def test_ports_verb_prints_the_table(capsys: pytest.CaptureFixture[str]):
    assert cli.main(["ports"]) == 0
    out = capsys.readouterr().out
    assert "/dev/ttyUSB0" in out and "/dev/ttyACM0" in out and "0001A7F3" in out


def test_ports_verb_names_a_missing_port_in_one_line(capsys: pytest.CaptureFixture[str]):
    assert cli.main(["ports", "/dev/ttyNOPE7"]) == 2
    assert capsys.readouterr().err == "shelfctl: no such port: /dev/ttyNOPE7\n"


def test_no_ports_is_said_not_failed(monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]):
    monkeypatch.setattr(ports, "list_serial", lambda: [])
    assert cli.main(["ports"]) == 0
    assert "no serial ports found" in capsys.readouterr().err


@pytest.mark.parametrize("platform,machine,chip", [
    ("esp32", "Generic ESP32 module with ESP32", "esp32"),
    ("esp32", "ESP32 module (spiram) with ESP32", "esp32"),
    ("esp32", "Generic ESP32S3 module with ESP32S3", "esp32s3"),
    ("esp32", "ESP32C3 module with ESP32C3", "esp32c3"),
    ("rp2", "Raspberry Pi Pico with RP2040", "rp2040"),
    ("webassembly", "JS with Emscripten", "virtual"),
    ("linux", "linux [GCC 12.2.0] version", ""),
])
def test_chip_from_what_micropython_reports(platform: str, machine: str, chip: str):
    assert ports.chip_of(platform, machine) == chip
