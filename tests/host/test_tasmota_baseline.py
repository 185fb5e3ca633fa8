"""The Tasmota-style baseline (bench/tasmota.py) on synthetic steps and on traces/examples."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bench.tasmota import TasmotaBaseline, run_baseline
from host_tools.trace.io import LaneMeta, Trace, read_trace
from host_tools.trace.score import aggregate, score_trace

EXAMPLES = Path(__file__).resolve().parents[2] / "traces" / "examples"
CPG = 100.0  # counts per gram of the synthetic lanes
UNIT = 50.0


def lanes(n=1, offset=1000):
    return [
        LaneMeta(lane=i, offset=offset, counts_per_gram=CPG, unit_g=UNIT, sku=f"S{i}")
        for i in range(n)
    ]


def feed_grams(grams_at, duration_ms=6000, lane=0, offset=1000, noise_g=0.0, glitch_at=(),
               drop_zero=True):
    """80 Hz samples of one lane whose weight is grams_at(t); returns the emitted events."""
    det = TasmotaBaseline(lanes(lane + 1, offset), drop_zero=drop_zero)
    rng = random.Random(7)
    events = []
    for k in range(duration_ms * 80 // 1000):
        t = round(k * 12.5)
        g = grams_at(t) + (rng.gauss(0.0, noise_g) if noise_g else 0.0)
        raw = 8388607 if t in glitch_at else round(offset + g * CPG)
        events.extend(det.feed(lane, t, raw))
    return events


def test_clean_step_of_two_units_gives_one_event_of_minus_two():
    events = feed_grams(lambda t: 1000.0 if t < 3000 else 900.0)
    assert len(events) == 1
    (e,) = events
    assert e["count"] == -2
    assert e["delta_g"] == pytest.approx(-100.0, abs=0.01)
    assert (e["before_g"], e["after_g"]) == (pytest.approx(1000.0), pytest.approx(900.0))
    assert (e["lane"], e["sku"]) == (0, "S0")
    # the change is seen at the 3100 ms weight and settles at the next one
    assert e["t_ms"] == 3200


def test_three_gram_wobble_gives_nothing():
    assert feed_grams(lambda t: 1003.0 if 2000 <= t < 3500 else 1000.0) == []


def test_event_waits_until_the_weight_settles():
    # a hand takes 100 g away over a second (10 g per 100 ms): nothing until it stops
    def ramp(t):
        return 1000.0 - min(max(t - 2000, 0), 1000) / 10.0

    events = feed_grams(ramp)
    assert [e["count"] for e in events] == [-2]
    assert events[0]["t_ms"] > 3000


def test_noisy_step_still_gives_one_event():
    events = feed_grams(lambda t: 1000.0 if t < 3000 else 900.0, noise_g=0.5)
    assert [e["count"] for e in events] == [-2]


def test_single_saturated_reading_is_trimmed_away():
    assert feed_grams(lambda t: 1000.0, glitch_at={2000}) == []


def test_short_spike_that_returns_gives_nothing():
    # 10 g for 150 ms: one 100 ms weight sees it, the weight then settles where it was
    assert feed_grams(lambda t: 1010.0 if 2000 <= t < 2150 else 1000.0) == []


def test_small_settled_change_is_no_item_unless_asked_for():
    # 10 g on a lane of heavier items rounds to count 0: no pick or put by default, but a raw
    # Tasmota feed (drop_zero=False) publishes it
    assert feed_grams(lambda t: 1000.0 if t < 3000 else 1010.0) == []
    events = feed_grams(lambda t: 1000.0 if t < 3000 else 1010.0, drop_zero=False)
    assert [(e["count"], round(e["delta_g"])) for e in events] == [(0, 10)]


def test_lanes_are_independent_and_need_ten_readings_first():
    det = TasmotaBaseline(lanes(2))
    raw = round(1000 + 900 * CPG)
    for k in range(9):  # nine readings: no weight yet
        assert det.feed(1, 100 * k, raw) == []
        assert det.weight_g(1) is None
    # the tenth gives the first weight: the starting point, no event (not the whole load)
    assert det.feed(1, 900, raw) == []
    assert det.weight_g(1) == pytest.approx(900.0)
    assert det.weight_g(0) is None
    events = [e for k in range(10, 40) for e in det.feed(1, 100 * k, raw - 200 * 100)]
    assert [(e["lane"], e["count"], round(e["delta_g"])) for e in events] == [(1, -4, -200)]
    assert det.weight_g(0) is None


def test_run_baseline_replays_the_trace_samples():
    tr = Trace(path=None, sample_rate_hz=80, lanes=lanes(2))
    for k in range(480):
        t = round(k * 12.5)
        tr.samples.append((t, 0, round(1000 + (1000 if t < 3000 else 950) * CPG)))
        tr.samples.append((t, 1, round(1000 + 500 * CPG)))
    events = run_baseline(tr)
    assert [(e["lane"], e["count"]) for e in events] == [(0, -1)]


@pytest.mark.parametrize("name", ["example-00", "example-01"])
def test_baseline_events_on_the_examples(name):
    tr = read_trace(EXAMPLES / name)
    units = {m.lane: m.unit_g for m in tr.lanes}
    events = run_baseline(tr)
    assert events
    for e in events:
        assert abs(e["delta_g"]) > 4.0
        assert e["count"] == round(e["delta_g"] / units[e["lane"]])
        assert e["after_g"] - e["before_g"] == pytest.approx(e["delta_g"], abs=0.02)
    assert [e["t_ms"] for e in events] == sorted(e["t_ms"] for e in events)


def test_baseline_scores_on_the_examples():
    scores = [score_trace(tr, run_baseline(tr)) for tr in map(read_trace, EXAMPLES.iterdir())]
    pooled = aggregate(scores)
    # clean generated examples: the baseline finds the picks and puts
    assert pooled["n_traces"] == 2
    assert pooled["recall"] >= 0.85
    assert pooled["n_matched"] + pooled["n_transient_events"] + pooled["n_fp"] == pooled["n_events"]
