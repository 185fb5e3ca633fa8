# Safe mode: the application does not start, the REPL stays free, so a bad config or a
# crashing release can always be fixed over the serial port.
#
# Asked for by a flag file on flash (left by the `safe_mode` command, removed by the host
# tool once the board is fixed) or by the board's safe-mode pin held low at reset (the BOOT
# button on the DevKitC boards). boot.py calls check() once; main.py reads `reason`.

import json
import os

FLAG_FILE = "safe_mode"
BOARD_FILE = "board.json"

reason = None  # why the board is in safe mode this boot, or None


def _flag_present():
    try:
        os.stat(FLAG_FILE)
        return True
    except OSError:
        return False


def _pin_held_low(board_file=BOARD_FILE):
    try:
        with open(board_file) as f:
            pin_id = json.load(f).get("safe_mode_pin")
    except (OSError, ValueError, AttributeError):
        return False
    if not isinstance(pin_id, int) or isinstance(pin_id, bool):
        return False
    try:
        from machine import Pin

        pin = Pin(pin_id, Pin.IN, Pin.PULL_UP)
        return pin.value() == 0
    except (ImportError, ValueError, OSError):
        return False


def check(board_file=BOARD_FILE):
    """Decide once per boot; returns the reason (a short text) or None."""
    global reason
    if _flag_present():
        reason = "flag file '%s' present" % FLAG_FILE
    elif _pin_held_low(board_file):
        reason = "safe-mode pin held low at reset"
    else:
        reason = None
    return reason


def request():
    """Ask for safe mode from the next boot on (the caller then resets the board)."""
    with open(FLAG_FILE, "w") as f:
        f.write("1")


def clear():
    try:
        os.remove(FLAG_FILE)
    except OSError:
        pass
