"""`shelfctl sim board` and `shelfctl sim ctl` as a user runs them, against a real mosquitto."""

from __future__ import annotations

import json
import time
from pathlib import Path

from host_tools.board.transport import SerialTransport
from host_tools.sim import vmroot_hw
from tests.broker.conftest import Subscriber

from .conftest import ctl

VMROOT_HW = Path(vmroot_hw.__file__).with_name("vmroot") / "_simhw.py"


def test_host_side_cell_physics_match_the_vm_side():
    text = VMROOT_HW.read_text()
    assert f"CPG = {vmroot_hw.CPG} " in text
    assert "return 100000 * (lane + 1) - 8000" in text and vmroot_hw.offset(2) == 292000


def payloads(sub: Subscriber, kind: str) -> list[dict]:
    return [json.loads(m.payload) for m in list(sub.messages) if m.topic.endswith("/" + kind)]


def wait(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_sim_board_and_ctl_end_to_end(tmp_path, broker, sim_board):
    fs = tmp_path / "vs-1"
    sub = Subscriber(broker, "store/v1/store-1/vs-1/#").start()
    try:
        b = sim_board("--id", "vs-1", "--fs", str(fs), "--baud", "0", "--lanes", "3",
                      "--broker", broker.url, "--simple-lanes")
        assert any(ln.startswith("deployed ") for ln in b.lines)
        assert (fs / "serial").is_symlink()
        wait(lambda: any(s["state"] == "online" for s in payloads(sub, "status")), 60,
             "online")
        time.sleep(3)
        code, out, _ = ctl(fs, "load", "0", "-500")
        assert code == 0 and json.loads(out)["shelf_g"][0] == 2000
        wait(lambda: payloads(sub, "event"), 30, "the pick")
        ev = payloads(sub, "event")[0]
        assert (ev["lane"], ev["count"], ev["sku"]) == (0, -2, "SKU-0")
        # distractors make no events; items by SKU do
        assert ctl(fs, "bump", "300")[0] == 0
        assert ctl(fs, "rest", "2", "400", "2")[0] == 0
        time.sleep(4.5)
        assert ctl(fs, "items", "SKU-1", "-1")[0] == 0
        wait(lambda: len(payloads(sub, "event")) >= 2, 30, "the item taken by SKU")
        time.sleep(1)
        assert [(e["lane"], e["count"]) for e in payloads(sub, "event")] == [(0, -2), (1, -1)]
        assert ctl(fs, "load", "zero", "x")[0] == 2  # a user mistake: one line, exit 2
        assert ctl(fs, "items", "NO-SUCH", "1")[0] == 1  # the board says why, not ok
        code, out, _ = ctl(fs, "state")
        assert code == 0 and json.loads(out)["running"] is True
        b.stop()
    finally:
        sub.stop()
    assert not (fs / "serial").exists()
    assert (fs / "outbox").is_dir() and (fs / "config.json").exists()  # the flash stays


def test_sim_board_with_the_generator_physics(tmp_path, broker, sim_board):
    fs = tmp_path / "vs-2"
    sub = Subscriber(broker, "store/v1/store-1/vs-2/#").start()
    try:
        sim_board("--id", "vs-2", "--fs", str(fs), "--baud", "0", "--lanes", "4",
                  "--broker", broker.url, "--seed", "7")
        code, out, _ = ctl(fs, "state")
        lanes = json.loads(out)["lanes"]
        assert code == 0 and len(lanes) == 4 and all(ln["items"] > 0 for ln in lanes)
        wait(lambda: any(s["state"] == "online" for s in payloads(sub, "status")), 60,
             "online")
        time.sleep(3)
        big = max(range(4), key=lambda i: lanes[i]["unit_g"])  # an item the detector can't miss
        assert ctl(fs, "items", lanes[big]["sku"], "-1")[0] == 0
        wait(lambda: payloads(sub, "event"), 30, "the pick")
        ev = payloads(sub, "event")[0]
        assert (ev["lane"], ev["count"], ev["sku"]) == (big, -1, lanes[big]["sku"])
        code, out, _ = ctl(fs, "state")
        assert json.loads(out)["lanes"][big]["items"] == lanes[big]["items"] - 1
    finally:
        sub.stop()


def test_a_blank_board_has_an_empty_flash_and_a_repl(tmp_path, sim_board):
    b = sim_board("--id", "b-1", "--fs", str(tmp_path / "blank"), "--baud", "0", "--blank")
    with SerialTransport(b.port) as t:
        assert t.eval("__import__('os').listdir('/')") == []
        assert t.eval("__import__('sys').implementation.version[:2]") == (1, 29)
