"""Run the whole shelf controller (apps.device) inside the MicroPython 1.29 VM.

The firmware runs as on a board, asyncio and all, on the fake board of host_tools/sim/hw
(fake HX711 chips speaking the pin protocol, in real time) with the in-process loopback
broker standing in for mosquitto (the VM has no sockets). Used by a test (the runtime works in
the real VM) and by `make bench` (its steady heap).

    result = run_device_in_vm(lanes=6, seconds=8, picks=[(2.5, 0), (3.5, 3)])
    result["events"]   # the event payloads the broker received, parsed
    result["heap"]     # gc.mem_alloc() figures, bytes
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from host_tools.firmware import HW_DIR, REPO
from host_tools.mpy import compile_tree
from host_tools.vm import run_micropython

SUPPORT = HW_DIR
BOARD = REPO / "boards" / "virtual.json"
UNIT_G = 250
CPG = 420

_SCRIPT = r"""
import gc, json, time, asyncio

def _deep(n):
    x = [0] * 8
    return _deep(n - 1) + 1 if n else len(x)

def settle():
    # gc is conservative: overwrite stale pointers on the stack first, then collect
    _deep(12)
    gc.collect()
    gc.collect()
    return gc.mem_alloc()

base = settle()
import machine, network
from fake_hx711 import FakeHX711
from loopback_broker import LoopbackBroker
SPEC = json.loads(SPEC_JSON)
clock = machine.fake_reset(realtime=True)
network.fake_reset_network()
board = json.load(open("board.json"))
picks = SPEC["picks"]

def source_for(lane):
    offset = 100000 * (lane + 1)
    def source(gain):
        t = clock.now / 1000000
        g = SPEC["start_g"]
        for at, which in picks:
            if which == lane and t >= at:
                g -= SPEC["unit_g"] * min(1.0, (t - at) / 0.4)
        return offset + int(g * SPEC["cpg"]) + (clock.now // 997) % 40 - 20
    return source

for i in range(SPEC["lanes"]):
    FakeHX711(board["hx711"]["sck"], board["hx711"]["dout"][i], source_for(i),
              sps=SPEC["sps"], settle=1, history=8)
broker = LoopbackBroker()
harness = settle()
from apps import device
# every module a running shelf uses (the config schema is loaded and dropped by boot())
import apps.sampler, net.mqtt, net.transport, net.clock, net.wifi, drivers.hx711
imported = settle()

async def sntp(clock, host):
    clock.set_utc_ms(1795600000000)
    return True

parts = device.Parts(wlan=network.WLAN(network.STA_IF), transport=broker, sntp=sntp)
dev = await device.boot(parts)
booted = settle()
task = asyncio.create_task(dev.main())
await asyncio.sleep_ms(int(SPEC["seconds"] * 1000))
steady = settle()
free = gc.mem_free()
events = [p.decode() for t, p, q, r in broker.published if t.endswith("/event")]
status = [p.decode() for t, p, q, r in broker.published if t.endswith("/status")]
print("@@device " + json.dumps({
    "heap": {"base": base, "harness": harness, "imported": imported, "booted": booted,
             "steady": steady, "free": free},
    "events": events, "status": status, "connects": broker.connects,
    "samples": [dev.sampler.samples[i] for i in range(dev.lanes)],
    "outbox_depth": dev.outbox.depth}))
"""


def shelf_config(lanes: int, sps: int) -> dict:
    return {
        "device": "shelf-vm", "store": "store-1", "role": "shelf", "board": "virtual",
        "wifi": {"ssid": "store-wifi", "password": "store-secret"},
        "broker": {"url": "mqtt://127.0.0.1:1883", "keepalive_s": 30},
        "telemetry_s": 5, "sps": sps,
        "lanes": [{"gain": 128, "offset": 100000 * (i + 1), "counts_per_gram": CPG,
                   "sku": f"SKU-{i}", "unit_g": UNIT_G, "capacity": 20}
                  for i in range(lanes)],
    }


def run_device_in_vm(lanes: int = 6, seconds: float = 8.0, sps: int = 10,
                     picks: list[tuple[float, int]] | None = None, heap_kb: int = 192,
                     timeout_s: float = 300.0, mpy: bool = False) -> dict:
    """Run the device for `seconds` (real time) in a fresh VM; picks: (time s, lane).
    mpy: run the firmware compiled by mpy-cross, as deployed, instead of its source."""
    spec = {"lanes": lanes, "seconds": seconds, "sps": sps, "picks": picks or [],
            "start_g": 10 * UNIT_G, "unit_g": UNIT_G, "cpg": CPG}
    script = _SCRIPT.replace("SPEC_JSON", repr(json.dumps(spec)))
    files = {
        "/config.json": json.dumps(shelf_config(lanes, sps)),
        "/board.json": BOARD.read_text(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        mounts = {"/lib": SUPPORT}
        if mpy:
            compile_tree(Path(tmp))
            mounts = {"/": Path(tmp), "/lib": SUPPORT}
        result = run_micropython(script, mounts=mounts, files=files, heap_kb=heap_kb,
                                 timeout_s=timeout_s, async_=True, firmware=not mpy).check()
    for line in result.stdout.splitlines():
        if line.startswith("@@device "):
            out = json.loads(line[len("@@device "):])
            out["events"] = [json.loads(e) for e in out["events"]]
            out["status"] = [json.loads(s) for s in out["status"]]
            out["stdout"] = result.stdout
            return out
    raise RuntimeError(f"the device run printed no result:\n{result.stdout}\n{result.stderr}")


if __name__ == "__main__":  # a quick look: python -m host_tools.vm.device_run
    r = run_device_in_vm(picks=[(3.0, 0), (4.0, 3)])
    print(json.dumps({k: v for k, v in r.items() if k != "stdout"}, indent=1))
