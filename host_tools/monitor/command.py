"""`shelfctl monitor`: watch a store's MQTT traffic live, or print it as JSON lines.

Subscribes to `{prefix}/{store}/#` (every store: `{prefix}/+/#`). Without --json, a terminal
view (view.py over state.py) redrawn a few times a second; with --json, one JSON object per
message on stdout (record.py), written per read from the broker, not per message. --record
writes the same lines to a file in either mode (`shelfctl replay` sends them back). A lost
connection is retried every few seconds; --session keeps the subscription and the messages
of the meantime at the broker.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import IO

from host_tools.errors import UserError
from host_tools.monitor.broker_args import add_broker_arguments, connect, make_client
from host_tools.monitor.record import LineWriter
from host_tools.monitor.state import MonitorState
from host_tools.mqtt_client import (
    BrokerUnreachable,
    Client,
    ConnectionLost,
    MQTTError,
    Refused,
)

READ_WAIT_S = 0.25  # the longest a read waits: how late --duration and the view can be
RETRY_S = (1, 2, 5)  # waits between reconnection attempts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_broker_arguments(parser)
    parser.add_argument("--store", metavar="S", help="only this store (default: every store)")
    parser.add_argument("--prefix", default="store/v1",
                        help="topic prefix, the devices' broker.prefix (default store/v1)")
    parser.add_argument("--json", action="store_true",
                        help="no view: one JSON object per message on stdout")
    parser.add_argument("--record", metavar="FILE",
                        help="also write every message to FILE, one JSON object a line "
                             "(replaced if it exists)")
    parser.add_argument("--count", type=int, metavar="N", help="stop after N messages")
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1,
                        help="subscription QoS (default 1)")
    parser.add_argument("--session", metavar="ID",
                        help="persistent session under this client id: the broker keeps "
                             "QoS 1 messages for it while the monitor is away")
    parser.add_argument("--refresh", type=float, default=4.0, metavar="HZ",
                        help="view redraws per second (default 4)")


def _topic_filter(args: argparse.Namespace) -> str:
    prefix = args.prefix.strip("/")
    if not prefix or "+" in prefix or "#" in prefix:
        raise UserError(f"--prefix {args.prefix!r}: a topic prefix without wildcards")
    if args.store is None:
        return f"{prefix}/+/#"
    if not args.store or any(c in args.store for c in "/+#"):
        raise UserError(f"--store {args.store!r}: a store id has no '/', '+' or '#'")
    return f"{prefix}/{args.store}/#"


def _check(args: argparse.Namespace) -> None:
    if args.count is not None and args.count < 1:
        raise UserError("--count must be at least 1")
    if args.duration is not None and not args.duration > 0:
        raise UserError("--duration must be more than 0 seconds")
    if not args.refresh > 0:
        raise UserError("--refresh must be more than 0")


# ---- where messages go --------------------------------------------------------------------


class JsonOut:
    """Lines to stdout, one write and flush per read from the broker."""

    def __init__(self) -> None:
        self.out = sys.stdout.buffer

    def __enter__(self) -> JsonOut:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def lines(self, data: bytes) -> None:
        try:
            self.out.write(data)
            self.out.flush()
        except BrokenPipeError:
            # the reader left (`| head`): no more output, and no error at exit either
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise

    def note(self, text: str) -> None:
        print(f"shelfctl monitor: {text}", file=sys.stderr, flush=True)

    def tick(self) -> None:
        pass


class LiveView:
    """The rich view, redrawn at most `refresh` times a second. On a terminal it updates in
    place; into a file or pipe rich prints the last screen when the monitor stops."""

    def __init__(self, state: MonitorState, title: str, refresh: float) -> None:
        from rich.console import Console
        from rich.live import Live

        self.state = state
        self.title = title
        self.status = "connected"
        self.period = 1.0 / refresh
        self.console = Console()
        self.live = Live(console=self.console, auto_refresh=False, redirect_stdout=False,
                         redirect_stderr=False)
        self._drawn = 0.0

    def __enter__(self) -> LiveView:
        self.live.start()
        self.tick(force=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.tick(force=True)
        self.live.stop()

    def lines(self, data: bytes) -> None:
        pass

    def note(self, text: str) -> None:
        self.status = text
        self.tick(force=True)

    def tick(self, force: bool = False) -> None:
        from host_tools.monitor.view import render

        now = time.monotonic()
        if not force and now - self._drawn < self.period:
            return
        self._drawn = now
        header = f"{self.title}  [{self.status}]"
        self.live.update(render(self.state, header, time.time(), self.console.height),
                         refresh=True)


# ---- the loop -----------------------------------------------------------------------------


def _reconnect(client: Client, topic: str, qos: int, sink: JsonOut | LiveView,
               deadline: float) -> bool:
    """Connect again and resubscribe, retrying until deadline; False if it passed."""
    attempt = 0
    while True:
        wait = RETRY_S[min(attempt, len(RETRY_S) - 1)]
        attempt += 1
        if time.monotonic() + wait > deadline:
            return False
        time.sleep(wait)
        try:
            client.connect()
            client.subscribe([(topic, qos)], wait=False)
        except (BrokerUnreachable, ConnectionLost) as e:
            sink.note(f"reconnecting: {e}")
            continue
        except MQTTError as e:
            raise UserError(f"broker {client.url}: {e}") from None
        sink.note("connected")
        return True


def _pump(client: Client, topic: str, args: argparse.Namespace, sink: JsonOut | LiveView,
          state: MonitorState | None, record: IO[bytes] | None) -> int:
    """Receive until --count or --duration (or Ctrl-C); returns the messages received."""
    writer = LineWriter()
    count = args.count or math.inf
    deadline = time.monotonic() + args.duration if args.duration else math.inf
    received = 0
    while received < count:
        wait = min(READ_WAIT_S, deadline - time.monotonic())
        if wait <= 0:
            break
        try:
            messages = client.receive(wait)
        except Refused as e:
            raise UserError(f"broker {client.url}: {e}") from None
        except ConnectionLost as e:
            sink.note(f"{e}; reconnecting")
            if not _reconnect(client, topic, args.qos, sink, deadline):
                break
            continue
        if messages:
            if received + len(messages) > count:
                messages = messages[:int(count - received)]
            now = time.time()
            now_text = b"%.3f" % now
            lines = []
            for topic_name, payload, retain, qos in messages:
                line, value = writer.line_at(now_text, topic_name, payload, retain, qos)
                lines.append(line)
                if state is not None:
                    state.ingest(now, topic_name, value, retain)
            data = b"".join(lines)
            sink.lines(data)
            if record is not None:
                record.write(data)
                record.flush()
            received += len(messages)
        sink.tick()
    return received


def run(args: argparse.Namespace) -> int:
    _check(args)
    topic = _topic_filter(args)
    client = make_client(args, "monitor", session=args.session)
    record = None
    if args.record:
        try:
            record = open(args.record, "wb")  # closed in the finally below
        except OSError as e:
            raise UserError(f"cannot write --record {args.record}: {e.strerror}") from None
    try:
        connect(client)
        try:  # without waiting for SUBACK: a --session's backlog streams out meanwhile
            client.subscribe([(topic, args.qos)], wait=False)
        except MQTTError as e:
            raise UserError(f"broker {client.url}: {e}") from None
        state = None if args.json else MonitorState()
        sink: JsonOut | LiveView
        if state is None:
            sink = JsonOut()
        else:
            sink = LiveView(state, f"shelfctl monitor  {args.broker}  {topic}", args.refresh)
        with sink:
            try:
                _pump(client, topic, args, sink, state, record)
            except KeyboardInterrupt:
                pass  # Ctrl-C is how a live view ends
    finally:
        client.disconnect()
        if record is not None:
            record.close()
    return 0
