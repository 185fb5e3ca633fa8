"""`shelfctl flash`: MicroPython onto an ESP32 through its serial port, with esptool 5's API.

The only module that touches esptool. The steps are the esptool CLI's for `write-flash`:

1. read the firmware file and refuse what is not a full firmware image for a known chip
   (host_tools/esp_image.py), before the port is opened;
2. connect at 115200 baud (esptool resets the board into its ROM loader with DTR/RTS, syncs
   and detects the chip) and refuse an image made for another chip;
3. upload esptool's flasher stub (`--no-stub`: talk to the ROM loader only), switch to --baud;
4. attach the flash, erase it all if --erase, write the image compressed at the chip's
   bootloader offset (0x1000 ESP32, 0x0 ESP32-S3/C3, 0x2000 ESP32-C5/P4: esptool's own
   table), which write_flash checks against the flash's MD5 when done;
5. hard-reset the board (RTS), so it boots MicroPython.

If anything fails after the switch to a faster baud rate (a USB bridge or cable that cannot
keep up), it starts again from step 2 at 115200. User mistakes are a UserError with one line;
a flash that fails for another reason is a FlashFailed with one line (exit code 1).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from esp_pylib.logger import EspLog, EspLogBase
from esptool.cmds import (
    attach_flash,
    connect_esp,
    detect_flash_size,
    erase_flash,
    reset_chip,
    run_stub,
    write_flash,
)
from esptool.loader import ESPLoader
from esptool.util import FatalError, flash_size_bytes
from serial import SerialException

from host_tools.board import ports
from host_tools.errors import UserError
from host_tools.esp_image import CHIP_ARGS, FirmwareImage, read_image

ROM_BAUD = 115200  # every ESP ROM loader starts here
DEFAULT_BAUD = 460800  # what MicroPython's instructions use
STUB_HELLO_SECONDS = 3.0  # the stub greets within milliseconds of its upload


class FlashFailed(RuntimeError):
    """Flashing went wrong in a way the user did not cause (one line; exit code 1)."""


class _HighBaudFailed(Exception):
    """Something failed after the switch above 115200: worth one more try at 115200."""


@dataclass
class FlashReport:
    board: str  # "ESP32-D0WD-V3 (revision v3.0)"
    flash_size: str  # "4MB", as esptool detects it ("" if it cannot)
    offset: int
    written: int  # bytes of firmware
    baud: int  # the rate it was written at
    seconds: float
    fell_back_from: int | None = None  # the rate that failed first


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", required=True,
                        help="serial port path or USB serial number (see `shelfctl ports`)")
    parser.add_argument("--firmware", required=True, type=Path, metavar="FILE.bin",
                        help="MicroPython firmware.bin for the board's chip")
    parser.add_argument("--chip", default="auto", choices=["auto", *CHIP_ARGS],
                        help="the board's chip (default: detect it)")
    parser.add_argument("--baud", type=_baud, default=DEFAULT_BAUD,
                        help=f"baud rate for writing (default {DEFAULT_BAUD}; falls back to "
                        f"{ROM_BAUD} if it fails)")
    parser.add_argument("--erase", action="store_true",
                        help="erase the whole flash first (the board's files go too)")
    parser.add_argument("--no-stub", action="store_true",
                        help="talk to the chip's ROM loader only (slower; for boards where "
                        "esptool's flasher stub does not start)")


def run(args: argparse.Namespace) -> int:
    image = read_image(args.firmware)
    if args.chip != "auto" and args.chip != image.chip.arg:
        raise UserError(f"wrong chip: {image.path.name} is an {image.chip.name} image, "
                        f"--chip says {args.chip}")
    if args.erase and args.no_stub:
        raise UserError("--erase needs esptool's flasher stub; leave out --no-stub")
    port = ports.resolve(args.port)
    print(f"{image.path.name}: {image.describe()}")
    report = flash(port, image, chip=args.chip, baud=args.baud, erase=args.erase,
                   stub=not args.no_stub, verbose=args.verbose)
    fallback = (f" (after {report.fell_back_from} baud failed)" if report.fell_back_from
                else "")
    print(f"flashed {report.written} bytes at 0x{report.offset:x} and verified (MD5) in "
          f"{report.seconds:.1f} s at {report.baud} baud{fallback}; board reset")
    return 0


def flash(port: str, image: FirmwareImage, *, chip: str = "auto", baud: int = DEFAULT_BAUD,
          erase: bool = False, stub: bool = True, verbose: bool = False,
          out: TextIO | None = None) -> FlashReport:
    """Write `image` to the board on `port` (a path), verified, and reset it; progress and
    notes go to `out` (stdout)."""
    log = _FlashLog(out or sys.stdout, verbose)
    with _esptool_logging_to(log):
        try:
            return _flash_once(port, image, chip, baud, erase, stub, log)
        except _HighBaudFailed as failure:
            log.say(f"{port}: failed at {baud} baud ({failure}); again at {ROM_BAUD}")
            report = _flash_once(port, image, chip, ROM_BAUD, erase, stub, log)
            report.fell_back_from = baud
            return report


def _flash_once(port: str, image: FirmwareImage, chip: str, baud: int, erase: bool,
                stub: bool, log: _FlashLog) -> FlashReport:
    started = time.monotonic()
    with _esptool_errors(port, chip):
        rom = connect_esp(port=port, chip=chip, initial_baud=min(baud, ROM_BAUD))
    with rom, _esptool_errors(port, chip):  # leaving `rom` closes the port
        board = _describe(rom)
        if rom.IMAGE_CHIP_ID != image.chip.id:
            reset_chip(rom, "hard-reset")  # leave it running what it had
            raise UserError(f"wrong chip: {image.path.name} is an {image.chip.name} image, "
                            f"the board on {port} is an {rom.CHIP_NAME}")
        if stub:
            # esptool waits for the stub's "OHAI" on a port with no read timeout: a stub that
            # never starts would hang here for ever (seen on real boards).
            rom._port.timeout = STUB_HELLO_SECONDS
        esp = run_stub(rom) if stub else rom
        fast = baud > ROM_BAUD
        try:
            if fast:
                esp.change_baud(baud)
            attach_flash(esp)
            flash_size = detect_flash_size(esp) or ""
            offset = rom.BOOTLOADER_FLASH_OFFSET
            if flash_size and offset + len(image.data) > flash_size_bytes(flash_size):
                raise UserError(f"{image.path.name} ({len(image.data)} bytes from 0x{offset:x}) "
                                f"does not fit in the board's {flash_size} flash")
            log.say(f"{port}: {board}, {flash_size or 'unknown'} flash; writing at "
                    f"0x{offset:x}, {baud} baud")
            if erase:
                log.say("erasing the whole flash...")
                erase_flash(esp)
            # compress=True: deflated on the wire, also when talking to the ROM loader
            write_flash(esp, [(offset, image.data)], compress=True)
        except (FatalError, SerialException, OSError) as exc:
            if fast:
                raise _HighBaudFailed(_first_line(exc)) from exc
            raise
        reset_chip(esp, "hard-reset")
    return FlashReport(board, flash_size, offset, len(image.data), baud,
                       time.monotonic() - started)


def _describe(rom: ESPLoader) -> str:
    if rom.secure_download_mode:
        return f"{rom.CHIP_NAME} (secure download mode)"
    try:
        return rom.get_chip_description()
    except (FatalError, NotImplementedError):
        return rom.CHIP_NAME


@contextmanager
def _esptool_errors(port: str, chip: str) -> Iterator[None]:
    """esptool's errors as one line each: UserError for what the user can fix."""
    try:
        yield
    except (FatalError, SerialException, OSError) as exc:
        text = str(exc)
        line = _first_line(exc)
        if "exclusively lock" in text or "Resource temporarily unavailable" in text:
            raise UserError(f"{port}: port busy (another program has it open: a console, "
                            f"mpremote, a monitor?)") from None
        if "Permission denied" in text:
            raise UserError(f"{port}: permission denied (add yourself to the dialout "
                            f"group)") from None
        if "Errno 2]" in text or "No such file" in text:
            raise UserError(f"no such port: {port}") from None
        if "Wrong boot mode" in text:
            raise UserError(f"{port}: the board did not enter its ROM loader (hold BOOT, tap "
                            f"RESET/EN, release BOOT, then try again)") from None
        if line.startswith("Failed to connect"):
            raise UserError(f"{port}: no ESP ROM loader answers (not in download mode? hold "
                            f"BOOT and tap RESET/EN; a charge-only cable?)") from None
        if "Wrong chip argument" in text:
            found = text.split("This chip is ", 1)[-1].split(",", 1)[0]
            raise UserError(f"wrong chip: the board on {port} is an {found}, not an "
                            f"{CHIP_ARGS[chip].name} (--chip {chip})") from None
        if "stub flasher" in text:
            raise FlashFailed(f"{port}: {line} (try --no-stub)") from exc
        raise FlashFailed(f"{port}: {line}") from exc


