"""The whole shelf controller (apps.device: asyncio tasks, MQTT client, outbox, sampler) runs
in the real MicroPython 1.29 VM, on the fake board, with the loopback broker (no sockets
there). A mosquitto-backed run of the same runtime is tests/broker/test_device.py."""

from __future__ import annotations

from host_tools.vm.device_run import UNIT_G, run_device_in_vm


def test_device_runs_in_the_vm_and_publishes_its_events():
    r = run_device_in_vm(lanes=6, seconds=7, picks=[(3.0, 0), (3.6, 4), (4.2, 2)])
    evs = r["events"]
    assert [e["seq"] for e in evs] == [1, 2, 3]
    assert [(e["lane"], e["count"], e["type"]) for e in evs] == [
        (0, -1, "pick"), (4, -1, "pick"), (2, -1, "pick")]
    for e in evs:
        # the VM samples in real time: the 10 SPS reading may catch the 400 ms lift's last
        # percent, and a near-still level within 4 % of an item is already reported
        assert abs(e["delta_g"] + UNIT_G) < 0.04 * UNIT_G
        assert e["ts"] is not None and e["boot"] == 1
    assert r["status"][0]["state"] == "online" and r["connects"] == 1
    assert r["outbox_depth"] == 0  # every event acknowledged and off the flash
    assert all(s > 40 for s in r["samples"])  # every lane sampled (10 SPS chips)
