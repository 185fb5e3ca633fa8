"""`shelfctl sim board` and `shelfctl sim ctl` as a user runs them, against a real mosquitto."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from host_tools.mosquitto import Broker, ToolMissing
from host_tools.sim import vmroot_hw
from tests.broker.conftest import Subscriber

SHELFCTL = [sys.executable, "-m", "host_tools.cli"]
VMROOT_HW = Path(vmroot_hw.__file__).with_name("vmroot") / "_simhw.py"


def test_host_side_cell_physics_match_the_vm_side():
    text = VMROOT_HW.read_text()
    assert f"CPG = {vmroot_hw.CPG} " in text
    assert "return 100000 * (lane + 1) - 8000" in text and vmroot_hw.offset(2) == 292000


def ctl(fs: Path, *args: str) -> tuple[int, str, str]:
    p = subprocess.run([*SHELFCTL, "sim", "ctl", str(fs), *args], capture_output=True,
                       text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


def test_sim_board_and_ctl_end_to_end(tmp_path):
    broker = Broker(tmp_path / "broker")
    try:
        broker.start()
    except ToolMissing as exc:
        pytest.skip(str(exc))
    fs = tmp_path / "vs-1"
    sub = Subscriber(broker, "store/v1/store-1/vs-1/#").start()
    proc = subprocess.Popen([*SHELFCTL, "sim", "board", "--id", "vs-1", "--fs", str(fs),
                             "--baud", "0", "--lanes", "3", "--broker", broker.url,
                             "--simple-lanes"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        while not any(re.match(r"^/dev/pts/\d+$", ln) for ln in lines):
            line = proc.stdout.readline()
            assert line, f"sim board ended: {proc.stderr.read() if proc.stderr else ''}"
            lines.append(line.strip())
        assert any(ln.startswith("deployed ") for ln in lines)
        assert (fs / "serial").is_symlink()

        def payloads(kind):
            return [json.loads(m.payload) for m in list(sub.messages)
                    if m.topic.endswith("/" + kind)]

        end = time.monotonic() + 60
        while not any(s["state"] == "online" for s in payloads("status")):
            assert time.monotonic() < end, "the board never came online"
            time.sleep(0.1)
        time.sleep(3)
        code, out, _ = ctl(fs, "load", "0", "-500")
        assert code == 0 and json.loads(out)["shelf_g"][0] == 2000
        end = time.monotonic() + 30
        while not payloads("event"):
            assert time.monotonic() < end, "no event for the pick"
            time.sleep(0.1)
        ev = payloads("event")[0]
        assert (ev["lane"], ev["count"], ev["sku"]) == (0, -2, "SKU-0")
        # distractors make no events; items by SKU do
        assert ctl(fs, "bump", "300")[0] == 0
        assert ctl(fs, "rest", "2", "400", "2")[0] == 0
        time.sleep(4.5)
        assert ctl(fs, "items", "SKU-1", "-1")[0] == 0
        end = time.monotonic() + 30
        while len(payloads("event")) < 2:
            assert time.monotonic() < end, "no event for the item taken by SKU"
            time.sleep(0.1)
        time.sleep(1)
        evs = payloads("event")
        assert [(e["lane"], e["count"]) for e in evs] == [(0, -2), (1, -1)]
        assert ctl(fs, "load", "zero", "x")[0] == 2  # a user mistake: one line, exit 2
        assert ctl(fs, "items", "NO-SUCH", "1")[0] == 1  # the board says why, not ok
        code, out, _ = ctl(fs, "state")
        assert code == 0 and json.loads(out)["running"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        sub.stop()
        broker.stop()
    assert not (fs / "serial").exists()
    assert (fs / "outbox").is_dir() and (fs / "config.json").exists()  # the flash stays


def test_sim_board_with_the_generator_physics(tmp_path):
    broker = Broker(tmp_path / "broker")
    try:
        broker.start()
    except ToolMissing as exc:
        pytest.skip(str(exc))
    fs = tmp_path / "vs-2"
    sub = Subscriber(broker, "store/v1/store-1/vs-2/#").start()
    proc = subprocess.Popen([*SHELFCTL, "sim", "board", "--id", "vs-2", "--fs", str(fs),
                             "--baud", "0", "--lanes", "4", "--broker", broker.url,
                             "--seed", "7"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        while not re.match(r"^/dev/pts/\d+$", proc.stdout.readline().strip()):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        code, out, _ = ctl(fs, "state")
        lanes = json.loads(out)["lanes"]
        assert code == 0 and len(lanes) == 4 and all(ln["items"] > 0 for ln in lanes)
        end = time.monotonic() + 60
        while not any(m.topic.endswith("/status") and b"online" in m.payload.encode()
                      for m in list(sub.messages)):
            assert time.monotonic() < end, "the board never came online"
            time.sleep(0.1)
        time.sleep(3)
        big = max(range(4), key=lambda i: lanes[i]["unit_g"])  # an item the detector can't miss
        assert ctl(fs, "items", lanes[big]["sku"], "-1")[0] == 0
        end = time.monotonic() + 30
        while not [m for m in list(sub.messages) if m.topic.endswith("/event")]:
            assert time.monotonic() < end, "no event for the pick"
            time.sleep(0.1)
        ev = json.loads([m for m in sub.messages if m.topic.endswith("/event")][0].payload)
        assert (ev["lane"], ev["count"], ev["sku"]) == (big, -1, lanes[big]["sku"])
        code, out, _ = ctl(fs, "state")
        assert json.loads(out)["lanes"][big]["items"] == lanes[big]["items"] - 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        sub.stop()
        broker.stop()


def test_a_blank_board_has_an_empty_flash_and_a_repl(tmp_path):
    from host_tools.board.transport import SerialTransport

    fs = tmp_path / "blank"
    proc = subprocess.Popen([*SHELFCTL, "sim", "board", "--id", "b-1", "--fs", str(fs),
                             "--baud", "0", "--blank"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        assert re.match(r"^/dev/pts/\d+$", port), port
        with SerialTransport(port) as t:
            assert t.eval("__import__('os').listdir('/')") == []
            assert "MicroPython v1.29" in t.exec("import sys\nprint(sys.version)") or \
                t.eval("__import__('sys').implementation.version[:2]") == (1, 29)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
