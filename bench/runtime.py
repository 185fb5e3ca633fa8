"""Runtime benchmarks for `make bench`: outbox replay rate to a real mosquitto, and the steady
heap of the whole shelf controller in the MicroPython VM.

Replay: a backlog of events as a busy shelf stores them during a 60 s outage (10 events/s,
600 events) sits in the outbox; the broker comes back; the firmware's runtime (apps.device,
CPython, fake board sampling 6 lanes at 80 SPS meanwhile) sends it. Measured from the broker's
start to the last PUBACK (outbox empty), for the device's MQTT window of 8 and, side by side
on a copy of the same backlog, for a window of 1 (stop-and-wait: what umqtt.simple does for
QoS 1). Heap: apps.device with a 6-lane shelf, its MQTT client and outbox, run for 10 s in the
VM; modules (bytecode) and runtime objects apart.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from host_tools.firmware import HW_DIR, REPO, use_firmware
from host_tools.mosquitto import Broker, ToolMissing

SUPPORT = HW_DIR
BOARD = REPO / "boards" / "virtual.json"
UNIT_G = 250
CPG = 420


def _config(url: str) -> dict:
    return {
        "device": "shelf-bench", "store": "store-1", "role": "shelf", "board": "virtual",
        "wifi": {"ssid": "store-wifi", "password": "store-secret"},
        "broker": {"url": url, "keepalive_s": 30}, "telemetry_s": 60, "sps": 80,
        "outbox": {"budget_kb": 256},
        "lanes": [{"gain": 128, "offset": 100000 * (i + 1), "counts_per_gram": CPG,
                   "sku": f"SKU-{i}", "unit_g": UNIT_G, "capacity": 20} for i in range(6)],
    }


def _fake_board() -> None:
    import machine
    from fake_hx711 import FakeHX711

    machine.fake_reset(realtime=True)
    board = json.loads(BOARD.read_text())
    for i in range(6):
        level = 100000 * (i + 1) + 10 * UNIT_G * CPG

        def source(gain, level=level):
            return level + (machine.fake_clock().now // 997) % 60 - 30

        FakeHX711(board["hx711"]["sck"], board["hx711"]["dout"][i], source, sps=80, settle=1,
                  history=8)


async def _sntp(clock, host) -> bool:
    clock.set_utc_ms(int(time.time() * 1000))
    return True


def _make_backlog(flash: Path, events: int) -> None:
    """Store `events` pick events in the device's outbox, as the runtime does while offline."""
    from apps import device
    from core.detector import Change

    cwd = os.getcwd()
    os.chdir(flash)
    try:
        _fake_board()
        dev = asyncio.run(device.boot(device.Parts(sntp=_sntp)))
        for k in range(events):
            lane = k % 6
            dev._on_change(Change(lane, k * 100, -1, -UNIT_G * 100, 250000, 225000, 97,
                                  f"SKU-{lane}"))
        dev.outbox.close()
    finally:
        os.chdir(cwd)


async def _replay(flash: Path, broker: Broker, window: int, timeout_s: float) -> dict:
    from apps import device

    cwd = os.getcwd()
    os.chdir(flash)
    try:
        _fake_board()
        dev = await device.boot(device.Parts(sntp=_sntp))
        dev.mqtt.window = window
        backlog = dev.outbox.depth
        broker.start()
        t0 = time.perf_counter()
        task = asyncio.create_task(dev.main())
        while dev.outbox.depth > 0:
            if time.perf_counter() - t0 > timeout_s:
                break
            await asyncio.sleep(0.005)
        dt = time.perf_counter() - t0
        left = dev.outbox.depth
        samples = [dev.sampler.samples[i] for i in range(6)] if dev.sampler else []
        task.cancel()
        await dev.mqtt.stop()
        broker.stop()
        return {"window": window, "backlog_events": backlog, "seconds": round(dt, 3),
                "events_per_s": round((backlog - left) / dt, 1), "left_unsent": left,
                "lane_readings_meanwhile": samples}
    finally:
        os.chdir(cwd)


