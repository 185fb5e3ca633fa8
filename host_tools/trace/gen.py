"""Synthetic shelf traces: a random but plausible scenario run through the load-cell physics.

`generate(seed, ...)` draws a shelf (products, cells, surroundings), lets shoppers act on it
(`host_tools.sim.shopper`), reads it the way a board's loop would (`record`: period jitter,
dropped reads, busy gaps) and returns a `Trace` whose truth follows traces/FORMAT.md.
`generate_set` writes many; `add_arguments` / `run` are the `shelfctl trace gen` command.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

from host_tools.sim.loadcell import Environment, Episode, Shelf, draw_physics
from host_tools.sim.shopper import Behaviour, LaneStock, draw_stock, plan_visits
from host_tools.trace.io import Action, LaneMeta, Trace, TruthRow, write_trace

GENERATOR_VERSION = 1
RATES = (10, 60, 80)
STILLNESS_MS = 1000  # FORMAT.md: less than about a second of stillness joins actions
LEAD_IN_MS = 2000  # the shelf is left alone at first, so a detector can find its baseline


@dataclass
class Timing:
    """How the board's loop reads: jitter, lost reads and busy stretches."""

    jitter_ms: tuple[float, float] = (1.0, 2.0)
    drop_p: tuple[float, float] = (0.0005, 0.005)  # a whole period lost
    gaps_per_min: tuple[float, float] = (0.0, 1.5)  # 100-300 ms with no reads at all


@dataclass
class Profile:
    env: Environment
    behaviour: Behaviour
    timing: Timing = field(default_factory=Timing)


def _acts(**changes: float) -> dict[str, float]:
    acts = Behaviour().acts
    acts.update(changes)
    return acts


PROFILES: dict[str, Profile] = {
    "quiet": Profile(
        Environment(noise_g=(0.25, 0.7), vibration_p=0.0, mains_p=0.1, glitch_rate=(5e-4, 2e-3)),
        Behaviour(
            visits_per_min=1.5,
            acts_per_visit=(1, 2),
            acts=_acts(rest=0.3, rest_beside=0.2, touch=0.5, two_hands=0.2, foreign=0.2),
            bumps_per_min=0.1,
        ),
        Timing(drop_p=(5e-4, 1e-3), gaps_per_min=(0.0, 0.3)),
    ),
    "mixed": Profile(Environment(), Behaviour()),
    "busy": Profile(
        Environment(),
        Behaviour(
            visits_per_min=5.0,
            acts_per_visit=(2, 6),
            gap_s=(0.2, 1.5),
            acts=_acts(two_hands=1.5, rest_beside=1.5, double=1.5, touch=2.0),
            multi_p=0.3,
            bumps_per_min=1.0,
        ),
    ),
    "noisy": Profile(
        Environment(
            noise_g=(0.8, 3.0),
            vibration_p=1.0,
            vibration_g=(15.0, 40.0),
            mains_p=0.6,
            glitch_rate=(2e-3, 1e-2),
        ),
        Behaviour(bumps_per_min=1.5),
        Timing(drop_p=(2e-3, 1e-2), gaps_per_min=(0.5, 3.0)),
    ),
}
ANY = "any"  # a profile drawn per trace from PROFILES


@dataclass
class Simulation:
    """A generated trace together with the objects that made it (for tests and diagnostics)."""

    trace: Trace
    shelf: Shelf
    stock: list[LaneStock]
    episodes: list[Episode]
    profile: str


def simulate(
    seed: int,
    *,
    lanes: int = 6,
    sample_rate_hz: int = 80,
    duration_s: float = 90.0,
    profile: str = "mixed",
) -> Simulation:
    """`generate`, keeping the shelf, stock and episodes behind the trace (tests, diagnostics)."""
    _check(lanes, sample_rate_hz, duration_s, profile)
    rng = random.Random(seed)
    if profile == ANY:
        profile = rng.choice(sorted(PROFILES))
    prof = PROFILES[profile]
    duration_ms = round(duration_s * 1000.0)
    stock = draw_stock(rng, lanes)
    loads = [(s.tray_g, s.capacity * s.unit_g * 1.15) for s in stock]
    physics = draw_physics(rng, sample_rate_hz, loads, prof.env)
    shelf = Shelf(physics, [s.items for s in stock], rng)
    episodes = plan_visits(shelf, stock, prof.behaviour, rng, LEAD_IN_MS, duration_ms)
    samples = record(shelf, duration_ms, rng, prof.timing)
    meta = [_calibration(rng, i, s, physics.lanes[i]) for i, s in enumerate(stock)]
    trace = Trace(
        path=None,
        sample_rate_hz=sample_rate_hz,
        lanes=meta,
        samples=samples,
        truth=truth_rows(episodes),
        actions=actions_of(episodes),
        extra_meta={
            "source": "synthetic (shelfctl trace gen)",
            "generator": {"version": GENERATOR_VERSION, "seed": seed, "profile": profile},
        },
    )
    return Simulation(trace, shelf, stock, episodes, profile)


