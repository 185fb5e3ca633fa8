# Telemetry: how the device is doing, published every N seconds (QoS 0, not stored).
#
# Samples per second are measured, not configured: readings counted by the sampler between two
# reports, over the ticks between them. A lane whose rate falls is the first sign of a loose
# wire or a dying chip, before it faults outright.

import gc
import json

from apps.version import VERSION


def _heap(name):
    fn = getattr(gc, name, None)  # MicroPython only; None elsewhere (a simulation)
    return fn() if fn is not None else None


class Telemetry:
    def __init__(self, n_lanes, ticks):
        self._ticks = ticks  # ticks_ms-like callable
        self._t_last = ticks()
        self._last = [0] * n_lanes

    def sps(self, samples, now):
        """Readings per second per lane since the last call (whole readings, rounded)."""
        from time import ticks_diff

        dt = ticks_diff(now, self._t_last)
        out = []
        for i in range(len(self._last)):
            got = (samples[i] - self._last[i]) & 0xFFFFFFFF
            self._last[i] = samples[i]
            out.append((got * 1000 + dt // 2) // dt if dt > 0 else 0)
        self._t_last = now
        return out

    def report(self, device, uptime_ms, rssi, outbox, sampler=None, clock=None, extra=None):
        """The telemetry JSON (bytes). outbox: depth / dropped / bytes_used; sampler may be
        None (a gate); clock: net.clock.Clock or None."""
        gc.collect()
        msg = {
            "v": 1,
            "device": device,
            "uptime_ms": uptime_ms,
            "fw": VERSION,
            "heap_free": _heap("mem_free"),
            "heap_alloc": _heap("mem_alloc"),
            "rssi": rssi,
            "outbox_depth": outbox.depth,
            "outbox_dropped": outbox.dropped,
            "outbox_bytes": outbox.bytes_used,
            "time_synced": bool(clock is not None and clock.synced),
            "ts": clock.utc_ms() if clock is not None else None,
        }
        if sampler is not None:
            msg["sps"] = self.sps(sampler.samples, self._ticks())
            msg["faults"] = [sampler.faults[i] for i in range(sampler.n)]
            msg["faulted"] = [sampler.faulted(i) for i in range(sampler.n)]
            msg["glitches"] = [sampler.glitch.rejected(i) for i in range(sampler.n)]
        if extra:
            for k in extra:
                msg[k] = extra[k]
        return json.dumps(msg).encode()
