"""`make bench`, the monitor part: how fast `shelfctl monitor --json` takes in messages,
next to `mosquitto_sub` on the same stream, in the same run, against a real mosquitto.

What is measured is the subscriber, not the publisher: both subscribers first make a
persistent session (clean_session=False, QoS 1) and go away; then the whole stream is
published, and the broker queues every message for each session (the queue is unlimited
here: `max_queued_messages 0`). Each subscriber then connects on its own, and the broker
hands it its queue as fast as the subscriber acknowledges it, so the rate is set by the
subscriber (the broker being the same for both): from its first message to its last, read
off its stdout (a pipe this process drains every 2 ms). Both queues hold the same messages
in the same order. Apart from the queue, the broker runs with its defaults, as a store's
would. Three rounds (the stream published anew for fresh sessions each time, the order of
the two alternating): the median rate of each, every run, and the ratio of the medians, since
one run on a shared machine varies by a third.

The stream: N event messages as a store of 32 shelves and 2 gates makes them (the firmware's
own event writer, SKUs of realistic length, about 240 bytes each), on
store/v1/bench-store/<device>/event. What each subscriber actually received is counted;
losses are reported, not hidden.

    .venv/bin/python -m bench.monitor [--messages N]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from host_tools.firmware import use_firmware
from host_tools.mosquitto import Broker, ToolMissing, tool
from host_tools.mqtt_client import Client

STORE = "bench-store"
TOPIC = f"store/v1/{STORE}/#"
TARGET_RATIO = 0.5
TARGET_RATE = 20_000
STALL_S = 15.0  # a subscriber that receives nothing for this long has stopped
READ_EVERY_S = 0.002
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux; Python >= 3.10 names it


class QueueingBroker(Broker):
    """mosquitto with an unlimited queue per persistent session (the default keeps 1000)."""

    def _config(self) -> str:
        return super()._config() + "max_queued_messages 0\nmax_queued_bytes 0\n"


def make_stream(n: int, seed: int = 1) -> list[tuple[str, bytes]]:
    """n (topic, payload) event messages: picks, put-backs, foreign objects and gate scans."""
    use_firmware()
    from core.detector import Change
    from core.event import shelf_event

    rng = random.Random(seed)
    shelves = [f"shelf-{i:02d}" for i in range(32)]
    skus = [f"SKU-{rng.randrange(10**7):07d}-{w}" for w in
            ("COLA-ZERO-330ML-CAN-6PACK", "SPARKLING-WATER-500ML-BOTTLE",
             "SALTED-POTATO-CRISPS-150G", "DARK-CHOCOLATE-70PCT-100G",
             "GREEK-YOGURT-NATURAL-4X125G", "ORGANIC-BANANAS-FAIRTRADE-1KG")]
    # app codes of 40 regulars: each scan lets one in or out
    shoppers = [f"SHOPPER-{rng.randrange(10**6):06d}-APP-7F3A9C2E" for _ in range(40)]
    seqs: dict[str, int] = {}
    ts = 1767225600000
    out = []
    for k in range(n):
        ts += rng.randrange(5, 200)
        if k % 20 == 0:
            device = f"gate-{k % 2}"
            seqs[device] = seqs.get(device, 0) + 1
            payload = (f'{{"v":1,"device":"{device}","seq":{seqs[device]},"boot":3,'
                       f'"type":"scan","ts":{ts},"uptime_ms":{ts - 1767225000000},'
                       f'"code":"{rng.choice(shoppers)}",'
                       f'"source":"scanner"}}').encode()
        else:
            device = rng.choice(shelves)
            seqs[device] = seqs.get(device, 0) + 1
            lane = rng.randrange(6)
            count = rng.choice([-1, -1, -1, -2, 1, None])
            unit = 25000 + lane * 3317
            delta = unit * count if count is not None else rng.randrange(-9000, 9000)
            before = 1_000_000 + rng.randrange(200_000)
            change = Change(lane, 0, count, delta, before, before + delta,
                            rng.randrange(60, 100), skus[lane])
            payload = shelf_event(device, seqs[device], 7, ts, ts - 1767225000000, change)
        out.append((f"store/v1/{STORE}/{device}/event", payload))
    return out


def _prepare_sessions(url: str, client_ids: list[str]) -> None:
    for cid in client_ids:
        c = Client(url, cid, clean_session=False)
        c.connect()
        c.subscribe([(TOPIC, 1)])
        c.disconnect()


def _publish(url: str, stream: list[tuple[str, bytes]]) -> float:
    c = Client(url, "bench-publisher", window=200, timeout=60)
    c.connect()
    start = time.monotonic()
    for topic, payload in stream:
        c.publish(topic, payload, qos=1)
    c.flush()
    c.disconnect()
    return time.monotonic() - start


def _measure(cmd: list[str], expected: int) -> dict:
    """Run a subscriber whose stdout is one line per message; time its first and last.

    The pipe is widened to 1 MB and read every few ms rather than at every line, so the
    reader takes little of the CPU the subscriber and the broker share with it, and never
    makes a subscriber that writes line by line wait (a full pipe would)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, 1 << 20)
    os.set_blocking(fd, False)
    started = time.monotonic()
    first = last = None
    lines = first_lines = 0
    idle_since = started
    while lines < expected:
        time.sleep(READ_EVERY_S)
        try:
            chunk = os.read(fd, 1 << 21)
        except BlockingIOError:
            if time.monotonic() - idle_since > STALL_S or proc.poll() is not None:
                break
            continue
        if not chunk:
            break
        now = time.monotonic()
        lines += chunk.count(b"\n")
        if first is None:
            first, first_lines = now, lines
        last = idle_since = now
    if proc.poll() is None:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    span = (last - first) if first is not None and last is not None else 0.0
    return {
        "received": lines,
        "lost": expected - lines,
        "seconds_first_to_last": round(span, 3),
        # the messages after the first read, over the time after it
        "messages_per_s": round((lines - first_lines) / span) if span > 0 else None,
        "seconds_from_start": round((last or started) - started, 3),
        "exit_code": proc.returncode,
        **({"stderr": stderr.strip()[-300:]} if stderr.strip() else {}),
    }


