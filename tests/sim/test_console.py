"""`shelfctl console` in a pseudo-terminal of its own, as a technician runs it, on a virtual
board's REPL: keys go through (Ctrl-C too), Ctrl-] quits; a busy or missing port is one line."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_tools.board import ports
from host_tools.sim.board import VirtualBoard

SHELFCTL = [sys.executable, "-m", "host_tools.cli"]


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualBoard]:
    """A blank board: its REPL is what answers on the port."""
    b = VirtualBoard(tmp_path_factory.mktemp("console") / "board", baud=0)
    b.start()
    yield b
    b.stop()


class Terminal:
    """`shelfctl console ARGS` with a pty as its terminal (stdin and stdout)."""

    def __init__(self, *args: str) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen([*SHELFCTL, "console", *args], stdin=slave, stdout=slave,
                                     stderr=subprocess.PIPE)
        os.close(slave)
        self.seen = b""

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def wait_for(self, text: bytes, timeout: float = 15.0) -> bytes:
        """What the terminal showed, up to and including `text`."""
        end = time.monotonic() + timeout
        while text not in self.seen:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} never came; the terminal shows {self.seen!r}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.2))
            if ready:
                try:
                    self.seen += os.read(self.master, 4096)
                except OSError:  # the console ended and its side of the pty closed
                    time.sleep(0.1)
        shown, _, self.seen = self.seen.partition(text)
        return shown + text

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        os.close(self.master)


def test_typed_line_runs_on_the_board_and_ctrl_bracket_quits(board: VirtualBoard):
    term = Terminal("--port", board.port)
    try:
        assert term.proc.stderr is not None
        assert term.proc.stderr.readline().decode() == (
            f"--- {board.port} at 115200 baud; Ctrl-] quits ---\r\n")
        # Ctrl-C reaches the board: the REPL drops the half-typed line for a fresh prompt
        term.type(b"oops\x03")
        term.wait_for(b"oops\r\n>>> ")
        term.type(b"print(6*7)\r")
        assert term.wait_for(b"\r\n>>> ") == b"print(6*7)\r\n42\r\n>>> "
        term.type(b"\x1d")
        assert term.proc.wait(10) == 0
        assert term.proc.stderr.read().decode().strip() == "--- closed ---"
    finally:
        term.close()
    with ports.connect(board.port) as t:  # the console let go of the port
        assert t.eval("6 * 7") == 42


def test_busy_port_is_one_line_and_exit_code_2(board: VirtualBoard):
    holder = ports.open_port(board.port)  # a deploy, say, has it
    try:
        p = subprocess.run([*SHELFCTL, "console", "--port", board.port],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    finally:
        holder.serial.close()
    assert p.returncode == 2
    assert p.stderr == (f"shelfctl: {board.port}: port busy (another program has it open: a "
                        f"console, mpremote, a monitor?)\n")


def test_missing_port_is_one_line_and_exit_code_2(tmp_path: Path):
    p = subprocess.run([*SHELFCTL, "console", "--port", str(tmp_path / "ttyUSB9")],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    assert p.stderr == f"shelfctl: no such port: {tmp_path / 'ttyUSB9'}\n"
