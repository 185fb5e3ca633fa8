# WiFi station supervision: join, watch, rejoin with backoff; RSSI for telemetry.
#
# The radio is `network.WLAN(network.STA_IF)` on a board; tests and the virtual board hand in
# any object with the same few methods (active, connect, disconnect, isconnected, status).
# connect() returns at once on the ESP32 and the join completes in the background, so the
# supervisor polls isconnected() from asyncio and never blocks the sampler.

import asyncio
import random

from micropython import const

JOIN_TIMEOUT_MS = const(15000)
POLL_MS = const(250)
BACKOFF_MIN_MS = const(1000)
BACKOFF_MAX_MS = const(60000)


def station():
    """The board's station interface (absent off the board: None)."""
    try:
        import network
    except ImportError:
        return None
    return network.WLAN(network.STA_IF)


def jittered(backoff_ms):
    """backoff_ms +- 25 %: a store full of shelves must not retry in lockstep."""
    return backoff_ms * 3 // 4 + random.getrandbits(16) % (backoff_ms // 2 + 1)


class WifiSupervisor:
    def __init__(self, wlan, ssid, password, progress=None, join_timeout_ms=JOIN_TIMEOUT_MS):
        self.wlan = wlan
        self.join_timeout_ms = join_timeout_ms
        self.ssid = ssid
        self.password = password
        self.up = asyncio.Event()  # set while joined
        self.joins = 0
        self.losses = 0
        self.last_error = None
        self._progress = progress or (lambda: None)

    def connected(self):
        try:
            return bool(self.wlan.isconnected())
        except OSError:
            return False

    def rssi(self):
        """Signal strength in dBm, or None when not joined or not known."""
        if not self.connected():
            return None
        try:
            return self.wlan.status("rssi")
        except (OSError, ValueError, TypeError):
            return None

    async def _join(self):
        wlan = self.wlan
        wlan.active(True)
        if self.connected():
            return True
        try:
            wlan.connect(self.ssid, self.password)
        except OSError as exc:
            self.last_error = "connect: %s" % exc
            return False
        waited = 0
        while waited < self.join_timeout_ms:
            if self.connected():
                return True
            self._progress()
            await asyncio.sleep_ms(POLL_MS)
            waited += POLL_MS
        self.last_error = "no join within %d ms (status %s)" % (self.join_timeout_ms,
                                                              wlan.status())
        try:
            wlan.disconnect()
        except OSError:
            pass
        return False

    async def run(self):
        """Forever: keep the station joined; `up` tells the rest of the firmware."""
        backoff = BACKOFF_MIN_MS
        while True:
            if self.connected():
                if not self.up.is_set():
                    self.up.set()
                    self.joins += 1
                    backoff = BACKOFF_MIN_MS
                self._progress()
                await asyncio.sleep_ms(POLL_MS * 4)
                continue
            if self.up.is_set():
                self.up.clear()
                self.losses += 1
            if await self._join():
                continue
            wait = jittered(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_MS)
            while wait > 0:  # sleep in slices so the watchdog sees progress
                self._progress()
                await asyncio.sleep_ms(min(wait, 1000))
                wait -= 1000