def _commands(url_host: str, port: int, url: str, messages: int, session: str) -> dict:
    return {
        "shelfctl_monitor_json": [sys.executable, "-m", "host_tools.cli", "monitor", "--json",
                                  "--broker", url, "--store", STORE, "--session",
                                  f"{session}-monitor", "--count", str(messages)],
        "mosquitto_sub": [tool("mosquitto_sub"), "-h", url_host, "-p", str(port), "-t", TOPIC,
                          "-q", "1", "-c", "-i", f"{session}-sub", "-C", str(messages)],
    }


def _summary(runs: list[dict], messages: int) -> dict:
    rates = [r["messages_per_s"] for r in runs]
    known = sorted(r for r in rates if r)
    return {
        "messages_per_s": known[len(known) // 2] if len(known) == len(runs) else None,
        "runs_messages_per_s": rates,
        "received": [r["received"] for r in runs],
        "lost": sum(messages - r["received"] for r in runs),
        "runs": runs,
    }


def run(messages: int = 100_000, rounds: int = 3) -> dict:
    """`rounds` times: publish the stream for both, then measure each (the order alternates
    between rounds); the median rate of each, every run, and what each received."""
    try:
        tool("mosquitto_sub")
        tool("mosquitto")
    except ToolMissing as e:
        return {"error": str(e)}
    stream = make_stream(messages)
    sizes = [len(p) for _, p in stream]
    runs: dict[str, list[dict]] = {"shelfctl_monitor_json": [], "mosquitto_sub": []}
    publish_s = []
    with tempfile.TemporaryDirectory() as tmp:
        broker = QueueingBroker(Path(tmp) / "broker")
        broker.start()
        try:
            for k in range(rounds):
                cmds = _commands(broker.host, broker.port, broker.url, messages, f"bench{k}")
                _prepare_sessions(broker.url, [f"bench{k}-monitor", f"bench{k}-sub"])
                publish_s.append(round(_publish(broker.url, stream), 2))
                order = list(cmds) if k % 2 == 0 else list(reversed(cmds))
                for name in order:
                    runs[name].append(_measure(cmds[name], messages))
        finally:
            broker.stop()
    monitor = _summary(runs["shelfctl_monitor_json"], messages)
    sub = _summary(runs["mosquitto_sub"], messages)
    ratio = (round(monitor["messages_per_s"] / sub["messages_per_s"], 3)
             if monitor["messages_per_s"] and sub["messages_per_s"] else None)
    rate = monitor["messages_per_s"] or 0
    return {
        "messages": messages,
        "rounds": rounds,
        "payload_bytes_mean": round(sum(sizes) / len(sizes)),
        "published_in_s": publish_s,
        "shelfctl_monitor_json": monitor,
        "mosquitto_sub": sub,
        "ratio_of_medians": ratio,
        "targets": {f"ratio >= {TARGET_RATIO}": ratio is not None and ratio >= TARGET_RATIO,
                    f">= {TARGET_RATE} messages/s": rate >= TARGET_RATE},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.monitor",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    result = run(args.messages, args.rounds)
    if "error" not in result:
        mon, sub = result["shelfctl_monitor_json"], result["mosquitto_sub"]
        print(f"monitor --json {mon['messages_per_s']} messages/s (lost {mon['lost']}), "
              f"mosquitto_sub {sub['messages_per_s']} messages/s (lost {sub['lost']}), "
              f"ratio {result['ratio_of_medians']}; medians of {args.rounds} runs of "
              f"{args.messages} messages")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
