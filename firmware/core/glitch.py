"""Glitch filter between the HX711 driver and the detector: glitches never reach it as weight.

HX711 boards now and then return a reading that is no weight at all, always a single sample
(see traces/examples): saturation (8388607 / -8388608), an exact 0, the value shifted right
by one bit, or one high bit flipped (bit 22: about 4.2 million counts off).
- Saturation is never a reading: dropped.
- An exact 0 is dropped when the lane's signal is far from 0 (it cannot be noise there).
- A reading far from the last output that has the shape of a garbled read is dropped: the
  bits one place late (twice the reading is the last output, for counts far from 0), bit 22
  flipped, or the low 14 bits all ones (an interrupt mid-read clocks in ones; 2^n - 1
  spikes). Two glitches close together would otherwise outvote the median below. At most two
  readings in a row are dropped this way: a third is the signal, so a real change that
  happens to have such a shape is late by two readings, never lost.
- What is left goes through a median of 3, which removes any single odd sample at the cost
  of one sample of delay. A real step (every later sample at the new level) comes through
  one sample late; a level held for only 2 samples comes through too.
A dropped reading repeats the lane's last output. Pure: no I/O, no clock; ints only, and no
allocation per call.
"""

from array import array

from micropython import const

SAT_HI = const(8388607)
SAT_LO = const(-8388608)
MASK24 = const(0xFFFFFF)
BIT22 = const(0x400000)
LOW_ONES = const(0x3FFF)  # 14 low bits, all ones
MAX_SHAPED = const(2)  # a third such reading in a row is the signal, whatever its shape


class GlitchFilter:
    """Per-lane glitch filter.

    zero_band: an exact 0 is a glitch when the last output is further than this from 0.
    spike: a reading the median replaced and that lay further than this from the output
    is counted in `spikes` (telemetry only; the median acts on every reading).
    Counters per lane (array 'I'): saturated, zeros, spikes. `run[lane]`: readings dropped
    in a row (stops at 255); a long run means the lane is saturated or dead, not glitching.
    """

    def __init__(self, n_lanes, zero_band=4096, spike=16384):
        n = n_lanes
        self.n = n
        self.zero_band = zero_band
        self.spike = spike
        self._win = array("i", [0] * (3 * n))  # ring of the last 3 kept readings per lane
        self._head = bytearray(n)  # ring slot the next reading goes to
        self._seen = bytearray(n)  # kept readings so far, stops at 3
        self._out = array("i", [0] * n)
        self.saturated = array("I", [0] * n)
        self.zeros = array("I", [0] * n)
        self.spikes = array("I", [0] * n)
        self.run = bytearray(n)

    def reset(self, lane=-1):
        """Forget a lane's history (all lanes with -1), e.g. after a gain change or
        power-up, when old readings are on another scale. Counters are kept."""
        for i in range(self.n):
            if lane < 0 or i == lane:
                self._seen[i] = 0
                self._head[i] = 0
                self.run[i] = 0

    def rejected(self, lane):
        return self.saturated[lane] + self.zeros[lane] + self.spikes[lane]

    def clean(self, lane, raw):
        """The reading to pass on for this raw count: an int, or None while the lane has
        had no usable reading yet."""
        if raw >= SAT_HI or raw <= SAT_LO:
            self.saturated[lane] += 1
            return self._drop(lane)
        seen = self._seen[lane]
        if raw == 0 and seen:
            last = self._out[lane]
            if last > self.zero_band or last < -self.zero_band:
                self.zeros[lane] += 1
                return self._drop(lane)
        if seen and self.run[lane] < MAX_SHAPED and self._garbled(raw, self._out[lane]):
            self.spikes[lane] += 1
            return self._drop(lane)
        w = self._win
        base = 3 * lane
        h = self._head[lane]
        w[base + h] = raw
        self._head[lane] = h + 1 if h < 2 else 0
        self.run[lane] = 0
        if seen < 3:
            seen += 1
            self._seen[lane] = seen
        if seen == 1:
            out = raw
        elif seen == 2:
            out = w[base + (h + 2) % 3]  # the older one: one sample of delay from the start
        else:
            mid = w[base + (h + 2) % 3]
            out = _median3(w[base + (h + 1) % 3], mid, raw)
            d = mid - out
            if d > self.spike or d < -self.spike:
                self.spikes[lane] += 1
        self._out[lane] = out
        return out

    def _garbled(self, raw, last):
        # Far from the last output and shaped like a garbled HX711 read (see the top).
        tol = self.spike
        d = raw - last
        if -tol <= d <= tol:
            return False
        u = raw & MASK24
        v = last & MASK24
        if u & LOW_ONES == LOW_ONES:
            return True
        if last > 4 * tol or last < -4 * tol:
            # one clock too few halves the count: only a jump far beyond noise and motion
            # when the count is large (near 0, halving it is an ordinary change)
            d = 2 * raw - last  # signed...
            if -tol <= d <= tol:
                return True
            d = 2 * u - v  # ...or as the unsigned 24 bits
            if -tol <= d <= tol:
                return True
        d = (u ^ BIT22) - v
        return -tol <= d <= tol

    def _drop(self, lane):
        r = self.run[lane]
        if r < 255:
            self.run[lane] = r + 1
        if self._seen[lane]:
            return self._out[lane]
        return None


def _median3(a, b, c):
    if a > b:
        a, b = b, a
    if b > c:
        b = c if c > a else a
    return b
