"""The synthetic trace generator and the load-cell physics behind it."""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import statistics

import pytest

from host_tools.sim import shopper
from host_tools.sim.loadcell import RAW_MAX, RAW_MIN, Shelf, ShelfPhysics, draw_physics
from host_tools.trace import gen
from host_tools.trace.io import read_trace, write_trace

CHANGES = ("pick", "put", "foreign")


def _count(kind: str) -> int:
    if kind.startswith("pick"):
        return -int(kind[4:])
    if kind.startswith("put"):
        return int(kind[3:])
    return 0


def _lane_series(trace, lane):
    m = trace.lanes[lane]
    return [(t, (raw - m.offset) / m.counts_per_gram) for t, ln, raw in trace.samples if ln == lane]


def _median_in(series, t0, t1):
    vals = [g for t, g in series if t0 <= t < t1]
    return statistics.median(vals) if len(vals) >= 3 else None


def _still_shelf(lanes: int = 3, rate: int = 80, **lane_changes) -> ShelfPhysics:
    """A shelf with every disturbance switched off, so one effect can be looked at alone."""
    rng = random.Random(5)
    physics = draw_physics(rng, rate, [(300.0, 3000.0)] * lanes)
    quiet = dict(
        noise_g=0.0, wander_g=0.0, drift_g_per_min=0.0, drift_wave_g=0.0, creep_frac=0.0,
        mains_g=0.0, vibration_gain=(), counts_per_gram=500.0, offset=100000,
    )  # fmt: skip
    quiet.update(lane_changes)
    physics.lanes = [dataclasses.replace(p, **quiet) for p in physics.lanes]
    physics.vibration = []
    physics.glitch_rate = 0.0
    return physics


# ---- determinism, timing, glitches ----------------------------------------------------------


def test_same_seed_gives_the_same_trace_and_another_seed_another():
    a = gen.generate(11, lanes=3, duration_s=30)
    b = gen.generate(11, lanes=3, duration_s=30)
    c = gen.generate(12, lanes=3, duration_s=30)
    assert a.samples == b.samples and a.truth == b.truth and a.actions == b.actions
    assert a.lanes == b.lanes
    assert a.samples != c.samples


@pytest.mark.parametrize("rate", [10, 60, 80])
def test_samples_come_in_time_order_at_the_chips_rate_with_every_lane_each_period(rate):
    sim = gen.simulate(3, lanes=4, sample_rate_hz=rate, duration_s=60, profile="noisy")
    trace = sim.trace
    assert trace.sample_rate_hz == rate
    times = [t for t, _, _ in trace.samples]
    assert times == sorted(times)
    assert times[0] >= 0 and times[-1] <= 60000
    # HX711s convert up to ~17 % faster than their nominal rate; the driver follows them.
    real_hz = sim.shelf.physics.conversion_hz
    assert rate <= real_hz <= (1.175 * rate if rate in (10, 80) else rate)
    period = 1000.0 / real_hz
    for lane in range(4):
        t_lane = [t for t, ln, _ in trace.samples if ln == lane]
        assert 0.9 * 60 * real_hz <= len(t_lane) <= 60 * real_hz + 1
        steps = [b - a for a, b in zip(t_lane, t_lane[1:])]
        assert abs(statistics.mean(s for s in steps if s < 1.5 * period) - period) <= 0.5
        # Lost reads and busy stretches of the loop (100-300 ms) are the only long steps.
        assert max(steps) <= 300 + 3 * period + 10
    # All lanes are read together, once per conversion.
    per_time: dict[int, list[int]] = {}
    for t, lane, _ in trace.samples:
        per_time.setdefault(t, []).append(lane)
    assert all(sorted(lanes) == [0, 1, 2, 3] for lanes in per_time.values())


def test_the_loop_sometimes_loses_reads_and_stalls():
    steps = []
    for seed in range(4):
        trace = gen.generate(seed, lanes=1, sample_rate_hz=80, duration_s=60, profile="noisy")
        t = [t for t, _, _ in trace.samples]
        steps += [b - a for a, b in zip(t, t[1:])]
    assert any(20 <= s <= 40 for s in steps)  # one period lost
    assert any(s >= 100 for s in steps)  # the loop was busy


