"""`shelfctl console --port P`: a plain serial terminal on a board (its REPL, its log).

Keys go to the board as typed: the terminal is put in raw mode, so Ctrl-C reaches the board
(it interrupts main.py there) and Ctrl-D soft-resets it at an empty prompt. Ctrl-] quits, as
in telnet and miniterm. The port is opened exclusively: a console cannot fight a deploy.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import termios
import threading
import tty

import serial

from host_tools.board import ports

QUIT = b"\x1d"  # Ctrl-]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", required=True,
                        help="serial port path or USB serial number (see `shelfctl ports`)")
    parser.add_argument("--baud", type=int, default=115200, help="default 115200")


def _board_to_screen(port: serial.Serial, out_fd: int, done: threading.Event,
                     lost: list[str]) -> None:
    while not done.is_set():
        try:
            data = port.read(max(1, port.in_waiting))
        except (serial.SerialException, OSError) as exc:
            lost.append(str(exc))
            done.set()
            return
        if data:
            os.write(out_fd, data)


def _keys_to_board(port: serial.Serial, in_fd: int, done: threading.Event) -> bool:
    """Send keys until Ctrl-] (True) or the end of the input (False)."""
    while not done.is_set():
        ready, _, _ = select.select([in_fd], [], [], 0.1)
        if not ready:
            continue
        data = os.read(in_fd, 1024)
        if not data:  # end of input (a pipe): nothing more to send
            return False
        quit_at = data.find(QUIT)
        if quit_at >= 0:
            data = data[:quit_at]
        if data:
            port.write(data)
        if quit_at >= 0:
            return True
    return True


def run(args: argparse.Namespace) -> int:
    t = ports.open_port(args.port, args.baud)  # UserError: no such port, busy, permission
    port = t.serial
    in_fd, out_fd = sys.stdin.fileno(), sys.stdout.fileno()
    saved = termios.tcgetattr(in_fd) if os.isatty(in_fd) else None
    done = threading.Event()
    lost: list[str] = []
    reader = threading.Thread(target=_board_to_screen, args=(port, out_fd, done, lost),
                              daemon=True)
    try:
        if saved is not None:
            tty.setraw(in_fd)  # before the banner: no key typed after it is cooked
        sys.stderr.write(f"--- {t.port} at {args.baud} baud; Ctrl-] quits ---\r\n")
        sys.stderr.flush()
        reader.start()
        if not _keys_to_board(port, in_fd, done):
            done.wait(0.5)  # input came from a pipe: let the board's answer arrive
    finally:
        done.set()
        reader.join(1.0)
        if saved is not None:
            termios.tcsetattr(in_fd, termios.TCSADRAIN, saved)
        port.close()
    if lost:
        print(f"\n--- {t.port}: the port went away ({lost[0]}) ---", file=sys.stderr)
        return 1
    print("\n--- closed ---", file=sys.stderr)
    return 0
