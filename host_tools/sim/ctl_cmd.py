"""`shelfctl sim ctl DIR COMMAND`: a hand on a running virtual board (its control socket).

    load LANE GRAMS [--ms MS]   put (+) or take (-) grams on a lane over MS ms (default 400)
    items SKU COUNT             put (+) or take (-) COUNT items of SKU (the board's planogram)
    rest LANE GRAMS SECONDS     a hand rests on a lane, then leaves
    bump [GRAMS]                knock the shelf: every lane rings, nothing changes
    scan TEXT                   the gate's QR scanner reads TEXT
    beam [MS]                   something breaks the gate's beam for MS ms (default 300)
    wifi up|down                the access point comes back / goes away
    power off|on                cut the power without warning / power on
    reset                       press EN (power-on reset)
    state                       running, boots, grams on each lane
Prints the board's JSON answer.
"""

from __future__ import annotations

import argparse
import json
import socket
from pathlib import Path

from host_tools.errors import UserError
from host_tools.sim.board import CONTROL_SOCKET


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", help="the board's --fs directory")
    parser.add_argument("command",
                        choices=("load", "items", "rest", "bump", "scan", "beam", "wifi",
                                 "power", "reset", "state"))
    parser.add_argument("args", nargs="*", help="LANE GRAMS | up/down | off/on")
    parser.add_argument("--ms", type=int, default=400, help="how long a load change takes")


def build(args: argparse.Namespace) -> dict:
    a = args.args
    if args.command == "load":
        if len(a) != 2:
            raise UserError("load needs LANE GRAMS, e.g. load 2 -250")
        try:
            return {"cmd": "load", "lane": int(a[0]), "grams": float(a[1]), "ms": args.ms}
        except ValueError:
            raise UserError(f"load LANE GRAMS: numbers, not {' '.join(a)}") from None
    try:
        if args.command == "items" and len(a) == 2:
            return {"cmd": "items", "sku": a[0], "count": int(a[1]), "ms": args.ms}
        if args.command == "rest" and len(a) == 3:
            return {"cmd": "rest", "lane": int(a[0]), "grams": float(a[1]),
                    "seconds": float(a[2])}
        if args.command == "scan" and len(a) == 1:
            return {"cmd": "scan", "text": a[0]}
        if args.command == "beam" and len(a) <= 1:
            return {"cmd": "beam", "ms": int(a[0]) if a else 300}
        if args.command == "bump" and len(a) <= 1:
            return {"cmd": "bump", "grams": float(a[0]) if a else 200.0}
    except ValueError:
        raise UserError(f"{args.command}: bad numbers in {' '.join(a)}") from None
    if args.command in ("items", "rest", "bump", "scan", "beam"):
        raise UserError({"items": "items needs SKU COUNT, e.g. items SKU-02 -1",
                         "rest": "rest needs LANE GRAMS SECONDS",
                         "bump": "bump takes at most GRAMS",
                         "scan": "scan needs the TEXT the scanner reads",
                         "beam": "beam takes at most MS"}[args.command])
    if args.command == "wifi":
        if a not in (["up"], ["down"]):
            raise UserError("wifi needs up or down")
        return {"cmd": "wifi", "up": a[0] == "up"}
    if args.command == "power":
        if a not in (["on"], ["off"]):
            raise UserError("power needs on or off")
        return {"cmd": "power_" + a[0]}
    if a:
        raise UserError(f"{args.command} takes no arguments")
    return {"cmd": args.command}


def send(fs_dir: Path, cmd: dict, timeout: float = 10.0) -> dict:
    path = fs_dir / CONTROL_SOCKET
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall((json.dumps(cmd) + "\n").encode())
            line = s.makefile("rb").readline()
    except (FileNotFoundError, ConnectionRefusedError):
        raise UserError(f"no virtual board running in {fs_dir} (no {CONTROL_SOCKET})") from None
    except OSError as exc:
        raise UserError(f"control socket {path}: {exc}") from None
    return json.loads(line)


def run(args: argparse.Namespace) -> int:
    reply = send(Path(args.dir), build(args))
    print(json.dumps(reply))
    return 0 if reply.get("ok") else 1