def test_glitches_appear_at_the_drawn_rate():
    sim = gen.simulate(21, lanes=8, sample_rate_hz=80, duration_s=90, profile="noisy")
    rate = sim.shelf.physics.glitch_rate
    n = len(sim.trace.samples)
    # Saturation high/low and zero are 45 % of glitches; a real reading never lands on them.
    stuck = sum(1 for _, _, raw in sim.trace.samples if raw in (RAW_MAX, RAW_MIN, 0))
    expected = 0.45 * rate * n
    assert abs(stuck - expected) <= 4 * math.sqrt(expected) + 2
    # Bit slips: single samples far from both neighbours that are not the stuck values.
    slips = 0
    for lane in range(8):
        cpg = abs(sim.shelf.physics.lanes[lane].counts_per_gram)
        raws = [raw for _, ln, raw in sim.trace.samples if ln == lane]
        for a, b, c in zip(raws, raws[1:], raws[2:]):
            if b not in (RAW_MAX, RAW_MIN, 0) and min(abs(b - a), abs(b - c)) > 1000 * cpg:
                slips += 1
    assert 0 < slips < 0.55 * rate * n + 4 * math.sqrt(rate * n)


def test_a_shelf_without_glitches_never_returns_stuck_values():
    shelf = Shelf(_still_shelf(noise_g=2.0), [[100.0] * 5] * 3, random.Random(1))
    raws = [shelf.read(lane, t) for t in range(0, 20000, 12) for lane in range(3)]
    assert RAW_MAX not in raws and RAW_MIN not in raws and 0 not in raws
    assert not shelf.last_glitch


# ---- truth -----------------------------------------------------------------------------------


SEEDS = [(s, p) for s in range(6) for p in ("quiet", "mixed", "busy", "noisy")]


@pytest.mark.parametrize("seed,profile", SEEDS)
def test_truth_rows_hold_every_change_and_nothing_else(seed, profile):
    sim = gen.simulate(seed, lanes=1 + seed, sample_rate_hz=80, duration_s=60, profile=profile)
    trace = sim.trace
    rows_used = set()
    for a in trace.actions:
        kind = a.kind.rstrip("0123456789")
        inside = [
            i
            for i, r in enumerate(trace.truth)
            if r.lane == a.lane and r.t_start_ms <= a.t_start_ms and a.t_end_ms <= r.t_ms
        ]
        overlapping = [
            r
            for r in trace.truth
            if (r.lane == a.lane or a.lane == -1)
            and r.t_start_ms < a.t_end_ms
            and a.t_start_ms < r.t_ms
        ]
        if kind in CHANGES:
            assert len(inside) == 1, a
            rows_used.add(inside[0])
        else:  # rests, touches, bumps: no row, and no row is going on where they happen
            assert not overlapping, a
    assert rows_used == set(range(len(trace.truth)))
    for i, r in enumerate(trace.truth):
        acts = [
            a
            for a in trace.actions
            if a.lane == r.lane and r.t_start_ms <= a.t_start_ms and a.t_end_ms <= r.t_ms
        ]
        assert r.t_start_ms == min(a.t_start_ms for a in acts)
        if any(a.kind.startswith("foreign") for a in acts):
            assert r.count is None
        else:
            assert r.count == sum(_count(a.kind) for a in acts), (i, r, acts)
            unit = trace.lanes[r.lane].unit_g
            assert abs(r.delta_g - r.count * unit) <= 0.15 * abs(r.count) * unit
        assert r.t_ms <= 60000


def test_quick_actions_on_a_lane_merge_into_one_row_and_others_stay_apart():
    merged = 0
    for seed in range(8):
        trace = gen.generate(seed, lanes=6, duration_s=90, profile="busy")
        by_lane: dict[int, list] = {}
        for r in sorted(trace.truth, key=lambda r: r.t_start_ms):
            by_lane.setdefault(r.lane, []).append(r)
        for rows in by_lane.values():
            for prev, nxt in zip(rows, rows[1:]):
                assert nxt.t_start_ms - prev.t_ms >= gen.STILLNESS_MS
        for r in trace.truth:
            acts = [
                a
                for a in trace.actions
                if a.lane == r.lane and r.t_start_ms <= a.t_start_ms and a.t_end_ms <= r.t_ms
            ]
            if len(acts) > 1:
                merged += 1
                if r.count is not None:
                    assert r.count == sum(_count(a.kind) for a in acts)
    assert merged >= 3


def test_a_rest_or_touch_keeps_out_of_the_scoring_tail_of_its_lanes_last_change():
    # FORMAT.md gives a row every event up to 3 s after it: a touch's lift inside that tail
    # would be scored as part of the pick before it, whatever a detector does.
    seen = 0
    for seed in range(8):
        trace = gen.generate(seed, lanes=4, duration_s=90, profile="busy")
        for a in trace.actions:
            if not a.kind.startswith(("touch", "rest")):
                continue
            before = [r.t_ms for r in trace.truth if r.lane == a.lane and r.t_ms <= a.t_start_ms]
            if before:
                seen += 1
                assert a.t_start_ms - max(before) >= 3300, (seed, a)
    assert seen >= 10


