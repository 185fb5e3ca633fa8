"""The physics feed behind virtual shelves: provisioning calibration matches the simulated
cells, and hands scheduled on it come out as the detector's events."""

from __future__ import annotations

from host_tools.firmware import use_firmware
from host_tools.sim.physics_feed import PhysicsFeed


def test_calibration_reads_the_stock_on_each_lane():
    feed = PhysicsFeed(4, 10, seed=1000)
    for lane in range(4):
        cal = feed.calibration(lane)
        raws = [feed.shelf.read(lane, 1000.0 + 100.0 * k) for k in range(20)]
        grams = (sorted(raws)[10] - cal["offset"]) / cal["counts_per_gram"]
        stock = sum(feed.stock[lane].items)
        assert abs(grams - stock) < max(5.0, 0.02 * stock), (lane, grams, stock)
        assert cal["sku"] == feed.stock[lane].sku and cal["unit_g"] == feed.stock[lane].unit_g


def test_scheduled_hands_become_the_right_events():
    use_firmware()
    from core.detector import ShelfDetector
    from core.glitch import GlitchFilter
    from core.lane import LaneCal

    feed = PhysicsFeed(4, 10, seed=1000)
    cals = [LaneCal(**feed.calibration(i)) for i in range(4)]
    det, glitch = ShelfDetector(cals, 10), GlitchFilter(4)
    feed.shelf.pick(2, 8000.0, 1)  # a 1.5 kg item...
    feed.shelf.pick(3, 10500.0, 1)  # ...then a 37 g one from the plate beside it
    events = []
    t = 0.0
    while t < 20000:
        for lane in range(4):
            v = glitch.clean(lane, feed.shelf.read(lane, t))
            ev = None if v is None else det.feed(lane, int(t), v)
            if ev is not None:
                events.append((ev.lane, ev.count))
        t += feed.period_ms
    assert events == [(2, -1), (3, -1)]
