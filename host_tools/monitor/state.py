"""What the monitor knows about the stores, built from MQTT messages alone. Pure: no I/O, no
clock (every message comes with the time it was received), so tests feed it by hand.

    state = MonitorState()
    state.ingest(t, "store/v1/s1/shelf-1/event", {"type": "pick", ...}, retain=False)
    state.devices, state.stream, state.open_carts(), state.receipts

Devices: one row per (store, device) from its retained status (online / offline / fault,
role, firmware, boot) and its telemetry (RSSI, free heap, outbox depth and drops, faulted
lanes); last seen is the last message received from it live (a retained status only tells
when it was published, its `ts`).

Events: duplicates are dropped on (store, device, seq) (QoS 1 redelivery, outbox resends);
within one store that is docs/events.md's (device, seq).

Carts (docs/monitor.md): a shopper is a gate code. A gate's `entry` / `exit` events open and
close the code's cart; a gate that publishes only `scan` events: the first scan of a code
opens its cart, the next scan of the same code closes it. Once a gate has published an
`entry` or `exit`, its scans are only shown. A pick or put-back belongs to a shopper in the
same store at the event's time (`ts` when the device's clock was synced, else when it was
received). With one shopper there, that shopper. With several (no location signal), and the
cart line marked ambiguous:
  1. a put-back goes to a shopper who holds that SKU, the one who took it last;
  2. otherwise to the shopper whose last cart event was on the same shelf device;
  3. otherwise to the shopper who entered last.
`change` events (no item count) are shown but go in no cart. The receipt, made at exit, is
per SKU: items taken minus items put back; an event that arrives late but happened before
the exit amends it.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

SHELF_EVENTS = ("pick", "put", "change")
GATE_EVENTS = ("scan", "entry", "exit")
KEEP_RECEIPTS = 100  # closed carts kept (for the view, and to amend late events)


@dataclass
class Device:
    store: str
    device: str
    state: str = "?"  # online / offline / fault; "?" until a status is seen
    role: str | None = None
    fw: str | None = None
    boot: int | None = None
    last_seen: float | None = None
    uptime_ms: int | None = None
    rssi: int | None = None
    heap_free: int | None = None
    outbox_depth: int | None = None
    outbox_dropped: int | None = None
    faulted_lanes: int = 0  # from the last telemetry
    fault_events: int = 0
    last_fault: str = ""  # the last fault event's message, or the status's config errors
    events: int = 0
    duplicates: int = 0


@dataclass
class Entry:
    """One line of the event stream."""

    t: float  # received
    store: str
    device: str
    kind: str  # an event type (pick, put, change, fault, scan, entry, exit), "ack" or "cmd"
    text: str
    shopper: str | None = None  # the cart it went to
    ambiguous: bool = False


@dataclass
class CartLine:
    sku: str
    qty: int = 0  # items taken minus items put back
    ambiguous: bool = False
    last_take: float = 0.0


@dataclass
class Cart:
    store: str
    code: str
    gate: str
    entered: float
    left: float | None = None
    lines: dict[str, CartLine] = field(default_factory=dict)
    last_device: str | None = None  # the shelf of its latest event, and when
    last_time: float = 0.0
    amended: bool = False  # an event arrived after the receipt and changed it

    def present(self, t: float) -> bool:
        return self.entered <= t and (self.left is None or t <= self.left)

    def holds(self, sku: str) -> bool:
        line = self.lines.get(sku)
        return line is not None and line.qty > 0

    def receipt(self) -> dict[str, int]:
        """SKU -> net items taken, lines that net to zero left out."""
        return {sku: ln.qty for sku, ln in sorted(self.lines.items()) if ln.qty}

    def ambiguous(self) -> set[str]:
        return {sku for sku, ln in self.lines.items() if ln.qty and ln.ambiguous}


class SeqSet:
    """The seqs seen from one device, as merged ranges: a device counts 1, 2, 3... so this
    stays a handful of ranges however long the monitor runs."""

    def __init__(self) -> None:
        self.lo: list[int] = []  # range starts, sorted
        self.hi: list[int] = []  # matching range ends, inclusive

    def add(self, seq: int) -> bool:
        """Add seq; False when it was already there."""
        i = bisect.bisect_right(self.lo, seq) - 1
        if i >= 0 and seq <= self.hi[i]:
            return False
        joins_left = i >= 0 and self.hi[i] == seq - 1
        joins_right = i + 1 < len(self.lo) and self.lo[i + 1] == seq + 1
        if joins_left and joins_right:
            self.hi[i] = self.hi.pop(i + 1)
            del self.lo[i + 1]
        elif joins_left:
            self.hi[i] = seq
        elif joins_right:
            self.lo[i + 1] = seq
        else:
            self.lo.insert(i + 1, seq)
            self.hi.insert(i + 1, seq)
        return True


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def event_time(ev: dict, received: float) -> float:
    """When the event happened: its ts (UTC ms) when the device's clock was synced."""
    ts = _int(ev.get("ts"))
    return ts / 1000 if ts is not None else received