@pytest.mark.parametrize("unit_g", [15.0, 17.5, 24.0, 40.0, 230.0, 1500.0])
def test_foreign_objects_weigh_15_g_or_more_and_no_whole_count(unit_g):
    rng = random.Random(int(unit_g))
    for _ in range(300):
        g = shopper._foreign_grams(rng, unit_g)
        ratio = g / unit_g
        assert g >= shopper.FOREIGN_MIN_G
        assert ratio < 0.7 or abs(ratio - round(ratio)) >= 0.29, (g, unit_g)


def test_stock_stays_between_empty_and_capacity():
    for seed in range(6):
        sim = gen.simulate(seed, lanes=8, duration_s=60, profile="busy")
        for lane, meta in enumerate(sim.trace.lanes):
            stock = len(sim.stock[lane].items)
            assert 2 <= stock <= meta.capacity
            for r in sorted(sim.trace.truth, key=lambda r: r.t_ms):
                if r.lane == lane and r.count is not None:
                    stock += r.count
                    assert 0 <= stock <= meta.capacity


def test_the_scenarios_hold_every_kind_of_action():
    kinds = set()
    for seed in range(6):
        trace = gen.generate(seed, lanes=6, duration_s=90, profile="busy")
        kinds |= {a.kind.rstrip("0123456789") for a in trace.actions}
        kinds |= {"multi" for a in trace.actions if a.kind in ("pick2", "pick3", "pick4")}
        kinds |= {"foreign_row" for r in trace.truth if r.count is None}
        # two hands at once on adjacent lanes
        picks = [a for a in trace.actions if a.kind.startswith("pick")]
        if any(
            abs(a.lane - b.lane) == 1 and a.t_start_ms < b.t_end_ms and b.t_start_ms < a.t_end_ms
            for a in picks
            for b in picks
        ):
            kinds.add("two_hands")
    assert {"pick", "put", "foreign", "rest", "touch", "bump", "multi", "two_hands"} <= kinds


# ---- the signal ------------------------------------------------------------------------------


def _quiet_around(trace, lane, t0, t1, own_row):
    for a in trace.actions:
        if a.lane != -1 and abs(a.lane - lane) > 1:
            continue
        if own_row.t_start_ms <= a.t_start_ms and a.t_end_ms <= own_row.t_ms and a.lane == lane:
            continue
        if a.t_start_ms < t1 and t0 < a.t_end_ms + 2000:
            return False
    for r in trace.truth:
        if r is not own_row and abs(r.lane - lane) <= 1 and r.t_start_ms < t1 and t0 < r.t_ms:
            return False
    return True


def test_the_signal_moves_by_the_truth_around_each_row():
    checked = 0
    for seed, profile in [(s, p) for s in range(12) for p in ("quiet", "mixed")]:
        sim = gen.simulate(seed, lanes=4, duration_s=90, profile=profile)
        trace = sim.trace
        for r in trace.truth:
            before = (r.t_start_ms - 1500, r.t_start_ms - 100)
            after = (r.t_ms + 100, r.t_ms + 1500)
            if not (
                _quiet_around(trace, r.lane, *before, r) and _quiet_around(trace, r.lane, *after, r)
            ):
                continue
            series = _lane_series(trace, r.lane)
            g0, g1 = _median_in(series, *before), _median_in(series, *after)
            if g0 is None or g1 is None:
                continue
            noise = sim.shelf.physics.lanes[r.lane].noise_g
            # creep, drift and calibration slope error are each well under 1.5 %
            assert abs((g1 - g0) - r.delta_g) <= 2.0 + 2 * noise + 0.015 * abs(r.delta_g), r
            if r.count is not None:
                unit = trace.lanes[r.lane].unit_g
                assert round((g1 - g0) / unit) == r.count
            checked += 1
    assert checked >= 20


def test_where_nothing_happens_the_signal_stays_at_its_baseline():
    checked = 0
    for seed in range(6):
        sim = gen.simulate(seed, lanes=4, duration_s=90, profile="quiet")
        trace = sim.trace
        for lane in range(4):
            # The whole shelf rings when any lane is touched.
            touched = [a.t_start_ms for a in trace.actions]
            still_until = min(touched, default=90000) - 200
            if still_until < 6000:
                continue
            series = _lane_series(trace, lane)
            base = _median_in(series, 0, 1000)
            noise = sim.shelf.physics.lanes[lane].noise_g
            for t in range(1000, still_until - 1000, 1000):
                window = [g for tt, g in series if t <= tt < t + 1000]
                filtered = sorted(window)[2:-2]  # glitches are single samples
                # drift is under 0.4 g/min plus a 2 g swing; wander is under 0.4 g
                assert abs(statistics.median(window) - base) <= 2.5 + noise
                assert statistics.pstdev(filtered) <= 1.5 * noise + 0.5, (seed, lane, t)
                checked += 1
    assert checked >= 50


