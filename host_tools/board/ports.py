"""Which serial port is which board, and opening one with errors a technician can act on.

A board is named by its port path (`/dev/ttyUSB0`, a virtual board's `/dev/pts/N`) or by its
USB serial number (stable across re-plugging, unlike the path), everywhere a verb takes
`--port`.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from serial.tools import list_ports

from host_tools.board.transport import SerialTransport, TransportError
from host_tools.errors import UserError

# USB bridges found on ESP32 boards: (VID, PID) -> what it usually means
KNOWN_USB: dict[tuple[int, int], str] = {
    (0x10C4, 0xEA60): "ESP32 (CP210x bridge)",
    (0x1A86, 0x7523): "ESP32 (CH340 bridge)",
    (0x1A86, 0x55D4): "ESP32 (CH9102 bridge)",
    (0x0403, 0x6001): "ESP32 (FTDI bridge)",
    (0x0403, 0x6010): "ESP32 (FTDI dual bridge)",
    (0x303A, 0x1001): "ESP32-S3/C3 (native USB-serial/JTAG)",
    (0x303A, 0x4001): "ESP32-S2/S3 (TinyUSB CDC, MicroPython)",
    (0x303A, 0x0002): "ESP32-S2/S3 (ROM download mode)",
    (0x2E8A, 0x0005): "RP2040 (MicroPython)",
}


@dataclass
class PortInfo:
    device: str
    vid: int | None
    pid: int | None
    serial_number: str | None
    description: str
    guess: str

    @property
    def usb_id(self) -> str:
        if self.vid is None or self.pid is None:
            return ""
        return f"{self.vid:04x}:{self.pid:04x}"


def guess_board(vid: int | None, pid: int | None) -> str:
    if vid is None or pid is None:
        return ""
    return KNOWN_USB.get((vid, pid), "")


def list_serial() -> list[PortInfo]:
    """The host's serial ports, USB ones first."""
    out = []
    for p in list_ports.comports():
        out.append(PortInfo(p.device, p.vid, p.pid, p.serial_number or None,
                            p.description if p.description != "n/a" else "",
                            guess_board(p.vid, p.pid)))
    return sorted(out, key=lambda p: (p.vid is None, p.device))


def resolve(spec: str) -> str:
    """A port path for `spec`: a path that exists, or the USB serial number of a port."""
    if os.path.exists(spec):
        return spec
    ports = list_serial()
    matches = [p for p in ports if p.serial_number and p.serial_number == spec]
    if len(matches) == 1:
        return matches[0].device
    if len(matches) > 1:
        raise UserError(f"USB serial number {spec!r} names {len(matches)} ports: "
                        + ", ".join(p.device for p in matches))
    if spec.startswith("/") or os.sep in spec:
        raise UserError(f"no such port: {spec}")
    known = ", ".join(p.serial_number for p in ports if p.serial_number) or "none"
    raise UserError(f"no such port or USB serial number: {spec} (USB serial numbers here: "
                    f"{known}; see `shelfctl ports`)")


def open_port(spec: str, baud: int = 115200, timeout: float = 10.0) -> SerialTransport:
    """A transport on the board named by `spec`, opened exclusively; UserError for a missing
    or busy port."""
    path = resolve(spec)
    try:
        return SerialTransport(path, baud, timeout=timeout, exclusive=True)
    except TransportError as exc:
        cause = exc.__cause__ or exc.__context__
        code = getattr(cause, "errno", None)
        text = str(exc)
        if code in (errno.EBUSY, errno.EAGAIN) or "exclusively lock" in text or "busy" in text:
            raise UserError(f"{path}: port busy (another program has it open: a console, "
                            f"mpremote, a monitor?)") from None
        if code == errno.EACCES or "Permission denied" in text:
            raise UserError(f"{path}: permission denied (add yourself to the dialout "
                            f"group)") from None
        if code == errno.ENOENT or "No such file" in text:
            raise UserError(f"no such port: {path}") from None
        raise UserError(f"{path}: {text}") from None


@dataclass
class BoardIdentity:
    """What a MicroPython board says it is."""

    version: str  # "1.29.0"
    machine: str  # sys.implementation._machine: "Generic ESP32 module with ESP32"
    chip: str  # esp32, esp32s3, ... or "virtual" (the WebAssembly VM); "" if unknown

    def __str__(self) -> str:
        return f"MicroPython {self.version} on {self.chip or 'an unknown chip'} ({self.machine})"


# Longest first: "ESP32S3" must not be taken for "ESP32".
_CHIPS = ("ESP32S3", "ESP32S2", "ESP32C6", "ESP32C3", "ESP32H2", "ESP32P4", "ESP32", "RP2040",
          "RP2350")


def chip_of(platform: str, machine: str) -> str:
    """The chip named in sys.platform / sys.implementation._machine, in boards/*.json terms."""
    if platform == "webassembly":
        return "virtual"  # the virtual board: the MicroPython VM
    text = machine.upper().replace("-", "")
    return next((c.lower() for c in _CHIPS if c in text), "")


def identify(t: SerialTransport) -> BoardIdentity:
    """Ask a connected board (raw REPL) what it is."""
    platform, machine, version = t.eval(
        "(__import__('sys').platform, getattr(__import__('sys').implementation, '_machine', ''),"
        " '.'.join(str(n) for n in __import__('sys').implementation.version[:3]))")
    return BoardIdentity(str(version), str(machine), chip_of(str(platform), str(machine)))


def connect(spec: str, baud: int = 115200, timeout: float = 10.0) -> SerialTransport:
    """open_port, then check that MicroPython's raw REPL answers (what main.py was running
    is interrupted). UserError if it does not: not a MicroPython board."""
    t = open_port(spec, baud, timeout)
    try:
        t.enter_raw()
    except TransportError:
        t.serial.close()
        raise UserError(f"{t.port}: not a MicroPython board (no raw REPL answer at {baud} "
                        f"baud; flash MicroPython with `shelfctl flash`, or check --baud)"
                        ) from None
    return t