class MonitorState:
    def __init__(self, stream_size: int = 500) -> None:
        self.devices: dict[tuple[str, str], Device] = {}
        self.stream: deque[Entry] = deque(maxlen=stream_size)
        self.receipts: deque[Cart] = deque(maxlen=KEEP_RECEIPTS)  # closed carts, oldest first
        self.messages = 0
        self.duplicates = 0
        self.unattributed = 0  # picks / put-backs with no shopper in the store
        self._open: dict[str, dict[str, Cart]] = {}  # store -> code -> cart
        self._last_exit: dict[str, float] = {}  # store -> latest exit time of its receipts
        self._seen: dict[tuple[str, str], SeqSet] = {}
        self._deciding_gates: set[tuple[str, str]] = set()  # they publish entry / exit

    def open_carts(self) -> list[Cart]:
        return sorted((c for carts in self._open.values() for c in carts.values()),
                      key=lambda c: c.entered)

    def device(self, store: str, device: str) -> Device:
        key = (store, device)
        row = self.devices.get(key)
        if row is None:
            row = self.devices[key] = Device(store, device)
        return row

    # ---- messages --------------------------------------------------------------------

    def ingest(self, t: float, topic: str, payload: Any, retain: bool = False) -> None:
        """One message: t received (UNIX seconds), payload parsed (JSON value, text...)."""
        self.messages += 1
        parts = topic.rsplit("/", 3)  # [prefix, store, device, kind]
        if len(parts) != 4 or not isinstance(payload, dict):
            return
        _, store, device, kind = parts
        row = self.device(store, device)
        if not retain:
            row.last_seen = t
        if kind == "status":
            self._status(row, payload, t, retain)
        elif kind == "telemetry":
            self._telemetry(row, payload)
        elif kind == "event" and not retain:
            self._event(row, payload, t)
        elif kind in ("ack", "cmd"):
            what = " ".join(f"{k}={payload[k]}" for k in ("id", "cmd", "ok", "error")
                            if k in payload)
            self.stream.append(Entry(t, store, device, kind, what))

    def _status(self, row: Device, msg: dict, t: float, retain: bool) -> None:
        state = msg.get("state")
        if isinstance(state, str):
            row.state = state
        for key in ("role", "fw"):
            if isinstance(msg.get(key), str):
                setattr(row, key, msg[key])
        row.boot = _int(msg.get("boot")) or row.boot
        errors = msg.get("errors")
        if isinstance(errors, list) and errors:
            row.last_fault = "; ".join(str(e) for e in errors)
        ts = _int(msg.get("ts"))
        if retain and ts is not None and row.last_seen is None:
            row.last_seen = ts / 1000  # only when it was published: the best we know

    def _telemetry(self, row: Device, msg: dict) -> None:
        for key in ("uptime_ms", "rssi", "heap_free", "outbox_depth", "outbox_dropped"):
            setattr(row, key, _int(msg.get(key)))
        if isinstance(msg.get("fw"), str):
            row.fw = msg["fw"]
        faulted = msg.get("faulted")
        row.faulted_lanes = sum(1 for f in faulted if f) if isinstance(faulted, list) else 0

    def _event(self, row: Device, ev: dict, t: float) -> None:
        seq = _int(ev.get("seq"))
        kind = ev.get("type")
        if not isinstance(kind, str):
            return
        device = ev.get("device") if isinstance(ev.get("device"), str) else row.device
        if seq is not None:
            seen = self._seen.setdefault((row.store, device), SeqSet())
            if not seen.add(seq):
                row.duplicates += 1
                self.duplicates += 1
                return
        row.events += 1
        entry = Entry(t, row.store, row.device, kind, "")
        if kind in SHELF_EVENTS:
            self._shelf(row, ev, t, entry)
        elif kind in GATE_EVENTS:
            self._gate(row, ev, t, entry)
        elif kind == "fault":
            row.fault_events += 1
            row.last_fault = str(ev.get("msg", ""))
            entry.text = f"{ev.get('code', '?')}: {row.last_fault}"
        else:
            entry.text = kind
        self.stream.append(entry)

    # ---- carts -----------------------------------------------------------------------

    def _gate(self, row: Device, ev: dict, t: float, entry: Entry) -> None:
        code = ev.get("code")
        if not isinstance(code, str):
            entry.text = "(no code)"
            return
        entry.text = code
        gate = (row.store, row.device)
        kind = ev["type"]
        if kind != "scan":
            self._deciding_gates.add(gate)
        elif gate in self._deciding_gates:
            return  # this gate decides entry and exit itself
        open_carts = self._open.setdefault(row.store, {})
        cart = open_carts.get(code)
        when = event_time(ev, t)
        if kind == "entry" or (kind == "scan" and cart is None):
            if cart is not None:
                entry.text += " (already in the store)"
                return
            open_carts[code] = Cart(row.store, code, row.device, when)
            entry.text += " enters"
            entry.shopper = code
            return
        if cart is None:
            entry.text += " leaves (never seen entering)"
            return
        cart.left = max(when, cart.entered)
        del open_carts[code]
        self.receipts.append(cart)
        self._last_exit[row.store] = max(cart.left, self._last_exit.get(row.store, cart.left))
        entry.text += " leaves"
        entry.shopper = code

    def _shelf(self, row: Device, ev: dict, t: float, entry: Entry) -> None:
        count = _int(ev.get("count"))
        sku = ev.get("sku") if isinstance(ev.get("sku"), str) else ""
        lane = ev.get("lane")
        item = sku or f"{row.device} lane {lane}"  # a lane without a product
        shown = "?" if count is None else f"{count:+d}"
        entry.text = f"lane {lane} {item} {shown}"
        if not count or ev["type"] == "change":
            return  # not a whole number of items: shown, never in a cart
        when = event_time(ev, t)
        present = self._present(row.store, when)
        if not present:
            self.unattributed += 1
            entry.text += " (no shopper in the store)"
            return
        cart = choose_cart(present, row.device, item, count)
        line = cart.lines.get(item)
        if line is None:
            line = cart.lines[item] = CartLine(item)
        line.qty -= count  # a pick (-1) is one item taken
        if count < 0:
            line.last_take = when
        entry.ambiguous = len(present) > 1
        line.ambiguous = line.ambiguous or entry.ambiguous
        cart.last_device, cart.last_time = row.device, when
        entry.shopper = cart.code
        if cart.left is not None:
            cart.amended = True
            entry.text += " (late: receipt amended)"

    def _present(self, store: str, when: float) -> list[Cart]:
        """The carts in this store at that time: open ones, and for an event that happened
        before a shopper's exit but arrived after it, closed ones (looked at only then: per
        event, a handful of carts are checked, not the last hundred receipts)."""
        present = [c for c in self._open.get(store, {}).values() if c.entered <= when]
        if when <= self._last_exit.get(store, -math.inf):
            present += [c for c in self.receipts if c.store == store and c.present(when)]
        return present


def choose_cart(present: list[Cart], device: str, item: str, count: int) -> Cart:
    """The store's rule for an event while several shoppers are in (module docstring)."""
    if len(present) == 1:
        return present[0]
    if count > 0:
        holders = [c for c in present if c.holds(item)]
        if holders:
            return max(holders, key=lambda c: c.lines[item].last_take)
    same_shelf = [c for c in present if c.last_device == device]
    if same_shelf:
        return max(same_shelf, key=lambda c: c.last_time)
    return max(present, key=lambda c: c.entered)
