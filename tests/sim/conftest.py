"""What the virtual-board tests share: a board, a broker, `shelfctl sim board` as a user runs
it, and `shelfctl sim ctl`."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_tools.mosquitto import Broker, ToolMissing
from host_tools.sim.board import VirtualBoard

SHELFCTL = [sys.executable, "-m", "host_tools.cli"]

# Some tests end `shelfctl` with Ctrl-C (SIGINT), as a user does. A runner that started pytest
# as a background job has SIGINT ignored, and an ignored signal stays ignored across exec: the
# tool would never see the Ctrl-C. A handled one is reset to the default in the child.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def board(tmp_path: Path) -> Iterator[VirtualBoard]:
    """A blank virtual board, unpaced."""
    b = VirtualBoard(tmp_path / "board", baud=0)
    b.start()
    yield b
    b.stop()


def start_broker(path: Path, **kw) -> Broker:
    """A real mosquitto in `path` (Broker's keywords: users, ...), started; the test is
    skipped where mosquitto cannot be had."""
    b = Broker(path, **kw)
    try:
        b.start()
    except ToolMissing as exc:
        pytest.skip(str(exc))
    return b


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = start_broker(tmp_path / "broker")
    yield b
    b.stop()


class SimBoard:
    """`shelfctl sim board ARGS...` in a process of its own, until stop()."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([*SHELFCTL, "sim", "board", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise AssertionError(f"sim board ended: {err}")
            self.lines.append(line.strip())
            if re.match(r"^/dev/pts/\d+$", self.lines[-1]):
                self.port = self.lines[-1]
                return

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(20)


@pytest.fixture
def sim_board() -> Iterator:
    made: list[SimBoard] = []

    def start(*args: str) -> SimBoard:
        made.append(SimBoard(*args))
        return made[-1]

    yield start
    for b in made:
        b.stop()


def ctl(fs: Path, *args: str) -> tuple[int, str, str]:
    p = subprocess.run([*SHELFCTL, "sim", "ctl", str(fs), *args], capture_output=True,
                       text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr
