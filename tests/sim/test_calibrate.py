"""`shelfctl calibrate` against a virtual board running the real firmware and a real mosquitto:
over MQTT (the lane's raw level read through `status`, one `calibrate` with offset and
counts_per_gram at the end) and over the serial port (raw HX711 counts read on the board,
config.json rewritten), one step a run and as the wizard fed on stdin, Ctrl-C or "no" before
the save (nothing changes), and the mistakes a user makes.

The board's lanes start with a wrong calibration; the simulated cells' truth is known
(host_tools.sim.vmroot_hw: offset(lane), CPG), so a calibration is checked against it.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from host_tools import mosquitto
from host_tools.board.transport import SerialTransport
from host_tools.cli import main
from host_tools.deploy import deploy_firmware, put_json
from host_tools.mosquitto import Broker
from host_tools.sim import vmroot_hw
from host_tools.sim.board import VirtualBoard
from host_tools.sim.board_cmd import BOARD_JSON, shelf_config
from tests.broker.conftest import Subscriber
from tests.sim.conftest import SHELFCTL, start_broker

DEVICE = "cal-shelf"
STORE = "s1"
BASE = f"store/v1/{STORE}/{DEVICE}"
LANES = 4  # 0: MQTT steps, 1: MQTT wizard, 2: port steps, 3: port wizard
WRONG_CPG = 0.8 * vmroot_hw.CPG  # the cells' true counts per gram is CPG
OFFSET_TOL = 120  # counts (0.3 g): both paths average about 2 s of readings
CPG_TOL = 0.002  # relative


@dataclass
class Rig:
    board: VirtualBoard
    broker: Broker
    status: Subscriber
    acks: Subscriber

    @property
    def mqtt(self) -> list[str]:
        return ["--broker", self.broker.url, "--device", DEVICE]

    def config(self) -> dict:
        return json.loads((self.board.dir / "config.json").read_text())

    def boot(self) -> int:
        """The device's boot count when it last came online (0: never)."""
        return max([s.get("boot", 0) for s in self._statuses() if s["state"] == "online"] or [0])

    def wait_online(self, after_boot: int = 0) -> None:
        """Until the device's latest status is `online` from a boot after `after_boot`."""
        def up() -> bool:
            last = self._statuses()[-1:]
            return bool(last) and last[0]["state"] == "online" and last[0]["boot"] > after_boot

        wait_for(up, 60, f"online after boot {after_boot}")

    def _statuses(self) -> list[dict]:
        return [json.loads(m.payload) for m in list(self.status.messages)]

    def device_lane(self, lane: int) -> dict:
        """The lane as the running device reports it (its `status` command)."""
        cid = f"test-{time.monotonic_ns()}"
        subprocess.run([mosquitto.tool("mosquitto_pub"), "-h", self.broker.host, "-p",
                        str(self.broker.port), "-q", "1", "-t", f"{BASE}/cmd", "-m",
                        json.dumps({"id": cid, "cmd": "status"})], check=True, timeout=10)

        def ack() -> dict | None:
            for m in list(self.acks.messages):
                a = json.loads(m.payload)
                if a.get("id") == cid:
                    return a
            return None

        wait_for(ack, 20, f"the ack of {cid}")
        got = ack()
        assert got is not None and got["ok"], got
        return got["result"]["lanes"][lane]


def wait_for(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def calibrate(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SHELFCTL, "calibrate", *args], capture_output=True, text=True,
                          timeout=timeout)


def wrong_config(url: str) -> dict:
    cfg = shelf_config(DEVICE, STORE, url, LANES)
    for i, lane in enumerate(cfg["lanes"]):
        lane["offset"] = vmroot_hw.offset(i) - 40000  # about 95 g off
        lane["counts_per_gram"] = WRONG_CPG
    return cfg


def assert_true_calibration(lane_cfg: dict, lane: int) -> None:
    assert abs(lane_cfg["offset"] - vmroot_hw.offset(lane)) <= OFFSET_TOL, lane_cfg
    assert abs(lane_cfg["counts_per_gram"] / vmroot_hw.CPG - 1) <= CPG_TOL, lane_cfg