def _first_line(exc: BaseException) -> str:
    """The gist of an esptool error: its first sentence, without the troubleshooting link."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    line = line.split(". ", 1)[0]
    return line + ")" * (line.count("(") - line.count(")"))


def _baud(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a baud rate: {text!r}") from None
    if value < 9600:
        raise argparse.ArgumentTypeError(f"baud rate too low: {value}")
    return value


# -- esptool's output ------------------------------------------------------------------------


@contextmanager
def _esptool_logging_to(log: EspLogBase) -> Iterator[None]:
    previous = EspLog.instance
    EspLog.set_logger(log)
    try:
        yield
    finally:
        EspLog.instance = previous


class _FlashLog(EspLogBase):
    """Where esptool's messages go while shelfctl flashes: its chatter only with --verbose,
    its warnings and errors always (on stderr), its progress as one bar."""

    def __init__(self, out: TextIO, verbose: bool) -> None:
        self.out = out
        self.verbose = verbose
        self._bar = _ProgressLine(out)

    def say(self, text: str) -> None:
        """A line of shelfctl's own."""
        self._bar.interrupt()
        print(text, file=self.out, flush=True)

    def _keep(self, prefix: str, args: tuple[Any, ...], show: bool) -> None:
        text = prefix + " ".join(str(a) for a in args)
        if text.strip() and (show or self.verbose):
            self._bar.interrupt()
            print(f"esptool: {text}", file=sys.stderr, flush=True)

    def print(self, *args: Any, **kwargs: Any) -> None:
        self._keep("", args, show=False)

    def note(self, *args: Any) -> None:
        self._keep("note: ", args, show=False)

    def hint(self, *args: Any) -> None:
        self._keep("hint: ", args, show=False)

    def debug(self, *args: Any) -> None:
        self._keep("", args, show=False)

    def warn(self, *args: Any, suggestion: str | None = None) -> None:
        self._keep("warning: ", args, show=True)

    def err(self, *args: Any, suggestion: str | None = None) -> None:
        self._keep("error: ", args, show=True)

    def set_verbosity(self, mode: int | str) -> None:
        pass  # shelfctl's --verbose decides

    def progress_bar(self, cur_iter: int, total_iters: int, prefix: str = "",
                     suffix: str = "", bar_length: int = 30) -> None:
        self._bar.show(cur_iter, total_iters)


