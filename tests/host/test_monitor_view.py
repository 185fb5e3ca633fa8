"""The monitor's live view rendered from a state fed by hand: what a technician reads."""

from __future__ import annotations

from rich.console import Console

from host_tools.monitor.state import MonitorState
from host_tools.monitor.view import render

T0 = 1_767_225_600.0


def _screen(state: MonitorState, now: float) -> str:
    console = Console(width=170, record=True, color_system=None)
    console.print(render(state, "shelfctl monitor: mqtt://broker", now, height=40))
    return console.export_text()


def _event(state: MonitorState, t: float, device: str, seq: int, type_: str, **fields) -> None:
    ev = {"v": 1, "device": device, "seq": seq, "boot": 1, "type": type_,
          "ts": int(t * 1000), "uptime_ms": 1000, **fields}
    state.ingest(t, f"store/v1/s1/{device}/event", ev)


def test_view_shows_devices_carts_receipts_and_events():
    s = MonitorState()
    s.ingest(T0, "store/v1/s1/shelf-1/status", {"state": "online", "device": "shelf-1",
                                                 "role": "shelf", "fw": "0.3.0", "boot": 2},
             retain=True)
    s.ingest(T0 + 1, "store/v1/s1/shelf-1/telemetry",
             {"v": 1, "device": "shelf-1", "uptime_ms": 5000, "fw": "0.3.0", "heap_free": 81920,
              "rssi": -61, "outbox_depth": 3, "outbox_dropped": 0,
              "faulted": [False, True, False]})
    s.ingest(T0, "store/v1/s1/gate-1/status", {"state": "offline", "device": "gate-1"},
             retain=True)
    _event(s, T0 + 2, "gate-1", 1, "scan", code="SHOPPER-7", source="scanner")
    _event(s, T0 + 5, "shelf-1", 1, "pick", lane=0, sku="COKE-330", count=-2, delta_g=-700.0,
           before_g=1400.0, after_g=700.0, confidence=0.9)
    _event(s, T0 + 9, "shelf-1", 2, "put", lane=0, sku="COKE-330", count=1, delta_g=350.0,
           before_g=700.0, after_g=1050.0, confidence=0.9)
    _event(s, T0 + 12, "gate-1", 2, "scan", code="SHOPPER-7", source="scanner")
    _event(s, T0 + 13, "gate-1", 3, "scan", code="SHOPPER-8", source="scanner")
    screen = _screen(s, T0 + 20)
    shelf = next(line for line in screen.splitlines() if "shelf-1" in line and "online" in line)
    for cell in ("shelf", "-61 dBm", "80 KB", "3", "1 lane faulted", "0.3.0"):
        assert cell in shelf, (cell, shelf)
    assert any("gate-1" in line and "offline" in line for line in screen.splitlines())
    receipt = next(line for line in screen.splitlines() if "SHOPPER-7" in line and
                   "receipt" in line)
    assert "COKE-330 x1" in receipt  # two taken, one put back
    assert any("SHOPPER-8" in line and "in store" in line for line in screen.splitlines())
    assert "pick" in screen and "put" in screen and "scan" in screen
