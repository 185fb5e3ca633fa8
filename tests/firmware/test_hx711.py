# Portable tests (CPython and the MicroPython VM) for drivers.hx711.HX711Bank, run against
# fake HX711 chips on the fake `machine` board (host_tools/sim/hw), in virtual time.
from array import array

import machine
from core.glitch import GlitchFilter
from drivers.hx711 import FAULT, NOT_READY, OK, SETTLING, HX711Bank
from fake_hx711 import FakeHX711, by_gain, constant, sequence

SCK = 5
DOUTS = (12, 13, 14, 15)


def rig(sources, sps=10, gain=128, settle=4, chip_settle=3, start_us=0, periods=None):
    """A fresh board, one fake chip per source on the shared clock, and the bank."""
    clock = machine.fake_reset(start_us)
    chips = []
    for i in range(len(sources)):
        period = periods[i] if periods else None
        chips.append(FakeHX711(SCK, DOUTS[i], sources[i], sps=sps, period_us=period,
                               settle=chip_settle))
    bank = HX711Bank(SCK, DOUTS[:len(sources)], gain=gain, clock=clock, settle=settle)
    return clock, chips, bank


def new_values(bank):
    return array("i", [0] * bank.n)


def read_until_ok(bank, values, timeout_ms=150, limit=20):
    """Read until every lane is OK; returns the statuses seen on the way (one list per read)."""
    seen = []
    for _ in range(limit):
        mask = bank.read_into(values, timeout_ms)
        seen.append(list(bank.status))
        if mask == (1 << bank.n) - 1:
            return seen
    raise AssertionError(f"lanes never all OK: {seen!r}")


def counter(base):
    """A source giving base, base+1, ... one per conversion (so a torn or repeated read shows)."""
    state = [base]

    def source(gain):
        v = state[0]
        state[0] = v + 1
        return v

    return source


def test_reads_positive_negative_and_extreme_values_from_a_shared_clock():
    lanes = [
        [8388607, -1, 0, 5, 9000000],
        [-8388608, 1, 1234567, -5, -9000000],
        [-7654321, 42, -42, 8388606, 0x7FFF],
        [4194304, -4194304, 2, -2, 100],
    ]
    clock, chips, bank = rig([sequence(v) for v in lanes], settle=0, chip_settle=0)
    values = new_values(bank)
    for k in range(5):
        assert bank.read_into(values) == 0b1111
        for i in range(4):
            want = lanes[i][k]
            want = 8388607 if want > 8388607 else -8388608 if want < -8388608 else want
            assert values[i] == want, (k, i, values[i], want)
            assert bank.status[i] == OK
    for chip in chips:
        assert chip.frames == [25] * 4 and chip.last_pulses == 25
        assert chip.long_highs == 0


def test_settling_conversions_after_start_are_discarded():
    clock, chips, bank = rig([constant(1000), constant(-2000)])
    values = new_values(bank)
    seen = read_until_ok(bank, values)
    # the constructor power-cycled the chips: 4 conversions thrown away, then data
    assert chips[0].power_downs == 1 and chips[0].power_ups == 1
    assert seen == [[SETTLING, SETTLING]] * 4 + [[OK, OK]]
    assert list(values) == [1000, -2000]
    # the fake really produced unsettled readings, and none of them came out
    assert chips[0].values[0][1] != 1000


def test_lanes_with_different_rates_read_whole_conversions():
    # three oscillators a few percent apart: lanes turn ready at different times
    sources = [counter(100000), counter(-200000), counter(300000)]
    clock, chips, bank = rig(sources, settle=0, chip_settle=0, periods=[100000, 96000, 104000])
    values = new_values(bank)
    last = [None, None, None]
    for _ in range(40):
        assert bank.read_into(values) == 0b111
        for i in range(3):
            produced = [v for g, v in chips[i].values]
            assert values[i] in produced  # a whole conversion, never a torn one
            assert last[i] is None or values[i] > last[i]  # and never the same one twice
            last[i] = values[i]
    for chip in chips:
        assert chip.ignored_edges == 1  # the constructor's power-down pulse, nothing else
        assert chip.long_highs == 0 and chip.cut_frames == 0


