"""The scoring rules of traces/FORMAT.md on hand-made traces, with exact expected numbers."""

from __future__ import annotations

import argparse
import json
import sys
import types

import pytest

from host_tools.trace.io import Action, LaneMeta, Trace, TruthRow, write_trace
from host_tools.trace.score import (
    add_arguments,
    aggregate,
    format_table,
    percentile,
    run,
    score_trace,
)


def make_trace(truth=(), actions=(), n_lanes=3, unit_g=50.0) -> Trace:
    lanes = [
        LaneMeta(lane=i, offset=0, counts_per_gram=100.0, unit_g=unit_g, sku=f"SKU{i}")
        for i in range(n_lanes)
    ]
    return Trace(
        path=None, sample_rate_hz=80, lanes=lanes, truth=list(truth), actions=list(actions)
    )


def row(t_ms, lane=0, count=-1, t_start_ms=None, delta_g=None) -> TruthRow:
    return TruthRow(
        t_ms=t_ms,
        lane=lane,
        count=count,
        delta_g=delta_g if delta_g is not None else (count or 0) * 50.0,
        t_start_ms=t_start_ms if t_start_ms is not None else t_ms - 1000,
    )


def ev(t_ms, lane=0, count=-1, delta_g=None) -> dict:
    return {
        "lane": lane,
        "t_ms": t_ms,
        "count": count,
        "delta_g": delta_g if delta_g is not None else (count or 0) * 50.0,
    }


# --- matching window -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "t, matched",
    [(699, False), (700, True), (1500, True), (2000, True), (5000, True), (5001, False)],
)
def test_match_window_edges(t, matched):
    # row touched at 1000, settled at 2000: window [700, 5000]
    tr = make_trace([row(2000, t_start_ms=1000)])
    s = score_trace(tr, [ev(t)])
    m = s.metrics()
    assert m["n_matched"] == (1 if matched else 0)
    assert m["n_found"] == (1 if matched else 0)
    assert m["n_fp"] == (0 if matched else 1)
    assert m["precision"] == (1.0 if matched else 0.0)
    assert m["recall"] == (1.0 if matched else 0.0)


def test_event_on_another_lane_does_not_match():
    tr = make_trace([row(2000, lane=0)])
    s = score_trace(tr, [ev(2100, lane=1)])
    assert (s.n_found, s.n_fp, s.n_matched) == (0, 1, 0)
    assert s.missed_rows == [tr.truth[0]]


@pytest.mark.parametrize("t, matched", [(10000, True), (10001, False)])
def test_foreign_row_window_is_8000_ms(t, matched):
    tr = make_trace([row(2000, count=None, t_start_ms=1000, delta_g=26.0)])
    s = score_trace(tr, [ev(t, count=None, delta_g=26.0)])
    m = s.metrics()
    assert m["n_found"] == (1 if matched else 0)
    assert m["n_fp"] == (0 if matched else 1)
    # a foreign row has no count: it takes no part in count accuracy
    assert m["n_count_rows"] == 0
    assert m["count_accuracy"] is None


def test_counted_row_does_not_get_the_foreign_tail():
    tr = make_trace([row(2000, count=-1)])
    s = score_trace(tr, [ev(6000)])
    assert (s.n_found, s.n_fp) == (0, 1)


# --- counts ----------------------------------------------------------------------------------


def test_split_events_add_up_to_the_row_count():
    tr = make_trace([row(2000, count=-2, t_start_ms=1000)])
    s = score_trace(tr, [ev(2100, count=-1), ev(2600, count=-1)])
    m = s.metrics()
    assert (m["n_matched"], m["n_found"], m["n_count_right"], m["n_fp"]) == (2, 1, 1, 0)
    assert m["count_accuracy"] == 1.0
    assert m["precision"] == 1.0
    assert s.latencies_ms == [600]  # the last matched event counts


def test_wrong_count_is_found_but_not_right():
    r = row(2000, count=-2)
    s = score_trace(make_trace([r]), [ev(2300, count=-1)])
    m = s.metrics()
    assert (m["recall"], m["count_accuracy"]) == (1.0, 0.0)
    assert s.wrong_count_rows == [(r, -1)]


def test_none_counts_add_zero_to_a_row():
    s = score_trace(
        make_trace([row(2000, count=-1)]), [ev(2100, count=-1), ev(2200, count=None, delta_g=3)]
    )
    assert (s.n_matched, s.n_count_right) == (2, 1)


