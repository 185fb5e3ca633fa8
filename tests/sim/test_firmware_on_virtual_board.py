"""The firmware deployed over the virtual board's own serial port, booted in the VM, talking
to a real mosquitto through the host: online, samples, events for scripted picks, commands,
and back after a power cut with its outbox."""

from __future__ import annotations

import json
import subprocess
import time

from host_tools.board.transport import SerialTransport
from host_tools.deploy import deploy_firmware, put_json
from host_tools.firmware import REPO
from host_tools.sim.board import VirtualBoard
from tests.broker.conftest import Subscriber

DEVICE = "vshelf-1"
BASE = f"store/v1/s1/{DEVICE}"
UNIT_G = 250


def config(url: str) -> dict:
    return {"device": DEVICE, "store": "s1", "role": "shelf", "board": "virtual",
            "wifi": {"ssid": "store-wifi", "password": "store-secret"},
            "broker": {"url": url, "keepalive_s": 10}, "telemetry_s": 5, "sps": 10,
            "lanes": [{"offset": 100000 * (i + 1) - 8000, "counts_per_gram": 420,
                       "sku": f"SKU-{i}", "unit_g": UNIT_G, "capacity": 20}
                      for i in range(3)]}


def wait_for(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_firmware_runs_on_a_virtual_board(broker, tmp_path):
    board = VirtualBoard(tmp_path / "board", baud=0)
    board.start()
    sub = Subscriber(broker, BASE + "/#", client_id="obs", persistent=True).start()
    try:
        for lane in range(3):
            board.load(lane, 10 * UNIT_G, 1)  # ten items on each lane
        with SerialTransport(board.port, timeout=20) as t:
            report = deploy_firmware(t)
            put_json(t, json.loads((REPO / "boards" / "virtual.json").read_text()),
                     "/board.json")
            put_json(t, config(broker.url), "/config.json")
        assert report.files > 20
        board.hard_reset()

        def status():
            return [json.loads(m.payload) for m in list(sub.messages)
                    if m.topic == BASE + "/status"]

        def events():
            return [json.loads(m.payload) for m in list(sub.messages)
                    if m.topic == BASE + "/event"]

        wait_for(lambda: any(s["state"] == "online" for s in status()), 60, "online")
        time.sleep(3)  # warm-up
        board.load(1, -UNIT_G)
        wait_for(lambda: events(), 30, "the pick")
        ev = events()[0]
        assert (ev["lane"], ev["count"], ev["seq"], ev["boot"]) == (1, -1, 1, 1)
        # read in real time at 10 SPS: a near-still level within 4 % of an item is reported
        assert abs(ev["delta_g"] + UNIT_G) < 0.04 * UNIT_G
        # it answers commands: status, and a planogram change it keeps
        def command(body: dict) -> dict:
            subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-q",
                            "1", "-t", BASE + "/cmd", "-m", json.dumps(body)], check=True,
                           timeout=10)

            def acks():
                return [json.loads(m.payload) for m in list(sub.messages)
                        if m.topic == BASE + "/ack"]

            wait_for(lambda: any(a["id"] == body["id"] for a in acks()), 20, body["id"])
            return [a for a in acks() if a["id"] == body["id"]][0]

        st = command({"id": "s1", "cmd": "status"})
        assert st["ok"] and st["result"]["device"] == DEVICE and len(st["result"]["lanes"]) == 3
        ack = command({"id": "p1", "cmd": "planogram", "lane": 0, "sku": "NEW-0",
                       "unit_g": 125, "capacity": 40})
        assert ack["ok"], ack
        assert command({"id": "b1", "cmd": "tare", "lane": 9})["ok"] is False
        saved = json.loads((tmp_path / "board" / "config.json").read_text())
        assert saved["lanes"][0]["sku"] == "NEW-0"  # on the board's flash
        # power cut while the broker is away: the next pick waits on the board's flash
        broker.stop()
        board.load(2, -2 * UNIT_G)
        time.sleep(4)
        board.power_off()
        broker.start()
        board.hard_reset()
        wait_for(lambda: len(events()) >= 2, 60, "the stored pick after the power cut")
        ev = events()[1]
        assert (ev["lane"], ev["count"], ev["seq"], ev["boot"]) == (2, -2, 2, 1)
        wait_for(lambda: sum(s["state"] == "online" for s in status()) >= 2, 30,
                 "online again")
        assert status()[-1]["boot"] == 2
        # Ctrl-C (a host tool taking the board) relaxes the watchdog the application armed:
        # an idle session at the REPL outlives its 10 s
        boots = board.boots
        with SerialTransport(board.port, timeout=20) as t:
            assert t.eval("__import__('machine').WDT.instances[0].timeout") == 3600000
            time.sleep(12)
            assert t.eval("1 + 1") == 2
        assert board.boots == boots
    finally:
        sub.stop()
        board.stop()