def test_gain_selects_pulses_and_channel():
    src = by_gain(1000, -2000, 3000)  # A128, B32, A64 tell the channels apart
    clock, chips, bank = rig([src, src], settle=4)
    values = new_values(bank)
    read_until_ok(bank, values)
    assert list(values) == [1000, 1000] and chips[0].last_pulses == 25
    for gain, pulses, want in ((32, 26, -2000), (64, 27, 3000), (128, 25, 1000)):
        bank.set_gain(gain)
        seen = read_until_ok(bank, values)
        assert len(seen) == 4 + 2  # the read at the old gain + 4 settling, then data
        assert list(values) == [want, want]
        for chip in chips:
            assert chip.last_pulses == pulses
            assert chip.gain == gain  # the chip really switched channel / gain
    assert 26 in chips[0].frames and 27 in chips[0].frames
    for bad in (0, 1, 100, 256):
        try:
            bank.set_gain(bad)
        except ValueError:
            continue
        raise AssertionError(f"gain {bad} accepted")


def test_gain_applies_from_the_next_conversion():
    src = by_gain(1000, -2000, 3000)
    clock, chips, bank = rig([src], settle=0, chip_settle=0)
    values = new_values(bank)
    assert bank.read_into(values) == 1 and values[0] == 1000
    bank.set_gain(64)
    # this read still gets an A128 conversion (discarded), and its 27 pulses switch the chip
    assert bank.read_into(values) == 0 and bank.status[0] == SETTLING
    assert chips[0].values[-1] == (128, 1000) and chips[0].last_pulses == 27
    assert bank.read_into(values) == 1 and values[0] == 3000
    assert chips[0].values[-1] == (64, 3000)


def test_clock_high_stays_short_with_interrupts_masked():
    clock, chips, bank = rig([constant(-123456), constant(654321), constant(-1)], gain=64)
    clock.interrupt_every(12, 90)  # a busy system: a 90 us ISR every 12 us
    values = new_values(bank)
    for _ in range(10):
        read_until_ok(bank, values)
        assert list(values) == [-123456, 654321, -1]
    for chip in chips:
        assert chip.max_high_us < 50, chip.max_high_us
        assert chip.long_highs == 0
        assert chip.power_downs == 1  # only the constructor's power cycle
    assert clock.isr_runs > 100
    assert clock.deferred > 0  # interrupts did fall on a pulse and had to wait


def test_control_without_masking_the_interrupt_powers_the_chip_down():
    # The same read with disable_irq() doing nothing: what the masking prevents.
    clock, chips, bank = rig([constant(-123456), constant(654321)], settle=0, chip_settle=0)
    values = new_values(bank)
    assert bank.read_into(values) == 0b11 and list(values) == [-123456, 654321]
    clock.masking = False
    clock.interrupt_every(12, 90)
    bank.read_into(values)
    chip = chips[0]
    assert chip.max_high_us > 60
    assert chip.power_downs > 1  # the chip went down in the middle of the read...
    assert list(values) != [-123456, 654321]  # ...and the read came back corrupted


def test_stuck_chip_is_a_lane_fault_within_the_timeout():
    clock, chips, bank = rig([constant(111), constant(222), constant(333)], settle=0,
                             chip_settle=0)
    values = new_values(bank)
    assert bank.read_into(values) == 0b111
    chips[1].stuck = True
    values[1] = -7
    t0 = clock.now
    mask = bank.read_into(values, 150)
    waited_ms = (clock.now - t0) // 1000
    assert 150 <= waited_ms <= 152, waited_ms
    assert mask == 0b101
    assert list(bank.status) == [OK, FAULT, OK]
    assert list(values) == [111, -7, 333]  # the faulted lane's entry is left alone
    assert list(bank.faults) == [0, 1, 0]
    # the faulted lane is no longer waited for: the others read at their own rate
    t0 = clock.now
    for _ in range(5):
        assert bank.read_into(values, 150) == 0b101
        assert bank.status[1] == FAULT
    assert (clock.now - t0) // 1000 <= 5 * 101
    assert list(bank.faults) == [0, 1, 0]  # one fault episode, not one per read
    # it comes back: resynced and settled before its values count again
    chips[1].stuck = False
    seen = read_until_ok(bank, values)
    assert [s[1] for s in seen] == [SETTLING] * 1 + [OK]  # settle=0: one resync read
    assert list(values) == [111, 222, 333]


