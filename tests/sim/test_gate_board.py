"""A gate board: boots, connects, publishes what its QR scanner reads; its status LED and
beam-break input are there for the host to see and drive."""

from __future__ import annotations

import json
import time

from host_tools.board.transport import SerialTransport
from tests.broker.conftest import Subscriber

from .conftest import ctl


def test_gate_publishes_scans_and_shows_its_outputs(tmp_path, broker, sim_board):
    fs = tmp_path / "gate-1"
    sub = Subscriber(broker, "store/v1/store-1/gate-1/#").start()
    try:
        port = sim_board("--role", "gate", "--id", "gate-1", "--fs", str(fs), "--baud", "0",
                         "--broker", broker.url).port

        def msgs(kind):
            return [json.loads(m.payload) for m in list(sub.messages)
                    if m.topic.endswith("/" + kind)]

        end = time.monotonic() + 60
        while not any(s["state"] == "online" for s in msgs("status")):
            assert time.monotonic() < end, "the gate never came online"
            time.sleep(0.1)
        assert ctl(fs, "scan", "SHOPPER-42")[0] == 0
        assert ctl(fs, "scan", "SHOPPER-7")[0] == 0
        end = time.monotonic() + 20
        while len(msgs("event")) < 2:
            assert time.monotonic() < end, "no scan events"
            time.sleep(0.1)
        evs = msgs("event")
        assert [(e["type"], e["code"], e["seq"]) for e in evs] == [
            ("scan", "SHOPPER-42", 1), ("scan", "SHOPPER-7", 2)]
        end = time.monotonic() + 10
        while json.loads(ctl(fs, "state")[1])["outputs"].get("led") != 1:
            assert time.monotonic() < end, "the status LED is not lit while connected"
            time.sleep(0.1)
        assert ctl(fs, "scan", "bad\ttext")[0] == 1  # the board refuses, one line
        # the beam-break input reads low while something is in the beam
        assert ctl(fs, "beam", "3000")[0] == 0
        with SerialTransport(port, timeout=20) as t:
            assert t.eval("__import__('machine').Pin(31, 1).value()") == 0
            time.sleep(3.2)
            assert t.eval("__import__('machine').Pin(31, 1).value()") == 1
    finally:
        sub.stop()
