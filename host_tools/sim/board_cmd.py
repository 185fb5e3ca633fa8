"""`shelfctl sim board`: one virtual board on a pseudo-terminal, until stopped (Ctrl-C).

By default the board comes up as a technician leaves it: the current firmware deployed and,
with --broker, provisioned for that broker (config.json, board.json), all through the board's
own serial port; --blank leaves an empty filesystem (MicroPython flashed, nothing else) for
testing deploy and provision. Prints the serial device path; DIR/serial links to it.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path

from host_tools.board.transport import SerialTransport, TransportError
from host_tools.deploy import deploy_firmware, put_json
from host_tools.errors import UserError
from host_tools.firmware import REPO
from host_tools.sim import vmroot_hw
from host_tools.sim.board import VirtualBoard
from host_tools.vm import node_available

BOARD_JSON = REPO / "boards" / "virtual.json"
STOCK_ITEMS = 10
UNIT_G = 250.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--role", choices=("shelf", "gate"), default="shelf")
    parser.add_argument("--id", required=True, help="device id (a-z 0-9 -)")
    parser.add_argument("--fs", required=True, metavar="DIR",
                        help="the board's flash (kept between runs), serial link, control socket")
    parser.add_argument("--baud", type=int, default=115200,
                        help="serial pacing in baud, 0 for none (default 115200)")
    parser.add_argument("--lanes", type=int, default=4, help="shelf lanes, 1..8 (default 4)")
    parser.add_argument("--broker", metavar="URL", help="provision for this broker (mqtt://)")
    parser.add_argument("--store", default="store-1", help="store id (default store-1)")
    parser.add_argument("--blank", action="store_true",
                        help="empty filesystem: nothing deployed or provisioned")
    parser.add_argument("--rfc2217", type=int, metavar="TCP_PORT",
                        help="also serve the port as rfc2217://127.0.0.1:TCP_PORT (0: any), "
                             "which carries DTR/RTS for esptool-style resets")
    parser.add_argument("--seed", type=int, default=1,
                        help="the shelf's physics and products (default 1)")
    parser.add_argument("--simple-lanes", action="store_true",
                        help="250 g items on ideal cells instead of the trace generator's "
                             "physics")


def shelf_config(device: str, store: str, broker: str, lanes: int) -> dict:
    """config.json for a virtual shelf: its lanes calibrated as the simulated cells are."""
    return {
        "device": device, "store": store, "role": "shelf", "board": "virtual",
        "wifi": {"ssid": "store-wifi", "password": "store-secret"},
        "broker": {"url": broker, "keepalive_s": 30}, "telemetry_s": 30, "sps": 10,
        "lanes": [{"offset": vmroot_hw.offset(i), "counts_per_gram": vmroot_hw.CPG,
                   "sku": f"SKU-{i}", "unit_g": UNIT_G, "capacity": 40} for i in range(lanes)],
    }


def gate_config(device: str, store: str, broker: str) -> dict:
    return {
        "device": device, "store": store, "role": "gate", "board": "virtual",
        "wifi": {"ssid": "store-wifi", "password": "store-secret"},
        "broker": {"url": broker, "keepalive_s": 30}, "telemetry_s": 30,
        "gate": {"exit": "scan"},
    }


def _check(args: argparse.Namespace) -> None:
    if not node_available():
        raise UserError("Node.js and the MicroPython VM are needed: run make setup")
    if not 1 <= args.lanes <= 8:
        raise UserError(f"--lanes must be 1..8, not {args.lanes}")
    if args.baud < 0:
        raise UserError("--baud must be >= 0")
    if args.broker and not args.broker.startswith("mqtt://"):
        raise UserError("--broker must be mqtt://host:port (the virtual board has no TLS)")
    fs = Path(args.fs)
    if fs.exists() and not fs.is_dir():
        raise UserError(f"--fs {fs} is a file, not a directory")


def provision(board: VirtualBoard, args: argparse.Namespace) -> None:
    feed = board.physics
    with SerialTransport(board.port, timeout=30) as t:
        if not (board.dir / "main.py").exists():
            report = deploy_firmware(t)
            print(f"deployed {report.sent} files, {report.payload_bytes} bytes in "
                  f"{report.seconds} s", flush=True)
        put_json(t, json.loads(BOARD_JSON.read_text()), "/board.json")
        if args.broker:
            cfg = (shelf_config(args.id, args.store, args.broker, args.lanes)
                   if args.role == "shelf" else gate_config(args.id, args.store, args.broker))
            if feed is not None:  # calibrated as a technician would the simulated cells
                for lane, entry in enumerate(cfg["lanes"]):
                    entry.update(feed.calibration(lane))
            put_json(t, cfg, "/config.json")


def run(args: argparse.Namespace) -> int:
    _check(args)
    feed = None
    if args.role == "shelf" and not args.simple_lanes:
        from host_tools.sim.physics_feed import PhysicsFeed

        feed = PhysicsFeed(args.lanes, 10, args.seed)
    board = VirtualBoard(Path(args.fs), baud=args.baud, physics=feed, rfc2217=args.rfc2217)
    fresh = not (Path(args.fs) / ".sim-shelf.json").exists() and feed is None
    board.start()
    try:
        if args.role == "shelf" and fresh and not args.blank:
            for lane in range(args.lanes):
                board.load(lane, STOCK_ITEMS * UNIT_G, 1)
        if not args.blank:
            try:
                provision(board, args)
            except TransportError as exc:
                raise UserError(f"provisioning over {board.port} failed: {exc}") from None
            board.hard_reset()
        print(board.port, flush=True)
        if board.rfc2217 is not None:
            print(board.rfc2217.url, flush=True)
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        try:
            done.wait()
        except KeyboardInterrupt:
            pass
    finally:
        board.stop()
    return 0