def generate(
    seed: int,
    *,
    lanes: int = 6,
    sample_rate_hz: int = 80,
    duration_s: float = 90.0,
    profile: str = "mixed",
) -> Trace:
    """A random but plausible trace, the same for the same arguments."""
    return simulate(
        seed, lanes=lanes, sample_rate_hz=sample_rate_hz, duration_s=duration_s, profile=profile
    ).trace


def generate_set(
    out_dir: str | Path,
    *,
    count: int,
    seed: int,
    lanes: int | None = None,
    sample_rate_hz: int | None = None,
    duration_s: float = 90.0,
    profile: str = "mixed",
) -> list[Path]:
    """Write `count` traces to out_dir/gen-<seed>-<i>; lanes and rate vary unless given."""
    return [
        path
        for path, _ in _write_set(
            Path(out_dir), count, seed, lanes, sample_rate_hz, duration_s, profile
        )
    ]


def _write_set(out: Path, count, seed, lanes, sample_rate_hz, duration_s, profile):
    if not 1 <= count <= 10000:  # trace i of a set is seed * 10000 + i: no overlap between sets
        raise ValueError(f"count must be 1..10000, not {count}")
    rng = random.Random(f"set:{seed}")
    for i in range(count):
        n = lanes if lanes is not None else rng.randint(1, 8)
        rate = sample_rate_hz if sample_rate_hz is not None else rng.choices(RATES, (3, 1, 6))[0]
        trace = generate(
            seed * 10000 + i, lanes=n, sample_rate_hz=rate, duration_s=duration_s, profile=profile
        )
        yield write_trace(trace, out / f"gen-{seed}-{i:03d}"), trace


# ---- pieces -------------------------------------------------------------------------------


def record(shelf: Shelf, duration_ms: int, rng: random.Random, timing: Timing) -> list:
    """Read the shelf the way the firmware's driver does, into (t_ms, lane, raw) rows.

    The driver waits until every HX711 has a conversion ready and reads them all at once on a
    shared clock: every lane gets the same time, once per conversion of the chips (80-94 Hz
    for "80 SPS"), plus a millisecond or two of polling and reading.
    """
    period = 1000.0 / shelf.physics.conversion_hz
    jitter = rng.uniform(*timing.jitter_ms)
    drop_p = math.exp(rng.uniform(*(math.log(p) for p in timing.drop_p)))
    gaps = _gaps(rng, duration_ms, rng.uniform(*timing.gaps_per_min))
    samples: list[tuple[int, int, int]] = []
    last, late = 0, 0.0
    ready = rng.uniform(0.0, period)
    while ready <= duration_ms:
        t = max(last, round(ready + rng.uniform(0.0, jitter) + late))
        ready += period
        late = 0.0
        if t > duration_ms:
            break
        if rng.random() < drop_p or any(a <= t < b for a, b in gaps):
            continue  # the loop was busy: this conversion was never read
        for lane in range(shelf.n_lanes):
            raw = shelf.read(lane, t)
            if shelf.last_glitch:
                late = rng.uniform(1.0, 3.0)  # the read after a spike takes longer
            samples.append((t, lane, raw))
        last = t
    return samples


def _gaps(rng: random.Random, duration_ms: int, per_min: float) -> list[tuple[float, float]]:
    gaps, t = [], 0.0
    while per_min > 0:
        t += rng.expovariate(per_min / 60000.0)
        if t > duration_ms:
            break
        gaps.append((t, t + rng.uniform(100.0, 300.0)))
    return gaps


