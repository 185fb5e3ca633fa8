"""A fake `machine` module for firmware tests (CPython and the MicroPython VM alike).

What the HX711 driver uses, done the way an ESP32 does it, on a virtual board:
- `Pin(id, mode=-1, pull=-1, value=None)`: IN / OUT / PULL_UP / PULL_DOWN, value(), on(),
  off(), calling the pin. Pins are wired to fake chips by id (`fake_attach`); an input pin
  nobody drives reads its pull (1 with PULL_UP, else 0).
- Every pin operation costs 1 us of virtual time; edges happen at the end of that 1 us.
- `disable_irq()` / `enable_irq(state)`: while masked, a due interrupt waits, and runs (its
  time passing) as soon as interrupts are enabled again, as on real hardware.
- The board's `VirtualClock` has the `time` functions the driver takes as its `clock`
  (ticks_ms, ticks_us, ticks_diff, ticks_add, sleep_us, sleep_ms), wrapping like the real ones.

Tests start with `clock = machine.fake_reset()`, make chips, then inject interrupts with
`clock.interrupt_every(period_us, duration_us)`. `clock.masking = False` makes
disable_irq() a no-op: a driver that forgot to mask interrupts, for control experiments.
"""

TICKS_PERIOD = 1 << 30
_TICKS_MAX = TICKS_PERIOD - 1
_HALF = TICKS_PERIOD // 2


