"""A fake ESP chip in download mode behind a pseudo-terminal: it speaks the serial protocol of
the ROM loader (and of esptool's flasher stub once one is uploaded) well enough for esptool's
own code to detect it, upload a stub, change baud, attach and size the flash, write it
compressed and check the MD5, with a 4 MB flash held in memory.

What it models (from Espressif's "Serial Protocol" documentation): SLIP framing; requests
(0x00, command, size, checksum, data) and responses (0x01, command, size, value, data, status);
the ROM's four status bytes against the stub's two; eight answers to SYNC; READ_REG and
WRITE_REG on a register file (chip magic at 0x40001000, eFuses of an ESP32-D0WD-V3, SPI user
commands run on write of SPI_CMD: JEDEC id, SFDP, status); GET_SECURITY_INFO on the chips that
have it; SPI_ATTACH, SPI_SET_PARAMS; FLASH_BEGIN/DATA/END and FLASH_DEFL_BEGIN/DATA/END
(inflated as they arrive, checksums and sequence numbers checked, the region erased on begin);
SPI_FLASH_MD5 (hex text from the ROM, raw bytes from the stub); MEM_BEGIN/DATA/END, after which
it greets "OHAI" and answers as the stub; CHANGE_BAUDRATE; the stub's ERASE_FLASH.

What it cannot model: a pty has no DTR/RTS, so it never sees esptool's reset pulses; a SYNC is
taken as the reset into download mode a real board would have had. It does not run the stub
it is sent, it only checks that it arrived whole. A baud rate above `link_limit` (a USB bridge
or cable that cannot keep up) turns every later answer into line noise until the next SYNC.
"""

from __future__ import annotations

import hashlib
import os
import select
import struct
import threading
import tty
import zlib
from dataclasses import dataclass

FLASH_SIZE = 4 * 1024 * 1024
FLASH_ID = 0x1640EF  # Winbond W25Q32 (vendor 0xEF, type 0x40, capacity 0x16 = 4 MB)
SECTOR = 0x1000
CHIP_MAGIC_REG = 0x40001000
SYNC_VALUE = 0x20120707  # any non-zero value: the ROM's (the stub answers SYNC with 0)

COMMANDS = {
    0x02: "FLASH_BEGIN", 0x03: "FLASH_DATA", 0x04: "FLASH_END", 0x05: "MEM_BEGIN",
    0x06: "MEM_END", 0x07: "MEM_DATA", 0x08: "SYNC", 0x09: "WRITE_REG", 0x0A: "READ_REG",
    0x0B: "SPI_SET_PARAMS", 0x0D: "SPI_ATTACH", 0x0F: "CHANGE_BAUDRATE",
    0x10: "FLASH_DEFL_BEGIN", 0x11: "FLASH_DEFL_DATA", 0x12: "FLASH_DEFL_END",
    0x13: "SPI_FLASH_MD5", 0x14: "GET_SECURITY_INFO", 0xD0: "ERASE_FLASH",
}
STUB_ONLY = {"ERASE_FLASH"}
ROM_INVALID_MESSAGE = 0x05  # ROM error codes (serial protocol docs)
ROM_BAD_CHECKSUM = 0x07
ROM_DEFLATE_ERROR = 0x0B
STUB_BAD_CHECKSUM = 0xC1  # the stub's
STUB_BAD_DATA = 0xC2
STUB_INFLATE_ERROR = 0xCB
STUB_UNIMPLEMENTED = 0xFF


@dataclass(frozen=True)
class ChipModel:
    name: str
    magic: int | None  # at CHIP_MAGIC_REG, for chips detected that way (ESP32, S2)
    chip_id: int | None  # in GET_SECURITY_INFO, for the others (S3, C3, ...)
    spi_base: int  # the SPI peripheral esptool drives the flash chip with
    spi_usr2: int  # offsets of its USER2 (command) and W0 (data) registers
    spi_w0: int
    spi_addr_msb: bool  # the address register holds the address MSB-aligned
    registers: tuple[tuple[int, int], ...] = ()


