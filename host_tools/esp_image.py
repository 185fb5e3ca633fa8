"""What a firmware file is, read from its own bytes before any board is touched.

A MicroPython firmware for an ESP chip (`firmware.bin` on micropython.org) is three images laid
end to end as they sit in flash: the second-stage bootloader (an ESP image: magic 0xE9, a
header that names the chip), the partition table at flash 0x8000, the application at its
partition's offset. It is written at the chip's bootloader offset (0x1000 on the ESP32 and
ESP32-S2, 0x0 on the S3, C3, C6..., 0x2000 on the C5 and P4), so the file's byte 0 lands there.

Layouts (ESP-IDF's esp_image_header_t, esp_partition_info_t and esp_app_desc_t):

    image header    0 magic 0xE9 | 1 segments | 2 flash mode | 3 size/speed | 4 entry
                    8 wp pin | 9 drive[3] | 12 chip id (u16) | 14 min rev | 15 min rev full
                    17 max rev full | 19 reserved[4] | 23 hash appended    (24 bytes)
    segment         load address (u32), length (u32), data
    app descriptor  at 0x20 of an application image: magic 0xABCD5432, ..., version[32] at
                    0x30, project name[32] at 0x50
    partition       magic 0x50AA (u16), type, subtype, offset (u32), size (u32), label[16],
                    flags (u32): 32 bytes each, from flash 0x8000
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from host_tools.errors import UserError

IMAGE_MAGIC = 0xE9
APP_DESC_MAGIC = 0xABCD5432
PARTITION_MAGIC = 0x50AA
PARTITION_TABLE_AT = 0x8000  # ESP-IDF's default, and MicroPython's on every esp32 board
MAX_SEGMENTS = 16
HEADER = struct.Struct("<BBBBIB3sHBHH4sB")  # the 24-byte image header above
PARTITION = struct.Struct("<HBBII16sI")


@dataclass(frozen=True)
class Chip:
    id: int  # as the image header names it
    name: str  # as Espressif writes it: ESP32-S3
    arg: str  # as esptool's --chip takes it: esp32s3
    bootloader_offset: int  # where in flash the bootloader (and so a firmware.bin) starts


# The MicroPython esp32 port's chips; ids and offsets are esptool's (a test checks them
# against esptool.targets).
CHIPS: dict[int, Chip] = {c.id: c for c in [
    Chip(0, "ESP32", "esp32", 0x1000),
    Chip(2, "ESP32-S2", "esp32s2", 0x1000),
    Chip(5, "ESP32-C3", "esp32c3", 0x0),
    Chip(9, "ESP32-S3", "esp32s3", 0x0),
    Chip(12, "ESP32-C2", "esp32c2", 0x0),
    Chip(13, "ESP32-C6", "esp32c6", 0x0),
    Chip(16, "ESP32-H2", "esp32h2", 0x0),
    Chip(18, "ESP32-P4", "esp32p4", 0x2000),
    Chip(20, "ESP32-C61", "esp32c61", 0x0),
    Chip(23, "ESP32-C5", "esp32c5", 0x2000),
]}
CHIP_ARGS = {c.arg: c for c in CHIPS.values()}


@dataclass(frozen=True)
class FirmwareImage:
    path: Path
    data: bytes
    chip: Chip
    project: str  # "micropython", from the application's descriptor ("" if it has none)
    version: str  # "v1.29.0"

    @property
    def offset(self) -> int:
        return self.chip.bootloader_offset

    def describe(self) -> str:
        what = f"{self.project} {self.version}".strip() or "firmware"
        return f"{what} for {self.chip.name}, {len(self.data) / 1024:.0f} KB"


def read_image(path: Path) -> FirmwareImage:
    """The firmware in `path`, checked; UserError naming what it is instead, if it is not a
    full firmware image (bootloader + partition table + application) for a known chip."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"no such firmware file: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a directory, not a firmware file") from None
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror}") from None
    name = path.name
    _check_is_esp_image(name, data)
    chip_id = HEADER.unpack_from(data)[7]
    chip = CHIPS.get(chip_id)
    if chip is None:
        raise UserError(f"{name} is made for a chip this tool does not know (chip id {chip_id})")
    if _app_descriptor(data, 0) is not None:
        raise UserError(f"{name} is an application image (like micropython.bin, which goes at "
                        f"0x10000), not a full firmware; flash firmware.bin")
    apps = _app_partitions(name, data, chip)
    project, version = "", ""
    for app_offset in apps:
        desc = _app_descriptor(data, app_offset - chip.bootloader_offset)
        if desc is not None:
            project, version = desc
            break
    return FirmwareImage(path, data, chip, project, version)


def _check_is_esp_image(name: str, data: bytes) -> None:
    if not data:
        raise UserError(f"{name} is empty")
    if data[:4] == b"\x7fELF":
        raise UserError(f"{name} is an ELF file, not a flashable image; flash firmware.bin")
    if data[:4] == b"UF2\n":
        raise UserError(f"{name} is a UF2 file (for a UF2 bootloader's drive), not a "
                        f"flashable image; flash the .bin")
    if data[0] != IMAGE_MAGIC:
        raise UserError(f"{name} is not an ESP firmware image (it does not start with the "
                        f"image magic 0xE9)")
    if len(data) < HEADER.size:
        raise UserError(f"{name} is cut short ({len(data)} bytes)")
    segments = data[1]
    if not 1 <= segments <= MAX_SEGMENTS:
        raise UserError(f"{name} is not an ESP firmware image ({segments} segments)")


def _app_partitions(name: str, data: bytes, chip: Chip) -> list[int]:
    """Flash offsets of the application partitions, from the table at 0x8000."""
    at = PARTITION_TABLE_AT - chip.bootloader_offset
    if len(data) < at + PARTITION.size or PARTITION.unpack_from(data, at)[0] != PARTITION_MAGIC:
        raise UserError(f"{name} has no partition table at 0x{PARTITION_TABLE_AT:x}: a "
                        f"bootloader alone, or not a MicroPython firmware.bin")
    apps = []
    while at + PARTITION.size <= len(data):
        magic, ptype, _subtype, offset, size, _label, _flags = PARTITION.unpack_from(data, at)
        if magic != PARTITION_MAGIC:
            break
        if ptype == 0:  # an app partition (factory or ota_N)
            apps.append(offset)
        at += PARTITION.size
    if not apps:
        raise UserError(f"{name}'s partition table has no application partition")
    if apps[0] - chip.bootloader_offset >= len(data):
        raise UserError(f"{name} ends before its application (at 0x{apps[0]:x}): truncated")
    return apps


def _app_descriptor(data: bytes, at: int) -> tuple[str, str] | None:
    """(project, version) from the esp_app_desc_t of an application image at `at`."""
    desc = at + 0x20
    if at < 0 or len(data) < desc + 0x70 or data[at] != IMAGE_MAGIC:
        return None
    if struct.unpack_from("<I", data, desc)[0] != APP_DESC_MAGIC:
        return None
    version = data[desc + 0x10:desc + 0x30].split(b"\0")[0].decode("utf-8", "replace")
    project = data[desc + 0x30:desc + 0x50].split(b"\0")[0].decode("utf-8", "replace")
    return project, version