class VirtualClock:
    def __init__(self, start_us=0):
        self.now = start_us  # virtual microseconds; never wraps (the ticks do)
        self.irq_enabled = True
        self.masking = True
        self.isr_runs = 0
        self.deferred = 0  # ISR runs that had to wait for interrupts to be enabled
        self._pending = False
        self._isr_period = 0
        self._isr_len = 0
        self._isr_next = 0

    # --- the time-module API the driver uses ---
    def ticks_us(self):
        return self.now & _TICKS_MAX

    def ticks_ms(self):
        return (self.now // 1000) & _TICKS_MAX

    def ticks_add(self, ticks, delta):
        return (ticks + delta) & _TICKS_MAX

    def ticks_diff(self, a, b):
        d = (a - b) & _TICKS_MAX
        if d >= _HALF:
            d -= TICKS_PERIOD
        return d

    def sleep_us(self, us):
        self.advance(us)

    def sleep_ms(self, ms):
        self.advance(ms * 1000)

    # --- test controls ---
    def advance(self, us):
        self.now += us
        self._service()

    def interrupt_every(self, period_us, duration_us, first_us=None):
        """An ISR taking duration_us, due every period_us (counted from the end of the last
        run); period_us=0 stops it."""
        self._isr_period = period_us
        self._isr_len = duration_us
        if first_us is None:
            first_us = period_us
        self._isr_next = self.now + first_us

    def _service(self):
        # A due interrupt runs only while interrupts are enabled; otherwise it stays pending.
        while self._isr_period and self.now >= self._isr_next:
            if not self.irq_enabled:
                self._pending = True
                return
            if self._pending:
                self.deferred += 1
                self._pending = False
            self.isr_runs += 1
            self.now += self._isr_len
            self._isr_next = self.now + self._isr_period


def _host_us():
    # Microseconds from the host, never wrapping: CPython's monotonic clock, or MicroPython's
    # ticks_us (wraps at 2**30) unwrapped by counting the wraps between calls.
    import time

    if hasattr(time, "monotonic"):
        return lambda: int(time.monotonic() * 1000000)
    state = [time.ticks_us(), 0]

    def now():
        t = time.ticks_us()
        state[1] += time.ticks_diff(t, state[0])
        state[0] = t
        return state[1]

    return now


class RealtimeClock(VirtualClock):
    """Virtual time that keeps up with the host's clock: waiting is real, pin operations still
    add their microsecond. For a runtime running in real time (asyncio, a broker) on the fake
    board, in CPython or in the MicroPython VM.

    While interrupts are masked the host's time does not count: on an ESP32 a masked clock
    pulse lasts a microsecond or two, but a host (the VM above all) can spend tens of
    microseconds between two pin calls, which the fake chip would take for a power-down."""

    def __init__(self, start_us=0):
        self._host = _host_us()
        self._t0 = self._host()
        self._extra = 0
        self._frozen_at = None  # host time when interrupts were masked
        super().__init__(start_us)

    def _host_now(self):
        if self._frozen_at is not None:
            return self._frozen_at
        return self._host() - self._t0

    @property
    def now(self):
        return self._host_now() + self._extra

    @now.setter
    def now(self, value):
        self._extra = value - self._host_now()

    @property
    def irq_enabled(self):
        return self._frozen_at is None

    @irq_enabled.setter
    def irq_enabled(self, on):
        if on and self._frozen_at is not None:
            # the masked stretch took no virtual time beyond its pin operations
            self._extra -= (self._host() - self._t0) - self._frozen_at
            self._frozen_at = None
        elif not on and self._frozen_at is None:
            self._frozen_at = self._host() - self._t0

    def sleep_us(self, us):
        import time

        end = self.now + us
        while self.now < end:  # a busy wait, as time.sleep_us is on a board
            time.sleep_us(1) if hasattr(time, "sleep_us") else time.sleep(us / 1000000)

    def sleep_ms(self, ms):
        self.sleep_us(ms * 1000)


class _Board:
    def __init__(self, clock):
        self.clock = clock
        self.by_sck = {}  # pin id -> chips clocked by it
        self.by_dout = {}  # pin id -> the chip driving it
        self.levels = {}  # pin id -> level an output pin drives (relay, LED: for tests)
        self.uarts = {}  # UART id -> the UART

    def read(self, pin):
        if pin.mode == Pin.OUT:
            return pin.level  # reading an output gives back its latch
        chip = self.by_dout.get(pin.id)
        if chip is not None:
            level = chip.dout(self.clock.now)
            if level is not None:
                return level
        return 1 if pin.pull == Pin.PULL_UP else 0

    def write(self, pin, level):
        old = pin.level
        pin.level = level
        if pin.mode == Pin.OUT:
            self.levels[pin.id] = level
        if pin.mode != Pin.OUT or old == level:
            return  # an input pin does not drive the line
        for chip in self.by_sck.get(pin.id, ()):
            chip.sck(level, self.clock.now)


_board = _Board(VirtualClock())


def fake_reset(start_us=0, realtime=False):
    """A fresh board (no wiring, IRQs enabled); returns its clock. realtime: the clock
    follows the host's (CPython only), for runtime tests that wait for real."""
    global _board
    _board = _Board(RealtimeClock(start_us) if realtime else VirtualClock(start_us))
    return _board.clock


def fake_clock():
    return _board.clock


def fake_level(pin_id):
    """The level an output pin last drove (None: never driven)."""
    return _board.levels.get(pin_id)


def fake_uart(uart_id):
    """The UART the firmware opened with this id (None if not opened): feed() it bytes."""
    return _board.uarts.get(uart_id)


def fake_attach(chip, sck, dout):
    """Wire a fake chip: it sees edges on pin `sck` and drives pin `dout` through
    chip.sck(level, now_us) and chip.dout(now_us) -> 0, 1 or None (not driving)."""
    _board.by_sck.setdefault(sck, []).append(chip)
    _board.by_dout[dout] = chip


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_DOWN = 1
    PULL_UP = 2

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        self.mode = Pin.IN
        self.pull = None
        self.level = 0
        self.init(mode, pull, value=value)

    def init(self, mode=-1, pull=-1, value=None):
        if mode != -1:
            self.mode = mode
        if pull != -1:
            self.pull = pull
        if value is not None:
            self.value(value)

    def value(self, v=None):
        board = _board
        board.clock.advance(1)  # a pin operation takes about 1 us on an ESP32
        if v is None:
            return board.read(self)
        board.write(self, 1 if v else 0)
        return None

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


def disable_irq():
    clock = _board.clock
    state = 1 if clock.irq_enabled else 0
    if clock.masking:
        clock.irq_enabled = False
    return state


def enable_irq(state):
    clock = _board.clock
    if clock.masking:
        clock.irq_enabled = bool(state)
    clock._service()


# --- the rest of the board a runtime touches: watchdog, reset, identity, RTC memory ----------

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

_reset_cause = PWRON_RESET
_rtc_memory = bytearray()
_unique_id = b"\x24\x0a\xc4\x12\x34\x56"
resets = []  # reset() calls, for tests (the fake does not restart anything)


class BoardReset(Exception):
    """Raised by reset(): on a board nothing after reset() runs; in a test the caller stops."""


def reset():
    resets.append("reset")
    raise BoardReset("machine.reset()")


def soft_reset():
    resets.append("soft_reset")
    raise BoardReset("machine.soft_reset()")


def reset_cause():
    return _reset_cause


def unique_id():
    return _unique_id


def freq(hz=None):
    return 240000000 if hz is None else None


class RTC:
    """RTC memory survives a reset but not a power cut (as on the ESP32)."""

    def memory(self, data=None):
        global _rtc_memory
        if data is None:
            return bytes(_rtc_memory)
        _rtc_memory = bytearray(data)
        return None


class WDT:
    """The hardware watchdog: feed() at least every `timeout` ms or the board resets.

    A board has one: making another WDT reconfigures it (a new timeout, counted from now), as
    the ESP32 port's esp_task_wdt_reconfigure does, and every WDT object feeds it. The fake
    keeps the time of the last feed on the board's clock; expired() tells whether a real
    watchdog would have fired by now. `instances` holds the board's one watchdog once armed
    (the virtual board polls it and resets the way the real one would)."""

    instances = []
    _timeout = 0
    _last_feed_us = 0

    def __init__(self, id=0, timeout=5000):
        if id != 0:
            raise ValueError("WDT(0) only")
        if timeout < 1:
            raise ValueError("timeout must be >= 1 ms")
        WDT._timeout = timeout
        WDT._last_feed_us = _board.clock.now
        self.feeds = 0
        WDT.instances[:] = [self]

    @property
    def timeout(self):
        return WDT._timeout

    def feed(self):
        self.feeds += 1
        WDT._last_feed_us = _board.clock.now

    def expired(self):
        return _board.clock.now - WDT._last_feed_us > WDT._timeout * 1000


class UART:
    """A UART whose receive side a test (or the virtual board's scanner) feeds."""

    def __init__(self, id, baudrate=9600, bits=8, parity=None, stop=1, tx=None, rx=None,
                 rxbuf=256, timeout=0):
        self.id = id
        self.baudrate = baudrate
        self.rxbuf = rxbuf
        self._rx = bytearray()
        self.sent = bytearray()
        self.overruns = 0
        _board.uarts[id] = self

    def init(self, baudrate=9600, **kw):
        self.baudrate = baudrate

    def feed(self, data):
        # what arrives on RX; beyond the receive buffer it is lost, as on a board
        room = self.rxbuf - len(self._rx)
        if len(data) > room:
            self.overruns += 1
            data = data[:room]
        self._rx.extend(data)

    def any(self):
        return len(self._rx)

    def read(self, n=-1):
        if not self._rx:
            return None
        if n < 0 or n >= len(self._rx):
            out = bytes(self._rx)
            self._rx = bytearray()
        else:
            out = bytes(self._rx[:n])
            self._rx = self._rx[n:]
        return out

    def write(self, data):
        self.sent.extend(data)
        return len(data)
