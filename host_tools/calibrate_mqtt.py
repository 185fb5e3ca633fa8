"""Calibrating a lane of a running device over MQTT (docs/commands.md).

Commands go to {prefix}/{store}/{device}/cmd and each is answered on .../ack with the same
id. The device's own `tare` and `calibrate` do the work on its smoothed level, refuse while
the lane is not still (retried here until it settles) and save the result in its config.json
themselves; `status` gives each lane's grams, for the live display and the check. Without
--store the store is found from the device's retained status. The broker options and the
client are the ones `monitor` and `replay` use (host_tools.mqtt_client); a keeper thread keeps
the connection alive while the wizard waits for a human.
"""

from __future__ import annotations

import argparse
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator

from host_tools.calibrate import CHECK_FLOOR_G, CalibrationFailed, settled
from host_tools.errors import UserError
from host_tools.monitor.broker_args import connect, make_client
from host_tools.mqtt_client import Client, MQTTError

SETTLE_S = 15.0  # how long a lane may take to come to rest for a step
POLL_S = 0.4  # between status readings while waiting for a lane
CHECK_READINGS = 5  # status readings that must agree for a check
SPAN_ATTEMPTS = 3
SPAN_AGREE = 0.002  # after a span the lane reads its weight within 0.2 % (or 1 g)
FAR = 0.05  # readings more than 5 % off after a span: the device's level was not at rest
RETAINED_S = 1.0  # how long retained status messages may take after a SUBACK
KEEP_ALIVE_S = 2.0  # the keeper's round: pings and messages while nobody else reads


def _spread(grams: float) -> float:
    # how far readings of a lane at rest may scatter: the device reads one 150 ms level
    return max(2.0, 0.005 * grams)


def _json(payload: bytes) -> dict | None:
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class Link:
    """The client behind a lock, every message it receives kept (topic, payload) for
    wait_for(); a keeper thread reads (and pings) whenever nobody else does."""

    def __init__(self, client: Client, timeout: float) -> None:
        self.client = client
        self.timeout = timeout  # for each answer from the device
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._keeper = threading.Thread(target=self._keep, name="calibrate-mqtt", daemon=True)
        self._keeper.start()

    def _keep(self) -> None:
        while not self._stop.wait(KEEP_ALIVE_S):
            try:
                with self._lock:
                    self._take(0.05)
            except MQTTError:
                return  # the next command reports it

    def _take(self, seconds: float) -> None:
        self.messages.extend((t, p) for t, p, _, _ in self.client.receive(seconds))

    def subscribe(self, topic: str) -> None:
        with self._lock:
            self._do(self.client.subscribe, [(topic, 1)])

    def publish(self, topic: str, payload: bytes) -> None:
        with self._lock:
            self._do(self.client.publish, topic, payload, 1)

    def wait_for(self, found: Callable[[], object], timeout: float) -> object:
        """found() once it is truthy, or its last falsy value after timeout."""
        end = time.monotonic() + timeout
        while True:
            with self._lock:
                value = found()
                left = end - time.monotonic()
                if value or left <= 0:
                    return value
                self._do(self._take, min(left, 0.2))

    def _do(self, call: Callable[..., object], *args: object) -> object:
        try:
            return call(*args)
        except MQTTError as exc:
            raise CalibrationFailed(f"broker {self.client.url}: {exc}") from None

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self.client.disconnect()


def find_store(link: Link, prefix: str, device: str) -> str:
    """The store whose retained status names `device`."""
    link.subscribe(f"{prefix}/+/{device}/status")
    head, tail = f"{prefix}/", f"/{device}/status"

    def stores() -> set[str]:
        return {t[len(head):-len(tail)] for t, _ in link.messages
                if t.startswith(head) and t.endswith(tail)}

    link.wait_for(stores, RETAINED_S)
    found = sorted(stores())
    if not found:
        raise UserError(f"no status from device {device} on {link.client.url} (nothing "
                        f"retained under {prefix}/+/{device}/status): check the id, or give "
                        "--store")
    if len(found) > 1:
        raise UserError(f"device {device} has a status in {len(found)} stores "
                        f"({', '.join(found)}): give --store")
    return found[0]