def _calibration(rng: random.Random, lane: int, stock: LaneStock, physics) -> LaneMeta:
    # Provisioning weighed a reference a while ago: the slope is a little off, and the zero
    # was taken with the tray on (usually) or on the bare cell (grams then include the tray).
    cpg = physics.counts_per_gram
    offset = physics.offset + round(cpg * rng.gauss(0.0, 1.5))
    if rng.random() < 0.3:
        offset -= round(cpg * stock.tray_g)
    return LaneMeta(
        lane=lane,
        offset=offset,
        counts_per_gram=round(cpg * (1.0 + rng.gauss(0.0, 0.002)), 4),
        unit_g=stock.unit_g,
        sku=stock.sku,
        capacity=stock.capacity,
    )


def truth_rows(episodes: list[Episode], stillness_ms: int = STILLNESS_MS) -> list[TruthRow]:
    """One row per real change; changes on a lane with less stillness between them join."""
    groups: list[list[Episode]] = []
    open_group: dict[int, list[Episode]] = {}
    for ep in sorted((e for e in episodes if e.changes_contents), key=lambda e: e.t_start):
        group = open_group.get(ep.lane)
        if group and ep.t_start - max(e.t_settle for e in group) < stillness_ms:
            group.append(ep)
        else:
            open_group[ep.lane] = [ep]
            groups.append(open_group[ep.lane])
    rows = []
    for group in groups:
        counts = [e.count for e in group]
        rows.append(
            TruthRow(
                # when the hand left, as in traces/examples: the shelf may ring a little
                # longer, and a detector's latency is counted from here
                t_ms=max(e.t_end for e in group),
                lane=group[0].lane,
                count=None if None in counts else sum(c for c in counts if c is not None),
                delta_g=round(sum(e.delta_g for e in group), 2),
                t_start_ms=min(e.t_start for e in group),
            )
        )
    return sorted(rows, key=lambda r: (r.t_ms, r.lane))


def actions_of(episodes: list[Episode]) -> list[Action]:
    acts = [Action(e.t_start, e.t_end, e.lane, e.label) for e in episodes]
    return sorted(acts, key=lambda a: (a.t_start_ms, a.lane))


def _check(lanes: int, rate: int, duration_s: float, profile: str) -> None:
    if not 1 <= lanes <= 8:
        raise ValueError(f"lanes must be 1..8, not {lanes}")
    if rate not in RATES:
        raise ValueError(f"rate must be one of {', '.join(map(str, RATES))} SPS, not {rate}")
    if not 20.0 <= duration_s <= 3600.0:
        raise ValueError(f"duration must be 20..3600 s, not {duration_s:g}")
    if profile != ANY and profile not in PROFILES:
        names = ", ".join([*PROFILES, ANY])
        raise ValueError(f"unknown profile {profile!r} (one of {names})")


# ---- shelfctl trace gen ---------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="directory for the traces (gen-<seed>-<i>)")
    parser.add_argument("--seed", type=int, default=1, help="same seed, same traces (default 1)")
    parser.add_argument("--count", type=int, default=1, help="how many traces (default 1)")
    parser.add_argument("--lanes", type=int, help="lanes per shelf, 1..8 (default: 1..8 mixed)")
    parser.add_argument("--rate", type=int, help="10, 60 or 80 SPS (default: mixed)")
    parser.add_argument(
        "--duration", type=float, default=90.0, help="seconds per trace (default 90)"
    )
    parser.add_argument(
        "--profile",
        default="mixed",
        help=f"shelf and shopper profile: {', '.join([*PROFILES, ANY])} (default mixed)",
    )


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    try:
        if not 1 <= args.count <= 10000:
            raise ValueError(f"count must be 1..10000, not {args.count}")  # before mkdir
        _check(
            args.lanes if args.lanes is not None else 1,
            args.rate if args.rate is not None else RATES[-1],
            args.duration,
            args.profile,
        )
        if out.exists() and not out.is_dir():
            raise ValueError(f"{out} is a file, not a directory")
        rows = 0
        written = _write_set(
            out, args.count, args.seed, args.lanes, args.rate, args.duration, args.profile
        )
        for path, trace in written:
            rows += len(trace.truth)
            print(
                f"{path}: {len(trace.lanes)} lanes, {trace.sample_rate_hz:g} SPS, "
                f"{len(trace.truth)} truth rows"
            )
    except (ValueError, OSError) as e:
        print(f"shelfctl trace gen: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.count} traces to {out} ({rows} truth rows)")
    return 0
