"""Streaming physics of one shelf's load cells, read the way an HX711 driver reads them.

A `Shelf` holds 1-8 lanes (one load cell and one HX711 each). Things that touch the shelf are
scheduled as `Episode`s (a pick, a put-back, a resting hand, a bump, ...): each is a few smooth
force transitions plus tremor, and may excite the shelf's ringing. `Shelf.read(lane, t_ms)`
then returns the signed 24-bit count the driver would see at that moment, glitches included,
so the same object can feed a recorded trace or a virtual board's simulated HX711 live.

Grams on a lane are measured from the lane's zero (the tray or fixture on the cell); a lane's
count is `offset + counts_per_gram * grams`, clamped to the 24-bit range. Every time is in
milliseconds on the board's clock. Reads must come in (roughly) non-decreasing time, and an
episode must be scheduled before the shelf is read past its start.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

RAW_MAX = 8388607
RAW_MIN = -8388608
TWO_PI = 2.0 * math.pi

# An episode leaves the active list this long after its last transition, so that a read a few
# ms earlier on another lane (lanes of one period are read one after another) still sees it.
_GUARD_MS = 100.0
# Ringing below this many grams is gone for good.
_RING_FLOOR_G = 0.05

# Load cells sized for a lane, in kg, and the HX711 count span they give (see `draw_physics`).
CELL_KG = (2, 3, 5, 10, 20, 40)
COUNTS_PER_MV_PER_V = 256 * 2**23 / 1000  # gain 128, full scale +-AVDD/256, excitation AVDD


@dataclass
class LanePhysics:
    """One lane's cell, wiring and mechanics. Grams are measured from the lane's zero."""

    counts_per_gram: float  # true sensitivity; negative: the cell is mounted reversed
    offset: int  # count with nothing but the tray on the lane, at t = 0
    noise_g: float  # white noise per reading (std)
    wander_g: float  # slow wander of the reading (std), seconds-long
    wander_tau_s: float
    drift_g_per_min: float  # temperature drift, steady part
    drift_wave_g: float  # temperature drift, slow swing
    drift_period_s: float
    drift_phase: float
    creep_frac: float  # share of a load change the cell creeps by
    creep_tau_s: float
    plate_hz: float  # the lane's own plate ringing on its cell
    mains_g: float  # 50/60 Hz pickup amplitude before the converter's averaging
    mains_phase: float
    vibration_gain: tuple[float, ...] = ()  # signed response to each gondola vibration mode
    board_gain: float = 1.0  # signed share in the shelf board's swing (its mode shape)
    cross_hand: tuple[float, float] = (0.0, 0.0)  # share of the left/right neighbour's hand
    cross_load: tuple[float, float] = (0.0, 0.0)  # share of the left/right neighbour's load


@dataclass
class VibrationMode:
    """A narrow-band vibration of the whole gondola (a noisy floor, a fridge, people walking)."""

    hz: float
    base_g: float  # amplitude that is always there
    burst_g: float  # typical peak of a burst
    bursts_per_min: float
    burst_s: tuple[float, float]  # burst duration range
    beat_hz: tuple[float, float]  # two side tones this far away make the amplitude beat
    phases: tuple[float, float, float]


@dataclass
class ShelfPhysics:
    sample_rate_hz: float  # the nominal HX711 rate (RATE pin): 10 or 80, or 60 for other ADCs
    conversion_hz: float  # the chip's real conversion rate: the read rate and averaging window
    lanes: list[LanePhysics]
    ring_tau_s: float  # decay time constant of the shelf's ringing
    board_hz: float  # the shelf board's ringing, which every lane shares
    board_share: float  # how much of an impact goes into the board rather than the plate
    mains_hz: float = 50.0
    vibration: list[VibrationMode] = field(default_factory=list)
    glitch_rate: float = 0.0  # share of reads the HX711 garbles

    @property
    def latency_ms(self) -> float:
        # A reading is the average over the conversion that just ended: its centre is half a
        # conversion in the past.
        return 500.0 / self.conversion_hz


@dataclass
class Environment:
    """How rough a shelf's surroundings are; a profile picks one (ranges drawn per trace)."""

    noise_g: tuple[float, float] = (0.25, 1.5)  # white noise std at 80 SPS
    vibration_p: float = 0.25  # chance the gondola vibrates
    vibration_g: tuple[float, float] = (8.0, 35.0)  # burst peak range
    mains_p: float = 0.3  # chance of visible mains pickup
    glitch_rate: tuple[float, float] = (0.0005, 0.01)


