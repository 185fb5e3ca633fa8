"""The trace generator's load-cell physics, live, for a virtual board's HX711 lanes.

The host runs a `host_tools.sim.loadcell.Shelf` (creep, drift, crosstalk between plates,
ringing, mains and vibration, glitches, each item's own weight) and streams its readings a
little ahead of time to the board's VM, stamped with wall-clock milliseconds; each fake chip
there converts whatever reading is current when its conversion ends (vmroot/_simhw.py). Hands
are scheduled on the shelf as episodes (pick, put, touch, rest, bump): what the detector sees
is what the trace generator would have recorded.

    feed = PhysicsFeed(lanes=4, sps=10, seed=1)
    feed.calibration(0)     # (offset, counts_per_gram, unit_g, sku) to provision the lane with
    board = VirtualBoard(dir, physics=feed)
    feed.pick(2, 1)         # a hand takes one item from lane 2
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable

from host_tools.sim.loadcell import Shelf, draw_physics
from host_tools.sim.shopper import draw_stock

AHEAD_MS = 250  # readings computed this far ahead of now
LEAD_MS = 300  # a hand scheduled now starts this far ahead (past what was already sent)
TICK_S = 0.05


class PhysicsFeed:
    def __init__(self, lanes: int, sps: int, seed: int, stock: int = 10) -> None:
        rng = random.Random(seed)
        self.stock = draw_stock(rng, lanes)
        for s in self.stock:  # a full-ish lane of its own items
            while len(s.items) < min(stock, s.capacity):
                s.items.append(s.new_item(rng))
            del s.items[min(stock, s.capacity):]
        loads = [(s.tray_g, s.capacity * s.unit_g * 1.15) for s in self.stock]
        # a store's quieter environment than the generator's noisy profiles
        self.physics = draw_physics(rng, sps, loads)
        self.shelf = Shelf(self.physics, [s.items for s in self.stock], rng)
        self.n = lanes
        self.period_ms = 1000.0 / self.physics.conversion_hz
        self.t0 = time.time() * 1000.0
        self._next = [0.0] * lanes  # shelf time of each lane's next reading
        self._lock = threading.Lock()
        self._send: Callable[[dict], None] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- what provisioning needs ----------------------------------------------------------

    def calibration(self, lane: int) -> dict:
        """The lane as a technician would provision it: tared with its tray on (the physics
        measures grams from the tray, so its offset is that zero)."""
        p = self.physics.lanes[lane]
        s = self.stock[lane]
        return {"offset": int(p.offset),
                "counts_per_gram": round(p.counts_per_gram, 4), "unit_g": s.unit_g,
                "sku": s.sku, "capacity": s.capacity}

    # ---- streaming to the board ------------------------------------------------------------

    def attach(self, send: Callable[[dict], None]) -> None:
        """Start streaming readings through `send` (the board's hardware channel)."""
        self._send = send
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="physics", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _now(self) -> float:
        return time.time() * 1000.0 - self.t0

    def _run(self) -> None:
        while not self._stop.is_set():
            horizon = self._now() + AHEAD_MS
            batches = []
            with self._lock:
                for lane in range(self.n):
                    t = max(self._next[lane], self._now() - 50)
                    ts, raws = [], []
                    while t <= horizon:
                        ts.append(round(self.t0 + t))
                        raws.append(self.shelf.read(lane, t))
                        t += self.period_ms
                    self._next[lane] = t
                    if ts:
                        batches.append({"cmd": "samples", "lane": lane, "t": ts, "raw": raws})
            send = self._send
            if send is not None:
                for b in batches:
                    send(b)
            self._stop.wait(TICK_S)

    # ---- hands on the shelf ----------------------------------------------------------------

    def _start(self) -> float:
        return max(self._now() + LEAD_MS, max(self._next) + 20)

    def pick(self, lane: int, count: int = 1) -> None:
        with self._lock:
            self.shelf.pick(lane, self._start(), count)

    def put(self, lane: int, count: int = 1) -> None:
        with self._lock:
            s = self.stock[lane]
            self.shelf.put(lane, self._start(), [s.unit_g] * count)

    def touch(self, lane: int, hold_ms: float = 800) -> None:
        with self._lock:
            self.shelf.touch(lane, self._start(), hold_ms)

    def rest(self, lane: int, grams: float, seconds: float) -> None:
        with self._lock:
            self.shelf.rest(lane, self._start(), grams, seconds * 1000)

    def place_foreign(self, lane: int, grams: float) -> None:
        with self._lock:
            self.shelf.place_foreign(lane, self._start(), grams)

    def bump(self, grams: float = 200.0) -> None:
        with self._lock:
            self.shelf.bump(self._start(), grams)

    def items(self, lane: int) -> int:
        return len(self.shelf.stock(lane))

    def describe(self) -> str:
        return json.dumps([{"sku": s.sku, "unit_g": s.unit_g, "items": len(s.items)}
                           for s in self.stock])