def test_missed_counted_row_counts_as_wrong_and_nothing_emitted_is_undefined_precision():
    s = score_trace(make_trace([row(2000)]), [])
    m = s.metrics()
    assert m["recall"] == 0.0
    assert m["count_accuracy"] == 0.0
    assert m["precision"] is None
    assert m["f1"] is None
    assert m["latency_p50_ms"] is None
    assert s.wrong_count_rows == []  # missed rows are listed as missed, not as wrong counts
    assert len(s.missed_rows) == 1


def test_zero_precision_and_recall_give_zero_f1():
    s = score_trace(make_trace([row(2000)]), [ev(9000)])
    assert s.metrics()["f1"] == 0.0


# --- overlapping windows ---------------------------------------------------------------------


def two_rows():
    # A: touched 1000, settled 2000, window [700, 5000]; B: touched 3500, window [3200, 7500]
    a = row(2000, count=-1, t_start_ms=1000)
    b = row(4500, count=-1, t_start_ms=3500)
    return a, b, make_trace([a, b])


def test_event_between_rows_goes_to_the_row_it_follows():
    a, b, tr = two_rows()
    s = score_trace(tr, [ev(3400)])  # in A's tail and in B's 300 ms lead: B has not started
    assert [r for _, r in s.matches] == [a]
    assert s.missed_rows == [b]


def test_event_after_the_second_touch_goes_to_the_second_row():
    a, b, tr = two_rows()
    s = score_trace(tr, [ev(2500), ev(3600)])
    assert [r for _, r in s.matches] == [a, b]
    assert (s.n_found, s.n_count_right) == (2, 2)


def test_event_only_in_a_lead_window_goes_to_that_row():
    a = row(2000, t_start_ms=1000)  # window ends at 5000
    b = row(6000, t_start_ms=5200)  # lead starts at 4900
    s = score_trace(make_trace([a, b]), [ev(5100)])
    assert [r for _, r in s.matches] == [b]


# --- transient pairs -------------------------------------------------------------------------


def test_transient_pair_in_a_touch_window():
    truth = [row(3000, lane=1)]
    touch = Action(10000, 11000, 0, "touch")
    events = [ev(3100, lane=1), ev(10500, count=-1, delta_g=-50), ev(11500, count=1, delta_g=48)]
    s = score_trace(make_trace(truth, [touch]), events)
    m = s.metrics()
    assert (m["n_pairs"], m["n_transient_events"], m["n_fp"], m["n_matched"]) == (1, 2, 0, 1)
    assert m["precision"] == 1.0  # 1 matched / (3 emitted - 2 in a pair)
    assert m["transient_pairs_per_100"] == pytest.approx(100 / 3)
    assert s.transient_pairs == [(events[1], events[2])]


def test_the_same_events_without_a_distractor_are_false_positives():
    events = [ev(3100, lane=1), ev(10500, count=-1, delta_g=-50), ev(11500, count=1, delta_g=48)]
    s = score_trace(make_trace([row(3000, lane=1)]), events)
    m = s.metrics()
    assert (m["n_pairs"], m["n_fp"]) == (0, 2)
    assert m["precision"] == pytest.approx(1 / 3)
    assert m["transient_pairs_per_100"] == 0.0


@pytest.mark.parametrize(
    "unit, back_g, paired",
    [
        (50.0, 36.0, True),  # tolerance 0.3 x 50 = 15 g: off by 14 g
        (50.0, 34.0, False),  # off by 16 g
        (20.0, 10.5, True),  # tolerance floor 10 g (0.3 x 20 = 6): off by 9.5 g
        (20.0, 9.0, False),  # off by 11 g
    ],
)
def test_pair_grams_must_cancel_within_tolerance(unit, back_g, paired):
    touch = Action(10000, 11000, 0, "touch")
    events = [ev(10500, count=-1, delta_g=-unit), ev(11500, count=1, delta_g=back_g)]
    s = score_trace(make_trace([], [touch], unit_g=unit), events)
    assert (s.n_pairs, s.n_fp) == ((1, 0) if paired else (0, 2))


def test_pair_counts_must_cancel():
    rest = Action(10000, 11000, 0, "rest300")
    events = [ev(10500, count=-1, delta_g=-50), ev(11500, count=2, delta_g=50)]
    s = score_trace(make_trace([], [rest]), events)
    assert (s.n_pairs, s.n_fp) == (0, 2)


