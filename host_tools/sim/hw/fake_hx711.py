"""A fake HX711 speaking the chip's pin protocol on the fake `machine` board, in virtual time.

From the datasheet:
- A conversion ends every period (100 ms at 10 SPS, 12.5 ms at 80 SPS); DOUT then falls and
  stays low until the data is read.
- Each PD_SCK rising edge shifts out the next bit, MSB first (24 bits, two's complement);
  the 25th pulse pulls DOUT high; 25 / 26 / 27 pulses in the frame select A128 / B32 / A64 for
  the next conversion.
- PD_SCK high for more than 60 us powers the chip down (DOUT high, no conversions); a falling
  edge then powers it up: reset to A128, first conversion one period later, and the first
  `settle` conversions are still settling (also after a change of channel or gain).
Behaviour the datasheet leaves open, chosen here and relied on by no test by accident:
- Pulses while no conversion is waiting are ignored (counted in ignored_edges).
- A conversion that ends in the middle of a frame replaces the data and restarts the frame.
- A settling conversion reads `settle_error` counts high for each conversion still to settle.
- A clock-high time over 50 us (the datasheet's maximum for a read) in a pulse that shifted a
  bit is counted in long_highs; max_high_us is the longest such pulse.

Readings come from `source(gain) -> int` at the end of each conversion (gain 128, 64: channel
A; 32: channel B); values outside the 24-bit range saturate as the chip does.
"""

import machine

SAT_HI = 8388607
SAT_LO = -8388608
POWER_DOWN_US = 60
MAX_READ_HIGH_US = 50


def sequence(values, then=None):
    """A source returning values one conversion at a time, then `then` (or the last value)."""
    state = [0]

    def source(gain):
        i = state[0]
        if i < len(values):
            state[0] = i + 1
            return values[i]
        return values[-1] if then is None else then

    return source


def constant(value):
    return lambda gain: value


def by_gain(a128, b32, a64):
    """A source telling the channels apart (each argument a value or a source)."""
    table = {128: a128, 32: b32, 64: a64}

    def source(gain):
        v = table[gain]
        return v(gain) if callable(v) else v

    return source


class FakeHX711:
    def __init__(self, sck, dout, source=None, sps=10, period_us=None, phase_us=None,
                 settle=3, settle_error=50000, history=None):
        self.period_us = period_us or (12500 if sps == 80 else 100000)
        self.source = source or constant(0)
        self.settle = settle
        self.settle_error = settle_error
        self.stuck = False  # powered, but never finishes a conversion (DOUT stays high)
        self.absent = False  # drives nothing: DOUT reads the pin's pull
        self.gain = 128  # of the conversion in progress
        self._next_gain = 128
        self._unsettled = 0
        self._powered = True
        self._sck = 0
        self._rise = 0
        self._shifting = False  # the last rising edge shifted a bit out
        self._ready = False  # a conversion is waiting or being read
        self._data = 0  # 24-bit pattern
        self._bits = 0  # rising edges since the conversion ended
        now = machine.fake_clock().now
        self._next = now + (self.period_us if phase_us is None else phase_us)
        # what tests look at
        self.conversions = 0
        self.rising_edges = 0
        self.ignored_edges = 0
        self.frames = []  # pulses seen per conversion frame, in order
        self.values = []  # (gain, value) of each conversion, as shifted out
        self.history = history  # keep only this many of each (long runs); None: all
        self.max_high_us = 0
        self.long_highs = 0
        self.power_downs = 0
        self.power_ups = 0
        self.cut_frames = 0
        machine.fake_attach(self, sck, dout)

    # --- pin side (called by the fake board) ---
    def dout(self, now):
        if self.absent:
            return None
        self._update(now)
        if not self._powered or self.stuck or not self._ready:
            return 1
        if self._bits == 0:
            return 0
        if self._bits <= 24:
            return (self._data >> (24 - self._bits)) & 1
        return 1

    def sck(self, level, now):
        if self.absent:
            return
        self._update(now)
        if level:
            self._sck = 1
            self._rise = now
            self.rising_edges += 1
            self._shifting = self._powered and self._ready
            if self._shifting:
                self._bits += 1
                if self._bits == 25:
                    self._next_gain = 128
                elif self._bits == 26:
                    self._next_gain = 32
                elif self._bits == 27:
                    self._next_gain = 64
            elif self._powered:
                self.ignored_edges += 1
            return
        high = now - self._rise
        self._sck = 0
        if self._shifting:  # a pulse of a read (a power-down pulse shifts nothing)
            if high > self.max_high_us:
                self.max_high_us = high
            if high > MAX_READ_HIGH_US:
                self.long_highs += 1
        if not self._powered:
            self._power_up(now)

    # --- what tests read ---
    def sync(self):
        """Bring the chip up to the board's time (it otherwise updates lazily, at pin
        events); call before reading counters after time passed with no pin activity."""
        self._update(machine.fake_clock().now)

    @property
    def powered(self):
        self.sync()
        return self._powered

    @property
    def last_pulses(self):
        """Pulses in the current frame (or the last one, if no conversion is waiting)."""
        if self._bits or not self.frames:
            return self._bits
        return self.frames[-1]

    # --- internals ---
    def _update(self, now):
        if not self._powered:
            return
        if self._sck and now - self._rise > POWER_DOWN_US:
            self._convert_until(self._rise + POWER_DOWN_US)
            self._close_frame()
            self._powered = False
            self._ready = False
            self.power_downs += 1
            return
        self._convert_until(now)

    def _convert_until(self, t):
        while self._next <= t:
            if not self.stuck:
                self._finish_conversion()
            self._next += self.period_us

    def _finish_conversion(self):
        if 0 < self._bits < 25:
            self.cut_frames += 1  # a read was under way: its frame restarts here
        self._close_frame()
        if self._next_gain != self.gain:
            self.gain = self._next_gain
            self._unsettled = self.settle
        v = self.source(self.gain)
        if self._unsettled:
            v += self._unsettled * self.settle_error
            self._unsettled -= 1
        if v > SAT_HI:
            v = SAT_HI
        elif v < SAT_LO:
            v = SAT_LO
        self._data = v & 0xFFFFFF
        self._ready = True
        self.conversions += 1
        self.values.append((self.gain, v))
        if self.history is not None and len(self.values) > self.history:
            self.values.pop(0)

    def _close_frame(self):
        if self._bits:
            self.frames.append(self._bits)
            if self.history is not None and len(self.frames) > self.history:
                self.frames.pop(0)
        self._bits = 0

    def _power_up(self, now):
        self._powered = True
        self.power_ups += 1
        self.gain = 128
        self._next_gain = 128
        self._unsettled = self.settle
        self._ready = False
        self._bits = 0
        self._next = now + self.period_us
