"""The shelf controller end to end: the firmware runtime (apps.device) in a process of its own
on the fake board, a real mosquitto, an observer with mosquitto_sub.

Load changes go in as a hand would make them (fake HX711 chips, pin protocol); what comes out
is judged on the broker: events in seq order without gaps, nothing lost across broker
restarts and power cuts (SIGKILL of the process), duplicates only as repeated (device, seq),
retained status and last will, commands and their acks, config kept across a reboot.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import Broker, Subscriber

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BOARD = json.loads((REPO / "boards" / "virtual.json").read_text())
DEVICE = "shelf-e2e"
STORE = "store-1"
BASE = f"store/v1/{STORE}/{DEVICE}"
UNIT_G = 250.0
CPG = 400
OFFSETS = [50000, -80000, 120000]


def shelf_config(broker: Broker, **extra) -> dict:
    cfg = {
        "device": DEVICE, "store": STORE, "role": "shelf", "board": "virtual",
        "wifi": {"ssid": "store-wifi", "password": "store-secret"},
        "broker": {"url": broker.url, "keepalive_s": 10},
        "ntp": "127.0.0.1",
        "telemetry_s": 5,
        "lanes": [{"gain": 128, "offset": OFFSETS[i], "counts_per_gram": CPG,
                   "sku": f"SKU-{i}", "unit_g": UNIT_G, "capacity": 20} for i in range(3)],
    }
    cfg.update(extra)
    return cfg


class DeviceProc:
    """The controller process over one flash directory."""

    def __init__(self, flash: Path, config: dict, start_items: int = 10) -> None:
        self.flash = flash
        flash.mkdir(parents=True, exist_ok=True)
        (flash / "config.json").write_text(json.dumps(config))
        (flash / "board.json").write_text(json.dumps(BOARD))
        (flash / "shelf.json").write_text(json.dumps({
            "start_g": [start_items * UNIT_G] * 3, "cpg": CPG, "offsets": OFFSETS,
            "noise_g": 0.3}))
        self.proc: subprocess.Popen[str] | None = None
        self.log = flash / "console.log"
        self.boots = 0

    def start(self) -> DeviceProc:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(HERE / "device_proc.py"), str(self.flash)],
                stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, text=True,
                env=env)
        self.boots += 1
        return self

    def send(self, line: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def pick(self, lane: int, items: int = 1) -> None:
        self.send(f"load {lane} {-items * UNIT_G} 400")

    def power_cut(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.power_cut()

    def console(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def device_factory(tmp_path: Path):
    made: list[DeviceProc] = []

    def make(config: dict, name: str = "flash") -> DeviceProc:
        d = DeviceProc(tmp_path / name, config)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()


def wait_for(cond, timeout: float, what: str, device: DeviceProc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            tail = f"\n--- device console ---\n{device.console()[-3000:]}" if device else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{tail}")
        time.sleep(0.05)


def events(sub: Subscriber) -> list[dict]:
    return [json.loads(m.payload) for m in list(sub.messages) if m.topic == BASE + "/event"]


def unique_by_seq(evs: list[dict]) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for e in evs:
        if e["seq"] in out:
            assert out[e["seq"]] == e, f"seq {e['seq']} seen with two different payloads"
        out[e["seq"]] = e
    return out


def status(sub: Subscriber) -> list[dict]:
    return [json.loads(m.payload) for m in list(sub.messages) if m.topic == BASE + "/status"]


def test_picks_arrive_in_order_with_status_telemetry_and_will(broker, subscribers,
                                                              device_factory):
    sub = subscribers(broker, BASE + "/#", client_id="observer-1", persistent=True)
    dev = device_factory(shelf_config(broker)).start()
    wait_for(lambda: any(s.get("state") == "online" for s in status(sub)), 30, "online", dev)
    time.sleep(2.5)  # the lanes warm up (the detector learns their noise)
    for lane in (0, 1, 2, 0):
        dev.pick(lane)
        time.sleep(1.5)
    dev.pick(1, 2)
    wait_for(lambda: len(events(sub)) >= 5, 30, "5 events", dev)
    evs = events(sub)
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    assert [(e["lane"], e["count"], e["type"]) for e in evs] == [
        (0, -1, "pick"), (1, -1, "pick"), (2, -1, "pick"), (0, -1, "pick"), (1, -2, "pick")]
    for e in evs:
        assert e["device"] == DEVICE and e["boot"] == 1 and e["sku"] == f"SKU-{e['lane']}"
        assert abs(e["delta_g"] - e["count"] * UNIT_G) < 5
        assert e["ts"] is not None and abs(e["ts"] / 1000 - time.time()) < 60
    wait_for(lambda: any(m.topic == BASE + "/telemetry" for m in sub.messages), 20,
             "telemetry", dev)
    tele = [json.loads(m.payload) for m in sub.messages if m.topic == BASE + "/telemetry"][-1]
    assert tele["outbox_depth"] == 0 and tele["time_synced"] is True
    assert all(8 <= sps <= 12 for sps in tele["sps"]), tele["sps"]  # 10 SPS chips
    # The board vanishes: the broker publishes its will, retained.
    dev.power_cut()
    wait_for(lambda: status(sub)[-1].get("state") == "offline", 40, "the last will")
    late = subscribers(broker, BASE + "/status")
    wait_for(lambda: late.messages, 10, "the retained status")
    assert late.messages[0].retain and json.loads(late.messages[0].payload)["state"] == "offline"


def picks_every(dev: DeviceProc, n: int, gap_s: float = 0.8) -> None:
    # n picks, round robin over the three lanes (each lane rests 3 x gap between its picks)
    for i in range(n):
        dev.pick(i % 3)
        time.sleep(gap_s)


def test_broker_restarts_and_power_cuts_lose_nothing(broker, subscribers, device_factory):
    sub = subscribers(broker, BASE + "/event", client_id="observer-2", persistent=True)
    dev = device_factory(shelf_config(broker)).start()
    st = subscribers(broker, BASE + "/status", client_id="observer-2s")
    wait_for(lambda: any(s.get("state") == "online" for s in status(st)), 30, "online", dev)
    time.sleep(3)  # the lanes have learnt their noise (2 s of readings) before the first pick
    picks_every(dev, 4)
    # The broker goes away three times while the shelf keeps selling.
    for _ in range(3):
        broker.stop()
        picks_every(dev, 3)
        broker.start()
        picks_every(dev, 2)
    # Power cut while the broker is down: what was stored on flash must still go out.
    broker.stop()
    picks_every(dev, 3)
    time.sleep(2)  # the last pick is decided and stored
    dev.power_cut()
    broker.start()
    dev.start()
    wait_for(lambda: any(s.get("state") == "online" and s.get("boot") == 2 for s in status(st)),
             40, "online after the power cut", dev)
    time.sleep(3)  # the lanes have learnt their noise again
    picks_every(dev, 2)
    total = 4 + 3 * 5 + 3 + 2
    wait_for(lambda: len(unique_by_seq(events(sub))) >= total, 60, f"{total} events", dev)
    time.sleep(1)
    got = unique_by_seq(events(sub))
    assert sorted(got) == list(range(1, total + 1)), "a seq is missing or extra"
    odd = [(e["seq"], e["boot"], e["lane"], e["count"], e["delta_g"]) for e in got.values()
           if e["count"] != -1]
    assert all(e["count"] == -1 and e["type"] == "pick" for e in got.values()), odd
    assert {e["boot"] for e in got.values()} == {1, 2}
    # per lane, every pick took one item from the stock it had (10 items each)
    for lane in range(3):
        after = sorted((e["seq"], e["after_g"]) for e in got.values() if e["lane"] == lane)
        grams = [a for _, a in after]
        assert grams == sorted(grams, reverse=True)
        assert abs(grams[0] - 9 * UNIT_G) < 5
    # first arrival of each seq is in seq order within a boot (replay keeps order)
    first: list[int] = []
    for e in events(sub):
        if e["seq"] not in first:
            first.append(e["seq"])
    boot1 = [s for s in first if got[s]["boot"] == 1]
    assert boot1 == sorted(boot1)


def send_command(broker: Broker, payload: str) -> None:
    subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-q", "1",
                    "-t", BASE + "/cmd", "-m", payload], check=True, timeout=10)


def acks(sub: Subscriber) -> dict:
    return {a["id"]: a for a in (json.loads(m.payload) for m in list(sub.messages)
                                 if m.topic == BASE + "/ack")}


def command(broker: Broker, sub: Subscriber, dev: DeviceProc, cid: str, body: dict) -> dict:
    send_command(broker, json.dumps(dict(body, id=cid)))
    wait_for(lambda: cid in acks(sub), 20, f"the ack of {cid}", dev)
    return acks(sub)[cid]


def test_commands_round_trip_and_persist_across_a_reboot(broker, subscribers, device_factory):
    sub = subscribers(broker, BASE + "/#", client_id="observer-3", persistent=True)
    dev = device_factory(shelf_config(broker)).start()
    wait_for(lambda: any(s.get("state") == "online" for s in status(sub)), 30, "online", dev)
    time.sleep(2.5)
    st = command(broker, sub, dev, "s1", {"cmd": "status"})
    assert st["ok"] and st["result"]["device"] == DEVICE
    assert all(abs(lane["grams"] - 2500) < 2 for lane in st["result"]["lanes"]), st
    # Lane 2 gets a new product: 125 g packs; lane 0 is tared (its stock counts as tray).
    ack = command(broker, sub, dev, "p1", {"cmd": "planogram", "lane": 2, "sku": "TEA-125",
                                           "unit_g": 125, "capacity": 40})
    assert ack["ok"], ack
    assert command(broker, sub, dev, "t1", {"cmd": "tare", "lane": 0})["ok"]
    bad = [
        ("b1", {"cmd": "tare", "lane": 7}),
        ("b2", {"cmd": "planogram", "lane": 1, "sku": "X", "unit_g": -3, "capacity": 1}),
        ("b3", {"cmd": "self_destruct"}),
    ]
    for cid, body in bad:
        a = command(broker, sub, dev, cid, body)
        assert a["ok"] is False and a["error"], a
    send_command(broker, "{this is not json")
    wait_for(lambda: None in acks(sub), 20, "the ack of a malformed command", dev)
    assert acks(sub)[None]["ok"] is False
    dev.pick(2)  # a 250 g item off a lane that now holds 125 g items: two of them
    wait_for(lambda: events(sub), 20, "the pick", dev)
    assert [(e["lane"], e["count"], e["sku"]) for e in events(sub)] == [(2, -2, "TEA-125")]
    # Reboot by command: the ack goes out first, then the board restarts.
    assert command(broker, sub, dev, "r1", {"cmd": "reboot"})["ok"]
    assert dev.proc is not None and dev.proc.wait(20) == 75  # device_proc's reset status
    saved = json.loads((dev.flash / "config.json").read_text())
    assert saved["lanes"][2]["sku"] == "TEA-125" and saved["lanes"][2]["unit_g"] == 125
    assert abs(saved["lanes"][0]["offset"] - (OFFSETS[0] + 2500 * CPG)) < 2 * CPG
    dev.start()
    wait_for(lambda: sum(s.get("state") == "online" for s in status(sub)) >= 2, 30,
             "online again", dev)
    time.sleep(2.5)
    st = command(broker, sub, dev, "s2", {"cmd": "status"})["result"]
    assert st["boot"] == 2
    assert abs(st["lanes"][0]["grams"]) < 2  # tared with its stock on it
    assert st["lanes"][2]["sku"] == "TEA-125"
    dev.send(f"load 0 {UNIT_G} 400")  # one more item on the tared lane
    wait_for(lambda: len(events(sub)) >= 2, 20, "a put-back after the reboot", dev)
    last = events(sub)[-1]
    assert (last["lane"], last["count"], last["seq"], last["boot"]) == (0, 1, 2, 2)
    assert abs(last["after_g"] - UNIT_G) < 5


def test_an_invalid_config_is_reported_not_crash_looped(broker, subscribers, device_factory):
    sub = subscribers(broker, BASE + "/status")
    cfg = shelf_config(broker)
    cfg["lanes"][1]["gain"] = 40
    cfg["telemetry_s"] = "often"
    dev = device_factory(cfg).start()
    wait_for(lambda: status(sub), 30, "a status", dev)
    st = status(sub)[-1]
    assert st["state"] == "fault"
    assert any("lanes[1].gain" in e for e in st["errors"]), st
    assert any("telemetry_s" in e for e in st["errors"]), st
    time.sleep(2)
    assert dev.proc is not None and dev.proc.poll() is None  # idling, not restarting
    assert "config error:" in dev.console()


def test_wifi_loss_keeps_events_and_the_status_follows(broker, subscribers, device_factory):
    sub = subscribers(broker, BASE + "/#", client_id="observer-4", persistent=True)
    dev = device_factory(shelf_config(broker)).start()
    wait_for(lambda: any(s.get("state") == "online" for s in status(sub)), 30, "online", dev)
    time.sleep(2.5)
    picks_every(dev, 2)
    dev.send("wifi down")  # the access point goes away: the TCP connection with it
    wait_for(lambda: status(sub)[-1].get("state") == "offline", 20, "the will", dev)
    picks_every(dev, 4)  # sold while offline: stored on flash
    time.sleep(1.5)
    assert len(events(sub)) == 2
    dev.send("wifi up")
    wait_for(lambda: len(unique_by_seq(events(sub))) >= 6, 30, "the stored events", dev)
    got = unique_by_seq(events(sub))
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    assert [got[s]["lane"] for s in sorted(got)] == [0, 1, 0, 1, 2, 0]
    # The retained status is right again: a newcomer sees the device online.
    wait_for(lambda: status(sub)[-1].get("state") == "online", 20, "online again", dev)
    late = subscribers(broker, BASE + "/status")
    wait_for(lambda: late.messages, 10, "the retained status")
    assert late.messages[0].retain and json.loads(late.messages[0].payload)["state"] == "online"


def test_a_flood_of_malformed_commands_is_answered_and_sampling_goes_on(
        broker, subscribers, device_factory):
    import random

    sub = subscribers(broker, BASE + "/#", client_id="observer-5", persistent=True)
    dev = device_factory(shelf_config(broker)).start()
    wait_for(lambda: any(s.get("state") == "online" for s in status(sub)), 30, "online", dev)
    time.sleep(2.5)
    rng = random.Random(5)
    shapes = [
        lambda i: {"id": f"f{i}", "cmd": rng.choice(["tare", "calibrate", "planogram"]),
                   "lane": rng.choice([-1, 3, 99, "0", True, 1.5])},
        lambda i: {"id": f"f{i}", "cmd": "calibrate", "lane": 0,
                   "grams": rng.choice([0, -5, "1000", None, 1e12])},
        lambda i: {"id": f"f{i}", "cmd": rng.choice(["", "TARE", "rm -rf", "x" * 300])},
        lambda i: {"id": f"f{i}", "cmd": "telemetry", "period_s": rng.choice([0, -1, "5", 1e9])},
        lambda i: {"id": f"f{i}", "cmd": "planogram", "lane": 1, "sku": "",
                   "unit_g": 10, "capacity": 1},
        lambda i: {"id": f"f{i}", "cmd": "status", "extra": rng.random()},
    ]
    n = 120
    ids = [f"f{i}" for i in range(n)]
    dev.pick(0)
    for i in range(n):  # a few in flight at a time, as a real operator's tool would send
        send_command(broker, json.dumps(shapes[i % len(shapes)](i)))
        if i % 6 == 5:
            wait_for(lambda i=i: f"f{i}" in acks(sub), 20, f"the ack of f{i}", dev)
        if i == n // 2:
            dev.pick(2)
    wait_for(lambda: all(c in acks(sub) for c in ids), 30, "every ack", dev)
    got = acks(sub)
    accepted = [c for c in ids if got[c]["ok"] is not False or not got[c]["error"]]
    assert accepted == [], [got[c] for c in accepted]
    wait_for(lambda: len(events(sub)) >= 2, 20, "both picks", dev)
    assert [(e["lane"], e["count"]) for e in events(sub)] == [(0, -1), (2, -1)]
    assert dev.proc is not None and dev.proc.poll() is None


def test_tls_and_per_device_credentials(make_broker, certs, subscribers, device_factory):
    users = {DEVICE: "shelf-e2e-password", "observer": "observer-password"}
    broker = make_broker(users=users, certs=certs)
    cfg = shelf_config(broker)
    cfg["broker"].update({"username": DEVICE, "password": users[DEVICE], "ca_file": "ca.pem"})
    assert cfg["broker"]["url"].startswith("mqtts://")
    dev = device_factory(cfg)
    (dev.flash / "ca.pem").write_bytes(certs.ca.read_bytes())  # provisioning puts it there
    sub = subscribers(broker, BASE + "/#")  # logs in as the first user: the device's own
    dev.start()
    wait_for(lambda: any(s.get("state") == "online" for s in status(sub)), 30, "online", dev)
    time.sleep(2.5)
    dev.pick(1)
    wait_for(lambda: events(sub), 20, "the pick over TLS", dev)
    assert [(e["lane"], e["count"]) for e in events(sub)] == [(1, -1)]
    assert f"u'{DEVICE}'" in broker.log_text()  # logged in with its own user name


def test_wrong_credentials_are_refused_and_retried_not_fatal(make_broker, certs,
                                                              device_factory):
    broker = make_broker(users={DEVICE: "right-password"}, certs=certs)
    cfg = shelf_config(broker)
    cfg["broker"].update({"username": DEVICE, "password": "wrong-password",
                          "ca_file": "ca.pem"})
    dev = device_factory(cfg)
    (dev.flash / "ca.pem").write_bytes(certs.ca.read_bytes())
    dev.start()
    wait_for(lambda: broker.log_text().count("not authorised") >= 2, 30,
             "two refused attempts", dev)
    assert dev.proc is not None and dev.proc.poll() is None  # still sampling, still retrying
