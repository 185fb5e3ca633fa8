"""A bank of HX711 load-cell ADCs on one shared clock (PD_SCK), one DOUT pin per lane.

The chip, from its datasheet:
- DOUT is high while a conversion runs and falls when one is ready; it stays low until read.
- Each PD_SCK rising edge shifts out the next bit, MSB first: 24 bits, two's complement.
- 25, 26 or 27 pulses in all choose the NEXT conversion's input: A gain 128, B gain 32,
  A gain 64. The 25th pulse pulls DOUT high again.
- PD_SCK high for more than 60 us powers the chip down (a read needs it high under 50 us);
  PD_SCK low powers it up again on A128, and the first conversions are still settling.

All lanes are clocked together and every DOUT is sampled while the clock is low, so the
clock-high time is one pin write long whatever the number of lanes. Interrupts are masked
only across each pulse: an interrupt there could stretch the high time past 60 us, while a
long low time is harmless.

Use:
    bank = HX711Bank(18, (19, 21, 22))      # pin ids (or machine.Pin objects)
    values = array('i', [0] * bank.n)
    mask = bank.read_into(values)           # bit i set: values[i] is a fresh reading
    bank.status[i]                          # OK / NOT_READY / FAULT / SETTLING
"""

from array import array

import machine
from micropython import const

# Per-lane status after read_into().
OK = const(0)  # values[i] holds this read's conversion
NOT_READY = const(1)  # no conversion yet and no wait was asked for (or the bank is down)
FAULT = const(2)  # did not become ready within the timeout; no longer waited for
SETTLING = const(3)  # read, but discarded (settling after power-up, gain change, a fault)

# Pulses per read for each gain (24 data bits + channel/gain select).
_PULSES_A128 = const(25)
_PULSES_B32 = const(26)
_PULSES_A64 = const(27)
_POWER_DOWN_US = const(80)  # the chip needs > 60 us of clock high
_SIGN = const(0x800000)
_WRAP = const(0x1000000)


def _pulses_for(gain):
    if gain == 128:
        return _PULSES_A128
    if gain == 64:
        return _PULSES_A64
    if gain == 32:
        return _PULSES_B32
    raise ValueError("gain must be 128, 64 (channel A) or 32 (channel B)")


def _out_pin(p):
    if isinstance(p, int):
        return machine.Pin(p, machine.Pin.OUT, value=0)
    p.init(machine.Pin.OUT, value=0)
    return p


def _in_pin(p):
    # Pull-up: an absent chip then reads "not ready" forever (a lane fault), never as a
    # floating line that looks ready and reads as zeros.
    if isinstance(p, int):
        return machine.Pin(p, machine.Pin.IN, machine.Pin.PULL_UP)
    p.init(machine.Pin.IN, machine.Pin.PULL_UP)
    return p


