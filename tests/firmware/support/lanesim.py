# A tiny, exact shelf-signal builder for the portable detector tests.
#
# Runs in CPython and MicroPython alike and produces the same integers in both: its own
# linear congruential generator for noise and integer recurrences for ringing (no floats in
# the signal), so a test sees the very same samples on either runtime.
import math


class Rng:
    def __init__(self, seed):
        self.x = (seed * 2654435761 + 12345) & 0x7FFFFFFF

    def next(self):
        self.x = (self.x * 1103515245 + 12345) & 0x7FFFFFFF
        return self.x >> 8  # 23 bits

    def gauss_cg(self, sigma_cg):
        # Sum of 4 uniforms (Irwin-Hall): close enough to Gaussian for noise, ints only.
        if sigma_cg <= 0:
            return 0
        acc = 0
        for _ in range(4):
            acc += self.next() & 0xFFFF
        # 4 uniforms on [0, 65536): mean 131070, std 65536 * sqrt(4/12) = 37837
        return (acc - 131070) * sigma_cg // 37837


class Lane:
    """Load on one lane over time, in centigrams, one value per sample period."""

    def __init__(self, rate, start_cg=0):
        self.rate = rate
        self.cg = [start_cg]
        self.ring = []  # additive ringing, same length once finished
        self.vib = []  # additive steady vibration over a span of samples

    def _n(self, ms):
        return max(1, ms * self.rate // 1000)

    def hold(self, ms):
        last = self.cg[-1]
        for _ in range(self._n(ms)):
            self.cg.append(last)
        return self

    def ramp(self, delta_cg, ms):
        # A smooth S-curve (a hand lowering or lifting), integer steps.
        start = self.cg[-1]
        n = self._n(ms)
        for i in range(1, n + 1):
            # smoothstep 3x^2 - 2x^3 in integers, x = i/n
            num = 3 * i * i * n - 2 * i * i * i
            self.cg.append(start + delta_cg * num // (n * n * n))
        return self

    def wander(self, amp_cg, period_ms, ms):
        # A resting hand's slow sway: a triangle wave of +-amp_cg around the current load.
        base = self.cg[-1]
        per = self._n(period_ms)
        for i in range(1, self._n(ms) + 1):
            ph = i % per
            tri = 4 * ph if 4 * ph < per else (2 * per - 4 * ph if 4 * ph < 3 * per else
                                                4 * ph - 4 * per)
            self.cg.append(base + amp_cg * tri // per)
        return self

    def impact(self, amp_cg, hz=8, tau_ms=150):
        # Damped ringing that starts now (a released item, a bump), added on top of the load.
        n0 = len(self.cg) - 1
        w = 2 * math.pi * hz / self.rate
        rho = math.exp(-1000 / (tau_ms * self.rate))
        a = int(2 * rho * math.cos(w) * 32768 + 0.5)
        b = int(rho * rho * 32768 + 0.5)
        self.ring.append((n0, amp_cg, a, b))
        return self

    def vibrate(self, amp_cg, hz, ms):
        # A steady sine of +-amp_cg (a gondola on a shaky floor) over the next `ms`, added on
        # top of whatever the load does meanwhile.
        n0 = len(self.cg) - 1
        w = 2 * math.pi * hz / self.rate
        self.vib.append((n0, n0 + self._n(ms), int(amp_cg * math.sin(w)),
                         int(2 * math.cos(w) * 32768 + 0.5)))
        return self

    def values(self):
        out = list(self.cg)
        for n0, n1, step, a in self.vib:
            # s[n] = amp * sin(w * n) by s[n+1] = 2 cos(w) s[n] - s[n-1], from s[0] = 0
            prev = -step
            cur = 0
            for n in range(n0, min(n1, len(out))):
                out[n] += cur
                nxt = a * cur // 32768 - prev
                prev = cur
                cur = nxt
        for n0, amp, a, b in self.ring:
            prev = 0
            cur = amp
            for n in range(n0, len(out)):
                out[n] += cur
                nxt = (a * cur - b * prev) // 32768
                prev = cur
                cur = nxt
                if -2 < cur < 2 and -2 < prev < 2:
                    break
        return out


def samples(lanes, cals, sigma_cg=100, seed=1, t0=0):
    """Interleave lanes into (t_ms, lane, raw) in time order, as a driver would deliver them.

    lanes: list of Lane (same rate); cals: list of (offset, counts_per_gram) pairs, ints (so
    both runtimes compute the very same raw counts).
    """
    rng = Rng(seed)
    rate = lanes[0].rate
    series = [ln.values() for ln in lanes]
    n = max(len(s) for s in series)
    out = []
    for i in range(n):
        t = t0 + i * 1000 // rate
        for k in range(len(lanes)):
            s = series[k]
            cg = s[i] if i < len(s) else s[-1]
            cg += rng.gauss_cg(sigma_cg)
            off, cpg = cals[k]
            out.append((t, k, off + cg * cpg // 100))
    return out


def run(detector, stream, glitch=None):
    """Feed a stream through an optional glitch filter and the detector; return events."""
    events = []
    for t, lane, raw in stream:
        if glitch is not None:
            raw = glitch.clean(lane, raw)
            if raw is None:
                continue
        ev = detector.feed(lane, t, raw)
        if ev is not None:
            events.append(ev)
    return events
