"""The arithmetic `shelfctl calibrate` does on the host: averaging raw HX711 counts past a
glitch, telling a resting lane from a moving one, and judging a check weight."""

from __future__ import annotations

import random

import pytest

from host_tools.calibrate import check_result, is_still, robust_stats, settled

TRUE_OFFSET = 92000
NOISE = 60  # counts: about 0.15 g on a 420 counts-per-gram cell


def still_readings(n: int = 20, seed: int = 1) -> list[int]:
    rng = random.Random(seed)
    return [TRUE_OFFSET + round(rng.gauss(0, NOISE)) for _ in range(n)]


def test_the_mean_of_a_resting_lane_is_its_level() -> None:
    st = robust_stats(still_readings())
    assert abs(st.mean - TRUE_OFFSET) < 3 * NOISE / 20 ** 0.5
    assert 0.5 * NOISE < st.stdev < 1.5 * NOISE
    assert (st.n, st.rejected) == (20, 0)


def test_a_glitch_does_not_move_the_mean() -> None:
    # a misframed read: a bit shifted in at the wrong place, millions of counts off
    values = still_readings()
    clean = robust_stats(values).mean
    values[7] = 8388607
    st = robust_stats(values)
    assert st.rejected == 1
    assert abs(st.mean - clean) < NOISE / 4
    assert st.stdev < 1.5 * NOISE


def test_identical_readings_have_no_spread() -> None:
    st = robust_stats([500] * 10)
    assert (st.mean, st.stdev, st.rejected) == (500, 0.0, 0)


def test_no_readings_is_an_error() -> None:
    with pytest.raises(ValueError):
        robust_stats([])


@pytest.mark.parametrize("seed", range(20))
def test_a_resting_lane_is_still(seed: int) -> None:
    assert is_still(still_readings(20, seed))


def test_a_weight_coming_down_is_not_still() -> None:
    # 1000 g at 420 counts per gram arriving during the readings
    values = still_readings()
    arriving = [v + min(i, 10) * 42000 for i, v in enumerate(values)]
    assert not is_still(arriving)


def test_a_slow_creep_of_a_few_grams_is_not_still() -> None:
    values = [v + i * 120 for i, v in enumerate(still_readings())]  # 0.3 g a reading
    assert not is_still(values)


def test_a_glitch_does_not_make_a_resting_lane_move() -> None:
    values = still_readings()
    values[3] = -8388608
    assert is_still(values)


def test_settled_readings_stay_within_their_spread() -> None:
    assert settled([250.1, 249.8, 250.3, 250.0], spread_g=2.0)
    assert not settled([250.1, 249.8, 253.0, 250.0], spread_g=2.0)
    assert not settled([250.0], spread_g=2.0)  # one reading says nothing


def test_a_check_reports_grams_and_percent() -> None:
    r = check_result(498.5, 500.0, max_error_pct=1.0)
    assert r == {"grams": 500.0, "read_g": 498.5, "error_g": -1.5, "error_pct": -0.3,
                 "ok": True}


def test_a_check_outside_the_tolerance_fails() -> None:
    r = check_result(510.0, 500.0, max_error_pct=1.0)
    assert (r["error_g"], r["error_pct"], r["ok"]) == (10.0, 2.0, False)


def test_a_small_check_weight_passes_within_a_gram() -> None:
    # 20 g reading 20.8 g is 4 % off, but within what a shelf cell resolves
    assert check_result(20.8, 20.0, max_error_pct=1.0)["ok"]
    assert not check_result(21.2, 20.0, max_error_pct=1.0)["ok"]
