"""Provisioning one board over its serial port, step by step (what `shelfctl provision` runs
for each device, several boards in parallel).

connect -> identify (the chip must be the board definition's) -> deploy (only with --deploy,
and only when the board has no firmware) -> read the config.json it has (a re-provisioned
shelf keeps its calibration) -> write board.json, the CA and config.json (unchanged files are
left alone) -> verify (SHA-256 read back, then the board's own config.load() must find no
error) -> reset (a soft reset: boot.py, then main.py starts the firmware) -> optionally wait
until the device publishes `online` on its broker.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from host_tools.board import files, ports
from host_tools.board.transport import BoardExecError, SerialTransport, TransportError
from host_tools.deploy import arch_of, deploy_firmware
from host_tools.errors import UserError
from host_tools.firmware import use_firmware
from host_tools.provision_config import DevicePlan, with_board_calibration

CONNECT_S = 5.0  # for the raw REPL to answer: a board stops main.py within a second or two
EXEC_S = 20.0  # for one step's answer (file writes, the schema check) once connected


class ProvisionError(RuntimeError):
    """A board could not be provisioned (it is not the user's input that is wrong)."""


@dataclass
class Options:
    baud: int = 115200
    deploy: bool = False
    wait_online: float = 0.0  # seconds; 0: do not wait


Step = Callable[[str], None]  # "now doing this"
Note = Callable[[str], None]  # a detail for --verbose


def _exists(t: SerialTransport, path: str) -> bool:
    return t.exec(f"import os\ntry:\n    os.stat({path!r})\n    print(1)\nexcept OSError:\n"
                  f"    print(0)\n").strip() == "1"


def _sha256(t: SerialTransport, path: str) -> str | None:
    try:
        return files.sha256(t, path)
    except BoardExecError:
        return None  # not there


def _config_on_board(t: SerialTransport) -> object:
    if not _exists(t, "/config.json"):
        return None
    try:
        return json.loads(files.get(t, "/config.json"))
    except ValueError:
        return None  # not JSON: nothing worth keeping


# The board checks its new files with the code it boots with (apps.config); the paths in
# the errors name keys, and password values are never shown by the schema's messages.
_BOARD_CHECK = """from apps import config as _c
_r = _c.load('/config.json', '/board.json')
print(repr(_r.errors))
del _r, _c
"""


def _board_errors(t: SerialTransport) -> list[str]:
    out = t.exec(_BOARD_CHECK, timeout=30).strip()
    try:
        errors = ast.literal_eval(out)
    except (ValueError, SyntaxError):
        raise TransportError(f"the board's config check printed no list ({len(out)} "
                             f"characters)") from None
    return [str(e) for e in errors]


def _start_firmware(t: SerialTransport) -> None:
    # Ctrl-B leaves the raw REPL; Ctrl-D at the empty friendly prompt soft-resets the board,
    # which runs boot.py, then main.py (a soft reset from the raw REPL would skip main.py).
    try:
        t.exit_raw()
        t.read_until(b">>> ", timeout=5)
        t.serial.write(b"\x04")
        t.read_until(b"soft reboot", timeout=5)
    finally:
        t.serial.close()


def provision_board(plan: DevicePlan, port: str, opts: Options, step: Step,
                    note: Note) -> None:
    """Provision the board on `port` (a resolved path). UserError for what the user can fix
    (busy, not MicroPython, wrong chip, no firmware), ProvisionError or TransportError else.
    A board that fails after connect is restarted all the same: it goes back to running
    what it has (files are replaced atomically, so that is the old config or the new)."""
    step("connect")
    t = ports.connect(port, opts.baud, timeout=CONNECT_S)
    t.timeout = EXEC_S
    try:
        _install(t, plan, port, opts, step, note)
        # subscribed before the reset, so the new boot's birth message is seen
        watch = OnlineWatch(plan) if opts.wait_online else None
    except BaseException:
        try:
            _start_firmware(t)
        except (TransportError, OSError):
            pass  # the board is not answering: the error being raised says more
        raise
    step("reset")
    _start_firmware(t)
    if watch is not None:
        step("wait online")
        try:
            watch.wait(opts.wait_online)
        finally:
            watch.close()


def _install(t: SerialTransport, plan: DevicePlan, port: str, opts: Options, step: Step,
             note: Note) -> None:
    """Check the board, deploy if asked, write and verify its files."""
    step("identify")
    ident = ports.identify(t)
    note(str(ident))
    if ident.chip != plan.chip:
        raise UserError(f"{port}: wrong chip: boards/{plan.board_name}.json is for "
                        f"{plan.chip}, the board is {ident}")
    if not _exists(t, "/main.py"):
        if not opts.deploy:
            raise UserError(f"{port}: no firmware on the board (no main.py): add --deploy, "
                            f"or run shelfctl deploy first")
        step("deploy")
        r = deploy_firmware(t, reset=False, arch=arch_of(plan.board_json))
        note(f"deployed {r.sent} files, {r.payload_bytes} bytes in {r.seconds:.1f} s")
    step("read config")
    config, kept = with_board_calibration(plan, _config_on_board(t))
    if kept:
        note(f"kept the board's calibration of lane(s) {', '.join(map(str, kept))}")
    wanted = {"/board.json": plan.board_json, **plan.files,
              "/config.json": json.dumps(config, indent=1).encode()}
    for remote, data in wanted.items():
        step(f"write {remote.lstrip('/')}")
        if _sha256(t, remote) == hashlib.sha256(data).hexdigest():
            note(f"{remote} unchanged")
            continue
        files.put(t, data, remote)
        note(f"{remote}: {len(data)} bytes")
    step("verify")
    for remote, data in wanted.items():
        if _sha256(t, remote) != hashlib.sha256(data).hexdigest():
            raise ProvisionError(f"{remote} differs on the board after writing it")
    t.soft_reset()  # a fresh heap for the schema (main.py was running until connect)
    errors = _board_errors(t)
    if errors:
        raise ProvisionError(f"the board refuses its config: {plan.scrub(errors[0])}")


class OnlineWatch:
    """The device's status topic, subscribed with its own broker settings (URL, CA, user
    name and password) under another client id. The birth message of the new boot arrives
    live; the retained one from before the reset arrives flagged `retain` and is ignored."""

    def __init__(self, plan: DevicePlan, timeout: float = 15.0) -> None:
        use_firmware()
        from net.mqtt import ConnectRefused, MQTTClient
        from net.transport import Transport

        cfg, broker = plan.config, plan.config["broker"]
        self.url = broker["url"]
        self.topic = "/".join((broker.get("prefix", "store/v1"), cfg["store"], cfg["device"],
                               "status"))
        self.plan = plan
        self.state: str | None = None
        self.errors: list[str] = []
        self._done = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._client = MQTTClient(
            Transport.from_url(self.url, cafile=plan.ca_path, timeout_ms=int(timeout * 1000)),
            f"shelfctl-{os.getpid()}-{cfg['device']}", keepalive=30, clean_session=True,
            username=broker.get("username"), password=broker.get("password"),
            on_message=self._message, connect_timeout_ms=int(timeout * 1000))
        try:
            self._run(self._subscribe(), timeout + 5)
        except ConnectRefused as exc:
            self.close()
            raise ProvisionError(f"the broker at {self.url} refused the login "
                                 f"({exc.reason})") from None
        except (OSError, asyncio.TimeoutError) as exc:  # refused, no route, TLS, timeout
            self.close()
            why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise ProvisionError(f"broker unreachable: {self.url} ({why})") from None

    def _run(self, coro, timeout: float):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _subscribe(self) -> None:
        await self._client.connect()
        await self._client.subscribe(self.topic, 1)

    def _message(self, topic: str, payload: bytes, retain: bool) -> None:
        if retain:
            return  # the device's previous life
        try:
            msg = json.loads(bytes(payload))
        except ValueError:
            return
        self.state = msg.get("state")
        if self.state in ("online", "fault"):
            self.errors = [str(e) for e in msg.get("errors", [])]
            self._done.set()

    def wait(self, timeout: float) -> None:
        if not self._done.wait(timeout):
            raise ProvisionError(f"did not come online within {timeout:g} s (nothing on "
                                 f"{self.topic})")
        if self.state == "fault":
            first = self.plan.scrub(self.errors[0]) if self.errors else "no detail"
            raise ProvisionError(f"the device reports a fault: {first}")

    def close(self) -> None:
        try:
            self._run(self._client.stop(), 5)
        except Exception:
            pass  # never connected, or already gone
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
