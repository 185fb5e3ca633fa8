# Pick / put-back detection for one shelf: one sample in, at most one event out.
#
# Pure: no I/O and no clock of its own (time comes in with each sample), integers only on the
# per-sample path, every buffer allocated here in __init__. Per lane:
#
#   raw -> boxcar mean over SMOOTH_MS (HX711 noise, the mains alias, part of the ringing)
#       -> on a lane whose gondola vibrates, a second mean over one period of the vibration
#       -> spread (max - min) of that mean over SETTLE_MS, against the lane's own quiet
#          spread (learnt online as a low quantile, so hands and bumps do not inflate it)
#       -> STILL --(busy)--> ACTIVE --(still again, twice in a row)--> decide
#
# Deciding compares the settled level with the anchor (the level the lane last rested at for
# ANCHOR_MS) and the items counted since then, so an event reported while the shelf was not
# quite settled does not bias the next one:
#   * a whole number of items, significant and plausible for the lane: a pick is emitted at
#     once; a put-back at once only if the weight overshot on release (a resting hand eases
#     onto its plateau), else after PUT_WAIT_MS;
#   * back where the counted items put it: absorbed (a touch, a bump, a hand that left);
#   * anything else (a resting hand, a foreign object, a change still settling) waits, PENDING,
#     and after FOREIGN_WAIT_MS of stillness is emitted as a foreign change (count None): only
#     a long wait tells an object from a hand. New activity interrupts the wait and the lane
#     is judged again from the same anchor, so a hand that rests, takes and leaves yields one
#     event; a plateau held long and left by a clean whole step was an object after all.
# While still, the reference level (and the lane's zero) follows slow drift and creep. A
# change that is a small share of a simultaneous change on an adjacent lane is load sharing.
# docs/detector.md explains each rule and what it cannot know.
#
# Every product on the per-sample and waiting paths stays below 2**30 (MicroPython's small-int
# range on a 32-bit port): beyond it an int is a heap object.

from array import array

from micropython import const

from core.lane import LaneCal

STILL = const(0)
ACTIVE = const(1)
PENDING = const(2)

SMOOTH_MS = const(150)  # boxcar length
WARM_FREE = const(4)  # the first readings teach the noise whatever they are...
K_WARM = const(4)  # ...later ones only within 4 x the noise learnt so far
LOW_RATE_HZ = const(40)  # below: a 10 SPS chip, whose readings are already averaged
SETTLE_MS = const(75)  # how long the smoothed level must stay put
CALM_SAMPLES = const(2)  # ...confirmed on this many samples in a row (not a turning point)
UNIT_STILL_PERMIL = const(40)  # spread below 4 % of an item is still enough to count
K_STILL_X4 = const(12)  # still when spread <= 3 x quiet spread (+ floor)
NOISE_UP_S = const(8)  # quiet-spread tracker: slow to rise...
NOISE_DOWN_DIV = const(4)  # ...4x faster to fall: it sits near the 20th percentile
K_SIG = const(10)  # a foreign change must exceed 10 x the quiet level noise...
K_SIG_COUNT = const(5)  # ...a whole count 5 x
K_TOL_NOISE = const(3)  # count tolerance widens by 3 x level noise
FOREIGN_MIN_G = 10  # smallest foreign object reported (g)
STILL_FLOOR_G = 0.2  # spread floor: dead or very quiet channels
DRIFT_G_PER_S = 0.5  # auto-zero follows at most this fast (creep, temperature), never a hand
TOL_BASE_PERMIL = const(120)  # whole-count tolerance: 12 % of a unit ...
TOL_SQRT_PERMIL = const(40)  # ... + 4 % x sqrt(items) (item weights vary independently)
MAX_ITEMS_PER_ACTION = const(12)  # without a known capacity, more than this is implausible
PEND_INT_MS = const(800)  # after a settle, a whole count may still firm up this long
PUT_WAIT_MS = const(2000)  # a put with no release signature waits this long (hands rest)
RELEASE_PER_25 = const(2)  # release signature: the level overshot the final one by 2/25 (8 %)
ANCHOR_MS = const(700)  # still this long after a change: the new level is the count anchor
HELD_REAL_MS = const(1000)  # a pending plateau held this long before new activity was real
HAND_SWAY_PCT = const(10)  # ...unless that activity moved it by no more than a hand sways
FOREIGN_WAIT_MS = const(7000)  # FORMAT.md allows a foreign row 8 s...
PUT_FLAT_MS = const(500)  # a put without release waits PUT_WAIT_MS and for a flat level
PUT_FLAT_LOW_MS = const(1000)  # ...at 10 SPS, or for a level flat this long (hands sway)
FLAT_WAIT_MS = const(1300)  # ...but a plateau this flat for this long is no hand (hands wander)
K_FLAT = const(4)  # flat: the level's range stays within 4 x the quiet spread...
K_FLAT_LOW = const(12)  # ...12 x at 10 SPS, where that spread is of 2 readings, not 6
STILL_RANGE_X4 = const(8)  # ...or, at 10 SPS, 2 x the range a still lane keeps over FLAT_WAIT_MS
FLAT_PER_100 = const(1)  # ...+ 1 % of the change (a hand wanders by more of its force)
XT_WINDOW_MS = const(250)  # how close in time the neighbour's activity must be
XT_COUNT_PCT = const(2)  # a "whole count" this small next to a big change is load sharing
XT_FOREIGN_PCT = const(8)  # same for a foreign-looking change
XT_SHAKE_PCT = const(5)  # an adjacent lane leaks at most this share of its load into ours
LEAK_PERMIL = const(25)  # ...and keeps at most 2.5 % of a load change it made (plate edges)
VIB_SMOOTH_MS = const(200)  # second stage: nulls 5 Hz, and with the boxcar all of 5-16 Hz
VIB_MIN_MS = const(120)  # ...or one period of a faster vibration, at least this long
VIB_PERMIL = const(30)  # a swing of 3 % of an item left after the boxcar matters
VIB_HALF_MS = const(160)  # swings this close in a row (3 Hz and up) are vibration...
VIB_SWINGS = const(8)  # ...this many of them (4 periods: longer than most ringing)
VIB_HOLD_MS = const(10000)  # the second stage leads this long after the last such swing
PUT_FIX_MS = const(1000)  # a put's level may turn out a hand's press this soon after
REF_SLACK_PERMIL = const(60)  # an event's level may be this far off (read while ringing)
SHARE_MIN_CG = const(20000)  # a neighbour's change of 200 g or more teaches the load share
SHARE_SAMPLES = const(4)  # the first samples are averaged, later ones move it SHARE_STEP
SHARE_STEP = const(5)  # per 10000
SHARE_KNOWN = const(2)  # samples before a learnt share is used...
SHARE_SLACK = const(40)  # ...give or take this much of the neighbour's change (per 10000)
SHARE_SIGN_SLACK = const(120)  # a change against a learnt share's sign may be this much off
FOREIGN_SLOTS = const(3)  # foreign objects remembered per lane
TICKS_HALF = const(0x20000000)
TICKS_MASK = const(0x3FFFFFFF)


def tdiff(a, b):
    # a - b for millisecond ticks that wrap at 2**30 (MicroPython's ticks_ms period).
    return ((a - b + TICKS_HALF) & TICKS_MASK) - TICKS_HALF


