"""Calibrating a lane of a running device over MQTT (docs/commands.md, docs/calibration.md).

Commands go to {prefix}/{store}/{device}/cmd and each is answered on .../ack with the same
id. Nothing on the device changes before save(): the lane's raw level (the detector's
smoothed level, in counts) is read through `status` until the device calls the lane still,
several readings in a row are averaged here (an HX711 glitch left out, a trend refused, as
over the serial port), and tare, span and check are computed with the firmware's own
core.lane.LaneCal, starting from the calibration the device has now. save() sends ONE
`calibrate` with `offset` and `counts_per_gram`, which the device validates as config.json
is validated, persists and hands to its detector. Without --store the store is found from the
device's retained status. The broker options and the client are the ones `monitor` and
`replay` use (host_tools.mqtt_client); a keeper thread keeps the connection alive while the
wizard waits for a human.
"""

from __future__ import annotations

import argparse
import json
import secrets
import threading
import time
from collections.abc import Callable

from host_tools.calibrate import CalibrationFailed, HostSteps, Stats, is_still, robust_stats
from host_tools.errors import UserError
from host_tools.firmware import use_firmware
from host_tools.monitor.broker_args import connect, make_client
from host_tools.mqtt_client import Client, MQTTError

# Still status readings averaged per step (--samples). At 10 SPS each is a level of two
# samples, so 10 of them hold as many as the 20 raw readings the serial port averages.
READINGS = 10
SETTLE_S = 20.0  # how long a lane may take to come to rest for a step
POLL_S = 0.2  # between status readings (a round trip adds to it)
RETAINED_S = 1.0  # how long retained status messages may take after a SUBACK
KEEP_ALIVE_S = 2.0  # the keeper's round: pings and messages while nobody else reads


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


class MqttSession(HostSteps):
    def __init__(self, link: Link, device: str, store: str, prefix: str, lane: int,
                 readings: int, say: Callable[[str], None]) -> None:
        self.link = link
        self.device = device
        self.lane = lane
        self.readings = readings
        self.say = say
        self.base = f"{prefix}/{store}/{device}"
        self.where = f"lane {lane} of {device} (store {store})"
        self.save_question = f"Send this calibration to {device}, which saves it?"
        self.changed: list[str] = []  # only save() changes the device
        self._ids = f"cal-{secrets.token_hex(3)}-"  # unique: a device replays a known id
        self._n = 0
        self._check_online()
        link.subscribe(self.base + "/ack")
        self.cal = self._current_cal()  # updated step by step, sent by save()

    @classmethod
    def open(cls, args: argparse.Namespace, say: Callable[[str], None] = print
             ) -> MqttSession:
        """args: --broker, --user, --password-file, --cafile (as monitor's), --device,
        --store, --prefix, --lane, --samples, --timeout."""
        client = make_client(args, "calibrate")
        connect(client)
        link = Link(client, args.timeout)
        try:
            store = args.store or find_store(link, args.prefix, args.device)
            return cls(link, args.device, store, args.prefix, args.lane,
                       args.samples or READINGS, say)
        except BaseException:
            link.close()
            raise

    def _current_cal(self):
        """The lane's calibration on the device now (a core.lane.LaneCal): the steps start
        from it, so a tare alone keeps its counts per gram and a span alone its offset."""
        use_firmware()
        from core.lane import LaneCal

        lanes = self.status().get("lanes") or []
        if not lanes:
            raise UserError(f"device {self.device} has no lanes (a gate?)")
        if self.lane >= len(lanes):
            raise UserError(f"--lane {self.lane}: device {self.device} has {len(lanes)} "
                            f"lane(s), 0..{len(lanes) - 1}")
        lane = lanes[self.lane]
        if not all(k in lane for k in ("raw", "offset", "counts_per_gram", "still")):
            raise UserError(f"device {self.device} does not report its lanes' raw levels "
                            "(firmware older than this shelfctl): deploy the firmware again")
        return LaneCal(lane["offset"], lane["counts_per_gram"])

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

    def status(self) -> dict:
        return self._result({"cmd": "status"})

    def _lane_now(self) -> dict:
        lane = self.status()["lanes"][self.lane]
        if lane.get("faulted"):
            raise CalibrationFailed(f"lane {self.lane} of {self.device}: its HX711 is not "
                                    "reading (wiring or chip?)")
        return lane

    # ---- readings ------------------------------------------------------------------------

    def measure(self) -> Stats:
        """The lane's raw level averaged over `readings` status readings in a row that the
        device calls still and that show no trend (a weight still settling, a creeping cell)."""
        window: list[int] = []
        told = False
        end = time.monotonic() + SETTLE_S + self.readings * POLL_S
        while True:
            lane = self._lane_now()
            if lane["still"] and lane["raw"] is not None:
                window = (window + [lane["raw"]])[-self.readings:]
                if len(window) == self.readings and is_still(window):
                    return robust_stats(window)
            else:
                window = []  # it moved: start over
                if not told:
                    self.say(f"    waiting for lane {self.lane} to come to rest ...")
                    told = True
            if time.monotonic() > end:
                raise CalibrationFailed(f"lane {self.lane} does not come to rest (no "
                                        f"{self.readings} still readings in a row): keep "
                                        "hands off the shelf and retry")
            time.sleep(POLL_S)

    def reading(self) -> str:
        lane = self._lane_now()
        raw = lane["raw"]
        if raw is None:
            return "warming up"
        return (f"{self.cal.grams(raw):10.1f} g  ({raw} counts)"
                + ("" if lane["still"] else ", moving"))

    # ---- steps (tare, span, check: HostSteps) ----------------------------------------------

    def save(self) -> dict:
        """One `calibrate` with offset and counts_per_gram: the device checks, saves and
        applies both at once."""
        cal = self.cal
        body = {"cmd": "calibrate", "lane": self.lane, "offset": cal.offset,
                "counts_per_gram": round(cal.counts_per_gram, 4)}
        self.changed.append("the calibration was sent to the device, which may have saved it")
        ack = self.command(body)
        if not ack.get("ok"):
            self.changed.clear()  # refused: nothing saved
            raise CalibrationFailed(f"device {self.device} refused: {ack.get('error')}")
        result = ack.get("result") or {}
        return {"offset": result.get("offset"), "counts_per_gram": result.get("counts_per_gram"),
                "saved": True}

    def close(self) -> None:
        self.link.close()
