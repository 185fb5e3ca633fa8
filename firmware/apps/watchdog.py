# The hardware watchdog, fed only while every task shows progress.
#
# Each long-lived task registers with the longest silence it may keep (the sampler a couple
# of seconds, the publisher while it waits for the broker much longer) and calls its tick
# function from its loop. The feeder task feeds machine.WDT only while no task is overdue, so
# a hung or dead task reboots the board within its allowance plus the WDT timeout.

import asyncio
from time import ticks_diff, ticks_ms

from micropython import const

FEED_MS = const(1000)


class Watchdog:
    def __init__(self, wdt=None, ticks=None):
        self.wdt = wdt  # machine.WDT or None (tests, safe mode)
        self._ticks = ticks or ticks_ms
        self.names = []
        self.allow_ms = []
        self.last = []
        self.overdue = None  # name of the task that stopped the feeding, for the log

    def register(self, name, allow_ms):
        """A task that promises to tick at least every allow_ms; returns its tick function."""
        i = len(self.names)
        self.names.append(name)
        self.allow_ms.append(allow_ms)
        self.last.append(self._ticks())

        def tick():
            self.last[i] = self._ticks()

        return tick

    def healthy(self):
        now = self._ticks()
        for i in range(len(self.names)):
            if ticks_diff(now, self.last[i]) > self.allow_ms[i]:
                self.overdue = self.names[i]
                return False
        self.overdue = None
        return True

    async def run(self):
        while True:
            if self.healthy() and self.wdt is not None:
                self.wdt.feed()
            await asyncio.sleep_ms(FEED_MS)