def _eased(steps: list[tuple[float, float, float]], t: float) -> float:
    """Sum of steps (t0, t1, grams) at time t, each eased in along a smoothstep."""
    total = 0.0
    for t0, t1, g in steps:
        if t >= t1:
            total += g
        elif t > t0:
            x = (t - t0) / (t1 - t0)
            total += g * x * x * (3.0 - 2.0 * x)
    return total


def sinc(x: float) -> float:
    """Gain of a moving average over one window at x cycles per window."""
    if abs(x) < 1e-9:
        return 1.0
    return math.sin(math.pi * x) / (math.pi * x)


def _log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _signed(rng: random.Random, lo: float, hi: float, p_negative: float) -> float:
    v = rng.uniform(lo, hi)
    return -v if rng.random() < p_negative else v


def draw_physics(
    rng: random.Random,
    sample_rate_hz: float,
    loads: Sequence[tuple[float, float]],
    env: Environment | None = None,
) -> ShelfPhysics:
    """Draw a plausible shelf. `loads` holds (tray_g, most_contents_g) per lane."""
    env = env or Environment()
    n = len(loads)
    # "80 SPS" HX711s really convert at 80-94 Hz (field notes): the on-chip oscillator runs up
    # to ~17 % fast, and 10 SPS divides the same clock. Other rates (60: the AiFi plates) are
    # taken as exact.
    fast = rng.uniform(1.0, 1.175) if sample_rate_hz in (10, 80) else 1.0
    conversion_hz = sample_rate_hz * fast
    # The datasheet's input noise is 50 nV at 10 SPS and 90 nV at 80 SPS: 80 SPS is noisier.
    noise_scale = 1.0 if sample_rate_hz >= 60 else 0.6
    noisy_floor = rng.random() < env.vibration_p
    modes = []
    if noisy_floor:
        for k in range(rng.choice((1, 2))):
            hz = rng.uniform(5.0, 12.0) if k == 0 else rng.uniform(9.0, 16.0)
            peak = rng.uniform(*env.vibration_g) * (1.0 if k == 0 else 0.5)
            modes.append(
                VibrationMode(
                    hz=hz,
                    base_g=peak * rng.uniform(0.1, 0.4),
                    burst_g=peak,
                    bursts_per_min=rng.uniform(5.0, 15.0),
                    burst_s=(1.0, rng.uniform(2.0, 5.0)),
                    beat_hz=(rng.uniform(0.1, 0.5), rng.uniform(0.2, 0.8)),
                    phases=(rng.uniform(0, TWO_PI), rng.uniform(0, TWO_PI), rng.uniform(0, TWO_PI)),
                )
            )
    mains = rng.random() < env.mains_p
    lanes = []
    for tray_g, most_g in loads:
        cpg = _counts_per_gram(rng, tray_g + most_g)
        low_g = -tray_g - 300.0  # an empty tray lifted or tugged
        high_g = most_g + 2500.0  # a full lane, a leaning hand and a foreign item
        lanes.append(
            LanePhysics(
                counts_per_gram=cpg,
                offset=_offset(rng, cpg, low_g, high_g),
                noise_g=_log_uniform(rng, *env.noise_g) * noise_scale,
                wander_g=rng.uniform(0.05, 0.4),
                wander_tau_s=rng.uniform(1.0, 8.0),
                # about 2 g per 12-15 min (RobTillaart/HX711 #21): a few g per 10 min at most
                drift_g_per_min=_signed(rng, 0.0, 0.4, 0.5),
                drift_wave_g=rng.uniform(0.0, 2.0),
                drift_period_s=rng.uniform(300.0, 1800.0),
                drift_phase=rng.uniform(0, TWO_PI),
                creep_frac=rng.uniform(0.0005, 0.005),
                creep_tau_s=rng.uniform(10.0, 60.0),
                plate_hz=rng.uniform(10.0, 25.0),
                mains_g=rng.uniform(0.2, 2.0) if mains else 0.0,
                mains_phase=rng.uniform(0, TWO_PI),
                vibration_gain=tuple(_signed(rng, 0.2, 1.0, 0.3) for _ in modes),
                board_gain=_signed(rng, 0.3, 1.0, 0.2),
            )
        )
    for i, lane in enumerate(lanes):
        sides = []
        for j in (i - 1, i + 1):
            if 0 <= j < n:
                hand = _signed(rng, 0.005, 0.05, 0.2)
                sides.append((hand, hand * rng.uniform(0.0, 0.4)))
            else:
                sides.append((0.0, 0.0))
        lane.cross_hand = (sides[0][0], sides[1][0])
        lane.cross_load = (sides[0][1], sides[1][1])
    return ShelfPhysics(
        sample_rate_hz=float(sample_rate_hz),
        conversion_hz=conversion_hz,
        lanes=lanes,
        ring_tau_s=rng.uniform(0.2, 1.0) / 3.0,  # rings down to ~5 % in 0.2-1 s
        board_hz=rng.uniform(4.0, 15.0),
        board_share=rng.uniform(0.1, 0.6),
        mains_hz=60.0 if rng.random() < 0.2 else 50.0,
        vibration=modes,
        glitch_rate=_log_uniform(rng, *env.glitch_rate),
    )


