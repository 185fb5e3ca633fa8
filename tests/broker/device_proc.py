"""One shelf controller as a process: the real firmware runtime (apps.device) in CPython on the
fake board, talking to a real broker. The broker tests start it, cut its power (SIGKILL) and
start it again over the same flash directory.

    python device_proc.py FLASH_DIR

FLASH_DIR is the board's filesystem (config.json, board.json, the outbox...); the process
runs there. The shelf's load cells are fake HX711 chips speaking the pin protocol on the fake
board (in real time); their load is driven from stdin, one command per line:

    load LANE GRAMS MS     change lane LANE's load by GRAMS over MS milliseconds (a hand)
    wifi up|down           the access point comes and goes

Lanes start with `start_g` grams each (kept up to date, so a restarted process finds the
shelf as it was) (FLASH_DIR/shelf.json: {"start_g": [..], "cpg": ..,
"offsets": [..], "noise_g": ..}). A reboot asked for by a command ends the process with
status 75; the test starts it again, as the board would restart.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from host_tools.firmware import HW_DIR, use_firmware  # noqa: E402

use_firmware(HW_DIR)

import machine  # noqa: E402  (the fake board)
import network  # noqa: E402
from fake_hx711 import FakeHX711  # noqa: E402

REBOOT_STATUS = 75


class LaneLoad:
    """A lane's load over real time: piecewise smooth ramps."""

    def __init__(self, grams: float) -> None:
        self.base = grams
        self.ramps: list[tuple[float, float, float]] = []  # (start s, grams, duration s)
        self.lock = threading.Lock()

    def add(self, grams: float, ms: float) -> None:
        with self.lock:
            self.ramps.append((time.monotonic(), grams, max(ms, 1) / 1000))

    def at(self, t: float) -> float:
        g = self.base
        with self.lock:
            for start, grams, dur in self.ramps:
                x = min(1.0, max(0.0, (t - start) / dur))
                g += grams * x * x * (3 - 2 * x)
        return g


def main() -> None:
    flash = Path(sys.argv[1])
    os.chdir(flash)
    shelf = json.loads(Path("shelf.json").read_text())
    config = json.loads(Path("config.json").read_text())
    board = json.loads(Path("board.json").read_text())
    machine.fake_reset(realtime=True)
    network.fake_reset_network()
    cpg = shelf["cpg"]
    noise = shelf.get("noise_g", 0.3)
    loads = [LaneLoad(g) for g in shelf["start_g"]]
    rng = random.Random(shelf.get("seed", 1))
    sck = board["hx711"]["sck"]
    for i in range(len(config["lanes"])):
        dout = board["hx711"]["dout"][i]
        offset = shelf["offsets"][i]
        load = loads[i]

        def source(gain, load=load, offset=offset):
            g = load.at(time.monotonic()) + rng.gauss(0, noise)
            return max(-8388608, min(8388607, int(offset + g * cpg)))

        FakeHX711(sck, dout, source, sps=config.get("sps", 10), settle=1,
                  history=8)

    def control() -> None:
        for line in sys.stdin:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "load":
                lane = int(parts[1])
                loads[lane].add(float(parts[2]), float(parts[3]))
                # The shelf keeps its load through the controller's power cuts.
                shelf["start_g"][lane] += float(parts[2])
                Path("shelf.json.tmp").write_text(json.dumps(shelf))
                os.replace("shelf.json.tmp", "shelf.json")
            elif parts[0] == "wifi":
                network.fake_ap(up=parts[1] == "up")

    threading.Thread(target=control, daemon=True).start()

    from apps import device

    def reboot() -> None:
        sys.stdout.flush()
        os._exit(REBOOT_STATUS)

    async def sntp(clock, host):  # the board's SNTP exchange is tested on its own
        clock.set_utc_ms(int(time.time() * 1000))
        return True

    parts = device.Parts(wlan=network.WLAN(network.STA_IF), reset=reboot, sntp=sntp)
    print("device: starting", flush=True)
    asyncio.run(device.start(parts))


if __name__ == "__main__":
    main()