def test_none_counts_pair_on_grams():
    rest = Action(10000, 11000, 2, "rest30")
    events = [ev(10200, lane=2, count=None, delta_g=30), ev(11100, lane=2, count=None, delta_g=-29)]
    s = score_trace(make_trace([], [rest]), events)
    assert (s.n_pairs, s.n_fp) == (1, 0)


@pytest.mark.parametrize(
    "t1, t2, paired",
    [(9700, 14000, True), (9699, 12000, False), (10000, 14001, False)],
)
def test_distractor_window_edges(t1, t2, paired):
    touch = Action(10000, 11000, 0, "touch")  # window [9700, 14000]
    events = [ev(t1, count=-1), ev(t2, count=1)]
    s = score_trace(make_trace([], [touch]), events)
    assert (s.n_pairs, s.n_fp) == ((1, 0) if paired else (0, 2))


def test_bump_covers_every_lane_but_pairs_stay_on_one_lane():
    bump = Action(20000, 20500, -1, "bump4")
    same_lane = [ev(20100, lane=2, count=1), ev(20300, lane=2, count=-1)]
    s = score_trace(make_trace([], [bump]), same_lane)
    assert (s.n_pairs, s.n_fp) == (1, 0)
    two_lanes = [ev(20100, lane=0, count=1), ev(20300, lane=2, count=-1)]
    s = score_trace(make_trace([], [bump]), two_lanes)
    assert (s.n_pairs, s.n_fp) == (0, 2)


def test_pick_actions_are_no_distractors():
    pick = Action(10000, 11000, 0, "pick1")
    s = score_trace(make_trace([], [pick]), [ev(10500, count=-1), ev(11500, count=1)])
    assert (s.n_pairs, s.n_fp) == (0, 2)


def test_events_matched_to_a_row_are_not_paired():
    rest = Action(1000, 5000, 0, "rest200")  # window [700, 8000]
    r = row(3000, t_start_ms=2500)  # window [2200, 6000]
    s = score_trace(make_trace([r], [rest]), [ev(3200, count=-1), ev(7000, count=1)])
    assert (s.n_matched, s.n_pairs, s.n_fp) == (1, 0, 1)


def test_pairing_is_greedy_in_time_order():
    touch = Action(10000, 11000, 0, "touch")
    events = [ev(10100, count=-1), ev(10200, count=-1), ev(10300, count=1), ev(10400, count=1)]
    s = score_trace(make_trace([], [touch]), events)
    assert s.transient_pairs == [(events[0], events[2]), (events[1], events[3])]
    assert s.n_fp == 0


# --- receipts, latency, precision ------------------------------------------------------------


def test_receipt_exactness_over_lanes_with_truth_or_events():
    truth = [
        row(2000, lane=0, count=-1),
        row(2000, lane=3, count=None, delta_g=20),
        row(2000, lane=4, count=-1),
        row(9000, lane=4, count=1),
    ]
    events = [
        ev(2100, lane=0, count=-1),  # lane 0: -1 = -1
        ev(2100, lane=1, count=1),  # lane 1: +1, truth 0: wrong
        ev(2100, lane=3, count=None, delta_g=20),  # lane 3: 0 = 0
        # lane 2: nothing at all, not checked; lane 4: -1 + 1 = 0 and nothing emitted
    ]
    s = score_trace(make_trace(truth, n_lanes=5), events)
    m = s.metrics()
    assert (m["n_receipt_exact"], m["n_receipt_lanes"]) == (3, 4)
    assert m["receipt_exact"] == 0.75
    assert s.receipt_errors == [(1, 1, 0)]


def test_latency_percentiles():
    truth = [row(10000 * k) for k in range(1, 6)]
    events = [ev(10000 * k + 100 * k) for k in range(1, 6)]  # 100, 200, ..., 500 ms late
    m = score_trace(make_trace(truth), events).metrics()
    assert m["latency_p50_ms"] == 300.0
    assert m["latency_p95_ms"] == pytest.approx(480.0)


def test_latency_is_negative_for_an_event_before_the_settle():
    s = score_trace(make_trace([row(2000, t_start_ms=1000)]), [ev(1200)])
    assert s.latencies_ms == [-800]


def test_percentile_interpolates():
    assert percentile([], 50) is None
    assert percentile([7], 95) == 7.0
    assert percentile([0, 10], 50) == 5.0
    assert percentile([40, 10, 20, 30], 100) == 40.0