def _counts_per_gram(rng: random.Random, load_g: float) -> float:
    # The smallest stock cell that carries the lane with margin (sometimes one size up), at
    # 0.9-2 mV/V; the result is kept to the project's working range of 90-1200 counts/g.
    need_kg = (load_g + 1500.0) * 1.3 / 1000.0
    sizes = [kg for kg in CELL_KG if kg >= need_kg] or [CELL_KG[-1]]
    kg = sizes[1] if len(sizes) > 1 and rng.random() < 0.3 else sizes[0]
    cpg = rng.uniform(0.9, 2.0) * COUNTS_PER_MV_PER_V / (kg * 1000.0)
    cpg = min(1200.0, max(90.0, cpg))
    return -cpg if rng.random() < 0.08 else cpg


def _offset(rng: random.Random, cpg: float, low_g: float, high_g: float) -> int:
    # Anywhere in the 24-bit range, as long as the lane's whole load range stays 5 % inside it.
    margin = 0.05 * (RAW_MAX - RAW_MIN)
    span = sorted((cpg * low_g, cpg * high_g))
    lo = RAW_MIN + margin - span[0]
    hi = RAW_MAX - margin - span[1]
    if lo > hi:
        return round((lo + hi) / 2)
    return round(rng.uniform(lo, hi))


class Episode:
    """One thing that touched the shelf, as smooth force transitions over time.

    `load` steps move the lane's contents (they add up to the net change); `hand` steps are
    the hand's extra force (they add up to zero); wiggles are tremor and wander of a hand.
    """

    __slots__ = (
        "kind", "lane", "label", "t_start", "t_end", "t_settle", "count", "delta_g",
        "weights", "load_steps", "hand_steps", "wiggles", "net_g",
    )  # fmt: skip

    def __init__(self, kind: str, lane: int, t_start: float, label: str):
        self.kind = kind  # pick, put, foreign, unforeign, rest, touch, bump
        self.lane = lane  # -1: the whole shelf
        self.label = label  # the actions.csv kind: pick2, rest480, ...
        self.t_start = t_start
        self.t_end = t_start  # the hand has left
        self.t_settle = t_start  # the shelf is still again
        self.count: int | None = 0  # signed items moved; None: not the lane's product
        self.delta_g = 0.0  # true change of the lane's contents
        self.weights: list[float] = []  # the items moved
        self.load_steps: list[tuple[float, float, float]] = []  # (t0, t1, grams)
        self.hand_steps: list[tuple[float, float, float]] = []
        self.wiggles: list[tuple[float, float, float, float, float]] = []  # t0,t1,g,w,phase
        self.net_g = 0.0

    @property
    def changes_contents(self) -> bool:
        return self.kind in ("pick", "put", "foreign", "unforeign")

    def load(self, t0: float, t1: float, grams: float) -> None:
        self.load_steps.append((t0, max(t1, t0 + 1.0), grams))
        self.net_g += grams
        self.t_end = max(self.t_end, t1)

    def press(self, t0: float, rise_ms: float, t1: float, fall_ms: float, grams: float) -> None:
        """The hand pushes `grams` from t0 (reached after rise_ms) until t1 (gone fall_ms later)."""
        self.hand_steps.append((t0, t0 + max(rise_ms, 1.0), grams))
        self.hand_steps.append((t1, t1 + max(fall_ms, 1.0), -grams))
        self.t_end = max(self.t_end, t1 + fall_ms)

    def wiggle(self, t0: float, t1: float, grams: float, hz: float, phase: float) -> None:
        if t1 > t0 and grams:
            self.wiggles.append((t0, t1, grams, TWO_PI * hz / 1000.0, phase))

    def forces(self, t: float) -> tuple[float, float]:
        """(contents, hand) in grams at time t, relative to before the episode."""
        load = _eased(self.load_steps, t)
        hand = _eased(self.hand_steps, t)
        for t0, t1, g, w, ph in self.wiggles:
            if t0 < t < t1:
                taper = min(1.0, (t - t0) / 150.0, (t1 - t) / 150.0)
                hand += g * taper * math.sin(w * (t - t0) + ph)
        return load, hand