@pytest.fixture(scope="module")
def shelf_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """One deployed shelf board (4 lanes, all calibrated wrong) on a real mosquitto."""
    root = tmp_path_factory.mktemp("calibrate")
    broker = start_broker(root / "broker")
    board = VirtualBoard(root / "board", baud=0)
    board.start()
    status = Subscriber(broker, f"{BASE}/status").start()
    acks = Subscriber(broker, f"{BASE}/ack").start()
    try:
        with SerialTransport(board.port, timeout=30) as t:
            deploy_firmware(t)
            put_json(t, json.loads(BOARD_JSON.read_text()), "/board.json")
            put_json(t, wrong_config(broker.url), "/config.json")
        board.hard_reset()
        r = Rig(board, broker, status, acks)
        r.wait_online()
        yield r
    finally:
        acks.stop()
        status.stop()
        board.stop()
        broker.stop()


@pytest.fixture
def rig(shelf_rig: Rig) -> Iterator[Rig]:
    """The module's board, its lanes left empty after each test: a test that fails halfway
    leaves no weight behind for the next one's tare."""
    yield shelf_rig
    board = shelf_rig.board
    for lane, grams in enumerate(board.shelf):
        if grams:
            board.load(lane, -grams, 300)


class Wizard:
    """`shelfctl calibrate` in a process whose stdin the test types into; `expect` waits for
    text on its stdout (or stderr) as a user would wait for a prompt."""

    def __init__(self, *args: str, prompts_on_stderr: bool = False) -> None:
        self.proc = subprocess.Popen([*SHELFCTL, "calibrate", *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.text = {"out": "", "err": ""}
        self._seen = 0
        self._prompts = "err" if prompts_on_stderr else "out"
        self._readers = [threading.Thread(target=self._read, args=(name, stream), daemon=True)
                         for name, stream in (("out", self.proc.stdout),
                                              ("err", self.proc.stderr))]
        for r in self._readers:
            r.start()

    def _read(self, name: str, stream) -> None:
        while ch := stream.read(1):
            self.text[name] += ch

    def expect(self, fragment: str, timeout: float = 60) -> None:
        def seen() -> bool:
            return fragment in self.text[self._prompts][self._seen:]

        wait_for(lambda: seen() or self.proc.poll() is not None, timeout, repr(fragment))
        assert seen(), f"no {fragment!r}; got:\n{self.text['out']}\n{self.text['err']}"
        self._seen = self.text[self._prompts].index(fragment, self._seen) + len(fragment)

    def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout)
        for r in self._readers:  # to the end of what it printed
            r.join(10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def wizard() -> Iterator:
    """Start Wizards; any still running when the test ends (it failed) is killed, so that it
    does not hold the board's port for the next test."""
    made: list[Wizard] = []

    def start(*args: str, prompts_on_stderr: bool = False) -> Wizard:
        made.append(Wizard(*args, prompts_on_stderr=prompts_on_stderr))
        return made[-1]

    yield start
    for w in made:
        w.kill()


# ---- over MQTT ------------------------------------------------------------------------------

def test_mqtt_steps_calibrate_a_lane_to_the_cells_truth(rig: Rig) -> None:
    p = calibrate(*rig.mqtt, "--lane", "0", "--tare", "--yes")
    assert p.returncode == 0, p.stderr
    assert "lane 0 tared: offset" in p.stdout and "(saved by the device)" in p.stdout
    # a tare alone saves the offset with the counts per gram the lane had
    lane = rig.config()["lanes"][0]
    assert abs(lane["offset"] - vmroot_hw.offset(0)) <= OFFSET_TOL, lane
    assert lane["counts_per_gram"] == WRONG_CPG
    # Any weight will do: 1100 g reads 5.5 items under the old calibration, a plateau the
    # detector judges for 7 s, but it is at rest, which is all the host waits for.
    rig.board.load(0, 1100, 300)
    time.sleep(1.0)  # a script runs the step once the weight rests
    p = calibrate(*rig.mqtt, "--lane", "0", "--span-grams", "1100", "--yes", "--json")
    assert p.returncode == 0, p.stderr
    span = json.loads(p.stdout)
    assert span["saved"] and span["offset"] == lane["offset"]  # a span keeps the offset
    assert abs(span["counts_per_gram"] / vmroot_hw.CPG - 1) <= CPG_TOL
    assert_true_calibration(rig.config()["lanes"][0], 0)  # the device saved it
    # the device reads the lane with it at once: 1100 g on it
    assert abs(rig.device_lane(0)["grams"] - 1100) < 1.5
    rig.board.load(0, -850, 300)
    time.sleep(1.0)
    before = rig.config()
    p = calibrate(*rig.mqtt, "--lane", "0", "--check-grams", "250", "--yes", "--json")
    assert p.returncode == 0, p.stderr
    check = json.loads(p.stdout)["check"]
    assert check["ok"] and abs(check["read_g"] - 250) < 0.5, check
    assert "lane 0 reads" in p.stderr  # the human line, off stdout under --json
    # a check against the wrong weight fails, with the error in grams and percent
    p = calibrate(*rig.mqtt, "--lane", "0", "--check-grams", "260", "--yes", "--json")
    assert p.returncode == 1
    check = json.loads(p.stdout)["check"]
    assert not check["ok"] and abs(check["error_g"] + 10) < 0.5 and check["error_pct"] < -3
    assert "for 260 g: error -" in p.stderr and "FAILED (more than 1 %)" in p.stderr
    assert rig.config() == before  # a check saves nothing
    rig.board.load(0, -250, 300)


def test_mqtt_wizard_fed_on_stdin_saves_once_at_the_end(rig: Rig, wizard) -> None:
    before = (rig.board.dir / "config.json").read_bytes()
    w = wizard(*rig.mqtt, "--lane", "1")
    w.expect("nothing is written before the last step")
    w.expect("Press Enter when it is empty and still.")
    w.type("")
    w.expect("Known weight for the span, in grams: ")
    w.type("a kilo")  # not a number: asked again
    w.expect("in grams: ")
    w.type("1100 g")
    w.expect("Press Enter when it rests still.")
    rig.board.load(1, 1100, 300)
    time.sleep(1.0)  # a technician presses Enter once the weight is down
    w.type("")
    w.expect("spanned:")
    w.expect("(Enter: skip): ")
    rig.board.load(1, -600, 300)
    time.sleep(1.0)
    w.type("500")
    w.expect("Press Enter when it rests still.")
    w.type("")
    w.expect(f"Send this calibration to {DEVICE}, which saves it? [Y/n] ")
    # tare, span and check changed nothing on the device so far
    assert (rig.board.dir / "config.json").read_bytes() == before
    assert rig.device_lane(1)["counts_per_gram"] == WRONG_CPG
    w.type("")
    assert w.finish() == 0, w.text
    out = w.text["out"]
    read = re.search(r"lane 1 reads ([\d.]+) g for 500 g: .*, ok", out)
    assert read and abs(float(read[1]) - 500) < 0.5, out
    assert "done (saved by the device)" in out
    saved = rig.config()["lanes"][1]
    assert_true_calibration(saved, 1)
    lane = rig.device_lane(1)  # and runs with it
    assert (lane["offset"], lane["counts_per_gram"]) == (saved["offset"],
                                                         saved["counts_per_gram"])
    rig.board.load(1, -500, 300)


@pytest.mark.parametrize("how", ["ctrl-c", "no"])
def test_mqtt_cancel_at_the_save_prompt_changes_nothing(rig: Rig, wizard, how: str) -> None:
    before = (rig.board.dir / "config.json").read_bytes()
    on_device = rig.device_lane(2)
    w = wizard(*rig.mqtt, "--lane", "2")
    w.expect("Press Enter when it is empty and still.")
    w.type("")
    w.expect("in grams: ")
    w.type("1000")
    w.expect("Press Enter when it rests still.")
    rig.board.load(2, 1000, 300)
    time.sleep(1.0)
    w.type("")
    w.expect("(Enter: skip): ")
    w.type("")
    w.expect("which saves it? [Y/n] ")
    if how == "ctrl-c":
        w.proc.send_signal(signal.SIGINT)
    else:
        w.type("n")
    assert w.finish() == 130
    assert "calibration cancelled: nothing changed" in w.text["err"]
    assert (rig.board.dir / "config.json").read_bytes() == before
    now = rig.device_lane(2)
    assert (now["offset"], now["counts_per_gram"]) == (on_device["offset"],
                                                       on_device["counts_per_gram"])
    rig.board.load(2, -1000, 300)


def test_mqtt_ctrl_c_at_the_first_prompt_changes_nothing(rig: Rig, wizard) -> None:
    before = (rig.board.dir / "config.json").read_bytes()
    w = wizard(*rig.mqtt, "--lane", "2")
    w.expect("Press Enter when it is empty and still.")
    w.proc.send_signal(signal.SIGINT)
    assert w.finish() == 130
    assert "calibration cancelled: nothing changed" in w.text["err"]
    assert (rig.board.dir / "config.json").read_bytes() == before


def test_mqtt_mistakes_are_one_line(rig: Rig) -> None:
    p = calibrate("--broker", rig.broker.url, "--device", "no-such-shelf", "--tare", "--yes")
    assert p.returncode == 2
    assert p.stderr.startswith("shelfctl: no status from device no-such-shelf")
    assert len(p.stderr.splitlines()) == 1
    p = calibrate(*rig.mqtt, "--lane", "7", "--tare", "--yes")
    assert (p.returncode, p.stderr) == (2, f"shelfctl: --lane 7: device {DEVICE} has 4 lane(s), "
                                           "0..3\n")
    # a device whose last word (retained) was its will, or a fault
    for device, status, said in (
            ("gone-1", {"state": "offline", "device": "gone-1"}, "device gone-1 is offline"),
            ("bad-1", {"state": "fault", "device": "bad-1",
                       "errors": ["config.json: lanes: required"]},
             "device bad-1 reports a fault: config.json: lanes: required")):
        subprocess.run([mosquitto.tool("mosquitto_pub"), "-h", rig.broker.host, "-p",
                        str(rig.broker.port), "-r", "-q", "1", "-t",
                        f"store/v1/{STORE}/{device}/status", "-m", json.dumps(status)],
                       check=True, timeout=10)
        p = calibrate("--broker", rig.broker.url, "--device", device, "--tare", "--yes")
        assert p.returncode == 1
        assert p.stderr.startswith(f"shelfctl: error: {said}"), p.stderr
    # a store the device is not in: nobody answers, and the error names the device
    p = calibrate(*rig.mqtt, "--store", "elsewhere", "--timeout", "1", "--tare", "--yes")
    assert p.returncode == 1
    assert p.stderr == (f"shelfctl: error: device {DEVICE} did not answer status within 1 s "
                        f"(offline, or not on store/v1/elsewhere/{DEVICE})\n")


# ---- over the serial port -------------------------------------------------------------------

def test_port_steps_write_config_json_and_restart_the_board(rig: Rig) -> None:
    before = rig.config()
    boot = rig.boot()
    port = ["--port", rig.board.port, "--samples", "10"]
    p = calibrate(*port, "--lane", "2", "--tare", "--yes")
    assert p.returncode == 0, p.stderr
    assert "lane 2 tared: offset" in p.stdout and "board restarted" in p.stdout
    rig.board.load(2, 2000, 300)
    time.sleep(1.0)  # the ramp and its ringing
    p = calibrate(*port, "--lane", "2", "--span-grams", "2000", "--yes", "--json")
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)
    assert result["saved"] and result["restarted"]
    after = rig.config()
    assert_true_calibration(after["lanes"][2], 2)
    # read-modify-write: every other key and lane as it was
    for lane in (0, 1, 3):
        assert after["lanes"][lane] == before["lanes"][lane]
    assert {k: v for k, v in after.items() if k != "lanes"} == \
        {k: v for k, v in before.items() if k != "lanes"}
    assert {k: v for k, v in after["lanes"][2].items() if k not in ("offset", "counts_per_gram")} \
        == {k: v for k, v in before["lanes"][2].items() if k not in ("offset", "counts_per_gram")}
    rig.board.load(2, -1750, 300)
    time.sleep(1.0)
    p = calibrate(*port, "--lane", "2", "--check-grams", "250", "--yes", "--json")
    assert p.returncode == 0, p.stderr
    check = json.loads(p.stdout)["check"]
    assert check["ok"] and abs(check["read_g"] - 250) < 1.0, check
    # main.py ran again after each of the three runs, and reads the new calibration too
    rig.wait_online(boot + 2)
    p = calibrate(*rig.mqtt, "--lane", "2", "--check-grams", "250", "--yes")
    assert p.returncode == 0, p.stdout + p.stderr
    rig.board.load(2, -250, 300)


def test_port_wizard_fed_on_stdin_with_json(rig: Rig, wizard) -> None:
    boot = rig.boot()
    w = wizard("--port", rig.board.port, "--samples", "10", "--lane", "3", "--json",
               prompts_on_stderr=True)
    w.expect("nothing is written before the last step")
    w.expect("Press Enter when it is empty and still.")
    w.type("")
    w.expect("Known weight for the span, in grams: ")
    w.type("1500")
    w.expect("Press Enter when it rests still.")
    rig.board.load(3, 1500, 300)
    time.sleep(1.0)
    w.type("")
    w.expect("(Enter: skip): ")
    rig.board.load(3, -1000, 300)
    time.sleep(1.0)
    w.type("500")
    w.expect("Press Enter when it rests still.")
    w.type("")
    w.expect("restart it? [Y/n] ")
    w.type("")
    assert w.finish() == 0, w.text
    result = json.loads(w.text["out"])  # stdout holds only the JSON
    assert result["check"]["ok"] and abs(result["check"]["error_g"]) < 1.0
    assert result["saved"]
    assert_true_calibration(rig.config()["lanes"][3], 3)
    rig.wait_online(boot)
    rig.board.load(3, -500, 300)


def test_port_ctrl_c_at_the_save_prompt_writes_nothing(rig: Rig, wizard) -> None:
    before = (rig.board.dir / "config.json").read_bytes()
    boot = rig.boot()
    w = wizard("--port", rig.board.port, "--samples", "10", "--lane", "1")
    w.expect("Press Enter when it is empty and still.")
    w.type("")
    w.expect("in grams: ")
    w.type("100")
    w.expect("Press Enter when it rests still.")
    rig.board.load(1, 100, 300)
    time.sleep(1.0)
    w.type("")
    w.expect("(Enter: skip): ")
    w.type("")
    w.expect("restart it? [Y/n] ")
    # A technician thinks it over for longer than the 10 s of the watchdog the stopped
    # application armed: the session keeps feeding it, so the board does not reset under
    # the wizard (a reset would start main.py: a new boot online).
    time.sleep(11)
    assert rig.boot() == boot
    w.proc.send_signal(signal.SIGINT)
    assert w.finish() == 130
    assert "calibration cancelled: nothing changed" in w.text["err"]
    assert (rig.board.dir / "config.json").read_bytes() == before
    rig.wait_online(boot)  # the board was given back running
    rig.board.load(1, -100, 300)


def test_port_mistakes_are_one_line(rig: Rig, board: VirtualBoard) -> None:
    p = calibrate("--port", rig.board.port, "--lane", "4", "--tare", "--yes")
    assert (p.returncode, p.stderr) == (2, "shelfctl: --lane 4: the board's config.json has 4 "
                                           "lane(s), 0..3\n")
    p = calibrate("--port", board.port, "--tare", "--yes")  # MicroPython, nothing else
    assert (p.returncode, p.stderr) == (2, f"shelfctl: no config.json on the board at "
                                           f"{board.port}: provision the board first\n")


# ---- mistakes caught before any board is touched ---------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--tare"], "one of the arguments --port --broker is required"),
    (["--broker", "mqtt://127.0.0.1:1", "--tare"], "--broker needs --device ID"),
    (["--port", "/dev/null", "--device", "x"], "--device is for --broker, not --port"),
    (["--port", "/dev/null", "--span-grams", "-5"], "--span-grams must be more than 0"),
    (["--port", "/dev/null", "--yes"], "--yes skips the prompt of one step"),
    (["--broker", "mqtt://h", "--device", "x", "--samples", "2"], "--samples must be 3..1000"),
    (["--port", "/dev/null", "--tare", "--span-grams", "5"], "not allowed with argument"),
    (["--broker", "http://x", "--device", "x"], "must be mqtt://host[:port]"),
    (["--broker", "mqtt://127.0.0.1:1", "--device", "x"], "broker mqtt://127.0.0.1:1: cannot"),
    (["--broker", "mqtt://h", "--device", "x", "--cafile", "ca.pem"], "for an mqtts://"),
    (["--port", "/dev/null", "--cafile", "ca.pem"], "--cafile is for --broker, not --port"),
    (["--port", "/dev/no-such-port"], "no such port: /dev/no-such-port"),
])
def test_usage_mistakes_exit_2_with_one_line(args: list[str], message: str, capsys) -> None:
    try:
        code = main(["calibrate", *args])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err
