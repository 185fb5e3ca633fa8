# One sample's whole way on the board, portable (CPython and the MicroPython VM):
# load on the shelf -> fake HX711 chips (pin protocol, virtual time) -> HX711Bank on a shared
# clock -> GlitchFilter -> ShelfDetector -> event. Only the chips and pins are fakes.
from array import array

import machine
from core.detector import ShelfDetector
from core.glitch import GlitchFilter
from core.lane import LaneCal
from drivers.hx711 import OK, HX711Bank
from fake_hx711 import FakeHX711
from lanesim import Lane, Rng

SCK = 5
DOUTS = (12, 13, 14)
CPG = 420
UNIT_G = 250


def conversions(lane, offset, seed, glitch_every=0):
    """A chip source: the lane's load (centigrams per conversion) as raw counts, with noise
    and, now and then, the glitches real HX711 boards produce."""
    cg = lane.values()
    rng = Rng(seed)
    state = [0]

    def source(gain):
        i = state[0]
        state[0] = i + 1
        raw = offset + (cg[min(i, len(cg) - 1)] + rng.gauss_cg(80)) * CPG // 100
        if glitch_every and i % glitch_every == glitch_every // 2:
            return (8388607, 0, raw >> 1, raw ^ (1 << 22))[(i // glitch_every) % 4]
        return raw

    return source


def test_a_pick_walks_from_the_chip_to_an_event():
    clock = machine.fake_reset()
    offsets = (100000, 200000, -300000)
    lanes = [Lane(80, 6 * UNIT_G * 100).hold(9000) for _ in range(3)]
    lanes[1] = Lane(80, 6 * UNIT_G * 100).hold(3000)
    lanes[1].ramp(UNIT_G * 100 // 5, 200).hold(100).ramp(-UNIT_G * 100 * 6 // 5, 500)
    lanes[1].impact(2500).hold(5000)
    for i in range(3):
        FakeHX711(SCK, DOUTS[i], conversions(lanes[i], offsets[i], seed=i + 1, glitch_every=97),
                  sps=80, settle=3)
    bank = HX711Bank(SCK, DOUTS, clock=clock)
    glitch = GlitchFilter(3)
    det = ShelfDetector([LaneCal(offsets[i], CPG, UNIT_G, "SKU%d" % i) for i in range(3)], 80)
    raw = array("i", [0] * 3)
    events = []
    reads = 0
    while reads < 80 * 8:  # 8 s of the shelf
        bank.read_into(raw)
        reads += 1
        now = clock.ticks_ms()
        for i in range(3):
            if bank.status[i] != OK:
                continue
            v = glitch.clean(i, raw[i])
            ev = None if v is None else det.feed(i, now, v)
            if ev is not None:
                events.append(ev)
    assert [(e.lane, e.count, e.sku) for e in events] == [(1, -1, "SKU1")]
    assert abs(events[0].delta_cg + UNIT_G * 100) < UNIT_G * 100 * 5 // 100
    # the glitches were there, and were taken out before the detector
    assert sum(glitch.rejected(i) for i in range(3)) >= 3 * 8 * 80 // 97 - 6


def _sampler_shelf(stuck_lane=None):
    from apps.sampler import Sampler

    clock = machine.fake_reset()
    offsets = (100000, 200000, -300000)
    lanes = [Lane(80, 6 * UNIT_G * 100).hold(9000) for _ in range(3)]
    lanes[2] = Lane(80, 6 * UNIT_G * 100).hold(3000)
    lanes[2].ramp(-2 * UNIT_G * 100, 500).impact(2500).hold(5000)
    chips = [FakeHX711(SCK, DOUTS[i], conversions(lanes[i], offsets[i], seed=i + 7), sps=80,
                       settle=3) for i in range(3)]
    if stuck_lane is not None:
        chips[stuck_lane].stuck = True
    bank = HX711Bank(SCK, DOUTS, clock=clock)
    events = []
    faults = []
    cals = [LaneCal(offsets[i], CPG, UNIT_G, "SKU%d" % i) for i in range(3)]
    sampler = Sampler(bank, cals, 80, events.append, faults.append, clock=clock)
    return clock, sampler, events, faults


def test_sampler_polls_the_bank_and_reports_events():
    clock, sampler, events, faults = _sampler_shelf()
    polls = 0
    while clock.ticks_ms() < 8000:
        if not sampler.poll():
            polls += 1
        clock.sleep_ms(sampler.poll_ms)  # what the asyncio task sleeps between polls
    assert [(e.lane, e.count) for e in events] == [(2, -2)]
    assert faults == []
    assert polls > 0  # it did find the bank not ready and moved on instead of waiting
    for i in range(3):  # ~80 readings a second on every lane (a few settle at power-up)
        assert 80 * 8 - 20 <= sampler.samples[i] <= 80 * 8 + 1
    assert sampler.detector.level(0) is not None


def test_a_stuck_chip_is_one_fault_and_the_others_keep_sampling():
    clock, sampler, events, faults = _sampler_shelf(stuck_lane=1)
    while clock.ticks_ms() < 8000:
        sampler.poll()
        clock.sleep_ms(sampler.poll_ms)
    assert faults == [1]
    assert sampler.faulted(1) and sampler.faults[1] == 1
    assert sampler.samples[1] == 0
    assert [(e.lane, e.count) for e in events] == [(2, -2)]
    assert sampler.samples[0] > 80 * 7