def _rdiv(num, den):
    if num >= 0:
        return (num + den // 2) // den
    return -((-num + den // 2) // den)


def _zeros(n):
    return array("i", [0] * n)


class Change:
    """One emitted event. Grams are carried as integer centigrams (exact on every runtime)."""

    def __init__(self, lane, t_ms, count, delta_cg, before_cg, after_cg, confidence, sku):
        self.lane = lane
        self.t_ms = t_ms
        self.count = count  # signed items; None: no whole number of this lane's items
        self.delta_cg = delta_cg
        self.before_cg = before_cg
        self.after_cg = after_cg
        self.confidence = confidence  # percent
        self.sku = sku

    @property
    def kind(self):
        if self.count is None:
            return "change"
        return "pick" if self.count < 0 else "put"

    def as_dict(self):
        return {
            "lane": self.lane,
            "t_ms": self.t_ms,
            "count": self.count,
            "delta_g": self.delta_cg / 100,
            "before_g": self.before_cg / 100,
            "after_g": self.after_cg / 100,
            "confidence": self.confidence / 100,
            "sku": self.sku,
        }


class ShelfDetector:
    def __init__(self, lanes, sample_rate_hz=80, smooth_ms=SMOOTH_MS, settle_ms=SETTLE_MS,
                 foreign_wait_ms=FOREIGN_WAIT_MS, noise_g=1.0):
        n = len(lanes)
        if not 1 <= n <= 16:
            raise ValueError("1..16 lanes")
        rate = int(sample_rate_hz)
        if rate < 1:
            raise ValueError("sample rate must be >= 1 Hz")
        self.lanes = lanes  # type: list[LaneCal]
        self.n = n
        if rate < LOW_RATE_HZ:
            # A slow HX711 reading is already a 100 ms average (the chip's own filter): no
            # boxcar on top of it, and two readings in a row make the stillness window.
            m = 2
            s = 2
        else:
            m = max(2, min(32, (rate * smooth_ms + 500) // 1000))
            s = max(3, min(32, (rate * settle_ms + 500) // 1000))
        # confirmations in a row before a settle counts; at 10 SPS one sample is 100 ms
        self._low_rate = rate < LOW_RATE_HZ
        self.calm_n = 1 if self._low_rate else CALM_SAMPLES
        self._kflat = K_FLAT_LOW if self._low_rate else K_FLAT
        self.m = m
        self.s = s
        self.rate = rate
        self.foreign_wait_ms = foreign_wait_ms
        self._up_div = max(16, rate * NOISE_UP_S)
        self._down_div = max(4, self._up_div // NOISE_DOWN_DIV)
        self._warm = 2 * rate  # samples of fast, symmetric noise learning at start
        self._buf = _zeros(n * m)  # raw ring per lane (boxcar)
        self._ybuf = _zeros(n * s)  # boxcar sums ring per lane (stillness window)
        self._bpos = _zeros(n)
        self._ypos = _zeros(n)
        self._bsum = _zeros(n)
        self.m2 = max(1, (rate * VIB_SMOOTH_MS + 500) // 1000) if rate >= LOW_RATE_HZ else 1
        self._vth = _zeros(n)  # swing that matters (boxcar sum units)
        self._vsg = _zeros(n)  # sign of the last swing beyond it
        self._vrun = _zeros(n)  # swings in a row, each within VIB_HALF_MS of the last
        self._vlast = _zeros(n)
        self._vib_until = _zeros(n)  # the second stage leads until then
        self._buf2 = _zeros(n * self.m2)
        self._p2 = _zeros(n)
        self._s2 = _zeros(n)
        self._n2 = _zeros(n)  # second stage length (samples): one period of the vibration
        self._vhalf = _zeros(n)  # the vibration's half period (ms), a running estimate
        self._y = _zeros(n)
        self._seen = _zeros(n)  # samples seen (saturates after warm-up)
        self._q = _zeros(n)  # quiet spread of the boxcar sum
        self._calm = _zeros(n)  # consecutive still samples
        self._near = _zeros(n)  # consecutive near-still samples
        self._state = _zeros(n)
        # Levels are boxcar sums (m x counts): no division on the per-sample path.
        self._ref = _zeros(n)  # level after the last decision (event or absorbed change)
        self._anchor = _zeros(n)  # level the lane last rested at; counts are fitted from it
        self._acc = _zeros(n)  # items reported since the anchor
        self._dirty = _zeros(n)  # 1: a decision was made; re-anchor once the lane rests
        self._pend = _zeros(n)  # level while PENDING (smoothed)
        self._fmin = _zeros(n)  # range of the level since _t_flat (PENDING)
        self._fmax = _zeros(n)
        self._t_flat = _zeros(n)
        # At 10 SPS: the typical range of the level of a still lane over FLAT_WAIT_MS, and the
        # stretch of stillness being measured for it (start, min, max; 0: none).
        self._srange = _zeros(n)
        self._t_sr = _zeros(n)
        self._sr_min = _zeros(n)
        self._sr_max = _zeros(n)
        self._sr_on = bytearray(n)
        self._plat = _zeros(n)  # an unexplained plateau the lane rested on for long
        self._plat_ok = bytearray(n)  # 1 while _plat holds one (until a decision)
        self._kls = _zeros(2 * n)  # load share this lane keeps of its left/right neighbour's
        self._kln = bytearray(2 * n)  # ...changes (per 10000) and how many samples taught it
        # weights below in counts, heavier positive (see _up): matching them allocates nothing
        self._fobj = _zeros(n * FOREIGN_SLOTS)  # foreign objects reported there (0: none)
        self._put_n = _zeros(n)  # the lane's last put: items...
        self._put_c = _zeros(n)  # ...and weight
        self._paused = bytearray(n)  # 1: a wait (PENDING) was interrupted by activity
        self._nothing = bytearray(n)  # 1: the last decision was that nothing new happened
        self._held = bytearray(n)  # 1: the verdict waits only for a hand next door to leave
        self._t_still = _zeros(n)  # when the lane last became STILL
        self._t_settle = _zeros(n)
        self._t_act0 = _zeros(n)
        self._t_act1 = _zeros(n)
        self._t_near = _zeros(n)  # when a STILL lane was last near its reference level
        self._t_ref = _zeros(n)  # when a decision last set _ref (a neighbour's change decided
        # before then is in it already)
        self._y_xt = _zeros(n)  # the lane's level when a neighbour's last event was decided
        self._ref_xt = _zeros(n)  # grams of unsettled load beside the lane when _ref was set
        self._peak = _zeros(n)  # largest |level - ref| in the current activity
        self._dec_cg = _zeros(n)  # signed net change of the lane's last event (centigrams)
        self._dec_n = _zeros(n)  # ...its count (0: a foreign change)
        self._t_dec = _zeros(n)  # ...and when it was emitted
        self._t_dec0 = _zeros(n)  # ...and when the activity it came from began
        self._off = _zeros(n)  # the lane's zero, following drift (raw counts)
        self._raised = _zeros(n)  # how far load sharing last raised the zero (raw counts)
        self._floor = _zeros(n)  # still-threshold floor (noise floor or share of an item)
        self._minchg = _zeros(n)  # smallest foreign change (counts)
        self._drift = _zeros(n)  # largest auto-zero step per sample
        self._cpg = _zeros(n)  # whole counts per gram (>= 1), for cheap comparisons
        self._tolp = array("i", [TOL_BASE_PERMIL + int(TOL_SQRT_PERMIL * k ** 0.5)
                                 for k in range(MAX_ITEMS_PER_ACTION + 1)])
        self._later = None  # a second event decided together with the first
        self.resid = 0  # set by _fit
        self.shared_items = 0  # set by _fit_shared
        self.shared_leak = 0  # ...and the learnt share it took away (counts, heavier +)
        self.tol = 0
        for i in range(n):
            self._calibrated(i, noise_g)

    def _calibrated(self, i, noise_g=None):
        cal = self.lanes[i]
        m = self.m
        self._off[i] = cal.offset
        self._floor[i] = max(m * max(1, cal.counts_from_g(STILL_FLOOR_G)),
                             cal.unit_counts * m * UNIT_STILL_PERMIL // 1000)
        self._minchg[i] = cal.counts_from_g(FOREIGN_MIN_G)
        self._drift[i] = max(1, m * cal.counts_from_g(DRIFT_G_PER_S) // self.rate)
        self._cpg[i] = max(1, cal.counts_from_g(1))
        self._vth[i] = m * max(1, cal.counts_from_g(STILL_FLOOR_G),
                               cal.unit_counts * VIB_PERMIL // 1000)
        if noise_g is not None:
            self._q[i] = 2 * m * max(1, cal.counts_from_g(noise_g))

    def recalibrated(self, lane):
        """Call after the lane's LaneCal changed (tare, span, planogram). Levels are kept in
        raw counts, so the lane goes on sensing without a new warm-up; items are counted
        afresh from the last decided level (in the new unit)."""
        self._calibrated(lane)
        self._acc[lane] = 0
        for k in range(lane * FOREIGN_SLOTS, lane * FOREIGN_SLOTS + FOREIGN_SLOTS):
            self._fobj[k] = 0
        self._anchor[lane] = self._ref[lane]

    def offset(self, lane):
        """The lane's zero as tracked through drift (raw counts)."""
        return self._off[lane]

    def state(self, lane):
        return self._state[lane]

    def level(self, lane):
        """The lane's smoothed reading (raw counts, mean over the boxcar), or None before the
        boxcar has filled. Taken while the lane is STILL it is what tare and span want."""
        if self._seen[lane] < self.m:
            return None
        return self._bsum[lane] // self.m

    # -- the per-sample path: integers and preallocated arrays only --------------------------
    def feed(self, lane, t_ms, raw):
        """One (glitch-filtered) reading; returns a Change or None."""
        if self._later is not None:
            ev = self._later
            self._later = None
            self._step(lane, t_ms, raw)
            return ev
        return self._step(lane, t_ms, raw)

    def _step(self, lane, t_ms, raw):
        m = self.m
        s = self.s
        seen = self._seen[lane]
        if seen == 0:
            self._prime(lane, raw, t_ms)
        # boxcar
        buf = self._buf
        bpos = self._bpos[lane]
        i = lane * m + bpos
        ysum = self._bsum[lane] + raw - buf[i]
        buf[i] = raw
        self._bsum[lane] = ysum
        bpos += 1
        self._bpos[lane] = 0 if bpos == m else bpos
        # second stage: mean of the boxcar over one period of the gondola's vibration (at
        # most VIB_SMOOTH_MS), which nulls that frequency
        m2 = self.m2
        b2 = self._buf2
        p2 = self._p2[lane]
        n2 = self._n2[lane]
        base2 = lane * m2
        y1 = ysum // m
        k = p2 - n2
        s2 = self._s2[lane] + y1 - b2[base2 + (k + m2 if k < 0 else k)]
        b2[base2 + p2] = y1
        self._s2[lane] = s2
        p2 += 1
        self._p2[lane] = 0 if p2 == m2 else p2
        y2 = s2 // n2 * m
        # the boxcar swinging about the second stage, again and again within a few hundred ms:
        # the gondola vibrates (a ringing tail right after activity does not count)
        e = ysum - y2
        h = self._vth[lane]
        sg = 1 if e > h else (-1 if e < -h else 0)
        if sg != 0 and sg != self._vsg[lane]:
            half = tdiff(t_ms, self._vlast[lane])
            if self._vsg[lane] != 0 and half <= VIB_HALF_MS:
                run = self._vrun[lane] + 1
                self._vhalf[lane] += (half - self._vhalf[lane]) // 4
            else:
                run = 1
            self._vrun[lane] = run
            self._vsg[lane] = sg
            self._vlast[lane] = t_ms
            if run >= VIB_SWINGS:
                self._vib_until[lane] = t_ms + VIB_HOLD_MS
                self._period(lane)
        if tdiff(self._vib_until[lane], t_ms) > 0:
            ysum = y2
        self._y[lane] = ysum
        # stillness window over the boxcar sums
        yb = self._ybuf
        base = lane * s
        ypos = self._ypos[lane]
        yb[base + ypos] = ysum
        ypos += 1
        self._ypos[lane] = 0 if ypos == s else ypos
        lo = ysum
        hi = ysum
        for k in range(base, base + s):
            v = yb[k]
            if v < lo:
                lo = v
            elif v > hi:
                hi = v
        spread = hi - lo
        # quiet-spread tracker (a low quantile of the spread)
        q = self._q[lane]
        moving = False
        if seen < self._warm:
            # learning the lane's noise fast, from quiet readings only: a hand in the first
            # seconds after power-up is no noise (it pauses the learning instead)
            moving = seen >= WARM_FREE and spread > K_WARM * q
            if not moving:
                self._seen[lane] = seen + 1
                if spread > q:
                    q += (spread - q) // 8 + 1
                else:
                    q -= (q - spread) // 8 + 1
        elif spread > q:
            q += q // self._up_div + 1
        else:
            q -= q // self._down_div + 1
        if q < 1:
            q = 1
        self._q[lane] = q
        thr = (q * K_STILL_X4) >> 2
        # Still: the spread is within the lane's own noise; or, for a lane whose items are
        # heavy next to any remaining wobble (ringing), within a few % of an item as long as
        # the level is not trending (a slow hand is not stillness).
        floor = self._floor[lane]
        if spread <= thr:  # still within the lane's own noise
            calm = self._calm[lane] + 1
            self._calm[lane] = calm
        else:
            calm = 0
            self._calm[lane] = 0
        # Near-still: the wobble left (ringing) is a few % of an item, enough to count heavy
        # items early; used only for a quick, confident verdict.
        if spread <= floor or calm:
            near = self._near[lane] + 1
            self._near[lane] = near
        else:
            near = 0
            self._near[lane] = 0
        # Leaving a rest takes clearly more than noise (hysteresis: a noisy lane must not
        # flicker out of a rest and restart its waits).
        busy = spread > 2 * thr and spread > floor
        if seen < self._warm:
            # learning the lane's noise (first 2 s): follow the level while it is quiet and
            # decide nothing yet (a change in that time is not reported, nor does it leave a
            # reference halfway through it that would turn the next event into nonsense)
            if not moving:
                self._ref[lane] = ysum
                self._anchor[lane] = ysum
            return None

        st = self._state[lane]
        ref = self._ref[lane]
        if st == STILL:
            d = ysum - ref
            sig = self._minchg[lane] * m
            if sig < K_SIG * q:
                sig = K_SIG * q  # a noisy or vibrating lane: well clear of its own wobble
            if -sig < 2 * d < sig:
                self._t_near[lane] = t_ms  # a slow change began after this
            if self._low_rate:
                self._still_range(lane, t_ms, ysum, busy)
            if busy:
                self._state[lane] = ACTIVE
                self._t_act0[lane] = t_ms
                self._peak[lane] = 0
            elif self._dirty[lane]:
                # after a decision, the level the lane comes to rest at is the new anchor
                if calm and tdiff(t_ms, self._t_still[lane]) >= ANCHOR_MS:
                    level = self._window_level(lane)
                    if (level - ref > sig or ref - level > sig) and not self._slid_to_count(
                            lane, level):
                        # it came to rest somewhere else (a gentle hand the lane's noise hid
                        # from the activity test): judge that, do not adopt it
                        self._t_act0[lane] = self._t_near[lane]
                        self._peak[lane] = d if d > 0 else -d
                        return self._settle(lane, t_ms)
                    if self._nothing[lane]:
                        # nothing was taken or put: where the lane rests now is its contents
                        # on a zero that moved (load sharing, creep)
                        self._off[lane] += _rdiv(level - ref, m)
                    self._ref[lane] = level
                    self._ref_xt[lane] = max(0, self._hands_beside(lane))
                    self._anchor[lane] = level
                    self._acc[lane] = 0
                    self._dirty[lane] = 0
            elif d > sig or -d > sig:
                # a slow change that never looked like activity: judge it like a settle
                self._t_act0[lane] = self._t_near[lane]
                self._peak[lane] = d if d > 0 else -d
                return self._settle(lane, t_ms)
            elif calm:  # auto-zero: follow drift and creep while nothing happens, slowly
                step = self._drift[lane]
                if d < step:
                    step = d if d > -step else -step
                self._ref[lane] = ref + step
                self._anchor[lane] = ref + step
                self._off[lane] += step // m
            return None
        d = ysum - ref
        if d < 0:
            d = -d
        if d > self._peak[lane]:
            self._peak[lane] = d
        if st == ACTIVE:
            if calm >= self.calm_n:
                return self._settle(lane, t_ms)
            if near >= self.calm_n:
                return self._quick(lane, t_ms)
            return None
        # PENDING: a plateau that is no whole count yet
        pend = self._pend[lane]
        d = ysum - pend
        sig = self._minchg[lane] * m
        if busy or d > sig or -d > sig:
            self._state[lane] = ACTIVE
            self._paused[lane] = 1
            if tdiff(t_ms, self._t_settle[lane]) >= HELD_REAL_MS:
                self._plat[lane] = pend  # rested here long: maybe an object, not a hand
                self._plat_ok[lane] = 1
            return None
        pend += d >> 3
        self._pend[lane] = pend
        # how long the level has kept within a few quiet spreads (a hand never does for long)
        if ysum > self._fmax[lane]:
            self._fmax[lane] = ysum
        elif ysum < self._fmin[lane]:
            self._fmin[lane] = ysum
        dev = ysum - self._ref[lane]
        if dev < 0:
            dev = -dev
        within = self._kflat * q
        if self._low_rate:
            wide = self._srange[lane] * STILL_RANGE_X4 // 4
            if wide > within:
                within = wide
        if self._fmax[lane] - self._fmin[lane] > within + dev // 100 * FLAT_PER_100:
            self._fmax[lane] = ysum
            self._fmin[lane] = ysum
            self._t_flat[lane] = t_ms
        waited = tdiff(t_ms, self._t_settle[lane])
        if waited < PEND_INT_MS:
            return self._judge(lane, t_ms, pend, 0)
        if self._held[lane] and not self._shaken(lane):
            self._held[lane] = 0
            if self._up(lane, _rdiv(pend - self._ref[lane], self.m)) < 0:
                return self._judge(lane, t_ms, pend, 0)
        flat_ms = tdiff(t_ms, self._t_flat[lane])
        if waited >= self.foreign_wait_ms or flat_ms >= FLAT_WAIT_MS:
            return self._judge(lane, t_ms, pend, 2)
        if ((waited >= PUT_WAIT_MS and flat_ms >= PUT_FLAT_MS)
                or (self._low_rate and flat_ms >= PUT_FLAT_LOW_MS)):
            # At 10 SPS the chip's averaging hides most puts' release: a level that has lain
            # flat for a second stands in for it (the next action on the lane often comes
            # within PUT_WAIT_MS, and the put was lost in it).
            return self._judge(lane, t_ms, pend, 1)
        return None

    def _still_range(self, lane, t_ms, ysum, busy):
        # How far a still lane's level ranges over FLAT_WAIT_MS (a median, stretch by stretch
        # while nothing happens). At 10 SPS the quiet spread is of two readings, too short to
        # say how flat an object's plateau can be over 1.3 s: vibration aliased into the
        # chip's 10 Hz output and drift wander further.
        if busy or self._dirty[lane]:
            self._sr_on[lane] = 0
            return
        if not self._sr_on[lane]:
            self._sr_on[lane] = 1
            self._sr_min[lane] = ysum
            self._sr_max[lane] = ysum
            self._t_sr[lane] = t_ms
            return
        if ysum > self._sr_max[lane]:
            self._sr_max[lane] = ysum
        elif ysum < self._sr_min[lane]:
            self._sr_min[lane] = ysum
        if tdiff(t_ms, self._t_sr[lane]) < FLAT_WAIT_MS:
            return
        r = self._sr_max[lane] - self._sr_min[lane]
        sr = self._srange[lane]
        if sr == 0:
            sr = r + 1
        elif r > sr:
            sr += sr // 8 + 1
        else:
            sr -= sr // 8 + 1
        self._srange[lane] = sr if sr > 1 else 1
        self._sr_on[lane] = 0

    def _period(self, lane):
        # Fit the second stage to one period of the vibration (two swings), re-summing the
        # ring when its length changes (rarely: the estimate moves slowly).
        m2 = self.m2
        n2 = (2 * self._vhalf[lane] * self.rate + 500) // 1000
        low = (VIB_MIN_MS * self.rate + 500) // 1000
        n2 = low if n2 < low else n2
        n2 = m2 if n2 > m2 else n2
        if n2 == self._n2[lane]:
            return
        self._n2[lane] = n2
        base2 = lane * m2
        p = self._p2[lane]  # the next slot: the newest value sits just before it
        acc = 0
        for i in range(1, n2 + 1):
            k = p - i
            acc += self._buf2[base2 + (k + m2 if k < 0 else k)]
        self._s2[lane] = acc

    def _prime(self, lane, raw, t_ms):
        # First reading of a lane: fill the buffers so the boxcar starts at the real level.
        m = self.m
        s = self.s
        for k in range(lane * m, lane * m + m):
            self._buf[k] = raw
        for k in range(lane * s, lane * s + s):
            self._ybuf[k] = raw * m
        self._bsum[lane] = raw * m
        for k in range(lane * self.m2, lane * self.m2 + self.m2):
            self._buf2[k] = raw
        self._n2[lane] = self.m2
        self._vhalf[lane] = VIB_SMOOTH_MS // 2
        self._s2[lane] = raw * self.m2
        self._y[lane] = raw * m
        self._vib_until[lane] = t_ms
        self._ref[lane] = raw * m
        self._anchor[lane] = raw * m
        self._acc[lane] = 0
        self._state[lane] = STILL
        self._t_still[lane] = t_ms
        self._t_act1[lane] = t_ms
        self._t_near[lane] = t_ms
        self._t_ref[lane] = t_ms

    # -- decisions: rare, may allocate ------------------------------------------------------
    def _window_level(self, lane):
        s = self.s
        base = lane * s
        yb = self._ybuf
        first = yb[base]
        acc = 0
        for k in range(base, base + s):
            acc += yb[k] - first
        return first + _rdiv(acc, s)

    def _noise(self, lane):
        # Typical noise of the smoothed level, in counts.
        return self._q[lane] // self.m

    def _quiet(self, lane, dc):
        # Too small to be a foreign object or anything else worth reporting.
        return abs(dc) < max(K_SIG * self._noise(lane), self._minchg[lane])

    def _fit(self, lane, total):
        # A change of `total` counts from the anchor -> whole items; the residual and the
        # tolerance it is held to land in self.resid / self.tol (no tuple: this runs per
        # sample while a lane waits).
        cal = self.lanes[lane]
        unit = cal.unit_counts
        if unit <= 0:
            self.resid = abs(total)
            self.tol = -1
            return 0
        if cal.counts_per_kg < 0:
            total = -total  # a reversed cell: counts fall as weight rises
        items = _rdiv(total, unit)
        k = abs(items)
        if k > MAX_ITEMS_PER_ACTION:
            k = MAX_ITEMS_PER_ACTION
        self.tol = self._count_tol(lane, k)
        self.resid = abs(total - items * unit)
        return items

    def _count_tol(self, lane, k):
        # How far a change of k items may be from k x the unit: item weights vary
        # independently, and the lane's noise widens it. unit // 50 * permil // 20 ==
        # unit * permil / 1000 without leaving small ints.
        return (self.lanes[lane].unit_counts // 50 * self._tolp[k] // 20
                + K_TOL_NOISE * self._noise(lane))

    def _fit_shared(self, lane, total, items):
        # The change from the anchor is no whole number of items. If an adjacent lane has
        # just made a big change, a share of it (plates share load at their edges, up to
        # LEAK_PERMIL) may sit in ours: when that share alone cannot explain our change, the
        # count nearest the change minus the smallest such leak is ours. Sets shared_items,
        # resid and tol; True when one was found.
        cal = self.lanes[lane]
        unit = cal.unit_counts
        if unit <= 0:
            return False
        t0 = self._t_act0[lane]
        big = 0
        bj = -1
        for j in range(lane - 1, lane + 2, 2):  # both neighbours; range() allocates nothing
            if j < 0 or j >= self.n or self._seen[j] == 0:
                continue
            if tdiff(self._t_dec[j], t0) < -XT_WINDOW_MS:
                continue  # j's change was decided well before ours began
            if tdiff(self._t_act0[j], self._t_act1[lane]) > XT_WINDOW_MS:
                continue
            if tdiff(self._t_ref[lane], self._t_dec[j]) >= 0:
                continue  # j's share was taken when our reference was set
            d = abs(self._dec_cg[j])
            if d > big:
                big = d
                bj = j
        if big == 0:
            return False
        if cal.counts_per_kg < 0:
            total = -total
        if self._kln[self._pair(lane, bj)] >= SHARE_KNOWN:
            # The share these plates split was learnt: take exactly that leak away.
            leak = self._learnt_leak(lane, bj)
            own = total - leak
            c = _rdiv(own, unit)
            if c != 0 and abs(c) <= MAX_ITEMS_PER_ACTION:
                slack = big // 100 * SHARE_SLACK // 10000 * self._cpg[lane]
                tol = self._count_tol(lane, abs(c)) + slack
                if abs(own - c * unit) <= tol:
                    self.shared_items = c
                    self.shared_leak = leak
                    self.resid = abs(own - c * unit)
                    self.tol = tol
                    return True
        # the largest leak in this lane's counts; centigrams -> counts via whole counts/gram
        allow = big * LEAK_PERMIL // 1000 * self._cpg[lane] // 100 + K_TOL_NOISE * self._noise(
            lane)
        if abs(total) <= allow:
            return False  # the leak alone can explain it: load sharing, decided elsewhere
        best = -1
        for c in range(items - 1, items + 2):
            leak = abs(total - c * unit)
            if c != 0 and leak <= allow and (best < 0 or leak < best):
                best = leak
                self.shared_items = c
        if best < 0:
            return False
        self.shared_leak = 0  # a leak only bounded, not known: the zero stays
        self.resid = best
        self.tol = allow
        return True

    def _plausible(self, lane, items):
        # No more items than one hand moves or the lane holds, and no taking what is not
        # there. The lane's zero may include the tray (a tare on the bare cell), so the load
        # is an upper bound on the stock: enough to refuse a pick, not a put.
        cal = self.lanes[lane]
        if abs(items) > MAX_ITEMS_PER_ACTION:
            return False
        if cal.capacity > 0 and abs(items) > cal.capacity:
            return False
        unit = cal.unit_counts
        if items >= 0 or unit <= 0:
            return True
        load = self._ref[lane] // self.m - self._off[lane]
        if cal.counts_per_kg < 0:
            load = -load
        if load < -unit:
            return True  # this zero is no tare at all (an untared plate): nothing to check
        return 2 * load >= (-2 * items - 1) * unit  # what is taken was there

    def _hands_beside(self, lane):
        # The largest unsettled load on an adjacent lane (a hand, an item on its way), grams;
        # -1 when both neighbours rest.
        big = -1
        for j in range(lane - 1, lane + 2, 2):  # both neighbours; range() allocates nothing
            if j < 0 or j >= self.n or self._state[j] == STILL or self._seen[j] == 0:
                continue
            dev = (self._y[j] - self._ref[j]) // self.m // self._cpg[j]
            if dev < 0:
                dev = -dev
            if dev > big:
                big = dev
        return big

    def _crosstalk(self, lane, t_ms, dc, pct):
        # Is |this change| at most pct % of a simultaneous bigger change on an adjacent lane
        # (plates leak load only into their neighbours)? 1: yes (load sharing, not an
        # event); 0: no; 2: can't tell yet, the neighbour is still moving. Compared in whole
        # grams (small ints).
        mine = abs(dc) // self._cpg[lane] * 100
        verdict = 0
        for j in range(lane - 1, lane + 2, 2):  # both neighbours; range() allocates nothing
            if j < 0 or j >= self.n or self._seen[j] == 0:
                continue
            # the neighbour's last event, if the activity it came from overlapped ours (a
            # ringing tail since may have started a new, small activity there)
            if (self._decided_with(lane, j)
                    and tdiff(self._t_ref[lane], self._t_dec[j]) < 0
                    and mine * 100 <= pct * abs(self._dec_cg[j])
                    and self._share_fits(lane, j, dc)):
                return 1
            if not self._active_with(lane, j):
                continue
            busy = self._state[j] == ACTIVE
            # while j moves or waits, what it carries now (a hand) leaks into our level as it
            # reads now (a hand already lifted, its plate still swinging, leaks nothing); once
            # j rests again only a net change of it (its event, above) is still in our level,
            # or the hand it carried when our reference was taken, now gone
            if self._state[j] != STILL:
                load = abs(self._y[j] - self._ref[j]) // self.m // self._cpg[j]
            else:
                load = self._ref_xt[lane]
            if mine <= pct * load:
                return 1
            if busy and mine <= pct * (self.lanes[j].unit_counts // self._cpg[j]):
                verdict = 2
        return verdict

    def _hand_gone(self, lane, dc):
        # Was a hand resting on an adjacent lane when this lane's reference was set, and has
        # that lane come back to rest with nothing to report as this change happened? Then a
        # change no bigger than XT_FOREIGN_PCT of that hand is its leak leaving: load
        # sharing, final at once.
        mine = abs(dc) // self._cpg[lane] * 100
        if mine > XT_FOREIGN_PCT * self._ref_xt[lane]:
            return False
        for j in range(lane - 1, lane + 2, 2):  # both neighbours; range() allocates nothing
            if (0 <= j < self.n and self._seen[j] and self._state[j] == STILL
                    and self._nothing[j] and self._active_with(lane, j)):
                return True
        return False

    def _active_with(self, lane, j):
        # Did neighbour j's last activity overlap ours, give or take XT_WINDOW_MS (one still
        # going on has not ended)?
        if tdiff(self._t_act0[j], self._t_act1[lane]) > XT_WINDOW_MS:
            return False  # j began well after ours had settled
        return (self._state[j] == ACTIVE
                or tdiff(self._t_act1[j], self._t_act0[lane]) >= -XT_WINDOW_MS)

    def _decided_with(self, lane, j):
        # Was neighbour j's last event decided from activity that overlapped ours?
        return (tdiff(self._t_dec[j], self._t_act0[lane]) >= -XT_WINDOW_MS
                and tdiff(self._t_dec0[j], self._t_act1[lane]) <= XT_WINDOW_MS)

    def _shared(self, lane, dc):
        # Is this change load sharing from an adjacent lane's event, decided and at rest since
        # (not a hand still there), and no more than a plate keeps of it (LEAK_PERMIL: a hand
        # pressing on this lane meanwhile is more)? Then it is final: the lane counts on from
        # its new level at once, so that its next change is not mixed up with the leak.
        mine = abs(dc) // self._cpg[lane] * 100
        for j in range(lane - 1, lane + 2, 2):  # both neighbours; range() allocates nothing
            if (0 <= j < self.n and self._seen[j] and self._state[j] == STILL
                    and self._decided_with(lane, j)
                    and mine * 1000 <= LEAK_PERMIL * abs(self._dec_cg[j])
                    and self._share_fits(lane, j, dc)):
                return True
        return False

    def _share_fits(self, lane, j, dc):
        # Two plates split a neighbour's load one way, so the share this lane keeps of j's
        # changes, once learnt, has a sign. A change leaning the other way (beyond
        # SHARE_SIGN_SLACK of j's change and the noise) is no share: it is this lane's own
        # hand, pressing as j's event is decided. Then it is neither taught nor taken.
        if self._kln[self._pair(lane, j)] < SHARE_KNOWN:
            return True
        leak = self._learnt_leak(lane, j)
        up = self._up(lane, dc)
        if (up < 0) == (leak < 0):
            return True
        return abs(up - leak) <= (abs(self._dec_cg[j] // 100) * SHARE_SIGN_SLACK // 10000
                                  * self._cpg[lane] + K_TOL_NOISE * self._noise(lane))

    def _pair(self, lane, j):
        # Where _kls / _kln keep what lane keeps of its neighbour j's changes.
        return 2 * lane + (1 if j > lane else 0)

    def _learnt_leak(self, lane, j):
        # The learnt share of neighbour j's last decided change in this lane (counts, signed
        # heavier-positive; whole counts per gram keep it in small ints).
        return (self._kls[self._pair(lane, j)] * (self._dec_cg[j] // 100) // 10000
                * self._cpg[lane])

    def _share_zero(self, i, j, t_ms):
        # Neighbour j's event was just decided. If lane i rests, with nothing of its own
        # pending, off its reference by no more than a plate keeps of j's change, that is
        # the share of j's load it carries now: its zero moved there (left alone, the offset
        # would ride on every later count of a light item).
        if (self._state[i] != STILL or self._dirty[i] or not self._calm[i]
                or self._seen[i] < self._warm):
            return
        dy = self._y[i] - self._ref[i]
        allow = (abs(self._dec_cg[j]) * LEAK_PERMIL // 1000 * self._cpg[i] // 100
                 + K_TOL_NOISE * self._noise(i))
        if abs(dy) // self.m <= allow and self._share_fits(i, j, _rdiv(dy, self.m)):
            self._anchor[i] += dy  # what was counted since the anchor stays counted
            self._move_zero(i, t_ms, self._y[i])

    def _share_level(self, lane, level):
        # Where load sharing left the lane: its level when the neighbour's event was decided,
        # if that level is itself a share (the lane's own next hand may be pressing by now);
        # else where it is now.
        y = self._y_xt[lane]
        if self._shared(lane, _rdiv(y - self._ref[lane], self.m)):
            return y
        return level

    def _settle(self, lane, t_ms):
        self._t_act1[lane] = t_ms
        level = self._window_level(lane)
        # Back on the plateau a wait was interrupted on (a touch, a hand passing by): the wait
        # goes on from where it was; anywhere else it starts again.
        if not (self._paused[lane] and self._quiet(lane, _rdiv(level - self._pend[lane],
                                                                 self.m))):
            self._t_settle[lane] = t_ms
        self._paused[lane] = 0
        self._state[lane] = PENDING
        self._pend[lane] = level
        ysum = self._y[lane]
        self._fmin[lane] = ysum
        self._fmax[lane] = ysum
        self._t_flat[lane] = t_ms
        ev = self._judge(lane, t_ms, level, 0)
        if (ev is not None or self._state[lane] != PENDING or not self._plat_ok[lane]
                or self._shaken(lane)):
            return ev
        plateau = self._plat[lane]
        # The lane had rested on an unexplained plateau for a while before this activity. If
        # the new level is a clean step of whole items from that plateau, the plateau was real
        # (an object left on the shelf): report it, then the step from it.
        step = _rdiv(level - plateau, self.m)
        items = self._fit(lane, step)
        # Not when the step is no more than a hand resting there sways by: then the plateau
        # may have been that hand (276 g leaning on a lane of 16 g bars, shifting by 14 g).
        held = _rdiv(plateau - self._ref[lane], self.m)
        if (items == 0 or self.resid > self.tol or abs(step) * 100 <= HAND_SWAY_PCT * abs(held)
                or not self._removable(lane, held)):
            return None  # (a plateau below the lane's contents was an item held tilted)
        first = self._foreign(lane, t_ms, plateau)
        self._state[lane] = PENDING
        self._t_settle[lane] = t_ms
        self._pend[lane] = level
        second = self._judge(lane, t_ms, level, 0)
        if first is None:
            return second
        self._later = second
        return first

    def _quick(self, lane, t_ms):
        # Still ringing, but a clean whole count already: report it now.
        if self._shaken(lane):
            return None
        m = self.m
        level = self._window_level(lane)
        dc = _rdiv(level - self._ref[lane], m)
        items = self._fit(lane, _rdiv(level - self._anchor[lane], m))
        resid = self.resid
        tol = self.tol
        items -= self._acc[lane]
        if (items == 0 or 2 * resid > tol or abs(dc) < K_SIG_COUNT * self._noise(lane)
                or not self._plausible(lane, items)
                or (items > 0 and not self._released(lane, dc))
                or self._crosstalk(lane, t_ms, dc, XT_COUNT_PCT) != 0):
            return None
        self._t_act1[lane] = t_ms
        return self._emit(lane, t_ms, level, dc, items, self._confidence(lane, resid, tol))

    def _confidence(self, lane, resid, tol):
        noise = self._noise(lane)
        unit = self.lanes[lane].unit_counts
        return 100 - 50 * resid // max(1, tol) - min(40, 400 * noise // max(1, unit))

    def _released(self, lane, dc):
        # Did the weight overshoot its final value (an item let go, ringing)? A resting hand
        # eases onto its plateau; a put-back ends with a release.
        over = self._peak[lane] - abs(dc) * self.m
        over_counts = over // self.m
        return over_counts * 25 >= RELEASE_PER_25 * abs(dc) and over >= 2 * self._q[lane]

    def _set_down(self, lane, t_ms, dc):
        # A weaker release (half the overshoot: the chip's own averaging at 10 SPS, or a hand
        # that let go gently) and a level that has lain flat since for PUT_FLAT_MS: an item
        # set down. A hand that eased onto a plateau neither came down onto it nor lies flat.
        over = (self._peak[lane] - abs(dc) * self.m) // self.m
        return (over * 50 >= RELEASE_PER_25 * abs(dc) and over * self.m >= 2 * self._q[lane]
                and tdiff(t_ms, self._t_flat[lane]) >= PUT_FLAT_MS)

    def _shaken(self, lane):
        # Is an adjacent lane still carrying a load change (a hand, an item on its way) big
        # enough that its leak into this lane could pass for a quarter of our item? Then this
        # lane's level is not its own yet: decide once the neighbour has settled.
        big = self._hands_beside(lane)
        return big >= 0 and big * XT_SHAKE_PCT >= 25 * (self.lanes[lane].unit_counts
                                                        // self._cpg[lane])

    def _whole_despite_leak(self, lane, total):
        # Would the count be the same, new and whole with anything from no leak to the most a
        # hand on an adjacent lane can leak (XT_SHAKE_PCT of it) either way? Then the hand
        # next door changes nothing: decide now (a 171 g put beside a 912 g hand: 171 +- 46 g
        # is one item whatever the hand does).
        unit = self.lanes[lane].unit_counts
        if unit <= 0:
            return False
        leak = self._hands_beside(lane) * XT_SHAKE_PCT // 100 * self._cpg[lane]
        items = self._fit(lane, total)
        if items == self._acc[lane] or self.resid > self.tol:
            return False
        if self.lanes[lane].counts_per_kg < 0:
            total = -total
        return _rdiv(total - leak, unit) == items and _rdiv(total + leak, unit) == items

    def _leaning(self, lane, dc):
        # Could a hand still on an adjacent lane explain all of this change (a hand leaks up
        # to XT_SHAKE_PCT of its force into its neighbours)? Then wait for it to leave.
        big = self._hands_beside(lane)
        return big >= 0 and abs(dc) // self._cpg[lane] * 100 <= XT_SHAKE_PCT * big

    def _judge(self, lane, t_ms, level, patience):
        # patience 0: just settled; 1: waited PUT_WAIT_MS; 2: waited FOREIGN_WAIT_MS (final)
        m = self.m
        if patience == 0 and self._shaken(lane) and not self._whole_despite_leak(
                lane, _rdiv(level - self._anchor[lane], m)):
            self._held[lane] = 1
            return None
        self._held[lane] = 0
        if self._raised[lane]:
            self._reconsider(lane, level)
        dc = _rdiv(level - self._ref[lane], m)  # since the last decision
        if (patience and tdiff(t_ms, self._t_settle[lane]) < self.foreign_wait_ms
                and self._leaning(lane, dc)):
            return None
        total = _rdiv(level - self._anchor[lane], m)
        items = self._fit(lane, total)
        shared = False
        if self.resid > self.tol:
            shared = self._fit_shared(lane, total, items)
            if shared:
                items = self.shared_items
        resid = self.resid
        tol = self.tol
        items -= self._acc[lane]  # new items, beyond those already reported
        noise = self._noise(lane)
        if (shared and items != 0 and abs(dc) >= K_SIG_COUNT * noise
                and self._plausible(lane, items)
                and (items < 0 or patience or self._released(lane, dc))):
            # the share is the lane's zero moving, not its contents: count on without it
            self._shift_zero(lane, self._up(lane, self.shared_leak))
            return self._emit(lane, t_ms, level, _rdiv(level - self._ref[lane], m), items,
                              self._confidence(lane, resid, tol) - 20)
        if items == 0:
            # Back where the counted items put it: nothing new (a touch, a bump, a hand that
            # came and went, a settling tail). Right after an event the item-weight spread
            # of what was counted is allowed; from a settled anchor only noise is.
            if self._quiet(lane, dc) or (
                    resid <= tol and (self._near_ref(lane, dc) or self._let_go(lane, dc, 0))
                    if self._acc[lane] else self._quiet(lane, resid)):
                # nothing new: a touch, a bump, a hand that came and went, a settling tail
                if dc != 0 and self._shared(lane, dc):
                    # ...or a neighbour's load share: the lane counts on from there at once
                    self._rezero(lane, t_ms, self._share_level(lane, level))
                    return None
                self._absorb(lane, t_ms, level)
                return None
            if self._acc[lane] and resid <= tol and self._toward_count(lane, resid):
                # the last event was read before the lane had settled: nothing new, and the
                # lane rests where that event should have left it (once it has rested)
                if patience == 0:
                    return None
                self._absorb(lane, t_ms, level)
                self._ref[lane] = level
                return None
        elif (resid <= tol and abs(dc) >= K_SIG_COUNT * noise and self._plausible(lane, items)
              and (items < 0 or patience or self._released(lane, dc)
                   or self._set_down(lane, t_ms, dc))):
            xt = self._crosstalk(lane, t_ms, dc, XT_COUNT_PCT)
            if xt == 2:
                return None  # wait for the neighbour to finish
            if xt == 1:
                if patience == 2 or self._shared(lane, dc):
                    # load sharing: re-referenced
                    return self._foreign(lane, t_ms, self._share_level(lane, level))
                return None
            return self._emit(lane, t_ms, level, dc, items, self._confidence(lane, resid, tol))
        if self._shared(lane, dc):
            # load sharing: re-referenced
            return self._foreign(lane, t_ms, self._share_level(lane, level))
        if self._hand_gone(lane, dc):
            self._rezero(lane, t_ms, level)
            return None
        if self._let_go(lane, dc, PUT_FIX_MS):
            # The put just reported was read while a hand still pressed on what it set down;
            # let go, the lane holds no whole number of items more: it was an object. Take the
            # put back and report the object.
            undo = self._emit(lane, t_ms, self._anchor[lane],
                              _rdiv(self._anchor[lane] - self._ref[lane], m), -self._acc[lane],
                              50)
            self._later = self._foreign(lane, t_ms, level)
            return undo
        if patience == 0 and self._object_gone(lane, dc):
            return self._foreign(lane, t_ms, level)
        if patience < 2:
            return None
        if (tdiff(t_ms, self._t_settle[lane]) < self.foreign_wait_ms
                and not self._removable(lane, dc)):
            return None  # a flat plateau below the lane's contents: a tilted item, held
        return self._foreign(lane, t_ms, level)

    def _slid_to_count(self, lane, level):
        # Was the last event read while the level still slid, and has the lane come to rest
        # on the count since: the same items from the anchor, and at least halfway from where
        # the event was read toward where they put it, or further the way the event went (an
        # item heavier than the unit)? Then this rest is where the event left the lane: the
        # lane re-anchors there (kept where the event was read, the reference would hide
        # an object of just that difference put down next: 23 g of a 672 g bottle).
        acc = self._acc[lane]
        if acc == 0:
            return False
        if self._fit(lane, _rdiv(level - self._anchor[lane], self.m)) != acc:
            return False
        if self.resid > self.tol:
            return False
        return self._toward_count(lane, self.resid) or (
            (self._up(lane, _rdiv(level - self._ref[lane], self.m)) > 0) == (acc > 0))

    def _toward_count(self, lane, resid):
        # Has the lane come at least halfway from where the last event was read to where the
        # items counted since the anchor put it (resid: how far it is from there now)?
        unit = self.lanes[lane].unit_counts
        at_ref = (self._up(lane, _rdiv(self._ref[lane] - self._anchor[lane], self.m))
                  - self._acc[lane] * unit)
        return 2 * resid < abs(at_ref)

    def _near_ref(self, lane, dc):
        # Is the level still where the last event left it, give or take what a verdict read
        # while the shelf still rang may have been off by (REF_SLACK_PERMIL of an item, or of
        # that event's change if larger)?
        cal = self.lanes[lane]
        last = abs(self._dec_cg[lane]) // 100 * self._cpg[lane]  # counts (whole counts/g)
        big = cal.unit_counts if cal.unit_counts > last else last
        return abs(dc) <= big // 50 * REF_SLACK_PERMIL // 20 + K_SIG * self._noise(lane)

    def _let_go(self, lane, dc, within_ms):
        # Did the lane fall back a little (a hand's adjusting press: up to 35 % of what was
        # put, plus 15 g) after a put? Given within_ms: beginning within that long of the
        # put, and the put the only event counted from this anchor (it may be taken back).
        if self._dec_n[lane] <= 0 or self._acc[lane] <= 0:
            return False
        if within_ms and (self._dec_n[lane] != self._acc[lane]
                          or tdiff(self._t_act0[lane], self._t_dec[lane]) > within_ms):
            return False
        dcg = self.lanes[lane].cg(dc)
        return dcg < 0 and -dcg <= self._dec_cg[lane] * 35 // 100 + 1500

    def _up(self, lane, dc):
        # A change in counts, signed so that heavier is positive (a reversed cell reads less).
        return -dc if self.lanes[lane].counts_per_kg < 0 else dc

    def _removable(self, lane, dc):
        # A change that is no whole count is an object put on the lane or taken off it. Items
        # cannot leave by halves, so a fall must be an object reported earlier leaving (its
        # weight within 10 % + 5 g); anything else (an item tilted and held, a hand tugging)
        # waits the full foreign wait before it is believed.
        up = self._up(lane, dc)
        return up >= 0 or self._object_slot(lane, -up) >= 0 or self._put_back(lane, -up)

    def _object_gone(self, lane, dc):
        # A fall that weighs what an object reported on the lane weighs is that object taken
        # away: a hand only adds weight, and items leave whole. Read as the lane settles, while
        # it may still ring, only a close match (3 % and the noise) is believed, and only of
        # a weight no item tipped on its edge hands over (about half of it: a fifth to an
        # item and a quarter); any other fall waits as _removable says.
        fall = -self._up(lane, dc)
        if fall <= 0:
            return False
        k = self._object_slot(lane, fall)
        if k < 0:
            return False
        w = self._fobj[k]
        unit = self.lanes[lane].unit_counts
        return (abs(fall - w) <= w // 33 + 3 * self._noise(lane)
                and (fall * 5 < unit or fall * 4 > unit * 5))

    def _put_back(self, lane, fall):
        # Does a fall (counts) weigh what the lane's last counted put weighed?
        w = self._put_c[lane]
        if self._put_n[lane] <= 0 or w <= 0:
            return False
        return abs(fall - w) <= self._weight_slack(lane, w)

    def _weight_slack(self, lane, w):
        # How far a weight may be read off w (counts) and still be the same thing: 10 % + 5 g,
        # widened by the lane's noise.
        return w // 10 + 5 * self._cpg[lane] + 3 * self._noise(lane)

    def _object_slot(self, lane, fall):
        # The slot of a foreign object reported on the lane that weighs what a fall (counts)
        # does (see _removable), or -1.
        best = -1
        miss = 0
        for k in range(lane * FOREIGN_SLOTS, lane * FOREIGN_SLOTS + FOREIGN_SLOTS):
            w = self._fobj[k]
            d = abs(fall - w)
            if w > 0 and d <= self._weight_slack(lane, w) and (best < 0 or d < miss):
                best = k
                miss = d
        return best

    def _foreign(self, lane, t_ms, level):
        # An unexplained change that stayed: report it (count None) and count from it anew.
        dc = _rdiv(level - self._ref[lane], self.m)
        if self._crosstalk(lane, t_ms, dc, XT_FOREIGN_PCT) == 1:
            self._rezero(lane, t_ms, level)
            return None
        # A fall that weighs what the last put weighed, when no object of that weight lies
        # there: what was put is taken back, whatever it was counted as (a box counted as
        # four bars leaves as four bars, and the receipt stays right).
        items = None
        up = self._up(lane, dc)
        if up < 0 and self._object_slot(lane, -up) < 0 and self._put_back(lane, -up):
            items = -self._put_n[lane]
            self._put_n[lane] = 0
        ev = self._emit(lane, t_ms, level, dc, items, 50)
        self._anchor[lane] = level
        self._acc[lane] = 0
        self._t_ref[lane] = t_ms
        return ev

    def _shift_zero(self, lane, d):
        # The lane's zero moves by d raw counts and its reference and anchor with it: the
        # reading changed by that much without its contents changing (a neighbour's share
        # that came with its own change; a share found to have been a hand).
        self._off[lane] += d
        self._ref[lane] += d * self.m
        self._anchor[lane] += d * self.m

    def _rezero(self, lane, t_ms, level):
        # Load sharing moved this lane's zero: nothing to report, and the lane counts on from
        # its new level.
        self._absorb(lane, t_ms, level)
        moved = _rdiv(level - self._ref[lane], self.m)
        self._move_zero(lane, t_ms, level)
        self._anchor[lane] = level
        self._acc[lane] = 0
        # a share that made the lane heavier may have been its own hand (see _reconsider)
        self._raised[lane] = moved if self._up(lane, moved) > 0 else 0

    def _reconsider(self, lane, level):
        # Load sharing raised the lane's zero since its last event. If the lane now stands no
        # whole count from its anchor but a pick from where it stood before that move, the
        # "share" was its own hand pressing the item it then took: the zero goes back.
        raised = self._raised[lane]
        total = _rdiv(level - self._anchor[lane], self.m)
        self._fit(lane, total)
        if self.resid <= self.tol:
            return
        if self._fit(lane, total + raised) >= 0 or self.resid > self.tol:
            return
        self._raised[lane] = 0
        self._shift_zero(lane, -raised)

    def _move_zero(self, lane, t_ms, level):
        # The lane's reference becomes level and its zero moves with it, so the load on it is
        # still its contents; a neighbour's share taken by now is in the reference.
        self._off[lane] += _rdiv(level - self._ref[lane], self.m)
        self._ref[lane] = level
        self._ref_xt[lane] = max(0, self._hands_beside(lane))
        self._t_ref[lane] = t_ms

    def _absorb(self, lane, t_ms, level):
        # Nothing to report. The reference stays where the last decision put it (a premature
        # settle halfway through a slow hand must not move it); the lane re-anchors once it
        # has rested.
        self._state[lane] = STILL
        self._t_still[lane] = t_ms
        self._dirty[lane] = 1
        self._plat_ok[lane] = 0
        self._paused[lane] = 0
        self._nothing[lane] = 1

    def _objects(self, lane, up):
        # Keep the foreign objects on the lane: one put down takes a free slot (or joins the
        # lightest), one taken away frees its slot.
        if up < 0:
            k = self._object_slot(lane, -up)
            if k >= 0:
                self._fobj[k] = 0
            return
        low = lane * FOREIGN_SLOTS
        for k in range(lane * FOREIGN_SLOTS, lane * FOREIGN_SLOTS + FOREIGN_SLOTS):
            if self._fobj[k] < self._fobj[low]:
                low = k
        self._fobj[low] += up

    def _teach_shares(self, j, d):
        # Neighbour j just changed by d (cg). An adjacent lane that has had no event since j's
        # activity began and sits off its reference by no more than a plate keeps of that
        # change shows the share the two plates split: one step of it (a robust running
        # estimate: outliers move it no faster than anything else).
        if d > -SHARE_MIN_CG and d < SHARE_MIN_CG:
            return
        for i in range(j - 1, j + 2, 2):  # both neighbours; range() allocates nothing
            if i < 0 or i >= self.n or self._seen[i] < self._warm:
                continue
            if tdiff(self._t_dec[i], self._t_act0[j]) >= -XT_WINDOW_MS:
                continue  # i decided something meanwhile
            dy = _rdiv(self._y[i] - self._ref[i], self.m)
            dev = self.lanes[i].cg(dy)
            if abs(dev) * 1000 > LEAK_PERMIL * abs(d) or not self._share_fits(i, j, dy):
                continue
            k = self._pair(i, j)
            sample = dev * 10000 // d
            n = self._kln[k]
            if n < SHARE_SAMPLES:
                self._kls[k] += (sample - self._kls[k]) // (n + 1)
                self._kln[k] = n + 1
            elif sample > self._kls[k]:
                self._kls[k] += SHARE_STEP
            else:
                self._kls[k] -= SHARE_STEP

    def _emit(self, lane, t_ms, level, dc, items, conf):
        cal = self.lanes[lane]
        m = self.m
        off = self._off[lane]
        before = cal.cg(self._ref[lane] // m - off)
        after = cal.cg(level // m - off)
        self._ref[lane] = level
        self._ref_xt[lane] = max(0, self._hands_beside(lane))
        self._t_ref[lane] = t_ms
        self._nothing[lane] = 0
        self._state[lane] = STILL
        self._t_still[lane] = t_ms
        self._dirty[lane] = 1
        self._plat_ok[lane] = 0
        self._paused[lane] = 0
        if items is not None:
            self._acc[lane] += items
            if items > 0:
                self._put_n[lane] = items
                self._put_c[lane] = self._up(lane, dc)
            else:
                self._put_n[lane] = 0  # taken: that put may be gone
        else:
            self._objects(lane, self._up(lane, dc))
        self._dec_cg[lane] = cal.cg(dc)
        self._dec_n[lane] = 0 if items is None else items
        self._raised[lane] = 0
        self._teach_shares(lane, cal.cg(dc))
        for i in range(lane - 1, lane + 2, 2):
            if 0 <= i < self.n:
                self._y_xt[i] = self._y[i]
                self._share_zero(i, lane, t_ms)
        self._t_dec[lane] = t_ms
        self._t_dec0[lane] = self._t_act0[lane]
        if conf < 1:
            conf = 1
        return Change(lane, t_ms, items, cal.cg(dc), before, after, conf, cal.sku)