def test_a_pick_presses_then_lifts_and_the_neighbours_feel_a_little():
    physics = _still_shelf()
    physics.lanes[1].cross_load = (0.01, 0.0)  # 1 % of lane 0's load rests on lane 1
    physics.lanes[1].cross_hand = (0.03, 0.0)
    shelf = Shelf(physics, [[250.0] * 4, [100.0] * 4, [100.0] * 4], random.Random(2))
    ep = shelf.pick(0, 1000, 1)
    before = [shelf.read(1, 900), shelf.read(2, 900)]
    grams = {t: shelf.grams(0, t) for t in range(0, 8000, 5)}
    assert grams[0] == pytest.approx(1000.0)
    lifting = [t for t in grams if t > ep.t_start and grams[t] < 1000.0 - 1.0]
    pressing = [t for t in grams if ep.t_start < t < min(lifting) and grams[t] > 1000.0 + 0.5]
    assert pressing, "the hand presses before the item leaves"
    assert grams[7995] == pytest.approx(750.0)
    assert (shelf.read(1, 8000) - before[0]) / 500.0 == pytest.approx(-2.5, abs=0.1)
    assert shelf.read(2, 8000) == before[1]  # two lanes away: nothing


def test_a_rest_a_touch_and_a_bump_leave_the_shelf_as_it_was():
    shelf = Shelf(_still_shelf(), [[250.0] * 4] * 3, random.Random(3))
    before = [shelf.read(lane, 500) for lane in range(3)]
    rest = shelf.rest(0, 1000, 600.0, 3000)
    touch = shelf.touch(1, 1000, 1500, 0.5)
    bump = shelf.bump(7000, 80.0)
    during = [shelf.read(0, t) for t in range(1000, 4000, 12)]
    assert max(during) - before[0] > 0.9 * 600 * 500
    swing = [shelf.read(2, t) - before[2] for t in range(7000, 8000, 5)]
    assert max(swing) > 5 * 500 and min(swing) < -5 * 500  # the whole shelf rings
    t_end = max(rest.t_settle, touch.t_settle, bump.t_settle) + 500
    assert [shelf.read(lane, t_end) for lane in range(3)] == pytest.approx(before, abs=500)
    assert all(ep.count == 0 for ep in (rest, touch, bump))


def test_ringing_is_at_the_boards_frequency_and_dies_down():
    physics = _still_shelf(lanes=1, board_gain=1.0)
    physics.board_hz = 10.0
    physics.conversion_hz = 1000.0  # look at the shelf itself, not through the converter
    shelf = Shelf(physics, [[100.0]], random.Random(4))
    shelf.bump(1000, 100.0)
    zero = shelf.read(0, 500)
    signal = [shelf.read(0, t) - zero for t in range(1000, 3000)]
    crossings = sum(1 for a, b in zip(signal, signal[1:]) if (a < 0) != (b < 0) and b != 0)
    assert abs(crossings / 2 / 2.0 - 10.0) <= 1.5  # 10 Hz for the first two seconds
    early = max(abs(v) for v in signal[:200])
    late = max(abs(v) for v in signal[1500:])
    assert late < 0.1 * early


def test_the_converter_averages_fast_wiggles_away_at_10_sps():
    def ring_swing(rate):
        physics = _still_shelf(lanes=1, rate=rate, board_gain=1.0)
        physics.board_hz = 15.0
        shelf = Shelf(physics, [[100.0]], random.Random(4))
        shelf.bump(1000, 100.0)
        zero = shelf.read(0, 500)
        return max(abs(shelf.read(0, t) - zero) for t in range(1000, 2000, 5))

    assert ring_swing(10) < 0.35 * ring_swing(80)


def test_mains_pickup_aliases_in_80_sps_reads():
    physics = _still_shelf(lanes=1, mains_g=5.0, mains_phase=0.3)
    physics.mains_hz, physics.conversion_hz = 50.0, 87.0  # an "80 SPS" chip running fast
    shelf = Shelf(physics, [[100.0]], random.Random(4))
    reads = [shelf.read(0, k * 1000.0 / 87.0) - 100000 - 50000 for k in range(870)]  # 10 s
    crossings = sum(1 for a, b in zip(reads, reads[1:]) if (a < 0) != (b < 0))
    assert abs(crossings / 2 / 10.0 - 37.0) <= 1.0  # 50 Hz read 87 times a second: 37 Hz
    assert max(reads) > 0.4 * 5.0 * 500  # the conversion's averaging passes about half of it


