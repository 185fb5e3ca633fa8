"""Opening a board by --port: the errors a technician sees, and a real virtual board."""

from __future__ import annotations

import os

import pytest

from host_tools.board import ports
from host_tools.errors import UserError


def test_missing_port_is_one_line():
    with pytest.raises(UserError, match=r"^no such port: /dev/ttyNOPE9$"):
        ports.connect("/dev/ttyNOPE9")


def test_unknown_usb_serial_number_names_the_choices():
    with pytest.raises(UserError, match=r"no such port or USB serial number: ZZ-NOT-A-SERIAL"):
        ports.resolve("ZZ-NOT-A-SERIAL")


def test_silent_port_is_not_a_micropython_board():
    # a pty nobody answers on: what a board without MicroPython (or at the wrong baud) looks like
    master, slave = os.openpty()
    try:
        with pytest.raises(UserError, match="not a MicroPython board"):
            ports.connect(os.ttyname(slave), timeout=1.0)
    finally:
        os.close(master)
        os.close(slave)


def test_virtual_board_connects_and_a_second_opener_is_told_it_is_busy(board):
    t = ports.connect(board.port)
    try:
        assert t.eval("1 + 1") == 2
        with pytest.raises(UserError, match="port busy"):
            ports.connect(board.port)
    finally:
        t.close()
    t2 = ports.connect(board.port)  # released on close
    t2.close()


def test_binary_literal_reaches_the_board_byte_exact(board):
    import hashlib
    import random

    from host_tools.board import literal

    rng = random.Random(3)
    data = bytes(range(256)) * 4 + bytes(rng.getrandbits(8) for _ in range(6000))
    t = ports.connect(board.port)
    try:
        got = t.exec(b"import hashlib, binascii\n_x = " + literal.literal(data) +
                     b"\nprint(len(_x), binascii.hexlify(hashlib.sha256(_x).digest()).decode())")
    finally:
        t.close()
    assert got.split() == [str(len(data)), hashlib.sha256(data).hexdigest()]
