# The virtual board's hardware, set up at every boot by _simboot: the fake board (machine,
# pins, real-time clock), one fake HX711 per lane on the pins board.json gives, whose load is a
# simple physical model driven from the host (the sim's control channel), a WiFi station.
#
# A lane's cell: raw = OFFSET(i) + grams * CPG + noise; OFFSET / CPG are the cell's physics,
# which provisioning writes into config.json as the lane's calibration (shelfctl sim knows
# them). Loads change along smooth ramps (a hand), then a short ringing on release.
import json
import math

import _simctl
import machine
import network
from fake_hx711 import FakeHX711

CPG = 420  # counts per gram of every simulated cell (host_tools/sim/vmroot_hw.py: the same)


def offset(lane):
    return 100000 * (lane + 1) - 8000


class _Lane:
    def __init__(self, grams):
        self.base = grams
        self.ramps = []  # (start us, grams, duration us)
        self.bumps = []  # (start us, grams): the shelf knocked, ringing that dies away

    def bump(self, now, grams):
        self.bumps = [b for b in self.bumps if now - b[0] < 2000000] + [(now, grams)]

    def add(self, now, grams, ms):
        # fold finished ramps into the base so the list stays short
        keep = []
        for r in self.ramps:
            if now - r[0] >= r[2]:
                self.base += r[1]
            else:
                keep.append(r)
        keep.append((now, grams, max(1, ms) * 1000))
        self.ramps = keep

    def at(self, now):
        g = self.base
        for start, grams, dur in self.ramps:
            x = (now - start) / dur
            if x >= 1:
                g += grams
                # a little ringing for 300 ms after the hand lets go
                t = (now - start - dur) / 1000000
                if t < 0.3:
                    g += abs(grams) * 0.05 * math.exp(-t / 0.08) * math.cos(2 * math.pi * 9 * t)
            elif x > 0:
                g += grams * x * x * (3 - 2 * x)
        for start, grams in self.bumps:
            t = (now - start) / 1000000
            if 0 <= t < 1.5:
                g += grams * math.exp(-t / 0.25) * math.sin(2 * math.pi * 6 * t)
        return g


lanes = []
clock = None
board = {}
_outputs = {}  # name -> last level reported to the host


class _Beam:
    # The beam-break receiver's output: low while something is in the beam.
    def __init__(self):
        self.until = 0

    def dout(self, now):
        return 0 if now < self.until else 1


_beam = _Beam()


def _poll():
    # commands from the host, taken as the chips convert (no task needed)
    msg = _simctl.take()
    while msg:
        cmd = json.loads(msg)
        kind = cmd.get("cmd")
        if kind == "load" and 0 <= cmd["lane"] < len(lanes):
            lanes[cmd["lane"]].add(clock.now, cmd["grams"], cmd.get("ms", 400))
        elif kind == "bump":
            for lane in lanes:
                lane.bump(clock.now, cmd["grams"])
        elif kind == "wifi":
            network.fake_ap(up=bool(cmd.get("up")))
        elif kind == "scan":
            uart = board.get("scanner_uart") or {}
            u = machine.fake_uart(uart.get("id"))
            if u is not None:  # the firmware opened the scanner's UART
                u.feed((cmd["text"] + "\r").encode())
        elif kind == "beam":
            _beam.until = clock.now + int(cmd.get("ms", 300)) * 1000
        msg = _simctl.take()


def _report():
    # outputs the host may ask about (relay, status LED), sent when they change
    for name in ("relay", "led"):
        pin = board.get(name)
        if pin is None:
            continue
        level = machine.fake_level(pin)
        if _outputs.get(name) != level:
            _outputs[name] = level
            _simctl.report(json.dumps({"output": name, "level": level}))


async def _hardware_task():
    import asyncio

    while True:
        _poll()
        _report()
        await asyncio.sleep_ms(20)


def setup(info):
    global clock, board
    start_grams = info.get("grams") or []
    physics = info.get("physics")
    clock = machine.fake_reset(realtime=True)
    network.fake_reset_network()
    import asyncio

    asyncio.create_task(_hardware_task())
    try:
        board = json.load(open("/board.json"))
    except (OSError, ValueError):
        return  # a blank board: no wiring known yet
    if board.get("beam") is not None:
        machine.fake_attach(_beam, None, board["beam"])
    try:
        sps = json.load(open("/config.json")).get("sps", 10)
    except (OSError, ValueError):
        sps = 10
    hx = board.get("hx711") or {}
    douts = hx.get("dout") or []
    seed = [12345]

    for i in range(len(douts)):
        lane = _Lane(start_grams[i] if i < len(start_grams) else 0.0)
        lanes.append(lane)

        def streamed(gain, i=i):
            # the host's physics (creep, crosstalk, ringing, glitches...): its current reading
            if i == 0:
                _poll()
            raw = _simctl.sample(i)
            return offset(i) if raw is None else raw

        def source(gain, lane=lane, i=i):
            if i == 0:
                _poll()
            seed[0] = (seed[0] * 1103515245 + 12345) & 0x7FFFFFFF
            noise = (seed[0] % 2001 - 1000) / 1000 * 0.4  # +-0.4 g
            return offset(i) + int((lane.at(clock.now) + noise) * CPG)

        FakeHX711(hx["sck"], douts[i], streamed if physics else source, sps=sps, settle=1,
                  history=4)
