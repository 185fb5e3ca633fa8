# The controller at run time: small asyncio tasks around one durable outbox.
#
#   sampler --on_change--> record(): event JSON -> outbox (flash) --wake--> publisher
#   publisher: outbox.pending() -> MQTT QoS 1 (ref = seq) --PUBACK--> outbox.ack(seq)
#   mqtt: connect / keepalive / reconnect; on_connect -> retained "online" status
#   commands: .../cmd -> apps.commands -> .../ack (then reboot / safe mode if asked)
#   telemetry, clock sync, WiFi supervision, and the watchdog that feeds only while all of
#   the above keep ticking.
#
# Everything the board provides comes in through `parts` (radio, transport, HX711 bank,
# watchdog, reset), so the same runtime runs on the board, in CPython tests against a real
# mosquitto, and on the virtual board. A config that does not validate never crash-loops:
# the errors go to the console and, when the broker part is usable, to a retained `fault`
# status; the REPL stays reachable.

import asyncio
import json
import os
import sys
import time

from apps import safemode
from apps.commands import CommandError, Commands, Handler, encode_ack
from apps.telemetry import Telemetry
from apps.version import VERSION
from apps.watchdog import Watchdog
from core import event
from core.detector import ACTIVE, STILL
from core.lane import LaneCal
from core.outbox import Outbox

CONFIG_FILE = "config.json"
OUTBOX_DIR = "outbox"
BOOT_FILE = "boot.count"
CRASH_LOG = "crash.log"
CRASH_LOG_MAX = 2048
SEGMENT_BYTES = 4096  # at most; a small budget gets a quarter of itself per segment
LIVE_SLOTS = 2  # of the MQTT window, kept for live events while a backlog replays
CMD_QUEUE_MAX = 8
HEALTHY_S = 300  # up this long without a crash: the crash backoff starts over


def topics(data):
    base = "%s/%s/%s/" % (data["broker"]["prefix"], data["store"], data["device"])
    return {k: base + k for k in ("event", "status", "telemetry", "cmd", "ack")}


def next_boot(path=BOOT_FILE):
    """Count this boot (persistent); 1 on a fresh board."""
    try:
        with open(path) as f:
            n = int(f.read().strip() or "0")
    except (OSError, ValueError):
        n = 0
    n += 1
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(n))
    os.rename(tmp, path)
    return n


def log_crash(exc, path=CRASH_LOG):
    """Append the traceback to a small log that keeps only its last CRASH_LOG_MAX bytes."""
    import io

    buf = io.StringIO()
    sys.print_exception(exc, buf)  # type: ignore[attr-defined]
    text = "crash: " + buf.getvalue()  # type: ignore[attr-defined]
    print(text)
    try:
        try:
            with open(path) as f:
                old = f.read()
        except OSError:
            old = ""
        keep = (old + text)[-CRASH_LOG_MAX:]
        with open(path, "w") as f:
            f.write(keep)
    except OSError:
        pass


class Parts:
    """What the board gives the runtime. Off the board, tests and the virtual board fill it."""

    def __init__(self, wlan=None, transport=None, bank=None, make_wdt=None, reset=None,
                 sntp=None, on_healthy=None, uart=None):
        self.wlan = wlan  # network.WLAN station, or None: the link is always up
        self.transport = transport  # net.transport.Transport-like, or None: from config
        self.bank = bank  # drivers.hx711.HX711Bank-like, or None: from config and pins
        # machine.WDT can never be stopped once made: made only when the application runs
        self.make_wdt = make_wdt
        self.reset = reset  # callable that restarts the board
        self.sntp = sntp  # async callable(clock, host) -> bool, or None: net.clock.sync
        self.on_healthy = on_healthy  # called once the device has run HEALTHY_S seconds
        self.uart = uart  # the gate's scanner UART, or None: from board.json


