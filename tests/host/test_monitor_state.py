"""The monitor's pure state (host_tools/monitor/state.py): carts and receipts from gate and
shelf events, duplicates, the attribution rule with several shoppers, devices from status and
telemetry. Messages are fed by hand, with the times they were received."""

from __future__ import annotations

import pytest

from host_tools.monitor.state import MonitorState, SeqSet

STORE = "s1"
T0 = 1_767_225_600.0  # seconds; events carry ts in ms


class Feed:
    """Publishes events of several devices into a MonitorState, one seq counter each."""

    def __init__(self) -> None:
        self.state = MonitorState()
        self.seq: dict[str, int] = {}

    def event(self, device: str, t: float, type_: str, *, ts: bool = True, seq: int | None = None,
              store: str = STORE, **fields) -> dict:
        if seq is None:
            seq = self.seq[device] = self.seq.get(device, 0) + 1
        ev = {"v": 1, "device": device, "seq": seq, "boot": 1, "type": type_,
              "ts": int(t * 1000) if ts else None, "uptime_ms": 1000, **fields}
        self.state.ingest(t, f"store/v1/{store}/{device}/event", ev)
        return ev

    def scan(self, t: float, code: str, gate: str = "gate-1", **kw) -> dict:
        return self.event(gate, t, "scan", code=code, source="scanner", **kw)

    def shelf(self, t: float, sku: str, count: int | None, device: str = "shelf-1",
              lane: int = 0, **kw) -> dict:
        kind = "change" if count is None else ("pick" if count < 0 else "put")
        return self.event(device, t, kind, lane=lane, sku=sku, count=count, delta_g=-250.0,
                          **kw)


def receipts(state: MonitorState) -> dict[str, dict[str, int]]:
    return {c.code: c.receipt() for c in state.receipts}


def test_one_shopper_scan_pick_put_scan_is_exact():
    f = Feed()
    f.scan(T0, "SHOPPER-42")
    f.shelf(T0 + 5, "COKE-330", -2)
    f.shelf(T0 + 8, "WATER-500", -1, device="shelf-2")
    f.shelf(T0 + 12, "COKE-330", +1)
    assert [c.code for c in f.state.open_carts()] == ["SHOPPER-42"]
    assert f.state.open_carts()[0].receipt() == {"COKE-330": 1, "WATER-500": 1}
    f.scan(T0 + 20, "SHOPPER-42")
    assert f.state.open_carts() == []
    assert receipts(f.state) == {"SHOPPER-42": {"COKE-330": 1, "WATER-500": 1}}
    cart = f.state.receipts[0]
    assert cart.ambiguous() == set() and not cart.amended
    assert (cart.entered, cart.left) == (T0, T0 + 20)
    assert [e.shopper for e in f.state.stream] == ["SHOPPER-42"] * 5


def test_a_put_back_of_everything_taken_leaves_no_line():
    f = Feed()
    f.scan(T0, "A")
    f.shelf(T0 + 1, "COKE-330", -1)
    f.shelf(T0 + 2, "COKE-330", +1)
    f.scan(T0 + 3, "A")
    assert receipts(f.state) == {"A": {}}


def test_duplicates_are_dropped_on_device_and_seq():
    f = Feed()
    f.scan(T0, "A")
    pick = f.shelf(T0 + 1, "COKE-330", -1)
    # the same event again (QoS 1 redelivery, an outbox resend), later
    f.state.ingest(T0 + 30, "store/v1/s1/shelf-1/event", dict(pick))
    again = f.scan(T0 + 2, "A", seq=1)  # the entry scan resent: must not close the cart
    assert again["seq"] == 1
    assert [c.code for c in f.state.open_carts()] == ["A"]
    assert f.state.open_carts()[0].receipt() == {"COKE-330": 1}
    assert f.state.duplicates == 2
    assert f.state.devices[(STORE, "shelf-1")].duplicates == 1
    assert f.state.devices[(STORE, "shelf-1")].events == 1
    # the same seq from another device is another event
    f.shelf(T0 + 3, "CHIPS", -1, device="shelf-2", seq=2)
    assert f.state.open_carts()[0].receipt() == {"COKE-330": 1, "CHIPS": 1}


