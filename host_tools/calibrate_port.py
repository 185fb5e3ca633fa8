"""Calibrating a lane over the board's serial port.

The application is stopped (ports.connect interrupts main.py) so nothing else clocks the
HX711s; the board reads them with the firmware's own driver (drivers.hx711.HX711Bank, on the
pins and gain config.json and board.json give, read by the firmware's own apps.config) and
sends back the lane's raw counts; averaging, tare and span happen here with the firmware's
core.lane.LaneCal. Nothing is written before save(): then config.json is read, the lane's
offset and counts_per_gram changed, the whole file validated as the board will validate it,
written (verified by SHA-256) and the board soft-reset, which runs main.py again. The board is
restarted however the session ends, so a cancelled calibration leaves it running as before.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from host_tools.board import files, ports
from host_tools.board.transport import BoardExecError, SerialTransport, TransportError
from host_tools.calibrate import CalibrationFailed, HostSteps, Stats, is_still, robust_stats
from host_tools.deploy import put_json
from host_tools.errors import UserError
from host_tools.firmware import use_firmware

ATTEMPTS = 3  # reads of a lane that is not still, before giving up
LIVE_SAMPLES = 3  # readings per refresh of the live display

# Board side. The watchdog the application armed needs nothing here: its Ctrl-C handler
# relaxed it to an hour (apps.device.relax_watchdog), so the wizard may wait for a human.
# One HX711Bank for the session (making one power-cycles the chips and discards their
# settling conversions), and N fresh readings of one lane.
_BANK = """
try:
    _cal_bank
except NameError:
    from array import array
    from drivers.hx711 import HX711Bank
    _cal_bank = HX711Bank({sck}, {douts}, {gain})
    _cal_vals = array('i', [0] * _cal_bank.n)
def _cal_read(lane, n):
    out = []
    misses = 0
    while len(out) < n and misses < 30:
        if _cal_bank.read_into(_cal_vals, 200) >> lane & 1:
            out.append(_cal_vals[lane])
        else:
            misses += 1
    return out