def outbox_replay(outage_s: int = 60, events_per_s: int = 10) -> dict:
    use_firmware(SUPPORT)
    events = outage_s * events_per_s
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        broker = Broker(root / "broker")
        try:
            flash = root / "flash"
            flash.mkdir()
            (flash / "config.json").write_text(json.dumps(_config(broker.url)))
            (flash / "board.json").write_text(BOARD.read_text())
            _make_backlog(flash, events)
            copy = root / "flash-copy"
            shutil.copytree(flash, copy)
            out = {"backlog": f"{events} events ({outage_s} s outage at {events_per_s}/s)"}
            out["device_window_8"] = asyncio.run(_replay(flash, broker, 8, 120))
            out["stop_and_wait_window_1"] = asyncio.run(_replay(copy, broker, 1, 300))
        except ToolMissing as exc:
            return {"error": str(exc)}
        finally:
            broker.stop()
    out["target"] = ">= 200 events/s"
    out["met"] = out["device_window_8"]["events_per_s"] >= 200
    out["note"] = ("firmware runtime in CPython on this host (not an ESP32), plain MQTT on "
                   "loopback, fake board sampling 6 lanes at 80 SPS during the replay")
    return out


def device_heap_vm(seconds: float = 10.0) -> dict:
    """Whole-device heap in the VM, firmware as deployed (.mpy): modules (every module a
    running shelf imports) and runtime objects after `seconds` of running."""
    from host_tools.vm import node_available
    from host_tools.vm.device_run import run_device_in_vm

    if not node_available():
        return {"error": "MicroPython VM not installed (run make setup)"}
    r = run_device_in_vm(lanes=6, seconds=seconds, sps=80, picks=[(3.0, 1), (4.0, 4)],
                         mpy=True)
    total = r["heap"]["steady"] - r["heap"]["harness"]
    return {
        "firmware_steady_bytes": total,
        "target": "<= 40 KB steady heap",
        "met": total <= 40 * 1024,
        "events_published": len(r["events"]),
        "note": (f"6-lane shelf at 80 SPS, MQTT client (loopback broker), outbox, all tasks, "
                 f"after {seconds:g} s; firmware as deployed (.mpy from mpy-cross 1.29), "
                 f"config schema dropped after boot; the fake board and broker are left out. "
                 f"Nearly all of it is module code, which stays in the heap unless frozen or "
                 f"on a ROMFS; objects alone cannot be told apart reliably here (the GC is "
                 f"conservative and keeps import garbage alive for a while)"),
    }


def device_heap_unix() -> dict:
    """The same workload under MicroPython unix-port binaries built 32-bit, firmware as .mpy
    files and frozen into the binary (docs/runtime.md, "Heap with frozen firmware"). Runs only
    where the binaries were built: commands in $SHELF_MP_UNIX (plain) and $SHELF_MP_UNIX_FROZEN
    (built with firmware/manifest.py)."""
    import os
    import shlex

    from host_tools.vm.device_heap_unix import run_device_unix

    plain, frozen = os.environ.get("SHELF_MP_UNIX"), os.environ.get("SHELF_MP_UNIX_FROZEN")
    if not plain or not frozen:
        return {"skipped": "set SHELF_MP_UNIX and SHELF_MP_UNIX_FROZEN to unix-port builds "
                           "(docs/runtime.md, 'Heap with frozen firmware')"}
    out = {}
    for mode, cmd in (("mpy", plain), ("frozen", frozen)):
        r = run_device_unix(shlex.split(cmd), mode, lanes=6, seconds=10.0, sps=80,
                            picks=[(3.0, 1), (4.0, 4)])
        out[mode] = {"firmware_steady_bytes": r["heap"]["steady"] - r["heap"]["harness"],
                     "events_published": len(r["events"])}
    out["target"] = "<= 40 KB steady heap"
    out["met_frozen"] = out["frozen"]["firmware_steady_bytes"] <= 40 * 1024
    return out


if __name__ == "__main__":
    print(json.dumps({"outbox_replay": outbox_replay(), "heap": device_heap_vm()}, indent=1))
