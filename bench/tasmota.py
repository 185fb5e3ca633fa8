"""A Tasmota-style baseline detector (the benchmark's reference point; see docs/scoring.md).

Modelled on what Tasmota's HX711 sensor (xsns_34) does, as the benchmark spec states it:

- every 100 ms (on the board's clock) a lane's weight is the trimmed mean of its last 10 raw
  readings: the 2 highest and the 2 lowest are dropped, the 6 others averaged, then converted to
  grams with the lane's calibration, ``(raw - offset) / counts_per_gram``;
- change detection is Tasmota's two-state rule, applied to those 100 ms weights: a weight more
  than 4 g away from the reference weight starts (or continues) a change and becomes the new
  reference; while a change is open, the first weight within 4 g of the reference ends it
  ("settled within 4 g": two consecutive 100 ms weights less than 4 g apart). The settled
  weight is then compared with the previous settled weight: their difference is the event,
  ``count = round(diff / unit_g)``.

Interpretation details (not smarter than described, but defined where the description is
silent):
- a tick happens on the first sample at or after each 100 ms boundary of ``t_ms`` (a gap in the
  samples skips ticks; nothing is interpolated); the event carries that sample's ``t_ms``;
- a lane needs 10 readings before its first weight; the first weight is the starting settled
  weight and reference (Tasmota would report the whole load at boot, which is no shelf event);
- a settle whose difference from the previous settled weight is 4 g or less emits nothing (the
  weight went back to where it was); a larger difference that rounds to count 0 is no pick or
  put either: Tasmota would publish the weight, but a store counting items ignores it, so it
  is dropped by default (``drop_zero=False`` keeps it, as a raw Tasmota feed would);
- no clamping of negative weights (Tasmota clamps below its tare; these traces' lanes are not
  tared to empty) and no whole-gram truncation; every reading is used as returned, glitches
  included: the trimmed mean is the only glitch filter, as in Tasmota.
"""

from __future__ import annotations

from collections import deque

from host_tools.trace.io import LaneMeta, Trace

PERIOD_MS = 100
WINDOW = 10
TRIM = 2
DELTA_G = 4.0


class _LaneState:
    def __init__(self, meta: LaneMeta, window: int) -> None:
        self.meta = meta
        self.reads: deque[int] = deque(maxlen=window)
        self.next_tick: int | None = None
        self.reference: float | None = None  # Tasmota's weight_diff
        self.settled: float | None = None  # last settled (published) weight
        self.changing = False  # Tasmota's weight_changed


class TasmotaBaseline:
    """Feed raw readings in time order; get the events the baseline emits at each reading."""

    def __init__(
        self,
        lanes: list[LaneMeta],
        *,
        period_ms: int = PERIOD_MS,
        window: int = WINDOW,
        trim: int = TRIM,
        delta_g: float = DELTA_G,
        drop_zero: bool = True,
    ) -> None:
        if window <= 2 * trim:
            raise ValueError("window must be larger than twice the trim")
        self.period_ms = period_ms
        self.window = window
        self.trim = trim
        self.delta_g = delta_g
        self.drop_zero = drop_zero
        self._lanes = {m.lane: _LaneState(m, window) for m in lanes}

    def weight_g(self, lane: int) -> float | None:
        """The lane's last settled weight in grams (None before its first 100 ms weight)."""
        return self._lanes[lane].settled

    def _trimmed_grams(self, st: _LaneState) -> float:
        ordered = sorted(st.reads)
        kept = ordered[self.trim : len(ordered) - self.trim]
        raw = sum(kept) / len(kept)
        return (raw - st.meta.offset) / st.meta.counts_per_gram

    def feed(self, lane: int, t_ms: int, raw: int) -> list[dict]:
        st = self._lanes[lane]
        st.reads.append(raw)
        if st.next_tick is None:
            st.next_tick = t_ms  # the first reading opens the lane's 100 ms grid
        if t_ms < st.next_tick:
            return []
        st.next_tick = t_ms - (t_ms % self.period_ms) + self.period_ms
        if len(st.reads) < self.window:
            return []
        w = self._trimmed_grams(st)
        if st.reference is None or st.settled is None:
            st.reference = st.settled = w
            return []
        if abs(w - st.reference) > self.delta_g:
            st.reference = w
            st.changing = True
            return []
        if not (st.changing and abs(w - st.reference) < self.delta_g):
            return []
        st.changing = False
        before, st.settled = st.settled, w
        diff = w - before
        if abs(diff) <= self.delta_g:
            return []
        if self.drop_zero and round(diff / st.meta.unit_g) == 0:
            return []
        return [
            {
                "lane": lane,
                "t_ms": t_ms,
                "count": round(diff / st.meta.unit_g),
                "delta_g": round(diff, 2),
                "before_g": round(before, 2),
                "after_g": round(w, 2),
                "sku": st.meta.sku,
            }
        ]


def run_baseline(trace: Trace) -> list[dict]:
    """Replay a trace's samples through the baseline; all emitted events in emission order."""
    det = TasmotaBaseline(trace.lanes)
    events: list[dict] = []
    for t_ms, lane, raw in trace.samples:
        events.extend(det.feed(lane, t_ms, raw))
    return events
