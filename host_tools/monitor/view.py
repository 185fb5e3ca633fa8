"""The live terminal view of a MonitorState, with rich: devices, shoppers' carts and receipts,
and the latest events. render() builds the whole screen from the state; the caller decides
how often (a few times a second, never per message)."""

from __future__ import annotations

import time

from rich.console import Group
from rich.table import Table
from rich.text import Text

from host_tools.monitor.state import Cart, Device, MonitorState

STATE_STYLE = {"online": "green", "offline": "red", "fault": "bold red"}
EVENT_STYLE = {"pick": "cyan", "put": "magenta", "change": "yellow", "fault": "bold red",
               "scan": "blue", "entry": "blue", "exit": "blue"}


def _ago(t: float | None, now: float) -> str:
    if t is None:
        return "-"
    s = max(0.0, now - t)
    if s < 60:
        return f"{s:.0f} s ago"
    if s < 3600:
        return f"{s / 60:.0f} min ago"
    return f"{s / 3600:.1f} h ago"


def _num(v: int | None, unit: str = "") -> str:
    return "-" if v is None else f"{v}{unit}"


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def devices_table(devices: list[Device], now: float, several_stores: bool) -> Table:
    table = Table(title="devices", title_justify="left", expand=True)
    if several_stores:
        table.add_column("store")
    for name in ("device", "role", "state", "last seen", "RSSI", "heap free", "outbox",
                 "faults", "fw", "events", "dups"):
        table.add_column(name, justify="right" if name in ("RSSI", "heap free", "outbox",
                                                           "events", "dups") else "left")
    for d in devices:
        outbox = _num(d.outbox_depth)
        if d.outbox_dropped:
            outbox += f" ({d.outbox_dropped} dropped)"
        faults = []
        if d.faulted_lanes:
            faults.append(f"{d.faulted_lanes} lane{'s' if d.faulted_lanes > 1 else ''} faulted")
        if d.fault_events:
            faults.append(f"{d.fault_events} events")
        if d.last_fault:
            faults.append(d.last_fault[:40])
        cells = [d.device, d.role or "-", Text(d.state, STATE_STYLE.get(d.state, "dim")),
                 _ago(d.last_seen, now), _num(d.rssi, " dBm"),
                 "-" if d.heap_free is None else f"{d.heap_free // 1024} KB", outbox,
                 Text(", ".join(faults) or "-", "red" if faults else ""), d.fw or "-",
                 str(d.events), str(d.duplicates)]
        table.add_row(*([d.store] if several_stores else []), *cells)
    return table


def cart_items(cart: Cart) -> Text:
    """SKU x2, SKU x1 ? (? : attributed while other shoppers were in the store)."""
    text = Text()
    ambiguous = cart.ambiguous()
    for i, (sku, qty) in enumerate(cart.receipt().items()):
        if i:
            text.append(", ")
        text.append(f"{sku} x{qty}")
        if sku in ambiguous:
            text.append(" ?", "bold yellow")
    return text if text.plain else Text("(nothing)", "dim")


def carts_table(state: MonitorState, now: float, receipts: int = 8) -> Table:
    table = Table(title="shoppers (? = ambiguous: several shoppers in the store)",
                  title_justify="left", expand=True)
    for name in ("shopper", "entered", "left", "cart / receipt"):
        table.add_column(name, ratio=3 if name == "cart / receipt" else None)
    for c in list(state.receipts)[-receipts:]:
        left = _clock(c.left or now) + (" (amended)" if c.amended else "")
        table.add_row(c.code, _clock(c.entered), left, Text("receipt: ").append(cart_items(c)))
    for c in state.open_carts():
        table.add_row(Text(c.code, "bold"), _clock(c.entered),
                      Text(f"in store {_ago(c.entered, now).replace(' ago', '')}", "green"),
                      cart_items(c))
    return table


def events_table(state: MonitorState, rows: int) -> Table:
    table = Table(title="events", title_justify="left", expand=True)
    for name in ("time", "device", "event", "", "shopper"):
        table.add_column(name, ratio=3 if name == "" else None)
    for e in list(state.stream)[-rows:]:
        shopper = Text(e.shopper or "")
        if e.ambiguous:
            shopper.append(" ?", "bold yellow")
        table.add_row(_clock(e.t), e.device, Text(e.kind, EVENT_STYLE.get(e.kind, "")), e.text,
                      shopper)
    return table


def render(state: MonitorState, header: str, now: float, height: int = 40) -> Group:
    devices = sorted(state.devices.values(), key=lambda d: (d.store, d.device))
    several = len({d.store for d in devices}) > 1
    counts = (f"{state.messages} messages, {state.duplicates} duplicates dropped, "
              f"{state.unattributed} picks/put-backs with no shopper in the store")
    used = 10 + len(devices) + min(len(state.receipts), 8) + len(state.open_carts())
    return Group(Text(header, "bold"), Text(counts, "dim"), devices_table(devices, now, several),
                 carts_table(state, now), events_table(state, max(5, height - used)))