class HX711Bank:
    """HX711 chips sharing one PD_SCK pin, read together.

    gain: 128 / 64 (channel A) or 32 (channel B), the same for every lane.
    clock: an object with ticks_ms, ticks_diff, sleep_us, sleep_ms (default: the time module).
    settle: conversions discarded after power-up or a gain change (the datasheet's settling
    time is 4 conversion periods: 400 ms at 10 SPS, 50 ms at 80 SPS).
    The constructor power-cycles the chips: after an MCU soft reset they keep whatever gain
    and state they had, so this is the only way to know where they are.
    """

    def __init__(self, sck_pin, dout_pins, gain=128, clock=None, settle=4):
        if clock is None:
            import time

            clock = time
        self._clock = clock
        self._sck = _out_pin(sck_pin)
        self._douts = [_in_pin(p) for p in dout_pins]
        n = len(self._douts)
        if n < 1 or n > 30:  # lane masks must stay small ints
            raise ValueError("1 to 30 lanes")
        self.n = n
        self.status = bytearray([NOT_READY] * n)
        self.faults = array("I", [0] * n)  # times each lane went into FAULT
        self._faulted = bytearray(n)
        self._skip = bytearray(n)  # conversions still to discard, per lane
        self._acc = array("i", [0] * n)
        self._settle = settle
        self._disable_irq = machine.disable_irq
        self._enable_irq = machine.enable_irq
        self.gain = gain
        self._pulses = _pulses_for(gain)
        self._down = False
        self.power_down()
        self.power_up()

    def set_gain(self, gain):
        """Select gain/channel for all lanes.

        The next read's trailing pulses switch the chips, so that read (old setting) and the
        settling conversions after it are discarded: every OK value after this call is at
        the new gain.
        """
        pulses = _pulses_for(gain)
        if pulses == self._pulses:
            return
        self._pulses = pulses
        self.gain = gain
        self._discard_all(self._settle + 1)

    def power_down(self):
        """Hold the clock high: every chip stops converting (about 1 uA each)."""
        self._sck(0)  # the 60 us count starts at a rising edge
        self._sck(1)
        self._clock.sleep_us(_POWER_DOWN_US)
        self._down = True
        for i in range(self.n):
            self.status[i] = NOT_READY

    def power_up(self):
        """Clock low: the chips restart on A128 and settle; their first conversions are
        discarded (one more when another gain must be selected first)."""
        self._sck(0)
        self._down = False
        self._discard_all(self._settle + (0 if self._pulses == _PULSES_A128 else 1))

    def _discard_all(self, k):
        skip = self._skip
        for i in range(self.n):
            if skip[i] < k:
                skip[i] = k

    def ready_mask(self):
        """Bit i set when lane i's DOUT is low (a conversion is waiting)."""
        douts = self._douts
        mask = 0
        for i in range(self.n):
            if not douts[i]():
                mask |= 1 << i
        return mask

    def _wanted_mask(self):
        faulted = self._faulted
        mask = 0
        for i in range(self.n):
            if not faulted[i]:
                mask |= 1 << i
        return mask

    def ready(self):
        """True when every lane not in FAULT has a conversion waiting (when all lanes are in
        FAULT: when any lane has one). Poll this, then call read_into(values, 0)."""
        if self._down:
            return False
        want = self._wanted_mask()
        ready = self.ready_mask()
        if want:
            return (ready & want) == want
        return ready != 0

    def read_into(self, values, timeout_ms=150):
        """Read all lanes into values (an array('i') of n raw counts, -8388608..8388607).

        Waits up to timeout_ms for every lane not in FAULT to be ready (the chips hold a
        finished conversion until read, so lanes are read together even if their
        conversions finish at different times). Lanes still not ready then are marked
        FAULT, counted in faults, and not waited for again until they come back; the other
        lanes are read. 150 ms covers one period at 10 SPS; at 80 SPS 30 ms is enough.
        With timeout_ms=0 nothing is waited for and late lanes are NOT_READY.
        Returns a bitmask of the lanes whose values[i] was written (status OK); the other
        entries of values are left as they were. Allocates nothing.

        A lane clocked while not ready, or still low after the 25th pulse (a conversion
        landed mid-read and left it out of step, maybe on a stray gain), is re-settled:
        SETTLING for settle + 1 conversions. A misframed read that leaves DOUT high cannot
        be seen here; it is a single odd value, which core.glitch removes.
        """
        n = self.n
        status = self.status
        if self._down:
            return 0
        clock = self._clock
        want = self._wanted_mask()
        start = clock.ticks_ms()
        timed_out = False
        while True:
            ready = self.ready_mask()
            if ((ready & want) == want) if want else ready:
                break
            if clock.ticks_diff(clock.ticks_ms(), start) >= timeout_ms:
                timed_out = timeout_ms > 0
                break
            clock.sleep_ms(1)
        torn = self._shift_in() if ready else 0
        skip = self._skip
        faulted = self._faulted
        got = 0
        for i in range(n):
            bit = 1 << i
            if ready & bit:
                faulted[i] = 0
                if torn & bit:
                    # Left mid-frame (a new conversion landed during the read): this value is
                    # garbage and the next frame may carry a stray gain; resync and re-settle.
                    skip[i] = self._settle + 1
                    status[i] = SETTLING
                    continue
                if skip[i]:
                    skip[i] -= 1
                    status[i] = SETTLING
                    continue
                v = self._acc[i]
                if v & _SIGN:
                    v -= _WRAP
                values[i] = v
                status[i] = OK
                got |= bit
                continue
            if ready:
                # Clocked while converting: it may have turned ready mid-train and been left
                # mid-frame on a stray gain; resync and re-settle before trusting it again.
                skip[i] = self._settle + 1
            if faulted[i] or (timed_out and want & bit):
                if not faulted[i]:
                    faulted[i] = 1
                    self.faults[i] += 1
                status[i] = FAULT
            else:
                status[i] = NOT_READY
        return got

    def _shift_in(self):
        # Returns a mask of lanes found out of step after the read.
        # One pulse = mask, clock high, clock low, unmask: the clock-high time cannot be
        # stretched by an interrupt. DOUTs are sampled after the falling edge (the bit shifted
        # out at the rising edge stays valid until the next one).
        acc = self._acc
        douts = self._douts
        sck = self._sck
        off = self._disable_irq
        on = self._enable_irq
        n = self.n
        for i in range(n):
            acc[i] = 0
        for _ in range(24):
            state = off()
            sck(1)
            sck(0)
            on(state)
            for i in range(n):
                acc[i] = (acc[i] << 1) | douts[i]()
        for _ in range(self._pulses - 24):
            state = off()
            sck(1)
            sck(0)
            on(state)
        # The 25th pulse pulls DOUT high: a lane still low is mid-frame, out of step.
        torn = 0
        for i in range(n):
            if not douts[i]():
                torn |= 1 << i
        return torn
