"""`shelfctl monitor` watching real firmware: a virtual gate and a virtual shelf (the firmware
in the MicroPython VM behind their ptys), a real mosquitto. A shopper scans in, takes two
items, puts one back, scans out: the monitor's receipt says one item, and its device table
shows both boards online."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from .conftest import SHELFCTL, ctl


def recorded(path: Path) -> list[dict]:
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.endswith("}")]


def wait(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


def events(path: Path) -> list[dict]:
    return [m["payload"] for m in recorded(path) if m["topic"].endswith("/event")]


def test_monitor_builds_a_receipt_from_a_real_gate_and_shelf(tmp_path, broker, sim_board):
    record = tmp_path / "rec.jsonl"
    mon = subprocess.Popen([*SHELFCTL, "monitor", "--broker", broker.url, "--store", "store-1",
                            "--record", str(record)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
    try:
        gate, shelf = tmp_path / "gate-1", tmp_path / "shelf-1"
        sim_board("--role", "gate", "--id", "gate-1", "--fs", str(gate), "--baud", "0",
                  "--broker", broker.url)
        sim_board("--id", "shelf-1", "--fs", str(shelf), "--baud", "0", "--lanes", "2",
                  "--broker", broker.url, "--simple-lanes")

        def online() -> set[str]:
            return {m["payload"]["device"] for m in recorded(record)
                    if m["topic"].endswith("/status") and m["payload"].get("state") == "online"}

        wait(lambda: online() == {"gate-1", "shelf-1"}, 90, "both boards online")
        time.sleep(3)  # the shelf's lanes settle
        assert ctl(gate, "scan", "SHOPPER-42")[0] == 0
        wait(lambda: len(events(record)) == 1, 30, "the entry scan")
        assert ctl(shelf, "load", "1", "-500")[0] == 0  # two items of SKU-1 taken
        wait(lambda: len(events(record)) == 2, 30, "the pick")
        time.sleep(2.5)
        assert ctl(shelf, "load", "1", "250")[0] == 0  # one put back
        wait(lambda: len(events(record)) == 3, 30, "the put-back")
        assert ctl(gate, "scan", "SHOPPER-42")[0] == 0
        wait(lambda: len(events(record)) == 4, 30, "the exit scan")
        time.sleep(0.5)  # at least one view refresh after the last event
        mon.send_signal(signal.SIGINT)  # how a user ends the live view
        out, err = mon.communicate(timeout=20)
    finally:
        if mon.poll() is None:
            mon.kill()
    assert mon.returncode == 0, err
    assert [(e["type"], e.get("count")) for e in events(record)] == [
        ("scan", None), ("pick", -2), ("put", 1), ("scan", None)]
    receipt = next(line for line in out.splitlines() if "receipt:" in line)
    assert "SHOPPER-42" in receipt and "SKU-1 x1" in receipt and "?" not in receipt, out
    rows = [line for line in out.splitlines() if "online" in line]
    assert any("gate-1" in r for r in rows) and any("shelf-1" in r for r in rows), out