def test_precision_denominator_leaves_out_transient_pairs_only():
    truth = [row(2000, lane=0), row(2000, lane=1)]
    touch = Action(10000, 11000, 2, "touch")
    events = [
        ev(2100, lane=0),
        ev(2200, lane=1),
        ev(10100, lane=2, count=-1),
        ev(10900, lane=2, count=1),
        ev(30000, lane=2, count=1),  # a false positive
    ]
    m = score_trace(make_trace(truth, [touch]), events).metrics()
    assert (m["n_events"], m["n_matched"], m["n_transient_events"], m["n_fp"]) == (5, 2, 2, 1)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == 1.0
    assert m["f1"] == pytest.approx(0.8)
    assert m["transient_pairs_per_100"] == 20.0


def test_every_event_lands_in_exactly_one_bin():
    truth = [row(2000), row(2000, lane=1, count=-2), row(40000, lane=2, count=None)]
    actions = [Action(10000, 12000, 0, "touch"), Action(20000, 20300, -1, "bump3")]
    events = [
        ev(1900),
        ev(2500, lane=1),
        ev(10100, count=-1),
        ev(12100, count=1),
        ev(20100, lane=1, count=1),
        ev(25000, lane=1, count=-1),
        ev(41000, lane=2, count=None, delta_g=12),
        ev(60000, lane=2, count=3),
    ]
    s = score_trace(make_trace(truth, actions), events)
    assert s.n_matched + s.n_transient + s.n_fp == s.n_events == len(events)


# --- pooling, table, CLI ---------------------------------------------------------------------


def test_aggregate_pools_counts_not_ratios():
    # a: precision 1/2, recall 1; b: precision 1, recall 1/2
    a = score_trace(make_trace([row(2000)]), [ev(2100), ev(9000, lane=1, count=1)])
    b = score_trace(make_trace([row(2000), row(20000)]), [ev(2300)])
    p = aggregate([a, b])
    assert (p["n_traces"], p["n_events"], p["n_rows"], p["n_found"], p["n_fp"]) == (2, 3, 3, 2, 1)
    assert p["precision"] == pytest.approx(2 / 3)
    assert p["recall"] == pytest.approx(2 / 3)
    assert p["f1"] == pytest.approx(2 / 3)
    assert p["count_accuracy"] == pytest.approx(2 / 3)
    assert p["latency_p50_ms"] == 200.0  # latencies 100 and 300
    # a: lane 0 exact, lane 1 (+1, truth 0) wrong; b: lane 0 (-1, truth -2) wrong
    assert (p["n_receipt_exact"], p["n_receipt_lanes"]) == (1, 3)


def test_format_table_has_a_line_per_trace_and_a_pooled_line():
    a = score_trace(make_trace([row(2000)]), [ev(2100)])
    b = score_trace(make_trace([]), [])
    a.name, b.name = "alpha", "quiet"
    lines = format_table([a, b]).splitlines()
    assert len(lines) == 5  # header, rule, two traces, pooled
    assert lines[2].split()[:4] == ["alpha", "1", "1", "1"]
    assert lines[3].split()[0] == "quiet" and "-" in lines[3].split()[6:]
    assert lines[4].split()[0] == "pooled"


def _parse(argv):
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(argv)


def test_cli_bad_directory_exits_2(tmp_path, capsys):
    assert run(_parse([str(tmp_path / "missing")])) == 2
    err = capsys.readouterr().err
    assert err.startswith("shelfctl trace score: ") and err.count("\n") == 1


def test_cli_scores_replayed_events(tmp_path, capsys, monkeypatch):
    tr = make_trace([row(2000), row(5000, lane=1)])
    write_trace(tr, tmp_path / "t1")
    seen = []

    def fake_replay(trace, runtime="cpython"):
        seen.append((trace.name, runtime))
        return [ev(2100), ev(30000, lane=2, count=1)]

    fake = types.ModuleType("host_tools.trace.replay")
    fake.replay = fake_replay  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "host_tools.trace.replay", fake)

    argv = [str(tmp_path / "t1"), "--json", "--verbose", "--runtime", "micropython"]
    assert run(_parse(argv)) == 0
    doc = json.loads(capsys.readouterr().out)
    assert seen == [("t1", "micropython")]
    assert doc["pooled"]["precision"] == 0.5
    assert doc["pooled"]["recall"] == 0.5
    (entry,) = doc["traces"]
    assert entry["trace"] == "t1"
    assert entry["diagnostics"]["missed_rows"][0]["lane"] == 1
    assert entry["diagnostics"]["false_positives"] == [ev(30000, lane=2, count=1)]

    assert run(_parse([str(tmp_path / "t1")])) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[2].split()[0] == "t1"