class _Ring:
    """A decaying oscillation of the shelf, started by an impact or a bump."""

    __slots__ = ("t0", "t_dead", "amps", "ws", "atts", "tau_ms")

    def __init__(self, t0: float, amps: list[float], hz: list[float], tau_ms: float, conv: float):
        self.t0 = t0
        self.amps = amps
        self.ws = [TWO_PI * f / 1000.0 for f in hz]
        # The converter averages over a conversion: fast ringing is partly averaged away.
        self.atts = [sinc(f / conv) for f in hz]
        self.tau_ms = tau_ms
        peak = max((abs(a) for a in amps), default=0.0)
        self.t_dead = t0 + tau_ms * math.log(max(peak, _RING_FLOOR_G) / _RING_FLOOR_G)

    def at(self, lane: int, t: float) -> float:
        dt = t - self.t0
        if dt <= 0.0 or t > self.t_dead:
            return 0.0
        a = self.amps[lane]
        if not a:
            return 0.0
        return a * self.atts[lane] * math.exp(-dt / self.tau_ms) * math.sin(self.ws[lane] * dt)


class _LaneState:
    __slots__ = (
        "p", "static_g", "load0", "own", "cross", "t_last", "creep", "creep_rate", "wander",
        "wander_rate", "drift_per_ms", "drift_w", "stock", "foreign", "vib_gain",
    )  # fmt: skip

    def __init__(self, p: LanePhysics, items: Sequence[float]):
        self.p = p
        self.stock = list(items)  # actual weights of the lane's items, last one on top
        self.foreign: list[float] = []
        self.static_g = float(sum(self.stock))
        self.load0 = self.static_g  # creep is measured from the load the cell has settled at
        self.own: list[Episode] = []
        self.cross: list[tuple[float, float, Episode]] = []
        self.t_last = 0.0
        self.creep = 0.0
        self.creep_rate = 1.0 / (p.creep_tau_s * 1000.0)
        self.wander = 0.0
        self.wander_rate = 1.0 / (p.wander_tau_s * 1000.0)
        self.drift_per_ms = p.drift_g_per_min / 60000.0
        self.drift_w = TWO_PI / (p.drift_period_s * 1000.0)
        self.vib_gain = p.vibration_gain


