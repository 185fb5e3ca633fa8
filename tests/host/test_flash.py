"""`shelfctl flash` against a fake ESP chip in download mode behind a pty (fake_esp_rom.py):
esptool 5's real code talks the ROM loader's serial protocol (and the flasher stub's) to it
through pyserial, so what is checked is what lands in the fake's flash, which commands crossed
the wire, and what the user reads. Not checked here, because no fake can: a real chip's timing
at a real baud rate, and esptool's DTR/RTS reset pulses (a pty has no modem lines).

Firmware images are built here as ESP-IDF lays them out (bootloader image, partition table at
0x8000, application image with its descriptor), small enough to keep the tests quick.
"""

from __future__ import annotations

import random
import re
import struct
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from esptool.targets import CHIP_DEFS
from fake_esp_rom import FakeEspRom

from host_tools import cli
from host_tools.board.ports import connect, open_port
from host_tools.errors import UserError
from host_tools.esp_image import CHIPS, read_image
from host_tools.sim.board import VirtualBoard

ESP32, ESP32S3 = 0, 9  # chip ids in the image header
MARK = b"files of the board's filesystem"  # something flashing must not touch
MARK_AT = 0x300000


# -- firmware images --------------------------------------------------------------------------


def esp_image(chip_id: int, load_addr: int, data: bytes) -> bytes:
    """One-segment ESP image: header, extended header, segment, checksum (16-byte padded)."""
    header = struct.pack("<BBBBIB3sHBHH4sB", 0xE9, 1, 2, 0x20, 0x40080000, 0xEE, bytes(3),
                         chip_id, 0, 0, 0xFFFF, bytes(4), 0)
    check = 0xEF
    for b in data:
        check ^= b
    image = header + struct.pack("<II", load_addr, len(data)) + data
    return image + bytes(15 - len(image) % 16) + bytes([check])


def app_descriptor(version: str, project: str) -> bytes:
    return (struct.pack("<III4x", 0xABCD5432, 0, 0) + version.encode().ljust(32, b"\0")
            + project.encode().ljust(32, b"\0") + bytes(16 + 16 + 32 + 32 + 80))


def partition(ptype: int, subtype: int, offset: int, size: int, label: str) -> bytes:
    return struct.pack("<HBBII16sI", 0x50AA, ptype, subtype, offset, size,
                       label.encode().ljust(16, b"\0"), 0)


