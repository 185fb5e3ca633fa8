"""The virtual board behind a real pseudo-terminal, driven the way host tools drive a board:
pyserial (our own raw REPL / raw-paste transport) and mpremote."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import pytest
import serial

from host_tools.board import files, literal
from host_tools.board.transport import BoardExecError, SerialTransport
from host_tools.sim.board import VirtualBoard
from host_tools.vm import node_available

pytestmark = pytest.mark.skipif(not node_available(), reason="Node.js / the VM not installed")


def wait_for_text(s: serial.Serial, text: bytes, timeout: float = 10.0) -> bytes:
    data = b""
    end = time.monotonic() + timeout
    while text not in data:
        assert time.monotonic() < end, f"no {text!r} from the board; got {data[-200:]!r}"
        data += s.read(max(1, s.in_waiting))
    return data


def test_friendly_repl_raw_repl_and_raw_paste(board):
    s = serial.Serial(board.port, 115200, timeout=0.1)
    wait_for_text(s, b">>> ")
    s.write(b"print(6 * 7)\r")
    assert b"42\r\n>>> " in wait_for_text(s, b"42\r\n>>> ")
    with SerialTransport(board.port) as t:
        assert t.exec("print('raw', 1 + 1)") == "raw 2\n"
        assert t.paste_supported is True  # the front speaks raw-paste
        assert t.eval("[x * x for x in range(4)]") == [0, 1, 4, 9]
        with pytest.raises(BoardExecError, match="ZeroDivisionError"):
            t.exec("1 / 0")
        assert t.eval("1 + 1") == 2  # still usable after an error


def test_flash_persists_across_soft_reboot_and_power_cycles(board, tmp_path):
    with SerialTransport(board.port) as t:
        files.put(t, b"print('boot.py ran')\n", "/boot.py")
        files.put(t, b"x = 1\n" * 100, "/lib/data.py")
        t.soft_reset()  # a fresh interpreter over the same flash
        assert t.eval("__import__('os').listdir('/')") == ["boot.py", "lib"]
        assert t.eval("'x' in globals()") is False
    assert (tmp_path / "board" / "lib" / "data.py").read_bytes() == b"x = 1\n" * 100
    board.power_off()
    board.hard_reset()
    with SerialTransport(board.port) as t:
        assert files.get(t, "/lib/data.py") == b"x = 1\n" * 100
        assert files.listdir(t, "/") == [("boot.py", False, 21), ("lib", True, 0)]


def test_soft_reboot_runs_boot_and_main(board):
    with SerialTransport(board.port) as t:
        files.put(t, b"print('boot here')\n", "/boot.py")
        files.put(t, b"print('main here')\n", "/main.py")
    s = serial.Serial(board.port, 115200, timeout=0.1)
    s.write(b"\x02\r\x04")  # friendly REPL, Ctrl-D: soft reboot
    out = wait_for_text(s, b">>> ", 20)
    while b"main here" not in out:
        out += wait_for_text(s, b">>> ", 20)
    assert b"MPY: soft reboot" in out and b"boot here" in out
    assert out.index(b"boot here") < out.index(b"main here")


def test_machine_reset_typed_at_the_repl_restarts_the_board(board):
    with SerialTransport(board.port) as t:
        files.put(t, b"print('main after reset')\n", "/main.py")
        t.exec("x = 42")
        boots = board.boots
        t.serial.write(b"\x05A\x01")  # raw-paste the reset: its exec never finishes
        assert t.read_exact(5)[:2] == b"R\x01"
        t.serial.write(b"import machine\nmachine.reset()\x04")
        out = b""
        s = t.serial
        deadline = time.monotonic() + 20
        while b"main after reset" not in out and time.monotonic() < deadline:
            out += s.read(256)
        assert b"main after reset" in out and b"Traceback" not in out
        assert board.boots == boots + 1
        t.in_raw = False
        assert t.eval("'x' in globals()") is False  # a fresh interpreter


def test_errno_and_root_listing_look_like_a_board(board):
    with SerialTransport(board.port) as t:
        assert t.eval("__import__('os').listdir('/')") == []
        out = t.exec("import os\ntry:\n    os.stat('/nope')\nexcept OSError as e:\n"
                     "    print(e.args[0])")
        assert out.strip() == "2"  # ENOENT as on an ESP32, not the VM's 44


def test_mpremote_works_against_the_virtual_board(board, tmp_path):
    mpremote = [sys.executable, "-m", "mpremote", "connect", board.port]
    src = tmp_path / "hello.py"
    src.write_text("print('hello', 6 * 7)\n")

    def run(*args: str) -> str:
        proc = subprocess.run([*mpremote, *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert run("exec", "print('x', 1)") == "x 1\n"
    run("fs", "cp", str(src), ":hello.py")
    assert "hello.py" in run("fs", "ls")
    assert run("fs", "cat", "hello.py") == "print('hello', 6 * 7)\n"
    assert run("run", str(src)) == "hello 42\n"
    run("soft-reset")
    run("fs", "mkdir", "lib")
    assert "lib/" in run("fs", "ls")
    run("fs", "rm", "hello.py")
    assert "hello.py" not in run("fs", "ls")


def test_paced_64k_transfer_takes_the_wire_time_and_arrives_intact(tmp_path):
    b = VirtualBoard(tmp_path / "paced", baud=115200)
    b.start()
    try:
        data = os.urandom(64 * 1024)
        with SerialTransport(b.port, timeout=30) as t:
            t.exec("pass")
            start = time.monotonic()
            files.put(t, data, "/blob.bin")
            elapsed = time.monotonic() - start
            assert files.sha256(t, "/blob.bin") == hashlib.sha256(data).hexdigest()
        # the escaped bytes alone (about 68 KB) cross the wire at 10 bits each at 115200 baud
        wire_s = len(literal.encode(data)) * 10 / 115200
        assert elapsed >= wire_s, (elapsed, wire_s)
        assert (tmp_path / "paced" / "blob.bin").read_bytes() == data
    finally:
        b.stop()


def test_ctrl_c_interrupts_a_main_py_that_never_returns(board):
    with SerialTransport(board.port) as t:
        files.put(t, b"import time\nprint('looping')\nwhile True:\n    time.sleep_ms(10)\n",
                  "/main.py")
    board.hard_reset()
    s = serial.Serial(board.port, 115200, timeout=0.1)
    wait_for_text(s, b"looping", 20)
    time.sleep(0.5)
    s.write(b"\x03")
    out = wait_for_text(s, b">>> ", 20)
    assert b"KeyboardInterrupt" in out
    s.write(b"print(2 + 3)\r")
    assert b"5\r\n" in wait_for_text(s, b"5\r\n>>> ", 10)
    with SerialTransport(board.port) as t:  # host tools work after it, as on a board
        assert t.eval("1 + 1") == 2


def test_rfc2217_port_carries_the_dtr_rts_reset(tmp_path):
    b = VirtualBoard(tmp_path / "rfc", baud=0, rfc2217=0)
    b.start()
    try:
        s = serial.serial_for_url(b.rfc2217.url, 115200, timeout=0.2)
        s.write(b"\r\x03")
        wait_for_text(s, b">>> ")
        s.write(b"x = 41\r")
        wait_for_text(s, b"x = 41\r\n>>> ")
        boots = b.boots
        s.dtr = False  # GPIO0 high
        s.rts = True  # EN low: held in reset
        time.sleep(0.1)
        s.rts = False  # EN released: the chip boots, as esptool's reset does
        wait_for_text(s, b"MicroPython v1.29", 20)
        assert b.boots == boots + 1 and b.rfc2217.resets == 1
        s.write(b"print('x' in globals())\r")
        assert b"False" in wait_for_text(s, b"False\r\n>>> ")  # a fresh interpreter
        with SerialTransport(b.port) as t:  # the pty is the same board
            assert t.eval("1 + 2") == 3
        s.close()
    finally:
        b.stop()