class Shelf:
    """A shelf of 1-8 lanes, scheduled with episodes and read sample by sample."""

    def __init__(self, physics: ShelfPhysics, stock: Sequence[Sequence[float]], rng: random.Random):
        if len(stock) != len(physics.lanes):
            raise ValueError("one stock list per lane")
        self.physics = physics
        self.n_lanes = len(physics.lanes)
        self.episodes: list[Episode] = []  # everything scheduled, in scheduling order
        self.last_glitch = False  # the last read was garbled (its next read tends to be late)
        # Separate streams, so that scheduling more episodes does not change the noise.
        self._shape = random.Random(rng.getrandbits(64))
        self._noise = random.Random(rng.getrandbits(64))
        self._glitch = random.Random(rng.getrandbits(64))
        self._vib_seed = rng.getrandbits(64)
        self._lanes = [_LaneState(p, s) for p, s in zip(physics.lanes, stock, strict=True)]
        self._latency = physics.latency_ms
        self._pending: list[tuple[float, int, object]] = []
        self._seq = 0
        self._active: list[Episode] = []
        self._rings: list[_Ring] = []
        self._next_change = math.inf
        self._mains_w = TWO_PI * physics.mains_hz / 1000.0
        self._mains_att = sinc(physics.mains_hz / physics.conversion_hz)
        self._vib_w = []
        for m in physics.vibration:
            hz = (m.hz, m.hz + m.beat_hz[0], m.hz - m.beat_hz[1])
            atts = [sinc(f / physics.conversion_hz) for f in hz]
            self._vib_w.append([(TWO_PI * f / 1000.0, a) for f, a in zip(hz, atts, strict=True)])
        self._bursts: dict[tuple[int, int], list[tuple[float, float, float]]] = {}
        self._vib_t = math.nan
        self._vib_vals: list[float] = []

    # ---- the lane's contents -------------------------------------------------------------

    def stock(self, lane: int) -> list[float]:
        """Weights of the items the lane will hold once everything scheduled has happened."""
        return list(self._lanes[lane].stock)

    def foreign(self, lane: int) -> list[float]:
        return list(self._lanes[lane].foreign)

    # ---- scheduling ----------------------------------------------------------------------

    def pick(self, lane: int, t_ms: float, count: int = 1, together: bool | None = None) -> Episode:
        """A hand presses, then lifts `count` items off the top of the lane."""
        st = self._lanes[lane]
        if not 1 <= count <= len(st.stock):
            raise ValueError(f"lane {lane}: cannot pick {count} of {len(st.stock)} items")
        items = [st.stock.pop() for _ in range(count)]
        ep = Episode("pick", lane, t_ms, f"pick{count}")
        ep.count, ep.weights = -count, items
        if together is None:
            together = count == 1 or self._shape.random() < 0.5
        groups = [items] if together else [[w] for w in items]
        t = self._lift(ep, t_ms, groups)
        ep.delta_g = -sum(items)
        return self._schedule(ep, t)

    def put(self, lane: int, t_ms: float, weights: Sequence[float]) -> Episode:
        """A hand sets items down on the lane, one after another."""
        if not weights:
            raise ValueError("put needs at least one item")
        ep = Episode("put", lane, t_ms, f"put{len(weights)}")
        ep.count, ep.weights = len(weights), list(weights)
        t = self._set_down(ep, t_ms, list(weights))
        self._lanes[lane].stock.extend(weights)
        ep.delta_g = sum(weights)
        return self._schedule(ep, t)

    def place_foreign(self, lane: int, t_ms: float, grams: float) -> Episode:
        """Something that is not the lane's product is put down on it."""
        ep = Episode("foreign", lane, t_ms, "foreign0")
        ep.count, ep.weights, ep.delta_g = None, [grams], grams
        t = self._set_down(ep, t_ms, [grams])
        self._lanes[lane].foreign.append(grams)
        return self._schedule(ep, t)

    def take_foreign(self, lane: int, t_ms: float, grams: float) -> Episode:
        """A foreign item put down earlier is taken away again."""
        st = self._lanes[lane]
        if grams not in st.foreign:
            raise ValueError(f"lane {lane}: no foreign item of {grams} g")
        st.foreign.remove(grams)
        ep = Episode("unforeign", lane, t_ms, "foreign0")
        ep.count, ep.weights, ep.delta_g = None, [grams], -grams
        t = self._lift(ep, t_ms, [[grams]])
        return self._schedule(ep, t)

    def rest(self, lane: int, t_ms: float, grams: float, hold_ms: float) -> Episode:
        """A hand leans on the lane: nearly flat, with slow wander and a little tremor."""
        rnd = self._shape
        ep = Episode("rest", lane, t_ms, f"rest{round(grams)}")
        rise, fall = rnd.uniform(100, 300), rnd.uniform(100, 400)
        ep.press(t_ms, rise, t_ms + rise + hold_ms, fall, grams)
        a, b = t_ms + rise, t_ms + rise + hold_ms
        ep.wiggle(a, b, grams * rnd.uniform(0.02, 0.06), rnd.uniform(0.2, 1.0), rnd.uniform(0, 6))
        ep.wiggle(a, b, grams * rnd.uniform(0.003, 0.015), rnd.uniform(7, 12), rnd.uniform(0, 6))
        self._ring(ep, lane, t_ms + rise, grams * rnd.uniform(0.0, 0.05))
        return self._schedule(ep, ep.t_end)

    def touch(self, lane: int, t_ms: float, hold_ms: float, fraction: float = 1.0) -> Episode:
        """The top item is lifted (fully, or tilted: `fraction` of it) and put straight back."""
        st = self._lanes[lane]
        if not st.stock:
            raise ValueError(f"lane {lane}: nothing to touch")
        rnd = self._shape
        w = st.stock[-1]
        ep = Episode("touch", lane, t_ms, "touch")
        t_up = self._lift(ep, t_ms, [[w * fraction]])
        if fraction < 1.0:
            # A tilted item still rests on the lane: the holding hand's tremor shows through.
            tremor = w * rnd.uniform(0.01, 0.05)
            ep.wiggle(t_up, t_up + hold_ms, tremor, rnd.uniform(6, 12), rnd.uniform(0, 6))
        self._set_down(ep, t_up + hold_ms, [w * fraction])
        ep.weights = [w]
        return self._schedule(ep, ep.t_end)

    def bump(self, t_ms: float, grams: float) -> Episode:
        """A cart or a shoulder knocks the gondola: every lane rings for about a second."""
        ph = self.physics
        ep = Episode("bump", -1, t_ms, f"bump{round(grams)}")
        amps = [grams * p.board_gain for p in ph.lanes]
        tau = self._shape.uniform(0.2, 0.35) * 1000.0
        self._push(t_ms, _Ring(t_ms, amps, [ph.board_hz] * self.n_lanes, tau, ph.conversion_hz))
        ep.t_end = t_ms + 1000.0
        ep.t_settle = max(ep.t_end, self._settle_after(t_ms, amps, tau))
        return self._schedule(ep, ep.t_end, keep_settle=True)

    # ---- shapes --------------------------------------------------------------------------

    def _lift(self, ep: Episode, t0: float, groups: list[list[float]]) -> float:
        """Press, then lift each group of items; returns when the hand is gone."""
        rnd = self._shape
        t = t0
        for weights in groups:
            w = sum(weights)
            # Fingers settle on the item before it leaves: mostly a few % to 40 % of its weight.
            share = _log_uniform(rnd, 0.02, 0.4) if rnd.random() < 0.8 else rnd.uniform(0.4, 1.0)
            push = weights[0] * share + rnd.uniform(0.0, 8.0)
            hold = rnd.uniform(100.0, 500.0)
            lift = _log_uniform(rnd, 80.0, 900.0)
            rise = min(hold * 0.6, rnd.uniform(40.0, 150.0))
            ep.press(t, rise, t + hold, lift * rnd.uniform(0.3, 1.0), push)
            ep.wiggle(t + rise, t + hold, push * rnd.uniform(0.02, 0.1), rnd.uniform(7, 12), 0.0)
            ep.load(t + hold, t + hold + lift, -w)
            # Letting go springs the plate back: it rings, first swinging past the new load.
            self._ring(ep, ep.lane, t + hold + lift * 0.7, -w * rnd.uniform(0.04, 0.2))
            t += hold + lift + rnd.uniform(150.0, 500.0)
        return ep.t_end

    def _set_down(self, ep: Episode, t0: float, weights: list[float]) -> float:
        """Lower each item onto the lane with an impact, then adjust and let go."""
        rnd = self._shape
        t = t0
        for w in weights:
            lower = _log_uniform(rnd, 60.0, 400.0)
            ep.load(t, t + lower, w)
            hit = t + lower
            spike = w * rnd.uniform(0.1, 0.5)
            fall = rnd.uniform(30.0, 80.0)
            ep.press(hit - 15.0, rnd.uniform(10.0, 30.0), hit + 15.0, fall, spike)
            self._ring(ep, ep.lane, hit, w * rnd.uniform(0.05, 0.2))
            adjust = w * rnd.uniform(0.05, 0.3) + rnd.uniform(0.0, 15.0)
            hold = rnd.uniform(100.0, 600.0)
            ep.press(hit, 50.0, hit + hold, rnd.uniform(50.0, 150.0), adjust)
            self._ring(ep, ep.lane, hit + hold, -adjust * rnd.uniform(0.0, 0.3))
            t = hit + hold + rnd.uniform(100.0, 400.0)
        return ep.t_end

    def _ring(self, ep: Episode, lane: int, t0: float, grams: float) -> None:
        """An impact on `lane`: its plate rings, and the shelf board carries a share of the
        swing to every lane (the AiFi pickup: the plate at ~20 Hz, the board at ~9.5 Hz)."""
        if abs(grams) < _RING_FLOOR_G:
            return
        ph = self.physics
        n = self.n_lanes
        tau = ph.ring_tau_s * 1000.0
        plate = [grams if j == lane else 0.0 for j in range(n)]
        drive = grams * ph.board_share * ph.lanes[lane].board_gain
        board = [drive * p.board_gain for p in ph.lanes]
        conv = ph.conversion_hz
        self._push(t0, _Ring(t0, plate, [p.plate_hz for p in ph.lanes], tau, conv))
        self._push(t0, _Ring(t0, board, [ph.board_hz] * n, tau, conv))
        settle = max(self._settle_after(t0, plate, tau, lane), self._settle_after(t0, board, tau))
        ep.t_settle = max(ep.t_settle, settle)

    def _settle_after(self, t0: float, amps: list[float], tau_ms: float, lane: int = -1) -> float:
        """When ringing started at t0 has sunk below the noise, and below 1 g (a scale's last
        digit), on `lane` (or on every lane)."""
        lanes = range(self.n_lanes) if lane < 0 else [lane]
        ratio = max(abs(amps[j]) / max(1.0, self.physics.lanes[j].noise_g) for j in lanes)
        return t0 + (tau_ms * math.log(ratio) if ratio > 1.0 else 0.0)

    def _schedule(self, ep: Episode, t_end: float, keep_settle: bool = False) -> Episode:
        ep.t_end = max(ep.t_end, t_end)
        if not keep_settle:
            ep.t_settle = max(ep.t_settle, ep.t_end) + 50.0
        ep.t_start, ep.t_end, ep.t_settle = round(ep.t_start), round(ep.t_end), round(ep.t_settle)
        self.episodes.append(ep)
        if ep.lane >= 0:
            self._push(min(s[0] for s in ep.load_steps + ep.hand_steps), ep)
        return ep

    def _push(self, t0: float, item: object) -> None:
        self._seq += 1
        heapq.heappush(self._pending, (t0, self._seq, item))
        self._next_change = min(self._next_change, t0)

    # ---- time ----------------------------------------------------------------------------

    def _advance(self, t: float) -> None:
        changed = False
        while self._pending and self._pending[0][0] <= t:
            item = heapq.heappop(self._pending)[2]
            if isinstance(item, _Ring):
                self._rings.append(item)
            else:
                self._active.append(item)  # type: ignore[arg-type]
                changed = True
        still = []
        for ep in self._active:
            if t > ep.t_end + _GUARD_MS:
                self._fold(ep)
                changed = True
            else:
                still.append(ep)
        self._active = still
        self._rings = [r for r in self._rings if t <= r.t_dead + _GUARD_MS]
        if changed:
            self._relink()
        nxt = [self._pending[0][0]] if self._pending else []
        nxt += [ep.t_end + _GUARD_MS for ep in self._active]
        nxt += [r.t_dead + _GUARD_MS for r in self._rings]
        self._next_change = min(nxt, default=math.inf)

    def _fold(self, ep: Episode) -> None:
        """A finished episode becomes part of the lanes' steady load."""
        lanes = self._lanes
        lanes[ep.lane].static_g += ep.net_g
        if ep.lane > 0:
            lanes[ep.lane - 1].static_g += lanes[ep.lane - 1].p.cross_load[1] * ep.net_g
        if ep.lane + 1 < self.n_lanes:
            lanes[ep.lane + 1].static_g += lanes[ep.lane + 1].p.cross_load[0] * ep.net_g

    def _relink(self) -> None:
        for st in self._lanes:
            st.own, st.cross = [], []
        for ep in self._active:
            lanes = self._lanes
            lanes[ep.lane].own.append(ep)
            if ep.lane > 0:
                p = lanes[ep.lane - 1].p
                lanes[ep.lane - 1].cross.append((p.cross_load[1], p.cross_hand[1], ep))
            if ep.lane + 1 < self.n_lanes:
                p = lanes[ep.lane + 1].p
                lanes[ep.lane + 1].cross.append((p.cross_load[0], p.cross_hand[0], ep))

    # ---- reading -------------------------------------------------------------------------

    def grams(self, lane: int, t_ms: float) -> float:
        """The mechanical load on the lane (no noise, ringing, drift or creep): for checks."""
        t = t_ms - self._latency
        if t >= self._next_change:
            self._advance(t)
        st = self._lanes[lane]
        g = st.static_g
        for ep in st.own:
            load, hand = ep.forces(t)
            g += load + hand
        for k_load, k_hand, ep in st.cross:
            load, hand = ep.forces(t)
            g += k_load * load + k_hand * hand
        return g

    def read(self, lane: int, t_ms: float) -> int:
        """The count an HX711 driver returns for `lane` when read at `t_ms`."""
        t = t_ms - self._latency
        g = self.grams(lane, t_ms)
        st = self._lanes[lane]
        p = st.p
        dt = t - st.t_last
        if dt > 0.0:
            st.t_last = t
            k = min(1.0, dt * st.creep_rate)
            st.creep += (p.creep_frac * (g - st.load0) - st.creep) * k
            k = min(1.0, dt * st.wander_rate)
            st.wander += -st.wander * k + p.wander_g * math.sqrt(2.0 * k) * self._noise.gauss(
                0.0, 1.0
            )
        g += st.creep + st.wander
        g += st.drift_per_ms * t + p.drift_wave_g * math.sin(st.drift_w * t + p.drift_phase)
        for ring in self._rings:
            g += ring.at(lane, t)
        if self._vib_w:
            vals = self._vibration(t)
            for gain, v in zip(st.vib_gain, vals, strict=True):
                g += gain * v
        if p.mains_g:
            g += p.mains_g * self._mains_att * math.sin(self._mains_w * t_ms + p.mains_phase)
        g += p.noise_g * self._noise.gauss(0.0, 1.0)
        raw = p.offset + round(p.counts_per_gram * g)
        raw = RAW_MAX if raw > RAW_MAX else RAW_MIN if raw < RAW_MIN else raw
        self.last_glitch = self._glitch.random() < self.physics.glitch_rate
        return _garble(raw, self._glitch) if self.last_glitch else raw

    def step(self, t_ms: float) -> list[int]:
        """Every lane read at the same moment (a convenience; real boards read in turn)."""
        return [self.read(lane, t_ms) for lane in range(self.n_lanes)]

    # ---- the gondola's vibration -----------------------------------------------------------

    def _vibration(self, t: float) -> list[float]:
        if t == self._vib_t:
            return self._vib_vals
        vals = []
        for k, (mode, tones) in enumerate(zip(self.physics.vibration, self._vib_w, strict=True)):
            env = mode.base_g + self._burst_envelope(k, mode, t)
            (w0, a0), (w1, a1), (w2, a2) = tones
            ph = mode.phases
            # Three close tones beat: the amplitude swells and fades like a real floor's.
            s = (
                a0 * math.sin(w0 * t + ph[0])
                + 0.6 * a1 * math.sin(w1 * t + ph[1])
                + 0.4 * a2 * math.sin(w2 * t + ph[2])
            )
            vals.append(env * s * 1.147)  # 1.147: the three tones' sum has unit rms
        self._vib_t, self._vib_vals = t, vals
        return vals

    def _burst_envelope(self, k: int, mode: VibrationMode, t: float) -> float:
        # Bursts are drawn per 30 s chunk from their own seed: any read order sees the same.
        chunk = int(t // 30000.0)
        env = 0.0
        for c in (chunk - 1, chunk, chunk + 1):
            for centre, half, peak in self._chunk_bursts(k, mode, c):
                d = abs(t - centre)
                if d < half:
                    env += peak * 0.5 * (1.0 + math.cos(math.pi * d / half))
        return env

    def _chunk_bursts(self, k: int, mode: VibrationMode, c: int) -> list:
        key = (k, c)
        if key not in self._bursts:
            rnd = random.Random(self._vib_seed * 1000003 + k * 7919 + c)
            n = _poisson(rnd, mode.bursts_per_min * 0.5)
            self._bursts[key] = [
                (
                    (c + rnd.random()) * 30000.0,
                    rnd.uniform(*mode.burst_s) * 500.0,
                    mode.burst_g * rnd.uniform(0.3, 1.3),
                )
                for _ in range(n)
            ]
        return self._bursts[key]


def _poisson(rng: random.Random, mean: float) -> int:
    n, p, limit = 0, 1.0, math.exp(-mean)
    while True:
        p *= rng.random()
        if p <= limit:
            return n
        n += 1


def _garble(raw: int, rng: random.Random) -> int:
    """What a disturbed HX711 read returns instead of `raw` (field notes: bogde/HX711 #83)."""
    r = rng.random()
    if r < 0.2:
        return RAW_MAX  # saturated, or every bit read as one
    if r < 0.3:
        return RAW_MIN
    if r < 0.45:
        return 0  # the chip powered down, or DOUT stuck low
    u = raw & 0xFFFFFF
    if r < 0.6:
        u >>= 1  # one clock too few: every bit lands one place late
    elif r < 0.75:
        u |= 1 << 22
    elif r < 0.9:
        u |= (1 << rng.randint(4, 20)) - 1  # an interrupt mid-read: the remaining bits are ones
    else:
        u = (1 << rng.choice((21, 22))) - 1  # 2^n - 1 spikes
    return u - (1 << 24) if u & 0x800000 else u