class Device(Handler):
    def __init__(self, cfg, parts):
        """cfg: a valid apps.config.Config. The device keeps plain copies of what it needs
        (not the Config), so the config schema can leave the heap after boot (see boot())."""
        from net.clock import Clock
        from net.mqtt import MQTTClient

        data = cfg.data
        self.data = data
        self.raw = cfg.raw  # config.json as written by provisioning: what persisting rewrites
        self.parts = parts
        self.device_id = data["device"]
        self.role = data["role"]
        self.topic = topics(data)
        self.boot = next_boot()
        self.clock = Clock()
        budget = data["outbox"]["budget_kb"] * 1024
        self.outbox = Outbox(OUTBOX_DIR, budget_bytes=budget,
                             segment_bytes=min(SEGMENT_BYTES, budget // 4))
        self.watchdog = Watchdog(None)
        self.telemetry_s = data["telemetry_s"]
        self._wake = asyncio.Event()  # new records to send, or a slot came free
        self._cmds = []  # command payloads waiting for the command task
        self._cmd_wake = asyncio.Event()
        self._sent_live = 0  # publisher state: see _publisher()
        self._sent_back = 0
        self._live_from = 0  # first seq made after this boot's first connect (0: none yet)
        self._dropped_seen = self.outbox.dropped
        self._reporting_drop = False
        self.lanes = 0
        self.sampler = None
        self.scanner = None
        self.led = None
        board = cfg.board or {}
        if board.get("led") is not None:
            from machine import Pin

            self.led = Pin(board["led"], Pin.OUT, value=0)
        if self.role == "shelf":
            self._make_shelf(parts, cfg)
        elif self.role == "gate":
            self._make_gate(parts, board)
        self.commands = Commands(self)
        broker = data["broker"]
        self._transport_inner = parts.transport or self._transport(broker)
        transport = self._open_over_link
        offline = json.dumps({"state": "offline", "device": self.device_id}).encode()
        self.mqtt = MQTTClient(
            transport, self.device_id, keepalive=broker["keepalive_s"],
            username=broker.get("username"), password=broker.get("password"),
            will_topic=self.topic["status"], will_payload=offline, will_retain=True,
            window=8, on_message=self._on_message, on_puback=self._on_puback,
            on_connect=self._on_connect)
        self.tele = Telemetry(self.lanes, time.ticks_ms)

    async def _open_over_link(self):
        # The broker is only reachable over a joined WiFi link; failing fast here keeps the
        # MQTT client in its backoff instead of waiting out a TCP timeout.
        if not self._link_up():
            raise OSError("WiFi not joined")
        return await self._transport_inner.open()

    # ---- construction ------------------------------------------------------------------

    def _transport(self, broker):
        from net.transport import Transport

        return Transport.from_url(broker["url"], cafile=broker.get("ca_file"))

    def _make_shelf(self, parts, cfg):
        from apps.sampler import Sampler

        cals = cfg.lane_cals()
        bank = parts.bank
        if bank is None:
            from drivers.hx711 import HX711Bank

            sck, douts, gain = cfg.hx711()
            bank = HX711Bank(sck, douts, gain)
        self.cals = cals
        self.lanes = len(cals)
        self.sampler = Sampler(bank, cals, self.data["sps"], self._on_change,
                               self._on_fault)

    def _make_gate(self, parts, board):
        # What a gate does with a code (open for a known shopper, exit) is the gate logic's
        # job; the controller reads its scanner and publishes every code as a scan event.
        from drivers.qrscanner import QRScanner

        uart = parts.uart
        if uart is None:
            from machine import UART

            u = board["scanner_uart"]
            uart = UART(u["id"], baudrate=self.data["gate"]["scanner"]["baud"], tx=u["tx"],
                        rx=u["rx"])
        self.scanner = QRScanner(uart)

    async def _scan_task(self, tick):
        scanner = self.scanner
        if scanner is None:
            return
        while True:
            tick()
            code = scanner.poll()
            if code is None:
                await asyncio.sleep_ms(20)
                continue
            dev, seq, boot, ts, up = self._envelope()
            self._store(event.scan_event(dev, seq, boot, ts, up, code), seq)

    # ---- events: sampler -> outbox -------------------------------------------------------

    def _envelope(self):
        return self.device_id, self.outbox.next_seq, self.boot, self.clock.utc_ms(), \
            time.ticks_ms()

    def _store(self, payload, seq):
        try:
            self.outbox.append(payload, seq)
        except (OSError, ValueError) as exc:  # flash full or failing: say so, keep sampling
            print("outbox:", exc)
            return
        if self.outbox.dropped != self._dropped_seen and not self._reporting_drop:
            # Report it as an event of its own (which may itself push out another old one:
            # that is counted in the next report, not reported from within this one).
            lost = self.outbox.dropped - self._dropped_seen
            self._reporting_drop = True
            try:
                self.fault("outbox_full", "%d unsent events dropped (outbox budget)" % lost)
            finally:
                self._reporting_drop = False
            self._dropped_seen += lost
        self._wake.set()

    def _on_change(self, change):
        dev, seq, boot, ts, up = self._envelope()
        self._store(event.shelf_event(dev, seq, boot, ts, up, change), seq)

    def _on_fault(self, lane):
        self.fault("hx711", "lane %d: HX711 not ready (wiring or chip)" % lane, lane)

    def fault(self, code, msg, lane=None):
        dev, seq, boot, ts, up = self._envelope()
        self._store(event.fault_event(dev, seq, boot, ts, up, code, msg, lane), seq)

    # ---- publisher: outbox -> broker, acked records leave flash --------------------------

    def _on_puback(self, pid, seq):
        if seq is not None:
            self.outbox.ack(seq)
        self._wake.set()

    async def _publisher(self, tick):
        # Records from before this connection (the backlog) go in seq order; records made
        # since (live) too, in their own slots, so a long replay never holds a new pick back
        # by more than a round trip. Consumers order by seq; they dedupe on (device, seq).
        mqtt = self.mqtt
        ob = self.outbox
        window = mqtt.window
        while True:
            tick()
            if not mqtt.is_connected or self._live_from == 0:
                self._wake.clear()
                await self._wait(self._wake, 1000)
                continue
            free = window - mqtt.inflight
            sent = 0
            if free > 0:
                live = ob.pending(after=max(self._sent_live, self._live_from - 1),
                                  limit=min(free, LIVE_SLOTS))
                for seq, payload in live:
                    await self._send(seq, payload)
                    self._sent_live = seq
                    sent += 1
                free = window - mqtt.inflight
            if free > 0 and self._sent_back < self._live_from - 1:
                back = ob.pending(after=max(self._sent_back, ob.acked),
                                  before=self._live_from, limit=free)
                for seq, payload in back:
                    await self._send(seq, payload)
                    self._sent_back = seq
                    sent += 1
                if not back:
                    self._sent_back = self._live_from - 1
            if sent == 0:
                self._wake.clear()
                await self._wait(self._wake, 1000)

    async def _send(self, seq, payload):
        await self.mqtt.publish(self.topic["event"], payload, qos=1, ref=seq)

    async def _wait(self, ev, ms):
        try:
            await asyncio.wait_for_ms(ev.wait(), ms)
        except asyncio.TimeoutError:
            pass

    async def _on_connect(self, session_present):
        # The MQTT client resends its own in-flight publishes; everything else unacked in
        # the outbox is backlog from here on.
        if not session_present:
            await self.mqtt.subscribe(self.topic["cmd"], 1)
        if self._live_from == 0:
            # First connect of this boot: everything stored so far is backlog.
            self._live_from = self.outbox.next_seq
            self._sent_back = self.outbox.acked
            self._sent_live = self._live_from - 1
        await self.mqtt.publish(self.topic["status"], self._status_payload("online"),
                                qos=1, retain=True)
        self._wake.set()

    def _status_payload(self, state):
        return json.dumps({"state": state, "device": self.device_id, "role": self.role,
                           "fw": VERSION, "boot": self.boot,
                           "ts": self.clock.utc_ms()}).encode()

    # ---- commands -------------------------------------------------------------------------

    def _on_message(self, topic, payload, retain):
        if topic != self.topic["cmd"] or retain:
            return  # a retained command would replay at every connect: ignored
        if len(self._cmds) >= CMD_QUEUE_MAX:
            return  # flooded: the sender gets no ack and retries
        self._cmds.append(bytes(payload))
        self._cmd_wake.set()

    async def _command_task(self, tick):
        while True:
            tick()
            if not self._cmds:
                self._cmd_wake.clear()
                await self._wait(self._cmd_wake, 1000)
                continue
            raw = self._cmds.pop(0)
            ack = self.commands.handle(raw)
            try:
                await self.mqtt.publish(self.topic["ack"], encode_ack(ack), qos=1)
                await asyncio.wait_for_ms(self.mqtt.wait_all_acked(), 5000)
            except Exception as exc:  # the ack could not leave: still do what was asked
                print("ack:", exc)
            self.commands.after_ack()

    # Handler: what the commands do on this device.

    def _shelf(self):
        if self.sampler is None:
            raise CommandError("not a shelf")
        return self.sampler

    def _still_level(self, lane):
        sampler = self._shelf()
        det = sampler.detector
        level = det.level(lane)
        if level is None or det.state(lane) != STILL or sampler.faulted(lane):
            raise CommandError("lane %d is not still (or not reading); try again" % lane)
        return level

    def _lanes_of(self, lane):
        return range(self.lanes) if lane is None else (lane,)

    def _persist(self, lane):
        # Calibration and planogram go into config.json (validated by the command's schema,
        # so the raw lane stays valid) and the detector picks them up at once.
        cal = self.cals[lane]
        for raw in (self.raw["lanes"][lane], self.data["lanes"][lane]):
            raw["offset"] = cal.offset
            raw["counts_per_gram"] = cal.counts_per_gram
            raw["unit_g"] = cal.unit_g
            raw["sku"] = cal.sku
            raw["capacity"] = cal.capacity
        self._shelf().detector.recalibrated(lane)

    def _save(self):
        save_json(CONFIG_FILE, self.raw)

    def tare(self, lane):
        levels = [(i, self._still_level(i)) for i in self._lanes_of(lane)]
        for i, level in levels:
            self.cals[i].tare(level)
            self._persist(i)
        self._save()
        return {"lanes": [{"lane": i, "offset": self.cals[i].offset} for i, _ in levels]}

    def calibrate(self, lane, grams):
        level = self._still_level(lane)
        self.cals[lane].span(level, grams)
        self._persist(lane)
        self._save()
        return {"lane": lane, "counts_per_gram": self.cals[lane].counts_per_gram}

    def set_calibration(self, lane, offset, counts_per_gram):
        # A new LaneCal (its checks pass before anything changes) in place of the old one,
        # in the list the detector reads too; then persisted as a tare or span is.
        det = self._shelf().detector
        old = self.cals[lane]
        cal = LaneCal(offset, counts_per_gram, old.unit_g, old.sku, old.capacity)
        self.cals[lane] = cal
        det.lanes[lane] = cal  # the detector's list (the same one today): neither goes stale
        self._persist(lane)
        self._save()
        return {"lane": lane, "offset": cal.offset, "counts_per_gram": cal.counts_per_gram}

    def planogram(self, lane, sku, unit_g, capacity):
        self._shelf()
        self.cals[lane].set_planogram(sku, unit_g, capacity)
        self._persist(lane)
        self._save()
        return {"lane": lane, "sku": sku, "unit_g": unit_g, "capacity": capacity}

    def telemetry(self, period_s):
        self.telemetry_s = period_s
        self.raw["telemetry_s"] = period_s
        self.data["telemetry_s"] = period_s
        self._save()
        return {"period_s": period_s}

    def status(self):
        out = {"device": self.device_id, "role": self.role, "fw": VERSION, "boot": self.boot,
               "uptime_ms": time.ticks_ms(), "time_synced": self.clock.synced,
               "outbox_depth": self.outbox.depth, "next_seq": self.outbox.next_seq}
        sampler = self.sampler
        if sampler is not None:
            out["lanes"] = [self._lane_status(i, sampler) for i in range(self.lanes)]
        return out

    def _lane_status(self, lane, sampler):
        # What a host needs to calibrate the lane itself (docs/calibration.md): the smoothed
        # level in counts, the calibration it is read with, and whether it has settled
        # (the detector is not in the middle of a change; a plateau it is still judging is
        # settled). About 150 bytes with a long SKU: 8 lanes stay under 2 KB.
        det = sampler.detector
        cal = self.cals[lane]
        level = det.level(lane)
        faulted = sampler.faulted(lane)
        return {"lane": lane, "sku": cal.sku, "grams": self._grams(lane, level),
                "faulted": faulted, "raw": level, "offset": cal.offset,
                "counts_per_gram": cal.counts_per_gram,
                "still": level is not None and not faulted and det.state(lane) != ACTIVE}

    def _grams(self, lane, level):
        if level is None:
            return None
        return self.cals[lane].load_cg(level) / 100

    def reboot(self):
        return {}

    def safe_mode(self):
        safemode.request()
        return {}

    def restart(self, kind):
        reset = self.parts.reset
        if reset is None:
            import machine

            reset = machine.reset
        reset()

    # ---- periodic tasks ------------------------------------------------------------------

    async def _telemetry_task(self, tick):
        waited = 0
        up_s = 0
        while True:
            tick()
            await asyncio.sleep_ms(1000)
            waited += 1
            up_s += 1
            if up_s == HEALTHY_S and self.parts.on_healthy is not None:
                self.parts.on_healthy()
            if waited < self.telemetry_s:
                continue
            waited = 0
            if not self.mqtt.is_connected:
                continue
            wifi = getattr(self, "wifi", None)
            payload = self.tele.report(self.device_id, time.ticks_ms(),
                                       wifi.rssi() if wifi else None, self.outbox,
                                       self.sampler, self.clock,
                                       {"boot": self.boot, "mqtt_connects": self.mqtt.connects})
            try:
                await self.mqtt.publish(self.topic["telemetry"], payload, qos=0)
            except Exception as exc:  # QoS 0: a lost report is replaced by the next one
                print("telemetry:", exc)

    async def _clock_task(self, tick):
        from net.clock import RESYNC_S
        from net.clock import sync as sntp_sync

        sync = self.parts.sntp or sntp_sync
        host = self.data["ntp"]
        while True:
            tick()
            if not self._link_up():
                await asyncio.sleep_ms(1000)
                continue
            ok = await sync(self.clock, host)
            wait_s = RESYNC_S if ok else 30
            for _ in range(wait_s):
                tick()
                await asyncio.sleep_ms(1000)

    def _link_up(self):
        wifi = getattr(self, "wifi", None)
        return wifi is None or wifi.up.is_set()

    async def _link_task(self, tick):
        # A lost WiFi link takes the broker connection with it (on a board the socket is dead
        # anyway): drop it as a crash would, so unacked publishes stay queued and the broker
        # publishes the will. When the link is back, connect at once instead of waiting out
        # the client's backoff.
        up = False
        while True:
            tick()
            if self.led is not None:  # the status LED: lit while the broker is reachable
                self.led.value(1 if self.mqtt.is_connected else 0)
            now_up = self._link_up()
            if now_up and not up:
                await self.mqtt.stop(disconnect=False)
                self.mqtt.start()
            elif up and not now_up:
                await self.mqtt.stop(disconnect=False)
            up = now_up
            await asyncio.sleep_ms(250)

    # ---- running ---------------------------------------------------------------------------

    async def main(self):
        global _wdt_armed
        wd = self.watchdog
        if self.parts.make_wdt is not None:
            wd.wdt = self.parts.make_wdt()
            _wdt_armed = True
        tasks = []
        if self.parts.wlan is not None:
            from net.wifi import WifiSupervisor

            w = self.data["wifi"]
            self.wifi = WifiSupervisor(self.parts.wlan, w["ssid"], w["password"],
                                       wd.register("wifi", 30000))
            tasks.append(_guarded("wifi", self.wifi.run))
        sampler = self.sampler
        if sampler is not None:
            tick = wd.register("sampler", 3000)
            tasks.append(_guarded("sampler", lambda: sampler.run(tick)))
        if self.scanner is not None:
            tasks.append(_guarded("scanner", _bind(self._scan_task,
                                                   wd.register("scanner", 3000))))
        for name, fn in (("publisher", self._publisher), ("commands", self._command_task),
                         ("telemetry", self._telemetry_task), ("clock", self._clock_task),
                         ("link", self._link_task)):
            tasks.append(_guarded(name, _bind(fn, wd.register(name, 30000))))
        tasks.append(wd.run())
        await asyncio.gather(*tasks)


def _bind(fn, tick):
    return lambda: fn(tick)


async def _guarded(name, make):
    # A task that raised is logged and started again after a pause: one bad report or
    # command must not stop the sampling. A task that keeps failing stops ticking, and the
    # watchdog resets the board.
    while True:
        try:
            await make()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            print("task %s failed:" % name)
            log_crash(exc)
        await asyncio.sleep_ms(1000)


def print_config_errors(cfg):
    print("config: %d error(s); the application does not start" % len(cfg.errors))
    for line in cfg.errors:
        print("config error:", line)


async def fault_status(cfg, parts):
    """Publish the config errors as the retained status, if the broker part allows it."""
    from net.mqtt import MQTTClient

    data = cfg.data or {}
    try:
        t = topics(data)
        broker = data["broker"]
        transport = parts.transport
        if transport is None:
            from net.transport import Transport

            transport = Transport.from_url(broker["url"], cafile=broker.get("ca_file"))
        client = MQTTClient(transport, data["device"], keepalive=broker["keepalive_s"],
                            username=broker.get("username"), password=broker.get("password"))
    except (KeyError, TypeError, ValueError):
        return False
    msg = json.dumps({"state": "fault", "device": data["device"], "fw": VERSION,
                      "errors": cfg.errors[:8]}).encode()
    try:
        await client.connect()
        await client.publish(t["status"], msg, qos=1, retain=True)
        await asyncio.wait_for_ms(client.wait_all_acked(), 5000)
        await client.stop()
        return True
    except Exception as exc:
        print("fault status not published:", exc)
        return False


def save_json(path, data):
    """Write JSON atomically: a power cut leaves the old file or the new one."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(data))
    os.rename(tmp, path)


def _forget(name):
    # Drop a module from the heap: out of sys.modules and out of its package.
    sys.modules.pop(name, None)
    pkg, _, attr = name.rpartition(".")
    parent = sys.modules.get(pkg)
    if parent is not None and attr in dir(parent):
        try:
            delattr(parent, attr)
        except (AttributeError, TypeError):
            pass


async def boot(parts=None):
    """Load and check the config, build the device, and drop the config schema from the heap
    (some 30 KB of code a running device never needs again). With an invalid config: report
    it (console, retained fault status) and idle for good."""
    from apps import config

    parts = parts or Parts()
    cfg = config.load()
    if not cfg.ok:
        print_config_errors(cfg)
        await fault_status(cfg, parts)
        while True:  # idle, REPL reachable with Ctrl-C; the fault is reported
            await asyncio.sleep_ms(60000)
    dev = Device(cfg, parts)
    cfg = None
    config = None
    _forget("apps.config")
    import gc

    gc.collect()
    return dev


async def start(parts=None):
    """Boot and run the device."""
    dev = await boot(parts)
    await dev.main()


def _crashes(rtc, n=None):
    # Crashes in a row, kept in RTC memory (survives machine.reset(), not a power cut).
    if n is None:
        mem = rtc.memory()
        return mem[0] if mem else 0
    rtc.memory(bytes([min(n, 255)]))
    return n


def board_parts():
    """Parts of a real ESP32: the WiFi station, the hardware watchdog, reset."""
    import machine

    from net.wifi import station

    rtc = machine.RTC()
    return Parts(wlan=station(), make_wdt=lambda: machine.WDT(timeout=10000),
                 reset=machine.reset, on_healthy=lambda: _crashes(rtc, 0))


_running = None  # the application task where asyncio cannot block (the WebAssembly VM)
REPL_WDT_MS = 3600000
_wdt_armed = False  # set once the application has made the board's watchdog


def relax_watchdog():
    """After Ctrl-C: the watchdog the application armed cannot be stopped, and nothing feeds
    it at the REPL, so a host tool's session (deploy, provision, calibrate) would be reset
    after 10 s. Making WDT again reconfigures the one watchdog (ESP32 port) to an hour: a
    board left at the REPL returns to service by itself."""
    if not _wdt_armed:
        return  # never armed (safe mode, a config fault, tests): do not arm it now
    import machine

    try:
        machine.WDT(timeout=REPL_WDT_MS)
    except (OSError, ValueError) as exc:
        print("watchdog not relaxed:", exc)


def stop_running():
    """Stop the application started in the background (what Ctrl-C does to main.py)."""
    global _running
    if _running is not None:
        _running.cancel()
        _running = None
        relax_watchdog()


def run():
    """main.py's entry: run forever; on an unhandled error log it, back off, reset.

    Where asyncio has no blocking run() (the MicroPython WebAssembly VM of the virtual board),
    the application starts as a background task and main.py returns; the host's event loop
    drives it and stop_running() ends it."""
    import machine

    global _running
    if not hasattr(asyncio, "run"):
        _running = asyncio.create_task(start(board_parts()))
        return
    try:
        asyncio.run(start(board_parts()))  # type: ignore[attr-defined]
    except KeyboardInterrupt:
        relax_watchdog()
        print("stopped (Ctrl-C): REPL")
        return
    except Exception as exc:
        log_crash(exc)
    # Back off before the reset so a crash loop does not wear the flash or flood the broker.
    rtc = machine.RTC()
    crashes = _crashes(rtc, _crashes(rtc) + 1)
    time.sleep_ms(min(60000, 1000 << min(crashes, 6)))
    machine.reset()