"""


class PortSession(HostSteps):
    # nothing reaches the board before save()
    save_question = "Write this calibration to config.json on the board and restart it?"

    def __init__(self, t: SerialTransport, lane: int, config_raw: dict, board_bytes: bytes,
                 samples: int, say: Callable[[str], None]) -> None:
        use_firmware()
        from apps import config

        self.t = t
        self.lane = lane
        self.samples = samples
        self.say = say
        self.changed: list[str] = []  # never anything: save() is the only write
        self.where = f"lane {lane} of the board on {t.port}"
        self._board_bytes = board_bytes
        cfg = config.parse(json.dumps(config_raw).encode(), board_bytes)
        if not cfg.ok:
            raise UserError(f"config.json on the board does not validate ({cfg.errors[0]}): "
                            "fix it before calibrating")
        if cfg.data["role"] != "shelf":
            raise UserError(f"the board on {t.port} is a {cfg.data['role']}: no lanes")
        lanes = len(cfg.data["lanes"])
        if lane >= lanes:
            raise UserError(f"--lane {lane}: the board's config.json has {lanes} lane(s), "
                            f"0..{lanes - 1}")
        self.cal = cfg.lane_cals()[lane]  # updated step by step, saved by save()
        sck, douts, gain = cfg.hx711()
        self._lock = threading.RLock()  # one exchange on the port at a time
        self._exec(_BANK.format(sck=sck, douts=list(douts), gain=gain))

    @classmethod
    def open(cls, port: str, lane: int, baud: int = 115200, samples: int = 20,
             say: Callable[[str], None] = print) -> PortSession:
        t = ports.connect(port, baud)
        try:
            config_raw = _read_json(t, "/config.json", "provision the board first")
            board_bytes = _read(t, "/board.json", "deploy with --board NAME first")
            return cls(t, lane, config_raw, board_bytes, samples, say)
        except BaseException:
            _restart(t)
            raise

    # ---- readings ------------------------------------------------------------------------

    def _exec(self, code: str, timeout: float = 30) -> str:
        try:
            with self._lock:
                return self.t.exec(code, timeout=timeout)
        except BoardExecError as exc:
            if "drivers.hx711" in exc.traceback or "ImportError" in exc.traceback:
                raise UserError(f"no firmware on the board at {self.t.port} ({exc}): run "
                                "shelfctl deploy first") from None
            raise CalibrationFailed(f"on the board: {exc}") from None
        except TransportError as exc:
            raise CalibrationFailed(f"{self.t.port}: {exc}") from None

    def _counts(self, n: int) -> list[int]:
        # at 10 SPS a reading takes 100 ms; a lane in FAULT costs 30 timeouts of 200 ms
        out = self._exec(f"print(_cal_read({self.lane}, {n}))", timeout=10 + 0.2 * n).strip()
        values = json.loads(out)
        if len(values) < n:
            raise CalibrationFailed(f"lane {self.lane}: its HX711 gave {len(values)} of {n} "
                                    "readings (not ready: wiring or chip?)")
        return values

    def measure(self) -> Stats:
        """The lane's average raw counts over `samples` readings, once they are still."""
        for attempt in range(ATTEMPTS):
            values = self._counts(self.samples)
            if is_still(values):
                return robust_stats(values)
            if attempt < ATTEMPTS - 1:
                self.say(f"    lane {self.lane} is still moving; reading again ...")
        raise CalibrationFailed(f"lane {self.lane} does not come to rest (its readings drift "
                                f"over {ATTEMPTS} tries): keep hands off the shelf and retry")

    def reading(self) -> str:
        raw = robust_stats(self._counts(LIVE_SAMPLES)).mean
        return f"{self.cal.grams(raw):10.1f} g  ({raw:.0f} counts)"

    # ---- steps (tare, span, check: HostSteps) ----------------------------------------------

    def save(self) -> dict:
        """Read-modify-write config.json: only this lane's offset and counts_per_gram."""
        with self._lock:
            return self._save()

    def _save(self) -> dict:
        from apps import config

        current = _read_json(self.t, "/config.json", "provision the board first")
        lane = current["lanes"][self.lane]
        lane["offset"] = self.cal.offset
        lane["counts_per_gram"] = round(self.cal.counts_per_gram, 4)
        checked = config.parse(json.dumps(current).encode(), self._board_bytes)
        if not checked.ok:
            raise CalibrationFailed(f"not saved, the board would refuse it: {checked.errors[0]}")
        try:
            put_json(self.t, current, "/config.json")
        except (BoardExecError, TransportError) as exc:
            raise CalibrationFailed(f"config.json not written: {exc}") from None
        return {"offset": self.cal.offset, "counts_per_gram": lane["counts_per_gram"],
                "saved": True, "restarted": True}

    def close(self) -> None:
        with self._lock:
            _restart(self.t)


def _read(t: SerialTransport, path: str, hint: str) -> bytes:
    try:
        return files.get(t, path)
    except BoardExecError:
        raise UserError(f"no {path.lstrip('/')} on the board at {t.port}: {hint}") from None


def _read_json(t: SerialTransport, path: str, hint: str) -> dict:
    data = _read(t, path, hint)
    try:
        return json.loads(data)
    except ValueError:
        raise UserError(f"{path.lstrip('/')} on the board at {t.port} is not valid JSON: "
                        "provision the board again") from None


def _restart(t: SerialTransport) -> None:
    """Soft-reset the board so that main.py runs again, then let the port go. Best effort:
    after a Ctrl-C the board may be mid-command, so it is interrupted first."""
    try:
        t.serial.write(b"\r\x03\x03")  # stop whatever still runs on the board
        t.exit_raw()  # a soft reset from the friendly REPL runs boot.py and main.py
        t.read_until(b">>> ", timeout=5)
        t.serial.write(b"\x04")
        t.read_until(b"soft reboot", timeout=5)
    except (TransportError, OSError):
        pass
    finally:
        t.serial.close()