# ESP32: eFuse words 3 and 5 and APB_CTL_DATE say package D0WD, revision v3.0, words 1 and 2
# the MAC 24:6f:28:aa:bb:cc; the UART divider, the RTC calibration and eFuse word 4 say a
# 40 MHz crystal (esptool reads the latter before it changes the baud rate).
ESP32 = ChipModel("ESP32", 0x00F01D83, None, 0x3FF42000, 0x24, 0x80, True,
                  ((0x3FF5A00C, (1 << 9) | (1 << 15)), (0x3FF5A014, 1 << 20),
                   (0x3FF6607C, 1 << 31), (0x3FF5A008, 0x246F), (0x3FF5A004, 0x28AABBCC),
                   (0x3FF40014, 347), (0x3FF5F06C, 1024 << 7), (0x3FF5A010, 100)))
ESP32S3 = ChipModel("ESP32-S3", None, 9, 0x60002000, 0x20, 0x58, False)
CHIP_MODELS = {"esp32": ESP32, "esp32s3": ESP32S3}

# SPI flash commands the SPI peripheral runs for esptool
SPI_CMD_USR = 1 << 18
RDID, RDSFDP, RDSR, RDSR2 = 0x9F, 0x5A, 0x05, 0x35
SFDP = b"SFDP" + bytes([0x06, 0x01, 0x01, 0xFF]) + bytes(8) + bytes([0xEF]) + bytes(15)


def slip(packet: bytes) -> bytes:
    return b"\xc0" + packet.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0"


def checksum(data: bytes) -> int:
    state = 0xEF
    for b in data:
        state ^= b
    return state