class MqttSession:
    applies_at_once = True  # the device saves a tare or span as soon as it is done

    def __init__(self, link: Link, device: str, store: str, prefix: str, lane: int,
                 say: Callable[[str], None]) -> None:
        self.link = link
        self.device = device
        self.lane = lane
        self.say = say
        self.base = f"{prefix}/{store}/{device}"
        self.where = f"lane {lane} of {device} (store {store})"
        self.changed: list[str] = []
        self._ids = f"cal-{secrets.token_hex(3)}-"  # unique: a device replays a known id
        self._n = 0

    @classmethod
    def open(cls, args: argparse.Namespace, say: Callable[[str], None] = print
             ) -> MqttSession:
        """args: --broker, --user, --password-file, --cafile (as monitor's), --device,
        --store, --prefix, --lane, --timeout."""
        client = make_client(args, "calibrate")
        connect(client)
        link = Link(client, args.timeout)
        try:
            store = args.store or find_store(link, args.prefix, args.device)
            session = cls(link, args.device, store, args.prefix, args.lane, say)
            session._check_online()
            link.subscribe(session.base + "/ack")
            lanes = session.status().get("lanes") or []
            if not lanes:
                raise UserError(f"device {args.device} has no lanes (a gate?)")
            if args.lane >= len(lanes):
                raise UserError(f"--lane {args.lane}: device {args.device} has {len(lanes)} "
                                f"lane(s), 0..{len(lanes) - 1}")
            return session
        except BaseException:
            link.close()
            raise

    def _check_online(self) -> None:
        # The retained status says how the device last left the broker (will: offline).
        topic = self.base + "/status"
        self.link.subscribe(topic)
        last = self.link.wait_for(
            lambda: [p for t, p in self.link.messages if t == topic][-1:], RETAINED_S)
        status = _json(last[0]) if last else None
        if status is None:
            return  # never seen: a command will tell
        state = status.get("state")
        if state == "offline":
            raise CalibrationFailed(f"device {self.device} is offline (its last status on "
                                    f"{self.base}/status)")
        if state == "fault":
            errors = status.get("errors") or ["no detail"]
            raise CalibrationFailed(f"device {self.device} reports a fault: {errors[0]}")

    # ---- commands ------------------------------------------------------------------------

    def command(self, body: dict) -> dict:
        """Send one command; its ack. CalibrationFailed when no ack comes in time."""
        self._n += 1
        cid = self._ids + str(self._n)
        msg = dict(body, id=cid)
        self.link.publish(self.base + "/cmd", json.dumps(msg).encode())
        ack_topic = self.base + "/ack"

        def ack() -> dict | None:
            for topic, payload in self.link.messages:
                a = _json(payload) if topic == ack_topic else None
                if a is not None and a.get("id") == cid:
                    return a
            return None

        got = self.link.wait_for(ack, self.link.timeout)
        if not got:
            raise CalibrationFailed(f"device {self.device} did not answer {body['cmd']} within "
                                    f"{self.link.timeout:g} s (offline, or not on {self.base})")
        assert isinstance(got, dict)
        return got

    def _result(self, body: dict) -> dict:
        ack = self.command(body)
        if not ack.get("ok"):
            raise CalibrationFailed(f"device {self.device} refused: {ack.get('error')}")
        return ack.get("result") or {}

    def _when_still(self, body: dict) -> dict:
        # tare and calibrate need a still lane; a weight just put down rings for a while
        end = time.monotonic() + SETTLE_S
        told = False
        while True:
            ack = self.command(body)
            error = str(ack.get("error") or "")
            if ack.get("ok") or "not still" not in error or time.monotonic() > end:
                break
            if not told:
                self.say(f"    waiting for lane {self.lane} to come to rest ...")
                told = True
            time.sleep(POLL_S)
        if not ack.get("ok"):
            raise CalibrationFailed(f"device {self.device} refused: {error}")
        return ack.get("result") or {}

    def status(self) -> dict:
        return self._result({"cmd": "status"})

    def grams(self) -> float | None:
        lane = self.status()["lanes"][self.lane]
        if lane.get("faulted"):
            raise CalibrationFailed(f"lane {self.lane} of {self.device}: its HX711 is not "
                                    "reading (wiring or chip?)")
        return lane.get("grams")

    # ---- steps ---------------------------------------------------------------------------

    def reading(self) -> str:
        g = self.grams()
        return "warming up" if g is None else f"{g:10.1f} g"

    def tare(self) -> dict:
        result = self._when_still({"cmd": "tare", "lane": self.lane})
        self.changed.append("tare")
        return {"offset": result["lanes"][0]["offset"]}

    def span(self, grams: float) -> dict:
        # The device sees a weight move a couple of samples late, so it may take its level
        # while the weight is still coming down. Once spanned the lane reads grams: if it
        # does not come to rest at the known weight, span again (the weight is still on it).
        for attempt in range(SPAN_ATTEMPTS):
            result = self._when_still({"cmd": "calibrate", "lane": self.lane, "grams": grams})
            if "span" not in self.changed:
                self.changed.append("span")
            if self._reads(grams):
                return {"counts_per_gram": round(result["counts_per_gram"], 4)}
            if attempt < SPAN_ATTEMPTS - 1:
                self.say(f"    lane {self.lane} does not read {grams:g} g after the span (the "
                         "weight was still moving?): spanning again")
        raise CalibrationFailed(f"lane {self.lane} does not read {grams:g} g after "
                                f"{SPAN_ATTEMPTS} spans: is the weight resting on it alone?")

    def _reads(self, grams: float) -> bool:
        agree = max(CHECK_FLOOR_G, SPAN_AGREE * grams)
        for window in self._windows():
            mean = sum(window) / len(window)
            if settled(window, _spread(grams)) and abs(mean - grams) <= agree:
                return True
            if all(abs(g - grams) > FAR * grams for g in window):
                return False  # nowhere near: no use waiting
        return False

    def check(self, grams: float) -> float:
        """The mean of CHECK_READINGS status readings that agree (the lane at rest)."""
        window: list[float] = []
        for window in self._windows():
            if settled(window, _spread(grams)):
                return sum(window) / len(window)
        raise CalibrationFailed(f"lane {self.lane} does not come to rest (last readings "
                                f"{', '.join(f'{g:.1f}' for g in window)} g)")

    def _windows(self) -> Iterator[list[float]]:
        """The last CHECK_READINGS readings, after each new one, for up to SETTLE_S."""
        window: list[float] = []
        end = time.monotonic() + SETTLE_S
        while time.monotonic() <= end:
            g = self.grams()
            if g is not None:
                window = (window + [g])[-CHECK_READINGS:]
                if len(window) == CHECK_READINGS:
                    yield window
            time.sleep(POLL_S)

    def save(self) -> dict:
        return {"saved": True}  # the device saved each step in its config.json

    def close(self) -> None:
        self.link.close()