def test_a_noisy_gondola_vibrates_with_an_envelope_that_waxes_and_wanes():
    sim = gen.simulate(8, lanes=2, sample_rate_hz=60, duration_s=90, profile="noisy")
    physics = sim.shelf.physics
    assert physics.vibration and all(5.0 <= m.hz <= 16.0 for m in physics.vibration)
    series = _lane_series(sim.trace, 0)
    busy = [(a.t_start_ms - 500, a.t_end_ms + 3000) for a in sim.trace.actions]
    stds = []
    for t in range(0, 89500, 500):
        if any(a < t + 500 and t < b for a, b in busy):
            continue
        window = sorted(g for tt, g in series if t <= tt < t + 500)[2:-2]
        stds.append(statistics.pstdev(window))
    assert len(stds) > 40
    assert max(stds) > 3 * min(stds) and max(stds) > 5.0


def test_cells_leave_headroom_in_the_24_bit_range_and_some_are_reversed():
    rng = random.Random(9)
    negatives = lanes = 0
    for _ in range(200):
        loads = [(rng.uniform(80, 1500), rng.uniform(100, 28000)) for _ in range(8)]
        for (tray, most), p in zip(loads, draw_physics(rng, 80, loads).lanes):
            assert 90.0 <= abs(p.counts_per_gram) <= 1200.0
            ends = [p.offset + p.counts_per_gram * g for g in (-tray - 300.0, most + 2500.0)]
            assert all(RAW_MIN < e < RAW_MAX for e in ends)
            negatives += p.counts_per_gram < 0
            lanes += 1
    assert 0.03 < negatives / lanes < 0.15


# ---- files and the command -------------------------------------------------------------------


def test_a_generated_trace_survives_writing_and_reading(tmp_path):
    trace = gen.generate(4, lanes=3, sample_rate_hz=10, duration_s=40, profile="busy")
    back = read_trace(write_trace(trace, tmp_path / "t"))
    assert back.samples == trace.samples
    assert back.truth == trace.truth
    assert back.actions == trace.actions
    assert back.lanes == trace.lanes
    assert back.sample_rate_hz == 10
    assert back.extra_meta["generator"]["seed"] == 4


def test_a_set_mixes_rates_and_lane_counts_and_repeats_for_its_seed(tmp_path):
    paths = gen.generate_set(tmp_path / "a", count=8, seed=5, duration_s=20)
    again = gen.generate_set(tmp_path / "b", count=8, seed=5, duration_s=20)
    assert [p.name for p in paths] == [f"gen-5-{i:03d}" for i in range(8)]
    for p, q in zip(paths, again):
        assert (p / "samples.csv").read_bytes() == (q / "samples.csv").read_bytes()
        assert (p / "truth.csv").read_text() == (q / "truth.csv").read_text()
    traces = [read_trace(p, samples=False) for p in paths]
    assert len({t.sample_rate_hz for t in traces}) > 1
    assert len({len(t.lanes) for t in traces}) > 1


def _cli(argv):
    parser = argparse.ArgumentParser()
    gen.add_arguments(parser)
    return gen.run(parser.parse_args(argv))


def test_the_command_writes_traces_and_says_where(tmp_path, capsys):
    out = tmp_path / "gen"
    argv = [str(out), "--count", "2", "--lanes", "2", "--rate", "10", "--duration", "20"]
    assert _cli([*argv, "--seed", "3", "--profile", "busy"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "gen-3-000") in printed and "truth rows" in printed
    for i in range(2):
        trace = read_trace(out / f"gen-3-{i:03d}")
        assert len(trace.lanes) == 2 and trace.sample_rate_hz == 10


@pytest.mark.parametrize(
    "extra",
    [
        ["--lanes", "9"],
        ["--lanes", "0"],
        ["--rate", "30"],
        ["--count", "0"],
        ["--duration", "5"],
        ["--profile", "frantic"],
    ],
)
def test_the_command_refuses_bad_arguments_in_one_line(tmp_path, capsys, extra):
    assert _cli([str(tmp_path / "gen"), *extra]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "shelfctl trace gen" in err
    assert not (tmp_path / "gen").exists()


def test_the_command_refuses_a_file_as_its_output(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert _cli([str(target)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
