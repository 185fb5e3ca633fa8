"""`shelfctl monitor` and `shelfctl replay` as a user runs them (processes of their own),
against a real mosquitto. Messages are published with mosquitto_pub, an independent client;
what a replay sends is seen by mosquitto_sub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from host_tools.mosquitto import free_port

from .conftest import AUTH_USERS, Broker, Subscriber, tool

SHELFCTL = [sys.executable, "-m", "host_tools.cli"]
STATUS = '{"state":"online","device":"shelf-1","role":"shelf","fw":"0.3.0","boot":2,"ts":null}'
TELEMETRY = ('{"v":1,"device":"shelf-1","uptime_ms":60000,"fw":"0.3.0","heap_free":81920,'
             '"heap_alloc":30000,"rssi":-61,"outbox_depth":0,"outbox_dropped":0,"outbox_bytes":0,'
             '"time_synced":false,"ts":null,"sps":[10],"faults":[0],"faulted":[false],'
             '"glitches":[0]}')


def event(device: str, seq: int, kind: str, **fields) -> str:
    ev = {"v": 1, "device": device, "seq": seq, "boot": 2, "type": kind, "ts": None,
          "uptime_ms": 1000 * seq, **fields}
    return json.dumps(ev, separators=(",", ":"))


def shelf(seq: int, sku: str, count: int, device: str = "shelf-1") -> str:
    return event(device, seq, "pick" if count < 0 else "put", lane=0, sku=sku, count=count,
                 delta_g=-250.0 * count, before_g=2500.00, after_g=2500.0 - 250.0 * count,
                 confidence=0.9)


def publish(broker: Broker, topic: str, payload: str, retain: bool = False) -> None:
    cmd = [tool("mosquitto_pub"), "-h", broker.host, "-p", str(broker.port), "-q", "1",
           "-t", topic, "-m", payload] + (["-r"] if retain else [])
    subprocess.run(cmd, check=True, timeout=10)


def shelfctl(*args: str, env: dict | None = None, timeout: float = 30):
    return subprocess.run([*SHELFCTL, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def wait_for(condition, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def lines_of(path: Path) -> list[dict]:
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.endswith("}")]


def one_line_error(proc: subprocess.CompletedProcess, *parts: str) -> None:
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("shelfctl: ")
    for part in parts:
        assert part in err, err


def test_json_mode_prints_status_telemetry_and_events_and_replay_reproduces_them(
        make_broker, tmp_path: Path):
    broker = make_broker()
    publish(broker, "store/v1/s1/shelf-1/status", STATUS, retain=True)
    record = tmp_path / "rec.jsonl"
    mon = subprocess.Popen([*SHELFCTL, "monitor", "--json", "--broker", broker.url, "--store",
                            "s1", "--count", "4", "--record", str(record)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert mon.stdout is not None
        first = json.loads(mon.stdout.readline())  # the retained status: it has subscribed
        publish(broker, "store/v1/other-store/shelf-9/event", shelf(1, "NOT-MINE", -1))
        publish(broker, "store/v1/s1/shelf-1/telemetry", TELEMETRY)
        publish(broker, "store/v1/s1/shelf-1/event", shelf(1, "COKE-330", -2))
        publish(broker, "store/v1/s1/gate-1/event", "not json")
        rest = [json.loads(line) for line in mon.stdout.read().splitlines()]
        assert mon.wait(15) == 0, mon.stderr.read() if mon.stderr else ""
    finally:
        if mon.poll() is None:
            mon.kill()
    got = [first, *rest]
    assert [(m["topic"], m["retain"]) for m in got] == [
        ("store/v1/s1/shelf-1/status", True), ("store/v1/s1/shelf-1/telemetry", False),
        ("store/v1/s1/shelf-1/event", False), ("store/v1/s1/gate-1/event", False)]
    assert got[0]["payload"] == json.loads(STATUS)
    assert got[1]["payload"]["rssi"] == -61
    assert got[2]["payload"]["count"] == -2 and got[2]["qos"] == 1
    assert got[3]["payload"] == "not json" and got[3]["text"] is True
    assert all(isinstance(m["t"], float) for m in got)
    assert lines_of(record) == got  # --record: the same lines

    # replay into a fresh broker: the same topics and payload bytes, in order
    fresh = make_broker()
    live = Subscriber(fresh, "store/v1/#").start()
    try:
        proc = shelfctl("replay", str(record), "--broker", fresh.url, "--speed", "0")
        assert proc.returncode == 0, proc.stderr
        assert "replayed 4 messages" in proc.stdout
        wait_for(lambda: len(live.messages) == 4, "the replayed messages")
        assert [(m.topic, m.payload) for m in live.messages] == [
            ("store/v1/s1/shelf-1/status", STATUS), ("store/v1/s1/shelf-1/telemetry", TELEMETRY),
            ("store/v1/s1/shelf-1/event", shelf(1, "COKE-330", -2)),
            ("store/v1/s1/gate-1/event", "not json")]
    finally:
        live.stop()
    # the status was recorded as retained: the fresh broker now keeps it
    later = Subscriber(fresh, "store/v1/s1/shelf-1/status").start()
    try:
        wait_for(lambda: len(later.messages) == 1, "the retained status")
        assert later.messages[0].retain and later.messages[0].payload == STATUS
    finally:
        later.stop()


def test_a_shoppers_cart_and_receipt_in_the_live_view(broker, tmp_path: Path):
    publish(broker, "store/v1/s1/shelf-1/status", STATUS, retain=True)
    record = tmp_path / "rec.jsonl"
    # not a terminal: rich prints the view's last screen when the monitor stops
    mon = subprocess.Popen([*SHELFCTL, "monitor", "--broker", broker.url, "--count", "8",
                            "--record", str(record)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
    try:
        wait_for(lambda: lines_of(record), "the monitor to subscribe")
        gate, shelf_1 = "store/v1/s1/gate-1/event", "store/v1/s1/shelf-1/event"
        scan = event("gate-1", 1, "scan", code="SHOPPER-42", source="scanner")
        publish(broker, gate, scan)
        publish(broker, shelf_1, shelf(1, "COKE-330", -2))
        publish(broker, shelf_1, shelf(2, "COKE-330", +1))
        publish(broker, shelf_1, shelf(2, "COKE-330", +1))  # resent: a duplicate
        publish(broker, "store/v1/s1/shelf-2/event", shelf(1, "WATER-500", -1, "shelf-2"))
        publish(broker, gate, scan)  # the entry scan resent: must not end the visit
        publish(broker, gate, event("gate-1", 2, "scan", code="SHOPPER-42", source="scanner"))
        out, err = mon.communicate(timeout=20)
    finally:
        if mon.poll() is None:
            mon.kill()
    assert mon.returncode == 0, err
    assert "receipt: COKE-330 x1, WATER-500 x1" in out, out
    assert "2 duplicates dropped" in out, out
    row = next(line for line in out.splitlines() if "shelf-1" in line and "online" in line)
    assert "-61" not in row  # no telemetry was sent: nothing made up
    receipt = next(line for line in out.splitlines() if "receipt:" in line)
    assert "SHOPPER-42" in receipt and "?" not in receipt  # one shopper: nothing ambiguous


def test_an_unreachable_broker_is_one_line(tmp_path: Path):
    url = f"mqtt://127.0.0.1:{free_port()}"
    one_line_error(shelfctl("monitor", "--json", "--broker", url), url, "connection refused")
    rec = tmp_path / "rec.jsonl"
    rec.write_text('{"t":1.0,"topic":"a/b","retain":false,"qos":0,"payload":1}\n')
    one_line_error(shelfctl("replay", str(rec), "--broker", url), "connection refused")
    one_line_error(shelfctl("monitor", "--broker", "http://127.0.0.1"), "mqtt://host")


def test_replay_names_a_bad_line_before_sending_anything(tmp_path: Path):
    rec = tmp_path / "rec.jsonl"
    rec.write_text('{"t":1.0,"topic":"a/b","retain":false,"qos":0,"payload":1}\n'
                   '{"t":2.0,"topic":"a/b","retain":false,"qos":0,"payload":\n')
    # the broker does not even exist: the file is checked before connecting
    proc = shelfctl("replay", str(rec), "--broker", f"mqtt://127.0.0.1:{free_port()}")
    one_line_error(proc, f"{rec}:2: not JSON")
    one_line_error(shelfctl("replay", str(rec), "--broker", "mqtt://127.0.0.1", "--speed",
                            "-1"), "--speed")


def test_credentials_from_a_file_or_the_environment_never_printed(make_broker, tmp_path: Path):
    broker = make_broker(users=AUTH_USERS)
    user, password = next(iter(AUTH_USERS.items()))
    secret_file = tmp_path / "password"
    secret_file.write_text("wrong one\n")
    proc = shelfctl("monitor", "--json", "--broker", broker.url, "--user", user,
                    "--password-file", str(secret_file), "--count", "1")
    one_line_error(proc, "the broker refused the connection")
    assert "wrong one" not in proc.stderr + proc.stdout
    proc = shelfctl("monitor", "--json", "--broker", broker.url, "--count", "1")
    one_line_error(proc, "the broker refused the connection")  # no anonymous users here
    # the right password, from the environment: subscribed, it gets a retained status
    env = {"SHELFCTL_MQTT_PASSWORD": password}
    sub = subprocess.Popen([*SHELFCTL, "monitor", "--json", "--broker", broker.url, "--user",
                            user, "--count", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env={**os.environ, **env})
    rec = tmp_path / "rec.jsonl"
    rec.write_text(json.dumps({"t": 1.0, "topic": "store/v1/s1/shelf-1/status", "retain": True,
                               "qos": 1, "payload": json.loads(STATUS)}) + "\n")
    secret_file.write_text(password + "\n")
    proc = shelfctl("replay", str(rec), "--broker", broker.url, "--user", user,
                    "--password-file", str(secret_file))
    assert proc.returncode == 0, proc.stderr
    out, err = sub.communicate(timeout=20)
    assert sub.returncode == 0, err
    assert json.loads(out)["payload"]["state"] == "online"
    assert password not in out + err + proc.stdout + proc.stderr


def test_tls_with_the_brokers_ca_and_a_clear_line_with_another(make_broker, certs):
    broker = make_broker(certs=certs)
    assert broker.url.startswith("mqtts://")
    one_line_error(shelfctl("monitor", "--json", "--broker", broker.url, "--cafile",
                            str(certs.other_ca), "--count", "1"), "certificate not trusted")
    mon = subprocess.Popen([*SHELFCTL, "monitor", "--json", "--broker", broker.url, "--cafile",
                            str(certs.ca), "--count", "1"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    cmd = [tool("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(broker.port), "--cafile",
           str(certs.ca), "-q", "1", "-r", "-t", "store/v1/s1/shelf-1/status", "-m", STATUS]
    subprocess.run(cmd, check=True, timeout=10)
    out, err = mon.communicate(timeout=20)
    assert mon.returncode == 0, err
    assert json.loads(out)["payload"] == json.loads(STATUS)