def test_seqs_out_of_order_are_not_duplicates():
    seen = SeqSet()
    for s in [5, 6, 7, 1, 2, 9, 3, 4, 8]:
        assert seen.add(s)
    assert (seen.lo, seen.hi) == ([1], [9])  # merged into one range
    assert not any(seen.add(s) for s in range(1, 10))
    assert seen.add(100) and seen.add(10) and (seen.lo, seen.hi) == ([1, 100], [10, 100])


def test_scans_alternate_entry_and_exit_per_code():
    f = Feed()
    f.scan(T0, "A")
    f.scan(T0 + 1, "B")
    f.shelf(T0 + 2, "X", -1)
    f.scan(T0 + 3, "A")  # A leaves: B is still in
    f.scan(T0 + 4, "A")  # A comes back: a new visit
    assert sorted(c.code for c in f.state.open_carts()) == ["A", "B"]
    assert [c.code for c in f.state.receipts] == ["A"]
    kinds = [e.text for e in f.state.stream if e.kind == "scan"]
    assert kinds == ["A enters", "B enters", "A leaves", "A enters"]


def test_entry_and_exit_events_decide_and_that_gates_scans_are_only_shown():
    f = Feed()
    f.event("gate-1", T0, "entry", code="A")
    f.scan(T0 + 0.1, "A")  # the same gate also reports the raw scan: no toggle
    f.shelf(T0 + 2, "X", -1)
    f.scan(T0 + 3, "A")
    assert [c.code for c in f.state.open_carts()] == ["A"]
    f.event("gate-1", T0 + 4, "exit", code="A")
    assert receipts(f.state) == {"A": {"X": 1}}
    f.event("gate-1", T0 + 5, "exit", code="Z")  # never came in: shown, no cart
    assert f.state.stream[-1].text == "Z leaves (never seen entering)"
    assert len(f.state.receipts) == 1


def test_change_events_are_shown_but_go_in_no_cart_and_no_shopper_means_unattributed():
    f = Feed()
    f.shelf(T0, "X", -1)  # before anyone entered
    assert f.state.unattributed == 1
    f.scan(T0 + 1, "A")
    f.shelf(T0 + 2, "X", None)  # a foreign object
    f.scan(T0 + 3, "A")
    assert receipts(f.state) == {"A": {}}
    assert [e.kind for e in f.state.stream] == ["pick", "scan", "change", "scan"]
    assert f.state.stream[2].shopper is None


def test_several_shoppers_follow_the_rule_and_are_marked_ambiguous():
    f = Feed()
    f.scan(T0, "A")
    f.shelf(T0 + 1, "X", -1, device="shelf-1")  # alone: A's, exact
    f.scan(T0 + 2, "B")
    # rule 3: no one has been at shelf-2 yet: the shopper who entered last (B)
    f.shelf(T0 + 3, "Y", -1, device="shelf-2")
    # rule 2: the shopper whose last event was on this shelf
    f.shelf(T0 + 4, "Z", -1, device="shelf-1")
    # rule 1: a put-back of X goes to the one who holds X, wherever
    f.shelf(T0 + 5, "X", +1, device="shelf-2")
    f.scan(T0 + 6, "A")
    f.scan(T0 + 7, "B")
    a, b = f.state.receipts
    assert (a.code, a.receipt(), a.ambiguous()) == ("A", {"Z": 1}, {"Z"})
    assert (b.code, b.receipt(), b.ambiguous()) == ("B", {"Y": 1}, {"Y"})
    marks = [(e.shopper, e.ambiguous) for e in f.state.stream if e.kind in ("pick", "put")]
    assert marks == [("A", False), ("B", True), ("A", True), ("A", True)]


