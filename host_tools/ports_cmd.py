"""`shelfctl ports`: the serial ports on this computer, which USB bridge each one is, its USB
serial number (usable as `--port` anywhere, stable across re-plugging) and a guess of the board.

    shelfctl ports                       # every serial port the OS lists
    shelfctl ports /dev/pts/7 --probe    # a port by path (a virtual board), asking the board

--probe opens each port and asks MicroPython what it is (version, chip). That stops the
program running on the board for a moment: the board is soft-reset afterwards so its
main.py runs again.
"""

from __future__ import annotations

import argparse
import json
import sys

from host_tools.board import ports
from host_tools.board.ports import PortInfo
from host_tools.board.transport import TransportError
from host_tools.errors import UserError

COLUMNS = ("PORT", "USB ID", "SERIAL NUMBER", "BOARD (GUESS)", "DESCRIPTION")
NO_PORTS = ("no serial ports found (a board on USB appears as /dev/ttyUSB* or /dev/ttyACM*: "
            "is the cable a data cable? A virtual board's pty is not listed: name it)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("port", nargs="*", metavar="PORT",
                        help="only these ports (a path or a USB serial number); a path the OS "
                             "does not list (a virtual board's pty) is shown too")
    parser.add_argument("--probe", action="store_true",
                        help="open each port and ask MicroPython what it is (interrupts the "
                             "board's program, then soft-resets it)")
    parser.add_argument("--json", action="store_true", help="one JSON object per port")
    parser.add_argument("--baud", type=int, default=115200, help="for --probe (default 115200)")


def selected(specs: list[str]) -> list[PortInfo]:
    """The listed ports, or the ports named by `specs` (UserError for one that is not there)."""
    listed = ports.list_serial()
    if not specs:
        return listed
    by_path = {p.device: p for p in listed}
    out = []
    for spec in specs:
        path = ports.resolve(spec)
        out.append(by_path.get(path) or PortInfo(path, None, None, None, "", ""))
    return out


def probe(port: str, baud: int) -> str:
    """What answers on `port`: "MicroPython 1.29.0 on esp32 (...)", or why nothing does."""
    try:
        t = ports.connect(port, baud, timeout=3.0)
    except UserError as exc:
        text = str(exc)
        return text.split(": ", 1)[1] if text.startswith(port + ": ") else text
    try:
        return str(ports.identify(t))
    except TransportError as exc:
        return f"no answer ({exc})"
    finally:
        try:
            t.exit_raw()
            t.serial.write(b"\x04")  # soft reset at the friendly prompt: main.py runs again
            t.serial.flush()
        finally:
            t.serial.close()


def row(p: PortInfo) -> tuple[str, ...]:
    return (p.device, p.usb_id or "-", p.serial_number or "-", p.guess or "-",
            p.description or "-")


def format_table(infos: list[PortInfo], probed: dict[str, str] | None = None) -> str:
    """Aligned text columns, one port a line (a FIRMWARE column when probed)."""
    head = COLUMNS + (("FIRMWARE",) if probed is not None else ())
    rows = [row(p) + ((probed.get(p.device, "-"),) if probed is not None else ())
            for p in infos]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    return "\n".join(lines)


def as_json(p: PortInfo, firmware: str | None) -> str:
    obj = {"port": p.device, "usb_id": p.usb_id or None, "vid": p.vid, "pid": p.pid,
           "serial_number": p.serial_number, "guess": p.guess or None,
           "description": p.description or None}
    if firmware is not None:
        obj["firmware"] = firmware
    return json.dumps(obj)


def run(args: argparse.Namespace) -> int:
    infos = selected(args.port)
    if not infos:
        print(NO_PORTS, file=sys.stderr)
        return 0
    probed = {p.device: probe(p.device, args.baud) for p in infos} if args.probe else None
    if args.json:
        for p in infos:
            print(as_json(p, probed.get(p.device) if probed is not None else None))
    else:
        print(format_table(infos, probed))
    return 0
