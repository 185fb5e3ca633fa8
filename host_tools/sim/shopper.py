"""What is on a shelf and what shoppers do to it: the scenario side of the simulation.

`draw_stock` fills the lanes with products (each item its own weight); `plan_visits` lets
shoppers arrive at random and act on the lanes through a `Shelf`'s scheduling methods.

The plan keeps the truth unambiguous: on any one lane, things that happen are either part of
one quick gesture (a double pick: under 0.6 s of stillness between them, one truth row) or
separated by at least `SPACING_MS` of stillness. A distractor (a resting hand, an item lifted
and put back) also keeps out of the scoring tail of its lane's last change (FORMAT.md: an event
up to 3 s after a row belongs to that row): there, the lift of a touch is scored as part of the
pick before it, which no detector can avoid without holding every pick for seconds.
Neighbouring lanes are free to overlap.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field

from host_tools.sim.loadcell import Episode, Shelf

SPACING_MS = 1500  # stillness between unrelated things on one lane
QUICK_MS = (100, 600)  # stillness inside a quick double pick
# A distractor starts this long after its lane's last change ended: the scorer's 3 s tail
# after the row, its 0.3 s lead before the distractor, and a hand's approach.
DISTRACTOR_AFTER_MS = 3500
MAX_ACT_MS = 9000  # the longest act, so a plan can stop in time for the shelf to settle
FOREIGN_MIN_G = 15.0  # the lightest foreign object (a set of keys)


@dataclass
class LaneStock:
    """One lane of the planogram: a product and the physical items of it on the lane."""

    sku: str
    unit_g: float  # nominal weight of one item
    spread: float  # std of single items around the batch mean, relative
    batch: float  # this batch's mean relative to nominal
    capacity: int  # items the lane holds at most
    tray_g: float
    items: list[float] = field(default_factory=list)

    def new_item(self, rng: random.Random) -> float:
        w = self.unit_g * (self.batch + self.spread * rng.gauss(0.0, 1.0))
        return round(max(self.unit_g * 0.8, w), 2)


def draw_stock(rng: random.Random, n_lanes: int) -> list[LaneStock]:
    """A product per lane, 15-1600 g a unit, with 2-20 items of their own weights."""
    lanes = []
    for _ in range(n_lanes):
        unit = round(math.exp(rng.uniform(math.log(15.0), math.log(1600.0))), 2)
        # Heavy products come in short rows; nothing over ~25 kg on one lane.
        most = max(2, min(24, int(25000 // unit)))
        stock = rng.randint(2, min(20, most))
        lane = LaneStock(
            sku=f"SKU{rng.randint(10000, 99999)}",
            unit_g=unit,
            spread=rng.uniform(0.005, 0.04),
            batch=1.0 + rng.gauss(0.0, 0.005),
            capacity=min(most, stock + rng.randint(0, 6)),
            tray_g=round(rng.uniform(80.0, 1500.0), 1),
        )
        lane.items = [lane.new_item(rng) for _ in range(stock)]
        lanes.append(lane)
    return lanes


@dataclass
class Behaviour:
    """How busy the shelf is and what shoppers tend to do (a profile picks one)."""

    visits_per_min: float = 3.0
    acts_per_visit: tuple[int, int] = (1, 4)
    gap_s: tuple[float, float] = (0.3, 2.5)  # between one shopper's acts
    acts: dict[str, float] = field(
        default_factory=lambda: {
            "pick": 5.0,  # 1 item, sometimes 2-4
            "double": 1.0,  # a quick double pick: one truth row
            "putback": 3.0,  # an item this shopper holds goes back
            "return": 0.5,  # an item from elsewhere is put on the lane
            "two_hands": 0.7,  # picks on adjacent lanes at once
            "rest_beside": 0.7,  # one hand rests on a lane while the other picks next to it
            "rest": 0.8,
            "touch": 1.2,
            "foreign": 0.4,  # put something down (taken away later, sometimes)
        }
    )
    multi_p: float = 0.2  # a pick takes 2-4 items
    bumps_per_min: float = 0.5


class _Plan:
    """The shelf being planned and when each lane is free for a new act."""

    def __init__(
        self, shelf: Shelf, stock: list[LaneStock], rng: random.Random, t0: float, t_last: float
    ):
        self.shelf = shelf
        self.stock = stock
        self.rng = rng
        self.t_last = t_last  # no act starts later
        self.free = [t0] * shelf.n_lanes  # a new, unrelated act may start on the lane from here
        self.quiet = [t0] * shelf.n_lanes  # ... and a distractor from here

    def can(self, lane: int, t: float) -> bool:
        return 0 <= lane < self.shelf.n_lanes and t >= self.free[lane] and t <= self.t_last

    def can_distract(self, lane: int, t: float) -> bool:
        return self.can(lane, t) and t >= self.quiet[lane]

    def done(self, ep: Episode) -> Episode:
        self.free[ep.lane] = ep.t_settle + SPACING_MS
        if ep.changes_contents:
            self.quiet[ep.lane] = ep.t_end + DISTRACTOR_AFTER_MS
        return ep

    def items(self, lane: int) -> int:
        return len(self.shelf.stock(lane))


@dataclass
class _Visit:
    """One shopper in front of the shelf."""

    home: int  # the lane they came for; they act on it and its neighbours
    acts_left: int
    hands: list[tuple[int, list[float]]] = field(default_factory=list)  # (lane, weights) held


def plan_visits(
    shelf: Shelf,
    stock: list[LaneStock],
    behaviour: Behaviour,
    rng: random.Random,
    t_begin_ms: float,
    t_end_ms: float,
) -> list[Episode]:
    """Schedule shoppers' visits between t_begin and t_end (everything settles before t_end).

    Shoppers act in turn, earliest first, so that visits overlap; an act waits for its lane
    to be free, so every lane's episodes are scheduled in time order.
    """
    plan = _Plan(shelf, stock, rng, t_begin_ms, t_end_ms - MAX_ACT_MS)
    queue: list[tuple[float, int, _Visit]] = []
    t = t_begin_ms
    while True:
        t += rng.expovariate(behaviour.visits_per_min / 60000.0)
        if t > plan.t_last:
            break
        visit = _Visit(rng.randrange(shelf.n_lanes), rng.randint(*behaviour.acts_per_visit))
        queue.append((t, len(queue), visit))
    heapq.heapify(queue)
    kinds = list(behaviour.acts)
    weights = [behaviour.acts[k] for k in kinds]
    while queue:
        t, key, visit = heapq.heappop(queue)
        lane = min(shelf.n_lanes - 1, max(0, visit.home + rng.choice((-1, 0, 0, 0, 1))))
        kind = rng.choices(kinds, weights)[0]
        eps = _act(plan, behaviour, kind, lane, max(t, plan.free[lane]), visit.hands)
        visit.acts_left -= 1
        if visit.acts_left > 0:
            # A shopper whose act was not possible (empty lane, nothing held) soon tries another.
            t_next = max(ep.t_end for ep in eps) if eps else t
            heapq.heappush(queue, (t_next + rng.uniform(*behaviour.gap_s) * 1000.0, key, visit))
    _bumps(plan, behaviour, t_begin_ms)
    return shelf.episodes


def _act(plan: _Plan, b: Behaviour, kind: str, lane: int, t: float, hands: list) -> list | None:
    shelf, rng = plan.shelf, plan.rng
    n = shelf.n_lanes
    if not plan.can(lane, t):
        return None
    stock = plan.items(lane)
    if kind == "pick" and stock:
        count = min(stock, rng.randint(2, 4)) if rng.random() < b.multi_p else 1
        ep = plan.done(shelf.pick(lane, t, count))
        hands.append((lane, ep.weights))
        return [ep]
    if kind == "double" and stock >= 2:
        first = shelf.pick(lane, t, 1)
        second_n = 2 if stock >= 3 and rng.random() < 0.25 else 1
        again = first.t_settle + rng.uniform(*QUICK_MS)
        second = plan.done(shelf.pick(lane, again, second_n))
        hands.extend([(lane, first.weights), (lane, second.weights)])
        return [first, second]
    if kind == "putback":
        mine = [h for h in hands if plan.can(h[0], t)]
        if not mine:
            return None
        back_lane, items = rng.choice(mine)
        if plan.items(back_lane) + len(items) > plan.stock[back_lane].capacity:
            return None
        hands.remove((back_lane, items))
        return [plan.done(shelf.put(back_lane, t, items))]
    if kind == "return" and stock < plan.stock[lane].capacity:
        return [plan.done(shelf.put(lane, t, [plan.stock[lane].new_item(rng)]))]
    if kind == "two_hands" and n >= 2:
        other = lane + 1 if lane + 1 < n else lane - 1
        t2 = t + rng.uniform(0.0, 400.0)
        if not (stock and plan.items(other) and plan.can(other, t2)):
            return None
        a = plan.done(shelf.pick(lane, t, 1))
        c = plan.done(shelf.pick(other, t2, 1))
        hands.extend([(lane, a.weights), (other, c.weights)])
        return [a, c]
    if kind == "rest_beside" and n >= 2 and stock:
        side = lane + rng.choice((-1, 1))
        side = side if 0 <= side < n else lane - (side - lane)
        t_rest = t - rng.uniform(0.0, 800.0)
        if not plan.can_distract(side, t_rest):
            return None
        ep = plan.done(shelf.pick(lane, t, 1))
        hold = ep.t_end - t_rest + rng.uniform(0.0, 2000.0)
        rest = plan.done(shelf.rest(side, t_rest, _rest_grams(rng), hold))
        hands.append((lane, ep.weights))
        return [ep, rest]
    if kind in ("rest", "touch"):
        t = max(t, plan.quiet[lane])  # the shopper waits a moment (see the module doc)
        if not plan.can_distract(lane, t):
            return None
    if kind == "rest":
        hold = rng.uniform(500.0, 6000.0)
        return [plan.done(shelf.rest(lane, t, _rest_grams(rng), hold))]
    if kind == "touch" and stock:
        fraction = 1.0 if rng.random() < 0.5 else rng.uniform(0.2, 0.9)
        return [plan.done(shelf.touch(lane, t, rng.uniform(300.0, 3000.0), fraction))]
    if kind == "foreign":
        grams = _foreign_grams(rng, plan.stock[lane].unit_g)
        ep = plan.done(shelf.place_foreign(lane, t, grams))
        eps = [ep]
        if rng.random() < 0.5:
            later = ep.t_settle + rng.uniform(3000.0, 15000.0)
            if later <= plan.t_last:
                eps.append(plan.done(shelf.take_foreign(lane, later, grams)))
        return eps
    return None


def _rest_grams(rng: random.Random) -> float:
    return math.exp(rng.uniform(math.log(50.0), math.log(1200.0)))


def _foreign_grams(rng: random.Random, unit_g: float) -> float:
    """A phone, keys, a cup or another product: never a whole number of the lane's items."""
    lo, hi = rng.choice(((120, 240), (30, 150), (200, 500), (15, 1600)))
    for _ in range(20):
        g = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        ratio = g / unit_g
        # Far from a whole number, and not so many items' worth that their spread blurs it.
        if ratio < 0.7 or (ratio < 4.5 and abs(ratio - round(ratio)) > 0.3):
            return round(g, 1)
    # Light products: something between two whole numbers of items, still 15 g or more.
    low = unit_g * rng.uniform(0.2, 0.6)
    if low >= FOREIGN_MIN_G:
        return round(low, 1)
    k = max(1, math.ceil(FOREIGN_MIN_G / unit_g - 0.65))
    return round(unit_g * (k + rng.uniform(0.35, 0.65)), 1)


def _bumps(plan: _Plan, b: Behaviour, t_begin: float) -> None:
    """Carts knock the gondola, but never while a lane is changing (the truth stays clean)."""
    rng, shelf = plan.rng, plan.shelf
    busy = [
        (ep.t_start - SPACING_MS, ep.t_settle + SPACING_MS)
        for ep in shelf.episodes
        if ep.changes_contents
    ]
    t = t_begin
    while True:
        t += rng.expovariate(max(b.bumps_per_min, 1e-9) / 60000.0)
        if t > plan.t_last:
            return
        if any(a < t + 2500.0 and t < z for a, z in busy):
            continue
        grams = math.exp(rng.uniform(math.log(5.0), math.log(200.0)))
        shelf.bump(t, grams)
