"""`shelfctl sim store`: a small walk-out store of virtual boards, played by shoppers.

N shelf boards and M gate boards (each the real firmware in the MicroPython VM behind its own
pty), deployed and provisioned through their serial ports, on one broker (mosquitto started
here unless --broker is given). Shoppers enter (their app code at the first gate's QR
scanner), take items from lanes (and do what shoppers do besides: lift an item and put it
back, rest a hand, put an item back a while later) and leave (scanning again). The live event
stream is printed as it arrives; at the end, each shopper's receipt from the events next to
what the shopper really took (--truth writes that as JSON).

Events are attributed to shoppers the way the simulation knows it: an event on a lane belongs
to the shopper whose hand was last in that lane before it (a real store gets this from its
cameras, which are not simulated here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from host_tools.board.transport import SerialTransport
from host_tools.deploy import deploy_firmware, put_json
from host_tools.errors import UserError
from host_tools.firmware import use_firmware
from host_tools.sim.board import VirtualBoard
from host_tools.sim.board_cmd import BOARD_JSON, gate_config, shelf_config
from host_tools.sim.physics_feed import PhysicsFeed

UNIT_G = 250.0
STOCK = 10
LANES = 4
SETTLE_S = 2.5  # stillness between a shopper's actions on one lane: separate events
LATE_S = 4.0  # an event may be decided this long after the shopper stepped away
HAND_S = 12.0  # an event is attributed to a hand in its lane at most this long before


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shelves", type=int, default=4, help="shelf boards (default 4)")
    parser.add_argument("--gates", type=int, default=1, help="gate boards (default 1)")
    parser.add_argument("--shoppers", type=int, default=3, help="shoppers (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="same seed, same shoppers")
    parser.add_argument("--broker", metavar="URL",
                        help="mqtt://host:port (default: start mosquitto, or the embedded "
                             "Python broker where mosquitto is not installed)")
    parser.add_argument("--embedded-broker", action="store_true",
                        help="use the embedded Python broker even where mosquitto is installed")
    parser.add_argument("--duration", type=float, default=0,
                        help="keep the store open this many seconds after the last shopper")
    parser.add_argument("--truth", metavar="FILE", help="write what each shopper took (JSON)")
    parser.add_argument("--dir", metavar="DIR", help="boards' flash directories (default: temp)")
    parser.add_argument("--simple-lanes", action="store_true",
                        help="250 g items on an idealised cell instead of the trace "
                             "generator's physics and products")
    parser.add_argument("--baud", type=int, default=0,
                        help="serial pacing of every board (default 0: none, for speed)")


# ---- shoppers -------------------------------------------------------------------------------

@dataclass
class Action:
    shelf: int
    lane: int
    grams: float
    ms: int
    kind: str  # pick, put, touch, rest
    count: int = 0  # items, for pick and put


@dataclass
class Visit:
    shopper: int
    shelf: int
    actions: list[list[Action]]  # steps; a step's actions happen together


@dataclass
class Shopper:
    id: int
    visits: list[Visit] = field(default_factory=list)
    took: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def plan(shoppers: int, shelves: int, seed: int, stock: list[list[int]] | None = None,
         skus: list[list[str]] | None = None) -> list[Shopper]:
    """Each shopper visits one to three shelves and does two to four things at each.
    stock / skus: items and SKU per [shelf][lane] (default: STOCK items of SKU-<shelf><lane>)."""
    rng = random.Random(seed)
    stock = [list(row) for row in stock] if stock else [[STOCK] * LANES for _ in range(shelves)]

    def sku(shelf: int, lane: int) -> str:
        return skus[shelf][lane] if skus else f"SKU-{shelf}{lane}"

    out = []
    for k in range(shoppers):
        s = Shopper(k + 1)
        for shelf in rng.sample(range(shelves), rng.randint(1, min(3, shelves))):
            steps: list[list[Action]] = []
            carrying: list[int] = []
            for _ in range(rng.randint(2, 4)):
                lane = rng.randrange(LANES)
                what = rng.choices(["pick", "touch", "rest", "put"], [6, 2, 1, 1])[0]
                if what == "put" and not carrying:
                    what = "pick"
                if what == "pick" and stock[shelf][lane] == 0:
                    what = "touch"
                if what == "pick":
                    n = rng.choice([1, 1, 1, 2])
                    n = min(n, stock[shelf][lane])
                    stock[shelf][lane] -= n
                    carrying.extend([lane] * n)
                    s.took[sku(shelf, lane)] += n
                    steps.append([Action(shelf, lane, -n * UNIT_G, 450, "pick", n)])
                elif what == "put":
                    back = carrying.pop()
                    stock[shelf][back] += 1
                    s.took[sku(shelf, back)] -= 1
                    steps.append([Action(shelf, back, UNIT_G, 500, "put", 1)])
                elif what == "touch" and stock[shelf][lane] > 0:
                    steps.append([Action(shelf, lane, -UNIT_G, 300, "touch")])
                    steps.append([Action(shelf, lane, UNIT_G, 300, "touch_back")])
                else:
                    steps.append([Action(shelf, lane, 300.0, 300, "rest")])
                    steps.append([Action(shelf, lane, -300.0, 300, "rest_off")])
            s.visits.append(Visit(s.id, shelf, steps))
        out.append(s)
    return out


# ---- the store ------------------------------------------------------------------------------

class Observer:
    """The store's side of MQTT: every event, live, with the firmware's own client."""

    def __init__(self, url: str) -> None:
        use_firmware()
        from net.mqtt import MQTTClient
        from net.transport import Transport

        self.events: list[tuple[float, dict]] = []
        self.status: dict[str, str] = {}
        self.lock = threading.Lock()
        self.on_event = lambda ev: None
        self._client = MQTTClient(Transport.from_url(url), f"store-observer-{time.time_ns()}",
                                  keepalive=30, clean_session=True,
                                  on_message=self._message)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        if not self._ready.wait(15):
            raise UserError(f"cannot reach the broker at {url}")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            await self._client.connect()
            await self._client.subscribe("store/v1/#", 1)
            self._ready.set()
            while True:
                await asyncio.sleep(3600)

        try:
            self._loop.run_until_complete(main())
        except Exception:
            pass

    def _message(self, topic: str, payload: bytes, retain: bool) -> None:
        parts = topic.split("/")
        if len(parts) != 5:
            return
        device, kind = parts[3], parts[4]
        try:
            msg = json.loads(bytes(payload))
        except ValueError:
            return
        with self.lock:
            if kind == "status":
                self.status[device] = msg.get("state", "?")
            elif kind == "event" and not retain:
                self.events.append((time.monotonic(), msg))
                self.on_event(msg)


def _provision(board: VirtualBoard, cfg: dict) -> None:
    with SerialTransport(board.port, timeout=60) as t:
        if not (board.dir / "main.py").exists():
            deploy_firmware(t)
        put_json(t, json.loads(BOARD_JSON.read_text()), "/board.json")
        put_json(t, cfg, "/config.json")
    board.hard_reset()


class Store:
    def __init__(self, root: Path, shelves: int, gates: int, url: str, baud: int,
                 physics: bool = True, seed: int = 1) -> None:
        """physics: each shelf's lanes follow the trace generator's physics with their own
        products (draw_stock); else the simple lane model with 250 g items."""
        self.root = root
        self.url = url
        self.feeds = [PhysicsFeed(LANES, 10, seed * 1000 + i) if physics else None
                      for i in range(shelves)]
        self.shelves = [VirtualBoard(root / f"shelf-{i}", baud, physics=self.feeds[i])
                        for i in range(shelves)]
        self.gates = [VirtualBoard(root / f"gate-{i}", baud) for i in range(gates)]

    def stock(self) -> list[list[int]]:
        return [[f.items(lane) if f else STOCK for lane in range(LANES)] for f in self.feeds]

    def skus(self) -> list[list[str]]:
        return [[f.stock[lane].sku if f else f"SKU-{i}{lane}" for lane in range(LANES)]
                for i, f in enumerate(self.feeds)]

    def act(self, a: Action) -> None:
        """One hand on a shelf, through its physics or the simple lane model."""
        feed = self.feeds[a.shelf]
        if feed is None:
            self.shelves[a.shelf].load(a.lane, a.grams, a.ms)
        elif a.kind == "pick":
            feed.pick(a.lane, a.count)
        elif a.kind == "put":
            feed.put(a.lane, a.count)
        elif a.kind == "touch":
            feed.touch(a.lane, 800)
        elif a.kind == "rest":
            feed.rest(a.lane, a.grams, SETTLE_S)
        # touch_back, rest_off: the physics scheduled the whole gesture already

    def open(self, log) -> None:
        jobs = []
        skus = self.skus()
        for i, b in enumerate(self.shelves):
            fresh = not (b.dir / ".sim-shelf.json").exists()
            b.start()
            if fresh and self.feeds[i] is None:
                for lane in range(LANES):
                    b.load(lane, STOCK * UNIT_G, 1)
            cfg = shelf_config(f"shelf-{i}", "demo", self.url, LANES)
            feed = self.feeds[i]
            for lane, entry in enumerate(cfg["lanes"]):
                entry["sku"] = skus[i][lane]
                if feed is not None:
                    entry.update(feed.calibration(lane))
            jobs.append((b, cfg))
        for i, b in enumerate(self.gates):
            b.start()
            jobs.append((b, gate_config(f"gate-{i}", "demo", self.url)))
        log(f"deploying and provisioning {len(jobs)} boards over their serial ports ...")
        with ThreadPoolExecutor(max_workers=4) as pool:
            for f in [pool.submit(_provision, b, cfg) for b, cfg in jobs]:
                f.result()

    def close(self) -> None:
        for b in self.shelves + self.gates:
            b.stop()


def play(store: Store, shoppers: list[Shopper], log) -> list[tuple[float, int, int, int]]:
    """Run the shoppers (one at a shelf at a time); returns every hand in a lane as
    (time, shelf, lane, shopper), in time order."""
    busy = [threading.Lock() for _ in store.shelves]
    hands: list[tuple[float, int, int, int]] = []
    t_start = time.monotonic()

    def gate(text: str) -> None:
        # the shopper's app code at the gate's QR scanner (entry and exit)
        if store.gates:
            store.gates[0].control({"cmd": "scan", "text": text})

    def walk(s: Shopper) -> None:
        time.sleep(s.id * 1.5)
        gate(f"SHOPPER-{s.id}")
        log(f"shopper {s.id} enters")
        for v in s.visits:
            with busy[v.shelf]:
                for step in v.actions:
                    for a in step:
                        hands.append((time.monotonic(), a.shelf, a.lane, s.id))
                        store.act(a)
                    time.sleep(SETTLE_S if step[0].kind != "touch" else 0.8)
                time.sleep(0.5)
        gate(f"SHOPPER-{s.id}")
        log(f"shopper {s.id} leaves after {time.monotonic() - t_start:.0f} s")

    threads = [threading.Thread(target=walk, args=(s,)) for s in shoppers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(hands)


def attribute(events: list[tuple[float, dict]],
              hands: list[tuple[float, int, int, int]]) -> dict[int, dict[str, int]]:
    receipts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for t, ev in events:
        if ev.get("count") is None or not str(ev.get("device", "")).startswith("shelf-"):
            continue
        shelf = int(ev["device"].split("-")[1])
        who = None
        for th, hs, hl, shopper in hands:
            if hs == shelf and hl == ev.get("lane") and t - HAND_S <= th <= t:
                who = shopper  # the latest hand in that lane before the event
        if who is not None:
            receipts[who][ev["sku"]] -= ev["count"]  # a pick (-1) is one item taken
    return receipts


def run(args: argparse.Namespace) -> int:
    from host_tools.mosquitto import Broker, ToolMissing
    from host_tools.mqtt_broker import EmbeddedBroker
    from host_tools.vm import node_available

    if not node_available():
        raise UserError("Node.js and the MicroPython VM are needed: run make setup")
    if not 1 <= args.shelves <= 16 or not 0 <= args.gates <= 4 or not 1 <= args.shoppers <= 20:
        raise UserError("--shelves 1..16, --gates 0..4, --shoppers 1..20")
    if args.broker and not args.broker.startswith("mqtt://"):
        raise UserError("--broker must be mqtt://host:port (virtual boards have no TLS)")
    t0 = time.monotonic()

    def log(text: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f}s] {text}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.dir) if args.dir else Path(tmp)
        broker: Broker | EmbeddedBroker | None = None
        url = args.broker
        if url is None and not args.embedded_broker:
            broker = Broker(Path(tmp) / "broker")
            try:
                broker.start()
                url = broker.url
                log(f"broker: mosquitto on {url}")
            except ToolMissing:
                broker = None
        if url is None:
            broker = EmbeddedBroker()
            url = broker.start()
            log(f"broker: the embedded Python broker on {url} (mosquitto not used)")
        store = Store(root, args.shelves, args.gates, url, args.baud,
                      physics=not args.simple_lanes, seed=args.seed)
        try:
            observer = Observer(url)

            def show(ev: dict) -> None:
                if ev.get("type") == "scan":
                    log(f"event {ev['device']} #{ev['seq']:<3} scan {ev.get('code')}")
                    return
                count = ev.get("count")
                what = f"{ev['type']:<6} {count if count is not None else '?':>3}"
                log(f"event {ev['device']} #{ev['seq']:<3} lane {ev.get('lane')} "
                    f"{ev.get('sku', ''):<8} {what} {ev.get('delta_g', 0):>8.1f} g")

            observer.on_event = show
            store.open(log)
            names = [f"shelf-{i}" for i in range(args.shelves)] + \
                    [f"gate-{i}" for i in range(args.gates)]
            end = time.monotonic() + 90
            while any(observer.status.get(n) != "online" for n in names):
                if time.monotonic() > end:
                    raise UserError("boards did not come online: "
                                    + ", ".join(n for n in names
                                                if observer.status.get(n) != "online"))
                time.sleep(0.2)
            log(f"store open: {len(names)} boards online; warming up the lanes")
            time.sleep(3)
            shoppers = plan(args.shoppers, args.shelves, args.seed, store.stock(),
                            store.skus())
            hands = play(store, shoppers, log)
            time.sleep(LATE_S + max(args.duration, 0))
            with observer.lock:
                events = list(observer.events)
            receipts = attribute(events, hands)
            exact = 0
            print()
            for s in shoppers:
                truth = {k: v for k, v in sorted(s.took.items()) if v}
                got = {k: v for k, v in sorted(receipts.get(s.id, {}).items()) if v}
                ok = truth == got
                exact += ok
                print(f"shopper {s.id}: receipt {got or '{}'}")
                print(f"           truth   {truth or '{}'}  {'exact' if ok else 'DIFFERS'}")
            scans = [ev for _, ev in events if ev.get("type") == "scan"]
            print(f"\n{exact}/{len(shoppers)} receipts exact; {len(events) - len(scans)} "
                  f"shelf events, {len(scans)} gate scans")
            if args.truth:
                Path(args.truth).write_text(json.dumps(
                    {str(s.id): dict(s.took) for s in shoppers}, indent=1) + "\n")
        finally:
            store.close()
            if broker is not None:
                broker.stop()
    return 0

