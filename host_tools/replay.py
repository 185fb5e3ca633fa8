"""`shelfctl replay FILE --broker URL [--speed X]`: publish a recording again.

FILE is what `shelfctl monitor --record` (or `--json`) wrote: one message a line. Each goes
out with its topic, payload bytes, retain flag and QoS (1 for a QoS 2 record), at the same
distance in time from the first as when it was received, divided by --speed (2: twice as
fast; 0: as fast as the broker acknowledges). The whole file is read and checked before
anything is sent, so a bad line stops the replay before it starts, naming the line.

A retained message that arrived while the recording monitor was subscribed carries no
retain flag (MQTT 3.1.1 sets it only on messages sent from the broker's store at subscribe
time), so it is replayed as a plain message.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from host_tools.errors import UserError
from host_tools.monitor.broker_args import add_broker_arguments, connect, make_client
from host_tools.monitor.record import Record, parse_line
from host_tools.mqtt_client import MQTTError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="a recording (monitor --record)")
    add_broker_arguments(parser)
    parser.add_argument("--speed", type=float, default=1.0, metavar="X",
                        help="time scale: 2 twice as fast, 0 as fast as possible (default 1)")


def read_recording(path: Path) -> list[Record]:
    """Every record of the file; UserError naming the first bad line."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    records = []
    # split on "\n" only: a payload may hold other line separators (U+2028...)
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            records.append(parse_line(raw.decode()))
        except UnicodeDecodeError:
            raise UserError(f"{path}:{number}: not UTF-8 text") from None
        except ValueError as e:
            raise UserError(f"{path}:{number}: {e}") from None
    if not records:
        raise UserError(f"{path}: no messages in it")
    return records


def run(args: argparse.Namespace) -> int:
    if args.speed < 0:
        raise UserError("--speed must be 0 (as fast as possible) or more")
    records = read_recording(Path(args.file))
    client = make_client(args, "replay")
    connect(client)
    start = time.monotonic()
    t0 = records[0].t
    sent = 0
    try:
        for r in records:
            if args.speed > 0:
                due = start + max(0.0, r.t - t0) / args.speed
                if (wait := due - time.monotonic()) > 0:
                    client.idle(wait)
            client.publish(r.topic, r.payload, min(r.qos, 1), r.retain)
            sent += 1
        client.flush()
    except MQTTError as e:  # a failure, not a user mistake: exit code 1
        raise RuntimeError(f"broker {client.url}: {e}; replay stopped after {sent} of "
                           f"{len(records)} messages") from None
    finally:
        client.disconnect()
    seconds = time.monotonic() - start
    print(f"replayed {len(records)} messages in {seconds:.2f} s")
    return 0