class Refused(Exception):
    """A request the loader answers with status 1 and this error code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class FakeEspRom:
    def __init__(self, chip: str = "esp32", link_limit: int | None = None,
                 stub_starts: bool = True, stuck_bit_at: int | None = None) -> None:
        self.chip = CHIP_MODELS[chip]
        self.link_limit = link_limit  # highest baud the "cable" carries; None: any
        self.stub_starts = stub_starts  # False: the uploaded stub never says hello
        self.stuck_bit_at = stuck_bit_at  # a worn flash cell: bit 0 of this byte reads 0
        self.flash = bytearray(b"\xff" * FLASH_SIZE)
        self.commands: list[str] = []  # every request's name, in order
        self.stub_uploads = 0
        self.port = ""
        self._master = self._slave = -1
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._reset()

    # -- lifetime -------------------------------------------------------------------------

    def start(self) -> str:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._thread = threading.Thread(target=self._serve, daemon=True, name="fake-esp-rom")
        self._thread.start()
        return self.port

    def stop(self) -> None:
        self._stopping = True
        if self._thread is not None:
            self._thread.join(timeout=2)
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1

    def __enter__(self) -> FakeEspRom:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _reset(self) -> None:
        """What a reset into download mode leaves: the ROM loader at 115200 baud."""
        self.stub = False
        self.baud = 115200
        self.garbled = False
        self.registers = dict(self.chip.registers)
        self._write: _FlashWrite | None = None
        self._mem_expected = 0
        self._stub_starting = False

    # -- the wire -------------------------------------------------------------------------

    def _serve(self) -> None:
        frame: bytearray | None = None
        escaped = False
        while not self._stopping:
            ready, _, _ = select.select([self._master], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # the pty is gone (it stays open while the fake holds its slave)
                break
            for b in chunk:
                if frame is None:
                    if b == 0xC0:
                        frame = bytearray()
                elif escaped:
                    frame.append({0xDC: 0xC0, 0xDD: 0xDB}.get(b, b))
                    escaped = False
                elif b == 0xDB:
                    escaped = True
                elif b == 0xC0:
                    if frame:
                        self._request(bytes(frame))
                        frame = None
                    # an empty frame: the 0xC0 that ends one packet starts the next
                else:
                    frame.append(b)

    def _send(self, packet: bytes) -> None:
        if self.garbled:  # the line at a baud rate it cannot carry: noise, no frames
            packet = bytes((b * 7 + 0x35) & 0x7F for b in packet[:12])
            os.write(self._master, packet)
            return
        os.write(self._master, slip(packet))

    def _answer(self, op: int, value: int = 0, data: bytes = b"", error: int = 0) -> None:
        status = bytes([1 if error else 0, error])
        if not self.stub:
            status += b"\0\0"  # the ROM's two reserved status bytes
        body = data + status
        self._send(struct.pack("<BBHI", 1, op, len(body), value) + body)

    # -- requests -------------------------------------------------------------------------

    def _request(self, packet: bytes) -> None:
        if len(packet) < 8 or packet[0] != 0:
            return
        _, op, size, chk = struct.unpack_from("<BBHI", packet)
        data = packet[8:8 + size]
        name = COMMANDS.get(op, f"0x{op:02x}")
        self.commands.append(name)
        if name == "SYNC":
            self._reset()  # see the module docstring: a SYNC stands for the reset
            for _ in range(8):
                self._answer(op, SYNC_VALUE)
            return
        handler = getattr(self, f"_do_{name.lower()}", None)
        if handler is None or (name in STUB_ONLY and not self.stub):
            self._answer(op, error=STUB_UNIMPLEMENTED if self.stub else ROM_INVALID_MESSAGE)
            return
        try:
            value, reply = handler(data, chk)
        except Refused as refused:
            self._answer(op, error=refused.code)
            return
        except (struct.error, IndexError):
            self._answer(op, error=STUB_BAD_DATA if self.stub else ROM_INVALID_MESSAGE)
            return
        self._answer(op, value, reply)
        if self._stub_starting:  # the ROM answered MEM_END and jumped to the stub
            self._stub_starting = False
            if self.stub_starts:
                self.stub = True
                self.stub_uploads += 1
                self._send(b"OHAI")  # the stub's hello: its only packet nobody asked for
        if name == "CHANGE_BAUDRATE":  # answered at the old rate, then switched
            self.garbled = self.link_limit is not None and self.baud > self.link_limit

    def _error(self, rom_code: int, stub_code: int) -> Refused:
        return Refused(stub_code if self.stub else rom_code)

    def _do_read_reg(self, data: bytes, _chk: int) -> tuple[int, bytes]:
        (addr,) = struct.unpack_from("<I", data)
        if addr == CHIP_MAGIC_REG and self.chip.magic is not None:
            return self.chip.magic, b""
        return self.registers.get(addr, 0), b""

    def _do_write_reg(self, data: bytes, _chk: int) -> tuple[int, bytes]:
        for at in range(0, len(data) - 15, 16):
            addr, value, mask, _delay = struct.unpack_from("<IIII", data, at)
            old = self.registers.get(addr, 0)
            self.registers[addr] = (old & ~mask) | (value & mask)
            if addr == self.chip.spi_base and value & SPI_CMD_USR:
                self._spi_user_command()
        return 0, b""

    def _spi_user_command(self) -> None:
        """Run the SPI flash command esptool set up in the SPI peripheral's registers."""
        base = self.chip.spi_base
        command = self.registers.get(base + self.chip.spi_usr2, 0) & 0xFF
        if command == RDID:
            result = FLASH_ID
        elif command == RDSFDP:
            addr = self.registers.get(base + 0x04, 0)  # SPI_ADDR: a 24-bit address
            if self.chip.spi_addr_msb:
                addr >>= 8
            result = int.from_bytes(SFDP[addr:addr + 4].ljust(4, b"\xff"), "little")
        elif command in (RDSR, RDSR2):
            result = 0
        else:
            result = self.registers.get(base + self.chip.spi_w0, 0)
        self.registers[base + self.chip.spi_w0] = result
        self.registers[base] = 0  # SPI_CMD's USR bit clears when the command is done

    def _do_get_security_info(self, _data: bytes, _chk: int) -> tuple[int, bytes]:
        if self.chip.chip_id is None:  # the ESP32's ROM has no such command
            raise Refused(ROM_INVALID_MESSAGE)
        # flags, flash_crypt_cnt, 7 key purposes, chip id, API version
        return 0, struct.pack("<IBBBBBBBBII", 0, 0, 0, 0, 0, 0, 0, 0, 0, self.chip.chip_id, 0)

    def _do_spi_attach(self, data: bytes, _chk: int) -> tuple[int, bytes]:
        if len(data) != (4 if self.stub else 8):  # the ROM takes an extra word
            raise self._error(ROM_INVALID_MESSAGE, STUB_BAD_DATA)
        return 0, b""

    def _do_spi_set_params(self, data: bytes, _chk: int) -> tuple[int, bytes]:
        _fl_id, total, _block, _sector, _page, _mask = struct.unpack("<IIIIII", data)
        if total > FLASH_SIZE:
            raise self._error(ROM_INVALID_MESSAGE, STUB_BAD_DATA)
        return 0, b""

    def _do_change_baudrate(self, data: bytes, _chk: int) -> tuple[int, bytes]:
        self.baud, _old = struct.unpack("<II", data)
        return 0, b""

    # RAM download: the stub
    def _do_mem_begin(self, data: bytes, _chk: int) -> tuple[int, bytes]:
        size, _blocks, _block_size, _offset = struct.unpack("<IIII", data)
        self._mem_expected += size
        return 0, b""

    def _do_mem_data(self, data: bytes, chk: int) -> tuple[int, bytes]:
        payload = _data_block(data, chk, self._error(ROM_BAD_CHECKSUM, STUB_BAD_CHECKSUM))
        self._mem_expected -= len(payload)
        return 0, b""

    def _do_mem_end(self, data: bytes, _chk: int) -> tuple[int, bytes]:
        no_run, entry = struct.unpack("<II", data)
        if self._mem_expected != 0:
            raise Refused(ROM_INVALID_MESSAGE)
        if not no_run and entry:
            self._stub_starting = True
        return 0, b""

    # flash download, plain and compressed
    def _do_flash_begin(self, data: bytes, _chk: int) -> tuple[int, bytes]:
        return self._begin(data, compressed=False)

    def _do_flash_defl_begin(self, data: bytes, _chk: int) -> tuple[int, bytes]:
        return self._begin(data, compressed=True)

    def _begin(self, data: bytes, compressed: bool) -> tuple[int, bytes]:
        size, blocks, block_size, offset = struct.unpack_from("<IIII", data)
        if offset % SECTOR or offset + size > FLASH_SIZE:
            raise self._error(ROM_INVALID_MESSAGE, STUB_BAD_DATA)
        end = -(-(offset + size) // SECTOR) * SECTOR  # erased sector by sector
        self.flash[offset:end] = b"\xff" * (end - offset)
        self._write = _FlashWrite(offset, size, blocks, block_size, compressed)
        return 0, b""

    def _do_flash_data(self, data: bytes, chk: int) -> tuple[int, bytes]:
        return self._block(data, chk, compressed=False)

    def _do_flash_defl_data(self, data: bytes, chk: int) -> tuple[int, bytes]:
        return self._block(data, chk, compressed=True)

    def _block(self, data: bytes, chk: int, compressed: bool) -> tuple[int, bytes]:
        w = self._write
        if w is None or w.compressed != compressed:
            raise self._error(ROM_INVALID_MESSAGE, STUB_BAD_DATA)
        payload = _data_block(data, chk, self._error(ROM_BAD_CHECKSUM, STUB_BAD_CHECKSUM))
        seq = struct.unpack_from("<I", data, 4)[0]
        if seq != w.next_seq:
            raise self._error(ROM_INVALID_MESSAGE, STUB_BAD_DATA)
        w.next_seq += 1
        if compressed:
            try:
                payload = w.inflate.decompress(payload)
            except zlib.error:
                raise self._error(ROM_DEFLATE_ERROR, STUB_INFLATE_ERROR) from None
        at = w.offset + w.written
        self.flash[at:at + len(payload)] = payload
        w.written += len(payload)
        if self.stuck_bit_at is not None:
            self.flash[self.stuck_bit_at] &= 0xFE
        return 0, b""

    def _do_flash_end(self, _data: bytes, _chk: int) -> tuple[int, bytes]:
        self._write = None
        return 0, b""

    def _do_flash_defl_end(self, data: bytes, chk: int) -> tuple[int, bytes]:
        return self._do_flash_end(data, chk)

    def _do_spi_flash_md5(self, data: bytes, _chk: int) -> tuple[int, bytes]:
        addr, size, _, _ = struct.unpack("<IIII", data)
        digest = hashlib.md5(self.flash[addr:addr + size])
        return 0, digest.digest() if self.stub else digest.hexdigest().encode()

    def _do_erase_flash(self, _data: bytes, _chk: int) -> tuple[int, bytes]:
        self.flash[:] = b"\xff" * FLASH_SIZE
        return 0, b""


@dataclass
class _FlashWrite:
    offset: int
    size: int
    blocks: int
    block_size: int
    compressed: bool
    next_seq: int = 0
    written: int = 0

    def __post_init__(self) -> None:
        self.inflate = zlib.decompressobj()


def _data_block(data: bytes, chk: int, bad_checksum: Refused) -> bytes:
    """The payload of a *_DATA request (length, sequence, 0, 0, bytes), its checksum checked."""
    length = struct.unpack_from("<I", data)[0]
    payload = data[16:16 + length]
    if len(payload) != length or checksum(payload) != chk:
        raise bad_checksum
    return payload