def firmware(chip_id: int = ESP32, app_bytes: int = 120_000, seed: int = 1,
             parts: tuple[str, ...] = ("bootloader", "table", "app")) -> bytes:
    """A firmware.bin as MicroPython's build lays it out, from the chip's bootloader offset."""
    rnd = random.Random(seed)
    start = CHIPS[chip_id].bootloader_offset
    words = [b"micropython", b"machine.Pin(", b"def ", b"return ", b"\0\0\0\0", b"\xff\x13"]
    code = b"".join(rnd.choice(words) for _ in range(app_bytes // 6))[:app_bytes]
    out = bytearray()
    if "bootloader" in parts:
        out += esp_image(chip_id, 0x3FFF0000, rnd.randbytes(6000))
    if "table" in parts:
        out += b"\xff" * (0x8000 - start - len(out))
        out += (partition(1, 2, 0x9000, 0x6000, "nvs") + partition(0, 0, 0x10000, 0x1F0000,
                "factory") + partition(1, 0x81, 0x200000, 0x200000, "vfs"))
    if "app" in parts:
        if out:  # alone, it is the application image as the build leaves it
            out += b"\xff" * (0x10000 - start - len(out))
        out += esp_image(chip_id, 0x3F400020, app_descriptor("v1.29.0", "micropython") + code)
    return bytes(out)


def write(tmp_path: Path, data: bytes, name: str = "firmware.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# -- running the verb -------------------------------------------------------------------------


@pytest.fixture
def esp32() -> Iterator[FakeEspRom]:
    with FakeEspRom("esp32") as rom:
        rom.flash[MARK_AT:MARK_AT + len(MARK)] = MARK
        yield rom


@pytest.fixture
def esp32s3() -> Iterator[FakeEspRom]:
    with FakeEspRom("esp32s3") as rom:
        yield rom


def shelfctl_flash(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Exit code, stdout and shelfctl's own stderr lines (esptool's warning that it cannot
    pulse DTR/RTS on a pty is left out)."""
    code = cli.main(["flash", *args])
    out, err = capsys.readouterr()
    ours = "\n".join(line for line in err.splitlines() if line.startswith("shelfctl"))
    return code, out, ours


def commands(rom: FakeEspRom) -> Counter[str]:
    return Counter(rom.commands)


# -- the image checks, before any port is opened ----------------------------------------------


def test_chip_table_is_esptools() -> None:
    for chip in CHIPS.values():
        target = CHIP_DEFS[chip.arg]
        assert (target.IMAGE_CHIP_ID, target.CHIP_NAME, target.BOOTLOADER_FLASH_OFFSET) == (
            chip.id, chip.name, chip.bootloader_offset)


def test_a_firmware_image_names_its_chip_and_version(tmp_path: Path) -> None:
    image = read_image(write(tmp_path, firmware(ESP32S3)))
    assert (image.chip.name, image.offset) == ("ESP32-S3", 0x0)
    assert (image.project, image.version) == ("micropython", "v1.29.0")
    assert image.describe().startswith("micropython v1.29.0 for ESP32-S3")
    assert read_image(write(tmp_path, firmware(ESP32))).offset == 0x1000


@pytest.mark.parametrize("data, says", [
    (b"", "is empty"),
    (b"\x7fELF\x02\x01\x01" + bytes(64), "is an ELF file"),
    (b"UF2\nWQ]\x9e" + bytes(504), "is a UF2 file"),
    (b"print('hello')\n", "is not an ESP firmware image"),
    (b"\xe9\x00" + bytes(40), "is not an ESP firmware image (0 segments)"),
    (b"\xe9\x01\x02", "is cut short"),
    (firmware(parts=("app",)), "is an application image"),
    (firmware(parts=("bootloader",)), "has no partition table at 0x8000"),
    (firmware(parts=("bootloader", "table")), "ends before its application"),
    (esp_image(7, 0, b"x" * 64), "a chip this tool does not know (chip id 7)"),
])
def test_what_is_not_a_full_firmware_image_is_refused(tmp_path: Path, data: bytes,
                                                      says: str) -> None:
    with pytest.raises(UserError, match=r"^firmware\.bin .*" + re.escape(says)):
        read_image(write(tmp_path, data))


def test_a_missing_file_or_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such firmware file"):
        read_image(tmp_path / "nope.bin")
    with pytest.raises(UserError, match="is a directory"):
        read_image(tmp_path)


def test_a_bad_image_is_one_line_and_exit_2_without_touching_the_port(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, esp32: FakeEspRom) -> None:
    code, out, err = shelfctl_flash(capsys, "--port", esp32.port, "--firmware",
                                    str(write(tmp_path, b"\x7fELF" + bytes(60), "fw.elf")))
    assert code == 2
    assert err == "shelfctl: fw.elf is an ELF file, not a flashable image; flash firmware.bin"
    assert esp32.commands == []


# -- flashing ---------------------------------------------------------------------------------


def test_flash_writes_the_image_at_0x1000_on_an_esp32_compressed_verified(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, esp32: FakeEspRom) -> None:
    data = firmware(ESP32)
    code, out, err = shelfctl_flash(capsys, "--port", esp32.port,
                                    "--firmware", str(write(tmp_path, data)))
    assert (code, err) == (0, "")
    assert esp32.flash[0x1000:0x1000 + len(data)] == data
    assert esp32.flash[:0x1000] == b"\xff" * 0x1000
    assert esp32.flash[MARK_AT:MARK_AT + len(MARK)] == MARK  # the rest of the flash is left
    sent = commands(esp32)
    assert esp32.stub_uploads == 1 and sent["CHANGE_BAUDRATE"] == 1
    assert sent["FLASH_DEFL_DATA"] >= 1 and sent["FLASH_DATA"] == 0  # compressed
    assert sent["SPI_FLASH_MD5"] == 1 and sent["FLASH_DEFL_END"] == 1
    assert esp32.baud == 460800
    lines = out.splitlines()
    assert lines[0] == f"firmware.bin: micropython v1.29.0 for ESP32, {len(data) // 1024} KB"
    assert lines[1] == (f"{esp32.port}: ESP32-D0WD-V3 (revision v3.0), 4MB flash; writing at "
                        f"0x1000, 460800 baud")
    bars = [line for line in lines if line.startswith("writing [")]
    assert 2 <= len(bars) <= 5 and "] 100 %" in bars[-1]
    assert lines[-1].startswith(f"flashed {len(data)} bytes at 0x1000 and verified (MD5) in ")
    assert lines[-1].endswith(" s at 460800 baud; board reset")


def test_flash_with_the_rom_loader_only_on_an_esp32s3_writes_at_0x0(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, esp32s3: FakeEspRom) -> None:
    data = firmware(ESP32S3)
    code, out, err = shelfctl_flash(capsys, "--port", esp32s3.port, "--firmware",
                                    str(write(tmp_path, data)), "--no-stub", "--baud", "921600")
    assert (code, err) == (0, "")
    assert esp32s3.flash[:len(data)] == data
    sent = commands(esp32s3)
    assert esp32s3.stub_uploads == 0 and sent["MEM_BEGIN"] == 0
    assert sent["SPI_ATTACH"] == 1  # the ROM loader needs the flash attached
    assert sent["FLASH_DEFL_DATA"] >= 1 and sent["SPI_FLASH_MD5"] == 1
    assert esp32s3.baud == 921600
    assert "ESP32-S3" in out and "writing at 0x0, 921600 baud" in out


def test_erase_first_clears_the_whole_flash(capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path, esp32: FakeEspRom) -> None:
    data = firmware(ESP32)
    code, out, _ = shelfctl_flash(capsys, "--port", esp32.port, "--firmware",
                                  str(write(tmp_path, data)), "--erase")
    assert code == 0
    assert commands(esp32)["ERASE_FLASH"] == 1
    assert esp32.flash[MARK_AT:MARK_AT + len(MARK)] == b"\xff" * len(MARK)
    assert esp32.flash[0x1000:0x1000 + len(data)] == data
    assert "erasing the whole flash..." in out


def test_a_baud_rate_the_line_cannot_carry_falls_back_to_115200(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = firmware(ESP32)
    with FakeEspRom("esp32", link_limit=115200) as rom:
        code, out, err = shelfctl_flash(capsys, "--port", rom.port,
                                        "--firmware", str(write(tmp_path, data)))
        assert (code, err) == (0, "")
        assert rom.flash[0x1000:0x1000 + len(data)] == data
        # connected again (esptool may need more than one SYNC to get through)
        assert commands(rom)["SYNC"] >= 2 and commands(rom)["CHANGE_BAUDRATE"] == 1
        assert rom.baud == 115200
    assert f"{rom.port}: failed at 460800 baud (" in out
    assert "); again at 115200" in out
    assert out.splitlines()[-1].endswith(
        " s at 115200 baud (after 460800 baud failed); board reset")


# -- user mistakes: one line, exit code 2 -----------------------------------------------------


def test_an_image_for_another_chip_is_refused_before_writing(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, esp32: FakeEspRom) -> None:
    path = write(tmp_path, firmware(ESP32S3), "esp32s3-firmware.bin")
    code, _, err = shelfctl_flash(capsys, "--port", esp32.port, "--firmware", str(path))
    assert code == 2
    assert err == (f"shelfctl: wrong chip: esp32s3-firmware.bin is an ESP32-S3 image, the "
                   f"board on {esp32.port} is an ESP32")
    assert not any(c.startswith(("FLASH", "MEM", "ERASE")) for c in esp32.commands)
    assert esp32.flash[:0x8000] == b"\xff" * 0x8000


def test_a_chip_argument_the_board_contradicts_is_refused(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, esp32s3: FakeEspRom) -> None:
    path = write(tmp_path, firmware(ESP32))
    code, _, err = shelfctl_flash(capsys, "--port", esp32s3.port, "--firmware", str(path),
                                  "--chip", "esp32")
    assert code == 2
    assert err == (f"shelfctl: wrong chip: the board on {esp32s3.port} is an ESP32-S3, not an "
                   f"ESP32 (--chip esp32)")
    code, _, err = shelfctl_flash(capsys, "--port", esp32s3.port, "--firmware", str(path),
                                  "--chip", "esp32s3")
    assert code == 2
    assert err == "shelfctl: wrong chip: firmware.bin is an ESP32 image, --chip says esp32s3"


def test_a_firmware_bigger_than_the_flash_is_refused(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, esp32: FakeEspRom) -> None:
    path = write(tmp_path, firmware(ESP32, app_bytes=4 * 1024 * 1024))
    code, _, err = shelfctl_flash(capsys, "--port", esp32.port, "--firmware", str(path))
    assert code == 2
    assert err.startswith("shelfctl: firmware.bin (")
    assert err.endswith("bytes from 0x1000) does not fit in the board's 4MB flash")
    assert commands(esp32)["FLASH_DEFL_BEGIN"] == 0


def test_a_busy_port_and_a_missing_port_are_named(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, esp32: FakeEspRom) -> None:
    path = str(write(tmp_path, firmware(ESP32)))
    console = open_port(esp32.port)  # another program has the port
    try:
        code, _, err = shelfctl_flash(capsys, "--port", esp32.port, "--firmware", path)
    finally:
        console.serial.close()
    assert (code, err) == (2, f"shelfctl: {esp32.port}: port busy (another program has it "
                              f"open: a console, mpremote, a monitor?)")
    code, _, err = shelfctl_flash(capsys, "--port", "/dev/ttyUSB97", "--firmware", path)
    assert (code, err) == (2, "shelfctl: no such port: /dev/ttyUSB97")


def test_erase_needs_the_stub(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = shelfctl_flash(capsys, "--port", "/dev/null", "--firmware",
                                  str(write(tmp_path, firmware())), "--erase", "--no-stub")
    assert (code, err) == (2, "shelfctl: --erase needs esptool's flasher stub; leave out "
                              "--no-stub")


def test_a_micropython_board_not_in_download_mode_is_named_and_left_running(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    board = VirtualBoard(tmp_path / "board", baud=0)
    board.start()
    try:
        code, _, err = shelfctl_flash(capsys, "--port", board.port, "--firmware",
                                      str(write(tmp_path, firmware())))
        assert code == 2
        assert err == (f"shelfctl: {board.port}: no ESP ROM loader answers (not in download "
                       f"mode? hold BOOT and tap RESET/EN; a charge-only cable?)")
        transport = connect(board.port)
        try:
            assert transport.eval("6 * 7") == 42
        finally:
            transport.serial.close()
    finally:
        board.stop()


# -- failures: one line, exit code 1 ----------------------------------------------------------


def test_a_stub_that_never_starts_fails_in_seconds_not_never(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with FakeEspRom("esp32", stub_starts=False) as rom:
        code, _, err = shelfctl_flash(capsys, "--port", rom.port, "--firmware",
                                      str(write(tmp_path, firmware())))
    assert (code, err) == (1, f"shelfctl: error: {rom.port}: Failed to start stub flasher "
                              f"(try --no-stub)")


def test_flash_that_does_not_keep_what_was_written_fails_the_md5_check(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with FakeEspRom("esp32", stuck_bit_at=0x1000 + 0x9001) as rom:
        code, out, err = shelfctl_flash(capsys, "--port", rom.port, "--firmware",
                                        str(write(tmp_path, firmware())), "--baud", "115200")
    assert (code, err) == (1, f"shelfctl: error: {rom.port}: MD5 of file does not match data "
                              f"in flash!")
    assert "failed at" not in out  # nothing to fall back from at 115200