class _ProgressLine:
    """`writing [#####.....]  48 %  512/1066 KB sent, 118 KB/s, 5 s left`: redrawn in place on
    a terminal, printed at each quarter otherwise (a log keeps five lines, not a thousand)."""

    WIDTH = 30

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.started = 0.0
        self.first = self.last = 0  # bytes at the first and the latest update
        self.quarter = -1
        self.drawn = False  # a terminal line is drawn and not finished

    def show(self, done: int, total: int) -> None:
        if total <= 0:
            return
        now = time.monotonic()
        if self.started == 0.0 or done < self.last:  # a new write (or the write again)
            self.started, self.first, self.quarter = now, done, -1
        self.last = done
        fraction = min(done / total, 1.0)
        elapsed = now - self.started
        rate = (done - self.first) / elapsed if elapsed > 0 else 0.0
        speed = f", {rate / 1024:.0f} KB/s" if rate > 0 else ""
        left = f", {(total - done) / rate:.0f} s left" if rate > 0 and done < total else ""
        filled = int(fraction * self.WIDTH)
        line = (f"writing [{'#' * filled}{'.' * (self.WIDTH - filled)}] {fraction * 100:3.0f} %"
                f"  {done / 1024:.0f}/{total / 1024:.0f} KB sent{speed}{left}")
        finished = done >= total
        if self.tty:
            self.out.write("\r" + line.ljust(100) + ("\n" if finished else ""))
            self.out.flush()
            self.drawn = not finished
        elif int(fraction * 4) > self.quarter:
            self.quarter = int(fraction * 4)
            print(line, file=self.out, flush=True)
        if finished:
            self.started = 0.0

    def interrupt(self) -> None:
        """End a half-drawn bar, so that a line of text can follow it."""
        if self.drawn:
            self.out.write("\n")
            self.drawn = False
