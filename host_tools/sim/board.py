"""A virtual board: the real firmware in the MicroPython 1.29 VM behind a pseudo-terminal that
a host tool (pyserial, mpremote, shelfctl) cannot tell from a board's USB serial port.

    board = VirtualBoard(Path("/tmp/shelf-1"), baud=115200)
    board.start()            # -> "/dev/pts/7"; also the symlink /tmp/shelf-1/serial
    ...
    board.hard_reset()       # power-on reset (the EN button)
    board.stop()

What sits between the port and the VM (vboard.mjs runs the VM for one boot):
- the serial line is paced at the baud rate, both ways (baud=0: no pacing, for unit tests);
- raw-paste mode (`\\x05A\\x01`) is spoken here, window and `\\x01` grants included, and the
  pasted code goes to the VM's plain raw REPL (the VM's own raw-paste wedges it);
- soft reboot (Ctrl-D at an empty friendly or raw prompt) prints what a board prints and
  starts a fresh VM over the same flash: boot.py and main.py, or boot.py and the raw REPL;
- the flash is the directory: the VM writes through to it, so it survives reboots and power
  cuts. A pseudo-terminal has no DTR/RTS lines: a hard reset is a call (or a control command),
  not the modem-line pulse of esptool-style tools.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import tty
from pathlib import Path

from host_tools.firmware import HW_DIR

VBOARD = Path(__file__).with_name("vboard.mjs")
#: The board's hardware stand-ins inside the VM (machine, network, fake chips), and the
#: virtual board's own boot hook (vmroot/_simboot.py).
HARDWARE = HW_DIR
VMROOT = Path(__file__).with_name("vmroot")
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n>"
FRIENDLY_PROMPT = b">>> "
PASTE_WINDOW = 128
RESET_STATUS = 75  # vboard.mjs ends a boot with this when the firmware calls machine.reset()
SHELF_FILE = ".sim-shelf.json"  # grams on each lane: the shelf outlives the board's power
CONTROL_SOCKET = ".sim.sock"


class BoardError(RuntimeError):
    pass


class VirtualBoard:
    def __init__(self, fs_dir: Path, baud: int = 115200, hardware: Path = HARDWARE,
                 heap: int = 192 * 1024, physics=None, rfc2217: int | None = None) -> None:
        """physics: a host_tools.sim.physics_feed.PhysicsFeed whose readings the lanes
        convert (the trace generator's physics), or None for the simple lane model.
        rfc2217: also serve the port over RFC 2217 on this TCP port (0: any), which carries
        DTR/RTS: the reset pulse of esptool-style tools works there (see rfc2217.py)."""
        self.dir = Path(fs_dir)
        self.physics = physics
        self.rfc2217_port = rfc2217
        self.rfc2217 = None
        self.baud = baud
        self.hardware = hardware
        self.heap = heap
        self.port: str | None = None
        self.boots = 0
        self._master = self._slave = -1
        self._vm: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()  # VM swap vs. writers
        self._out_lock = threading.Lock()
        self._in_lock = threading.Lock()  # one byte at a time into the REPL state machine
        self._stopping = False
        self._threads: list[threading.Thread] = []
        # the host's view of the REPL, from what goes each way
        self._raw = False
        self._typed = 0  # bytes sent since the last prompt
        self._tail = b""
        self._strip_ok = False  # drop the VM's "OK" after a pasted block
        self._paste: bytearray | None = None  # raw-paste data being received
        self._paste_seen = 0
        self._maybe_paste = b""
        self._ctl_w = -1  # pipe to the running VM's hardware (vboard --control-fd)
        self.outputs: dict[str, int | None] = {}  # relay, led: as the board drives them
        self._stage = ""  # "main" while main.py runs, "repl" once the REPL reads bytes
        self.shelf: list[float] = self._load_shelf()
        self._server: socket.socket | None = None

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no newline translation: a plain byte pipe
        self.port = os.ttyname(self._slave)
        link = self.dir / "serial"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(self.port)
        self._boot("power")
        t = threading.Thread(target=self._from_host, name="vboard-host", daemon=True)
        t.start()
        self._threads.append(t)
        self._serve_control()
        if self.rfc2217_port is not None:
            from host_tools.sim.rfc2217 import Rfc2217Server

            self.rfc2217 = Rfc2217Server(self, self.rfc2217_port)
        if self.physics is not None:
            self.physics.attach(self._hardware)
        return self.port

    def stop(self) -> None:
        self._stopping = True
        if self.rfc2217 is not None:
            self.rfc2217.close()
        if self.physics is not None:
            self.physics.stop()
        self._kill_vm()
        if self._server is not None:
            self._server.close()
            self._server = None
            (self.dir / CONTROL_SOCKET).unlink(missing_ok=True)
        for fd in (self._master, self._slave):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = -1
        link = self.dir / "serial"
        if link.is_symlink():
            link.unlink()

    def hard_reset(self) -> None:
        """Power-on reset: a fresh VM, boot.py then main.py."""
        self._boot("power")

    def power_off(self) -> None:
        """Cut the power: the VM dies mid-whatever; the flash keeps what was written."""
        with self._lock:
            self._kill_vm()

    def running(self) -> bool:
        return self._vm is not None and self._vm.poll() is None

    # ---- the hardware around the board ---------------------------------------------------

    def _load_shelf(self) -> list[float]:
        try:
            data = json.loads((self.dir / SHELF_FILE).read_text())
            return [float(g) for g in data]
        except (OSError, ValueError, TypeError):
            return [0.0] * 8

    def load(self, lane: int, grams: float, ms: int = 400) -> None:
        """Change what lies on a lane by `grams` over `ms` (a hand putting or taking)."""
        if not 0 <= lane < len(self.shelf):
            raise ValueError(f"lane must be 0..{len(self.shelf) - 1}")
        if self.physics is not None:
            self._physics_load(lane, grams)
            return
        self.shelf[lane] += grams
        tmp = self.dir / (SHELF_FILE + ".tmp")
        tmp.write_text(json.dumps(self.shelf))
        tmp.replace(self.dir / SHELF_FILE)
        self._hardware({"cmd": "load", "lane": lane, "grams": grams, "ms": ms})

    def _physics_load(self, lane: int, grams: float) -> None:
        # whole items of the lane's product are picked or put; anything else put down is a
        # foreign object (the physics only takes away what is there)
        feed = self.physics
        if lane >= feed.n:
            raise ValueError(f"lane must be 0..{feed.n - 1}")
        unit = feed.stock[lane].unit_g
        n = round(grams / unit)
        if n and abs(grams - n * unit) <= 0.15 * unit:
            if n < 0 and -n > feed.items(lane):
                raise ValueError(f"lane {lane} holds only {feed.items(lane)} items")
            (feed.pick(lane, -n) if n < 0 else feed.put(lane, n))
        elif grams > 0:
            feed.place_foreign(lane, grams)
        else:
            raise ValueError(f"lane {lane}: {grams} g is no whole number of its "
                             f"{unit} g items")

    def wifi(self, up: bool) -> None:
        self._hardware({"cmd": "wifi", "up": up})

    def bump(self, grams: float = 200.0) -> None:
        """Knock the shelf: every lane rings for a second, nothing changes."""
        if self.physics is not None:
            self.physics.bump(grams)
            return
        self._hardware({"cmd": "bump", "grams": grams})

    def rest(self, lane: int, grams: float, seconds: float) -> None:
        """A hand rests on a lane for `seconds`, then leaves (in the background)."""
        if self.physics is not None:
            self.physics.rest(lane, grams, seconds)
            return
        self._hardware({"cmd": "load", "lane": lane, "grams": grams, "ms": 300})
        timer = threading.Timer(seconds, self._hardware,
                                ({"cmd": "load", "lane": lane, "grams": -grams, "ms": 300},))
        timer.daemon = True
        timer.start()

    def lane_of(self, sku: str) -> tuple[int, float]:
        """(lane, unit grams) of a SKU in the board's config.json (its planogram)."""
        try:
            lanes = json.loads((self.dir / "config.json").read_text())["lanes"]
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"no planogram on this board ({exc})") from None
        for i, lane in enumerate(lanes):
            if lane.get("sku") == sku:
                return i, float(lane["unit_g"])
        raise ValueError(f"no lane holds SKU {sku}")

    def _hardware(self, cmd: dict) -> None:
        with self._lock:
            if self._ctl_w >= 0:
                try:
                    os.write(self._ctl_w, (json.dumps(cmd) + "\n").encode())
                except OSError:
                    pass

    # ---- the control socket: JSON lines, `shelfctl sim ctl` ------------------------------

    def _serve_control(self) -> None:
        path = self.dir / CONTROL_SOCKET
        path.unlink(missing_ok=True)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(str(path))
        srv.listen(4)
        self._server = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def _accept(self, srv: socket.socket) -> None:
        while not self._stopping:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as f:
            for line in f:
                try:
                    reply = self.control(json.loads(line))
                except (ValueError, KeyError, TypeError) as exc:
                    reply = {"ok": False, "error": str(exc) or type(exc).__name__}
                f.write((json.dumps(reply) + "\n").encode())
                f.flush()

    def control(self, cmd: dict) -> dict:
        """One control command (what the socket and `shelfctl sim ctl` carry)."""
        kind = cmd.get("cmd")
        if kind == "load":
            self.load(int(cmd["lane"]), float(cmd["grams"]), int(cmd.get("ms", 400)))
        elif kind == "items":
            lane, unit = self.lane_of(str(cmd["sku"]))
            self.load(lane, int(cmd["count"]) * unit, int(cmd.get("ms", 400)))
        elif kind == "rest":
            self.rest(int(cmd["lane"]), float(cmd["grams"]), float(cmd["seconds"]))
        elif kind == "bump":
            self.bump(float(cmd.get("grams", 200)))
        elif kind == "scan":
            text = str(cmd["text"])
            if not text or len(text) > 256 or any(not 32 <= ord(c) < 127 for c in text):
                raise ValueError("scan text: 1-256 printable ASCII characters")
            self._hardware({"cmd": "scan", "text": text})
        elif kind == "beam":
            self._hardware({"cmd": "beam", "ms": int(cmd.get("ms", 300))})
        elif kind == "wifi":
            self.wifi(bool(cmd["up"]))
        elif kind == "power_off":
            self.power_off()
        elif kind in ("power_on", "reset"):
            self.hard_reset()
        elif kind != "state":
            raise ValueError(f"unknown command {kind!r}")
        state = {"ok": True, "running": self.running(), "boots": self.boots,
                 "port": self.port, "outputs": dict(self.outputs)}
        if self.physics is not None:
            state["lanes"] = [{"sku": s.sku, "unit_g": s.unit_g, "items": self.physics.items(i)}
                              for i, s in enumerate(self.physics.stock)]
        else:
            state["shelf_g"] = self.shelf
        return state

    # ---- the VM behind the port ----------------------------------------------------------

    def _kill_vm(self) -> None:
        vm, self._vm = self._vm, None
        if vm is not None and vm.poll() is None:
            vm.kill()
            vm.wait()

    def _boot(self, mode: str) -> None:
        with self._lock:
            self._kill_vm()
            self._raw = False
            self._typed = 0
            self._paste = None
            self._maybe_paste = b""
            self._strip_ok = False
            if self._ctl_w >= 0:
                os.close(self._ctl_w)
            ctl_r, self._ctl_w = os.pipe()
            st_r, st_w = os.pipe()
            self.outputs = {}
            self._stage = ""
            self._vm = subprocess.Popen(
                ["node", str(VBOARD), "--flash", str(self.dir), "--sim", str(self.hardware),
                 "--sim", str(VMROOT), "--mode", mode, "--heap", str(self.heap),
                 "--shelf", json.dumps(self.shelf), "--control-fd", str(ctl_r),
                 "--status-fd", str(st_w),
                 *(["--physics"] if self.physics is not None else [])],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                pass_fds=(ctl_r, st_w))
            os.close(ctl_r)
            os.close(st_w)
            threading.Thread(target=self._status, args=(st_r, self._vm), daemon=True).start()
            self.boots += 1
            t = threading.Thread(target=self._from_board, args=(self._vm,),
                                 name="vboard-board", daemon=True)
            t.start()

    def _status(self, fd: int, vm: subprocess.Popen[bytes]) -> None:
        # what the board's outputs do, as the VM reports it; and machine.reset()
        with os.fdopen(fd, "rb") as f:
            for line in f:
                try:
                    msg = json.loads(line)
                    if msg.get("reset"):
                        if vm is self._vm and not self._stopping:
                            threading.Thread(target=self.hard_reset, daemon=True).start()
                    elif "boot" in msg:
                        self._stage = msg["boot"]
                    else:
                        self.outputs[msg["output"]] = msg["level"]
                except (ValueError, KeyError, TypeError):
                    continue

    def _to_vm(self, data: bytes) -> None:
        with self._lock:
            vm = self._vm
            if vm is None or vm.stdin is None or not data:
                return
            try:
                vm.stdin.write(data)
                vm.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass

    # ---- board -> host ---------------------------------------------------------------------

    def _from_board(self, vm: subprocess.Popen[bytes]) -> None:
        assert vm.stdout is not None
        while True:
            data = vm.stdout.read1(512)
            if not data:
                if vm.wait() == RESET_STATUS and vm is self._vm and not self._stopping:
                    # the firmware reset the board: power-on boot (not from this thread)
                    threading.Thread(target=self.hard_reset, daemon=True).start()
                return
            if vm is not self._vm:
                return  # a replaced VM's last words are not the new board's
            if self._strip_ok:
                data = self._drop_ok(data)
            self._watch(data)
            self._to_host(data)

    def _drop_ok(self, data: bytes) -> bytes:
        # The plain raw REPL answers "OK" before output; after a raw paste a board does not.
        if data.startswith(b"OK"):
            self._strip_ok = False
            return data[2:]
        if data == b"O":
            return b""
        if data.startswith(b"K"):
            self._strip_ok = False
            return data[1:]
        return data

    def _watch(self, data: bytes) -> None:
        tail = (self._tail + data)[-64:]
        self._tail = tail
        if tail.endswith(RAW_BANNER):
            self._raw = True
            self._typed = 0
        elif self._raw and tail.endswith(b"\x04>"):
            self._typed = 0
        elif tail.endswith(FRIENDLY_PROMPT):
            self._raw = False
            self._typed = 0

    def _to_host(self, data: bytes) -> None:
        with self._out_lock:
            for i in range(0, len(data), 64):
                chunk = data[i:i + 64]
                self._pace(len(chunk))
                if self.rfc2217 is not None:
                    self.rfc2217.send(chunk)
                try:
                    os.write(self._master, chunk)
                except OSError:
                    return

    def note(self, data: bytes) -> None:
        """Text from the board's surroundings onto the serial line (a sim message)."""
        self._to_host(data)

    def feed_host_bytes(self, data: bytes) -> None:
        """Bytes from a host on another way in (RFC 2217), paced like the pty's."""
        self._pace(len(data))
        with self._in_lock:
            for b in data:
                self._host_byte(b)

    def _pace(self, n: int) -> None:
        if self.baud > 0:
            time.sleep(n * 10 / self.baud)  # 8N1: ten bits a byte

    # ---- host -> board ---------------------------------------------------------------------

    def _from_host(self) -> None:
        while not self._stopping:
            try:
                data = os.read(self._master, 256)
            except OSError:
                if self._stopping:
                    return
                time.sleep(0.01)
                continue
            self._pace(len(data))
            with self._in_lock:
                for b in data:
                    self._host_byte(b)

    def _host_byte(self, b: int) -> None:
        if self._paste is not None:
            self._paste_byte(b)
            return
        if self._maybe_paste or (self._raw and self._typed == 0 and b == 0x05):
            self._maybe_paste += bytes([b])
            if b"\x05A\x01".startswith(self._maybe_paste):
                if self._maybe_paste == b"\x05A\x01":
                    self._maybe_paste = b""
                    self._begin_paste()
                return
            pending, self._maybe_paste = self._maybe_paste, b""
            for c in pending:
                self._plain_byte(c)
            return
        self._plain_byte(b)

    def _interrupt_main(self, vm: subprocess.Popen[bytes] | None) -> None:
        # A main.py that never yields to the host's event loop cannot see a Ctrl-C; if it
        # did not end within a moment, the board starts again without it (its state is
        # lost, unlike a real interrupt; docs/virtual-board.md).
        time.sleep(0.5)
        if vm is self._vm and self._stage == "main" and not self._stopping:
            self._to_host(b"Traceback (most recent call last):\r\n"
                          b"  File \"main.py\"\r\nKeyboardInterrupt: \r\n")
            self._boot("nomain")

    def _plain_byte(self, b: int) -> None:
        if b == 0x03 and self._stage == "main":
            threading.Thread(target=self._interrupt_main, args=(self._vm,),
                             daemon=True).start()
        if b == 0x04 and self._typed == 0:
            self._soft_reboot()
            return
        if b == 0x01:
            self._raw = True  # the board switches as it reads the byte, before it answers
        elif b == 0x02:
            self._raw = False
        if b in (0x01, 0x02, 0x03) or (not self._raw and b in (0x0D, 0x0A)):
            self._typed = 0  # a new prompt (an entered line ends the friendly one)
        else:
            self._typed += 1
        self._to_vm(bytes([b]))

    def _soft_reboot(self) -> None:
        if self._raw:
            self._to_host(b"OK\r\nMPY: soft reboot\r\n")
            self._boot("raw")
        else:
            self._to_host(b"MPY: soft reboot\r\n")
            self._boot("power")

    # raw-paste: the board grants the host PASTE_WINDOW bytes at a time with \x01
    def _begin_paste(self) -> None:
        self._paste = bytearray()
        self._paste_seen = 0
        # the window size, then \x01: as a board does, two windows are free at the start (the
        # board's stdin buffer holds two), so the host can keep the line busy
        self._to_host(b"R\x01" + PASTE_WINDOW.to_bytes(2, "little") + b"\x01")

    def _paste_byte(self, b: int) -> None:
        assert self._paste is not None
        if b == 0x04:
            rest = bytes(self._paste)
            self._paste = None
            self._to_host(b"\x04")  # end acknowledged; output follows as stdout\x04err\x04>
            self._strip_ok = True
            self._typed = 1
            self._to_vm(rest + b"\x04")
            return
        self._paste.append(b)
        self._paste_seen += 1
        if self._paste_seen % PASTE_WINDOW == 0:
            # a board compiles as the code arrives: pass each window on to the VM's raw REPL
            # now, so its intake overlaps the wire as on a board, not after the last byte
            self._to_vm(bytes(self._paste))
            self._paste.clear()
            self._to_host(b"\x01")  # room for another window
