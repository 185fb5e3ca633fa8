# Wall-clock time for events: UTC milliseconds once synced over SNTP, None before.
#
# The board keeps time as ticks_ms (wraps every 2**30 ms, ~12.4 days). A sync pins one tick
# to one UTC millisecond; utc_ms() extends from there. The pin is moved forward well before
# the ticks could wrap past it, and a sync is repeated every RESYNC_S anyway. SNTP runs over a
# non-blocking UDP socket polled from asyncio (ntptime.settime() would block the sampler for
# up to a second); only the DNS lookup of the server blocks, once per sync.
#
# Pure part (packet build/parse, Clock arithmetic) runs anywhere; sync() needs `socket`.

import struct

from time import ticks_diff, ticks_ms

from micropython import const

NTP_PORT = const(123)
NTP_TO_UNIX_S = const(2208988800)  # seconds from 1900-01-01 to 1970-01-01
RESYNC_S = const(3600)
_REPIN_MS = const(0x10000000)  # move the pin on after ~3 days, far from the 2**29 ms limit
_EARLIEST_UTC_S = const(1735689600)  # 2025-01-01: a server answering earlier is wrong


class SntpError(ValueError):
    pass


def request_packet():
    """A 48-byte SNTP client request (version 4, mode 3)."""
    pkt = bytearray(48)
    pkt[0] = 0x23  # LI 0, VN 4, mode 3
    return pkt


def parse_reply(pkt):
    """UTC milliseconds from an SNTP server reply (its transmit timestamp)."""
    if len(pkt) < 48:
        raise SntpError("short SNTP reply (%d bytes)" % len(pkt))
    mode = pkt[0] & 7
    if mode != 4 and mode != 5:
        raise SntpError("not a server reply (mode %d)" % mode)
    if pkt[1] == 0:
        raise SntpError("kiss-o'-death from server")
    secs, frac = struct.unpack_from("!II", pkt, 40)
    if secs == 0:
        raise SntpError("server has no time")
    unix_s = secs - NTP_TO_UNIX_S
    if unix_s < _EARLIEST_UTC_S:
        raise SntpError("implausible server time")
    return unix_s * 1000 + (frac * 1000 >> 32)


class Clock:
    """UTC ms from ticks. `ticks` is a callable (ticks_ms by default) for tests."""

    def __init__(self, ticks=None):
        self._ticks = ticks or ticks_ms
        self._pin_tick = 0
        self._pin_utc = None
        self.syncs = 0
        self.last_error = None  # text of the last failed sync, for telemetry

    @property
    def synced(self):
        return self._pin_utc is not None

    def set_utc_ms(self, utc_ms, at_tick=None):
        self._pin_tick = self._ticks() if at_tick is None else at_tick
        self._pin_utc = utc_ms
        self.syncs += 1

    def utc_ms(self):
        """UTC milliseconds now, or None when never synced."""
        if self._pin_utc is None:
            return None
        now = self._ticks()
        d = ticks_diff(now, self._pin_tick)
        if d >= _REPIN_MS:
            self._pin_tick = now
            self._pin_utc += d
            d = 0
        return self._pin_utc + d

    def uptime_ms(self):
        return self._ticks()


async def sync(clock, host, port=NTP_PORT, sock_factory=None, timeout_ms=2000):
    """One SNTP exchange with `host`; pins `clock` and returns True, or records why not."""
    import asyncio

    try:
        if sock_factory is None:
            try:
                import socket
            except ImportError:  # a port without sockets (the virtual board's VM)
                clock.last_error = "no socket module: SNTP unavailable"
                return False

            addr = socket.getaddrinfo(host, port)[0][-1]
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        else:
            addr = (host, port)
            s = sock_factory()
    except OSError as exc:
        clock.last_error = "SNTP %s: %s" % (host, exc)
        return False
    try:
        s.setblocking(False)
        t0 = clock._ticks()
        s.sendto(request_packet(), addr)
        while True:
            try:
                data = s.recv(64)
            except OSError:
                data = None
            now = clock._ticks()
            if data:
                utc = parse_reply(data)
                # Half the round trip is the best guess of the reply's age.
                clock.set_utc_ms(utc + ticks_diff(now, t0) // 2, now)
                clock.last_error = None
                return True
            if ticks_diff(now, t0) >= timeout_ms:
                raise SntpError("no SNTP reply from %s" % host)
            await asyncio.sleep_ms(20)
    except (OSError, SntpError) as exc:
        clock.last_error = str(exc) or repr(exc)
        return False
    finally:
        s.close()
