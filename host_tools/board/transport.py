"""The wire to a board: MicroPython's raw REPL and raw-paste mode over a serial port.

One seam, as mpremote has: `exec(code)` runs code on the board and returns what it printed,
`eval(expr)` returns a value; everything else (files, provisioning, deploy) is built on them in
host_tools.board.files. The same class talks to a real ESP32 on /dev/ttyUSB0 and to a virtual
board's pseudo-terminal.

Protocol (MicroPython docs, "raw REPL" and "raw-paste mode"):
- enter: `\\r\\x03\\x03` (stop whatever runs), `\\r\\x01`, then the banner
  `raw REPL; CTRL-B to exit\\r\\n>`; a soft reset from there is `\\x04`, answered by
  `soft reboot\\r\\n` and the banner again;
- raw-paste: `\\x05A\\x01` -> `R\\x01` + a 2-byte little-endian window (or `R\\x00`: not
  supported, fall back to the plain raw REPL); the host may send a window of bytes, and one
  more window for each `\\x01` the board sends; `\\x04` ends the code, the board answers `\\x04`;
- the result: stdout, `\\x04`, stderr (a traceback), `\\x04`, then the `>` prompt.
"""

from __future__ import annotations

import ast
import time

import serial


class TransportError(RuntimeError):
    """The board did not answer as MicroPython's raw REPL does."""


class BoardExecError(RuntimeError):
    """Code run on the board raised; `traceback` is the board's text."""

    def __init__(self, traceback: str) -> None:
        lines = [ln for ln in traceback.strip().splitlines() if ln.strip()]
        super().__init__(lines[-1] if lines else "error on the board")
        self.traceback = traceback


class SerialTransport:
    def __init__(self, port: str, baud: int = 115200, timeout: float = 10.0,
                 exclusive: bool = False) -> None:
        try:
            self.serial = serial.Serial(port, baud, timeout=0.05, write_timeout=timeout,
                                        exclusive=exclusive or None)
        except (serial.SerialException, OSError) as exc:
            # keep the OSError (errno) as the cause: ports.open_port words it for the user
            raise TransportError(f"cannot open {port}: {exc}") from exc
        self.port = port
        self.timeout = timeout
        self.in_raw = False
        self.paste_supported: bool | None = None
        self._buf = bytearray()  # read from the port, not consumed yet

    def close(self) -> None:
        try:
            if self.in_raw:
                self.exit_raw()
        finally:
            self.serial.close()

    def __enter__(self) -> SerialTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- bytes ------------------------------------------------------------------------------

    def _fill(self, deadline: float) -> bool:
        chunk = self.serial.read(max(1, min(self.serial.in_waiting, 4096)))
        if chunk:
            self._buf += chunk
            return True
        return time.monotonic() <= deadline

    def read_until(self, ending: bytes, timeout: float | None = None) -> bytes:
        """Bytes up to and including `ending`; what came after stays buffered."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            i = self._buf.find(ending)
            if i >= 0:
                out = bytes(self._buf[:i + len(ending)])
                del self._buf[:i + len(ending)]
                return out
            if not self._fill(deadline):
                raise TransportError(f"no {ending!r} from the board on {self.port} "
                                     f"(got {bytes(self._buf[-80:])!r})")

    def read_exact(self, n: int) -> bytes:
        deadline = time.monotonic() + self.timeout
        while len(self._buf) < n:
            if not self._fill(deadline):
                raise TransportError(f"timed out reading from {self.port}")
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _pending(self) -> bool:
        return bool(self._buf) or self.serial.in_waiting > 0

    def _drain(self, quiet_s: float = 0.05) -> None:
        # swallow whatever the board is still printing
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            time.sleep(quiet_s)
            if not self.serial.in_waiting:
                self._buf.clear()
                return
            self.serial.read(self.serial.in_waiting)

    # ---- raw REPL -------------------------------------------------------------------------

    def enter_raw(self, soft_reset: bool = False) -> None:
        self.serial.write(b"\r\x03\x03")  # interrupt a running program (main.py)
        self._drain()
        self.serial.write(b"\r\x01")
        self.read_until(b"raw REPL; CTRL-B to exit\r\n>")
        if soft_reset:
            self.serial.write(b"\x04")
            self.read_until(b"soft reboot\r\n", timeout=self.timeout + 10)
            self.read_until(b"raw REPL; CTRL-B to exit\r\n>", timeout=self.timeout + 10)
        self.in_raw = True

    def exit_raw(self) -> None:
        self.serial.write(b"\r\x02")
        self.in_raw = False

    def soft_reset(self) -> None:
        """Restart the board's interpreter and stay in the raw REPL (main.py does not run)."""
        self.enter_raw(soft_reset=True)

    def _send_paste(self, code: bytes) -> bool:
        self.serial.write(b"\x05A\x01")
        head = self.read_exact(2)
        if head == b"R\x00":
            return False
        if head != b"R\x01":
            raise TransportError(f"raw-paste: unexpected answer {head!r}")
        window = int.from_bytes(self.read_exact(2), "little")
        credit = window
        i = 0
        while i < len(code):
            while credit <= 0 or self._pending():
                b = self.read_exact(1)
                if b == b"\x01":
                    credit += window
                elif b == b"\x04":  # the board wants no more
                    self.serial.write(b"\x04")
                    raise TransportError("raw-paste: the board stopped the transfer")
                else:
                    raise TransportError(f"raw-paste: unexpected byte {b!r}")
            n = min(credit, len(code) - i)
            self.serial.write(code[i:i + n])
            i += n
            credit -= n
        self.serial.write(b"\x04")
        self.read_until(b"\x04")
        return True

    def exec_raw(self, code: str | bytes, timeout: float | None = None) -> tuple[bytes, bytes]:
        """Run code; (stdout, stderr) as the board printed them."""
        if not self.in_raw:
            self.enter_raw()
        data = code.encode() if isinstance(code, str) else code
        sent = False
        if self.paste_supported is not False:
            sent = self._send_paste(data)
            self.paste_supported = sent
        if not sent:
            for i in range(0, len(data), 256):
                self.serial.write(data[i:i + 256])
                time.sleep(0.01)
            self.serial.write(b"\x04")
            if self.read_exact(2) != b"OK":
                raise TransportError("raw REPL did not accept the code")
        out = self.read_until(b"\x04", timeout)[:-1]
        err = self.read_until(b"\x04", timeout)[:-1]
        self.read_until(b">", timeout)
        return out, err

    def exec(self, code: str | bytes, timeout: float | None = None) -> str:
        """Run code on the board and return its output; BoardExecError if it raised."""
        out, err = self.exec_raw(code, timeout)
        if err:
            raise BoardExecError(err.decode(errors="replace"))
        return out.decode(errors="replace").replace("\r\n", "\n")

    def eval(self, expr: str) -> object:
        """A Python literal computed on the board (repr on the board, literal_eval here)."""
        text = self.exec(f"print(repr({expr}))").strip()
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise TransportError(f"not a literal from the board: {text[:80]!r}") from None