def test_absent_chip_and_unwired_pin_are_faults_not_hangs():
    clock = machine.fake_reset()
    chips = [FakeHX711(SCK, DOUTS[0], constant(5), settle=0),
             FakeHX711(SCK, DOUTS[1], constant(6), settle=0)]
    chips[1].absent = True  # DOUT floats; the driver's pull-up keeps it high
    bank = HX711Bank(SCK, DOUTS[:3], clock=clock, settle=0)  # DOUTS[2]: nothing wired
    values = new_values(bank)
    assert bank.read_into(values, 150) == 0b001
    assert list(bank.status) == [OK, FAULT, FAULT]
    assert values[0] == 5
    assert bank.read_into(values, 150) == 0b001


def test_all_lanes_stuck_still_returns():
    clock, chips, bank = rig([constant(1), constant(2)], settle=0, chip_settle=0)
    for chip in chips:
        chip.stuck = True
    values = new_values(bank)
    for _ in range(3):
        t0 = clock.now
        assert bank.read_into(values, 40) == 0
        assert 40 <= (clock.now - t0) // 1000 <= 42
        assert list(bank.status) == [FAULT, FAULT]
    assert list(bank.faults) == [1, 1]


def test_timeout_uses_tick_arithmetic_across_the_wrap():
    # start 60 ms before ticks_ms() wraps to 0
    start = ((1 << 30) - 60) * 1000
    clock, chips, bank = rig([constant(9), constant(8)], settle=0, chip_settle=0,
                             start_us=start)
    chips[1].stuck = True
    values = new_values(bank)
    t0 = clock.now
    assert bank.read_into(values, 150) == 0b01
    assert 150 <= (clock.now - t0) // 1000 <= 152
    assert clock.ticks_ms() < 1000  # the ticks did wrap during the wait


def test_polling_with_zero_timeout():
    clock, chips, bank = rig([constant(77), constant(-77)], settle=0, chip_settle=0)
    values = new_values(bank)
    assert bank.read_into(values) == 0b11
    edges = chips[0].rising_edges
    assert not bank.ready()
    assert bank.read_into(values, 0) == 0  # nothing ready: no clock pulses at all
    assert list(bank.status) == [NOT_READY, NOT_READY]
    assert chips[0].rising_edges == edges
    assert list(bank.faults) == [0, 0]
    polls = 0
    while not bank.ready():
        clock.sleep_ms(1)
        polls += 1
    assert 90 <= polls <= 101
    assert bank.read_into(values, 0) == 0b11 and list(values) == [77, -77]


def test_drifting_lanes_misframed_reads_stay_single_and_the_filter_removes_them():
    # Three oscillators 1 % apart at 80 SPS: now and then a lane's next conversion lands in
    # the middle of a read (the fake restarts its frame there), which can leave it out of step
    # and even switch its gain. The driver may pass that one read, never a run of bad ones,
    # and the glitch filter behind it removes the single ones.
    want = [111111, -222222, 333333]
    src = [by_gain(want[i], 4000000, -4000000) for i in range(3)]
    clock, chips, bank = rig(src, sps=80, periods=[12500, 12625, 12375])
    f = GlitchFilter(3)
    values = new_values(bank)
    run = [0, 0, 0]
    longest = 0
    for _ in range(400):
        mask = bank.read_into(values, 30)
        for i in range(3):
            if not mask & (1 << i):
                continue
            run[i] = run[i] + 1 if values[i] != want[i] else 0
            longest = max(longest, run[i])
            assert f.clean(i, values[i]) == want[i]
    assert sum(c.cut_frames for c in chips) > 0  # the scenario really happened
    assert max(max(c.frames) for c in chips) > 27  # ...and put some chip on a stray gain
    assert longest <= 1, longest
    assert list(bank.faults) == [0, 0, 0]