def test_shoppers_in_other_stores_do_not_share_carts():
    f = Feed()
    f.scan(T0, "A")
    f.scan(T0, "B", store="s2")
    f.shelf(T0 + 1, "X", -1)
    f.scan(T0 + 2, "A")
    assert receipts(f.state) == {"A": {"X": 1}}
    assert not f.state.receipts[0].ambiguous()


def test_a_late_event_that_happened_before_the_exit_amends_the_receipt():
    f = Feed()
    f.scan(T0, "A")
    f.scan(T0 + 10, "A")
    assert receipts(f.state) == {"A": {}}
    # picked at T0 + 5, delivered after the exit (the shelf was offline: outbox replay)
    f.state.ingest(T0 + 60, "store/v1/s1/shelf-1/event",
                   {"device": "shelf-1", "seq": 7, "type": "pick", "ts": int((T0 + 5) * 1000),
                    "lane": 1, "sku": "X", "count": -1})
    assert receipts(f.state) == {"A": {"X": 1}}
    assert f.state.receipts[0].amended
    # without a synced clock the time received counts: after the exit, nobody's
    f.shelf(T0 + 61, "Y", -1, ts=False)
    assert receipts(f.state) == {"A": {"X": 1}} and f.state.unattributed == 1


def test_a_lane_without_a_product_is_named_by_its_device_and_lane():
    f = Feed()
    f.scan(T0, "A")
    f.shelf(T0 + 1, "", -1, lane=3)
    f.scan(T0 + 2, "A")
    assert receipts(f.state) == {"A": {"shelf-1 lane 3": 1}}


def test_devices_from_status_and_telemetry():
    s = MonitorState()
    s.ingest(T0, "store/v1/s1/shelf-1/status",
             {"state": "online", "device": "shelf-1", "role": "shelf", "fw": "0.3.0",
              "boot": 7, "ts": int((T0 - 100) * 1000)}, retain=True)
    row = s.devices[(STORE, "shelf-1")]
    assert (row.state, row.role, row.fw, row.boot) == ("online", "shelf", "0.3.0", 7)
    assert row.last_seen == pytest.approx(T0 - 100)  # retained: when it was published
    s.ingest(T0 + 1, "store/v1/s1/shelf-1/telemetry",
             {"v": 1, "device": "shelf-1", "uptime_ms": 60000, "heap_free": 81920,
              "rssi": -61, "outbox_depth": 3, "outbox_dropped": 0,
              "faulted": [False, True, False]})
    assert (row.rssi, row.heap_free, row.outbox_depth, row.faulted_lanes) == (-61, 81920, 3, 1)
    assert row.last_seen == T0 + 1
    s.ingest(T0 + 2, "store/v1/s1/shelf-1/event",
             {"device": "shelf-1", "seq": 1, "type": "fault", "code": "hx711",
              "msg": "lane 1: HX711 not ready", "lane": 1})
    assert row.fault_events == 1 and row.last_fault == "lane 1: HX711 not ready"
    s.ingest(T0 + 3, "store/v1/s1/shelf-1/status", {"state": "offline", "device": "shelf-1"})
    assert row.state == "offline"
    s.ingest(T0 + 4, "store/v1/s1/gate-9/status",
             {"state": "fault", "device": "gate-9", "errors": ["wifi.ssid: required"]},
             retain=True)
    gate = s.devices[(STORE, "gate-9")]
    assert (gate.state, gate.last_fault, gate.last_seen) == ("fault", "wifi.ssid: required",
                                                             None)
    s.ingest(T0 + 5, "store/v1/s1/shelf-1/ack", {"id": "c1", "ok": True})
    assert s.stream[-1].kind == "ack" and "id=c1" in s.stream[-1].text
    s.ingest(T0 + 6, "some/other/topic", "text")  # not a device's JSON: counted only
    assert s.messages == 7 and len(s.devices) == 2
