# The shelf's sampling task: HX711 bank -> glitch filter -> detector -> on_change().
#
# The bank is polled, never waited on: an 80 SPS conversion takes 12.5 ms, and a blocking
# ready-wait would stall networking. When every lane has a conversion the whole bank is read
# at once (a few hundred microseconds with interrupts masked only per clock pulse). A lane
# that stays silent past FAULT_MS is read with a 1 ms timeout so the driver marks it FAULT;
# the others keep sampling. Nothing here allocates per sample.

import asyncio
import time
from array import array

from micropython import const

from core.detector import ShelfDetector
from core.glitch import GlitchFilter
from drivers.hx711 import FAULT

FAULT_MS = const(400)  # 4 periods at 10 SPS; a lane silent this long is faulty


class Sampler:
    """Polls `bank` (an HX711Bank or anything with n, ready(), read_into(), status).

    on_change(change) gets each detector event; on_fault(lane) each lane that goes FAULT.
    clock: where ticks_ms / ticks_diff come from (the `time` module; tests pass the fake
    board's clock, the same one the bank runs on).
    """

    def __init__(self, bank, cals, rate_hz, on_change, on_fault=None, detector=None,
                 clock=None):
        n = bank.n
        self.bank = bank
        self.n = n
        self.rate_hz = rate_hz
        self.values = array("i", [0] * n)
        self.glitch = GlitchFilter(n)
        self.detector = detector or ShelfDetector(cals, rate_hz)
        self.on_change = on_change
        self.on_fault = on_fault or (lambda lane: None)
        self.samples = array("I", [0] * n)  # readings per lane since boot (wraps at 2**32)
        self.faults = array("H", [0] * n)  # times each lane went FAULT
        self._faulted = bytearray(n)
        self._clock = clock or time
        self._last_read = self._clock.ticks_ms()
        self.poll_ms = 2 if rate_hz > 20 else 10

    def poll(self):
        """Read the bank if it is ready (or overdue); feed what was read. True if read."""
        bank = self.bank
        clock = self._clock
        now = clock.ticks_ms()
        if bank.ready():
            got = bank.read_into(self.values, 0)
        elif clock.ticks_diff(now, self._last_read) >= FAULT_MS:
            got = bank.read_into(self.values, 1)  # marks the silent lanes FAULT
        else:
            return False
        self._last_read = now
        values = self.values
        det = self.detector
        status = bank.status
        for i in range(self.n):
            if got & (1 << i):
                self._faulted[i] = 0
                self.samples[i] += 1
                v = self.glitch.clean(i, values[i])
                if v is None:
                    continue
                ev = det.feed(i, now, v)
                if ev is not None:
                    self.on_change(ev)
            elif status[i] == FAULT and not self._faulted[i]:
                self._faulted[i] = 1
                self.faults[i] += 1
                self.on_fault(i)
        return True

    def faulted(self, lane):
        return bool(self._faulted[lane])

    async def run(self, tick=None):
        while True:
            self.poll()
            if tick is not None:
                tick()
            await asyncio.sleep_ms(self.poll_ms)