def test_power_down_and_up():
    src = by_gain(1000, -2000, 3000)
    clock, chips, bank = rig([src, src], gain=64)
    values = new_values(bank)
    read_until_ok(bank, values)
    assert list(values) == [3000, 3000] and chips[0].gain == 64
    bank.power_down()
    chips[0].sync()
    conversions = chips[0].conversions
    edges = chips[0].rising_edges
    clock.sleep_ms(1000)
    assert not chips[0].powered and chips[0].power_downs == 2
    assert chips[0].conversions == conversions  # down: no conversions
    assert not bank.ready()
    assert bank.read_into(values) == 0
    assert chips[0].rising_edges == edges
    assert list(bank.status) == [NOT_READY, NOT_READY]
    bank.power_up()
    assert chips[0].powered and chips[0].gain == 128  # reset to A128
    seen = read_until_ok(bank, values)
    # the first conversion is A128 and the switch back to A64 settles again: 5 discarded
    assert len(seen) == 6
    assert list(values) == [3000, 3000] and chips[0].gain == 64
    assert chips[0].values[-1] == (64, 3000)


def test_10_and_80_sps():
    for sps, period_ms, timeout in ((10, 100, 150), (80, 12.5, 30)):
        clock, chips, bank = rig([counter(10), counter(-10)], sps=sps, settle=0,
                                 chip_settle=0)
        values = new_values(bank)
        bank.read_into(values, timeout)
        t0 = clock.now
        for k in range(40):
            assert bank.read_into(values, timeout) == 0b11
            # every conversion read, none skipped: the read keeps up at this rate
            assert list(values) == [11 + k, -9 + k], (sps, k, list(values))
        per_read_ms = (clock.now - t0) / 1000 / 40
        assert period_ms * 0.95 <= per_read_ms <= period_ms * 1.1, (sps, per_read_ms)


def test_accepts_pin_objects():
    clock = machine.fake_reset()
    FakeHX711(SCK, DOUTS[0], constant(-31), settle=0)
    bank = HX711Bank(machine.Pin(SCK), [machine.Pin(DOUTS[0])], clock=clock, settle=0)
    values = new_values(bank)
    assert bank.read_into(values) == 1 and values[0] == -31


class _StubChip:
    """A chip reduced to what allocates nothing: always ready again right after a read."""

    def __init__(self, value):
        self.data = value & 0xFFFFFF
        self.bits = 0
        self.sck = _StubPin(self, True)
        self.dout = _StubPin(self, False)


class _StubPin:
    def __init__(self, chip, is_sck):
        self.chip = chip
        self.is_sck = is_sck

    def init(self, *args, **kwargs):
        pass

    def __call__(self, v=None):
        chip = self.chip
        if self.is_sck:
            if v:
                chip.bits += 1
            return None
        if chip.bits >= 25:
            chip.bits = 0  # read out: the next conversion is there at once
            return 1
        if chip.bits == 0:
            return 0
        return (chip.data >> (24 - chip.bits)) & 1


def test_read_into_allocates_nothing():
    import gc

    clock = machine.fake_reset()
    chip = _StubChip(-1234567)
    bank = HX711Bank(chip.sck, [chip.dout], clock=clock, settle=0)
    chip.bits = 0  # forget the constructor's power-down pulse
    values = new_values(bank)
    assert bank.read_into(values) == 1 and values[0] == -1234567
    if hasattr(gc, "mem_alloc"):  # MicroPython: the heap must not move at all
        gc.collect()
        before = gc.mem_alloc()
        for _ in range(50):
            bank.read_into(values)
        assert gc.mem_alloc() - before <= 16, gc.mem_alloc() - before
    else:  # CPython allocates ints anyway; at least nothing may accumulate
        import tracemalloc

        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(50):
            bank.read_into(values)
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert after - before < 512, after - before
    assert values[0] == -1234567 and bank.status[0] == OK
