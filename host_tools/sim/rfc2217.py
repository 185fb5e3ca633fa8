"""The virtual board's serial port over RFC 2217 (telnet COM port control): a port that, unlike
a pseudo-terminal, carries DTR and RTS. pyserial, esptool and mpremote open it as
`rfc2217://127.0.0.1:PORT`.

The lines are wired as on an ESP32 DevKitC's USB bridge: RTS drives EN through a transistor
(RTS asserted: EN low, the chip held in reset), DTR drives GPIO0 (DTR asserted: GPIO0 low).
Releasing EN resets the board: with GPIO0 high it boots (a power-on reset); with GPIO0 low the
ROM bootloader would start, which is not emulated (the board boots normally, and says so).
"""

from __future__ import annotations

import socket
import threading

import serial
import serial.rfc2217


class _Lines:
    """The 'serial port' PortManager drives: line settings and the modem lines."""

    def __init__(self, on_reset) -> None:
        self.baudrate = 115200
        self.bytesize = serial.EIGHTBITS
        self.parity = serial.PARITY_NONE
        self.stopbits = serial.STOPBITS_ONE
        self.rtscts = False
        self.xonxoff = False
        self.break_condition = False
        self.cts = True
        self.dsr = True
        self.ri = False
        self.cd = True
        self._dtr = False
        self._rts = False
        self._on_reset = on_reset

    @property
    def dtr(self) -> bool:
        return self._dtr

    @dtr.setter
    def dtr(self, value: bool) -> None:
        self._dtr = bool(value)

    @property
    def rts(self) -> bool:
        return self._rts

    @rts.setter
    def rts(self, value: bool) -> None:
        was = self._rts
        self._rts = bool(value)
        if was and not self._rts:  # EN released: the chip comes out of reset
            self._on_reset(bootloader=self._dtr)

    def reset_input_buffer(self) -> None:
        pass

    def reset_output_buffer(self) -> None:
        pass


class _Conn:
    # PortManager writes its telnet answers with .write()
    def __init__(self, sock: socket.socket, lock: threading.Lock) -> None:
        self.sock = sock
        self.lock = lock

    def write(self, data: bytes) -> None:
        with self.lock:
            try:
                self.sock.sendall(data)
            except OSError:
                pass


class Rfc2217Server:
    """One client at a time on 127.0.0.1:port (0: any free port)."""

    def __init__(self, board, port: int = 0) -> None:
        self.board = board
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.resets = 0
        self._conn: socket.socket | None = None
        self._manager: serial.rfc2217.PortManager | None = None
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()  # telnet answers and board output interleave whole
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"rfc2217://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()
        if self._conn is not None:
            self._conn.close()

    def _reset(self, bootloader: bool) -> None:
        self.resets += 1
        if bootloader:
            self.board.note(b"\r\n(virtual board: GPIO0 held low at reset selects the ROM "
                            b"bootloader, which is not emulated; booting normally)\r\n")
        threading.Thread(target=self.board.hard_reset, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            manager = serial.rfc2217.PortManager(_Lines(self._reset),
                                                 _Conn(conn, self._send_lock))
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                self._conn, self._manager = conn, manager
            self._serve(conn, manager)

    def _serve(self, conn: socket.socket, manager: serial.rfc2217.PortManager) -> None:
        while True:
            try:
                data = conn.recv(1024)
            except OSError:
                data = b""
            if not data:
                with self._lock:
                    if self._conn is conn:
                        self._conn = self._manager = None
                conn.close()
                return
            to_board = b"".join(manager.filter(data))
            if to_board:
                self.board.feed_host_bytes(to_board)

    def send(self, data: bytes) -> None:
        """Board output to the client (telnet-escaped)."""
        with self._lock:
            conn, manager = self._conn, self._manager
        if conn is None or manager is None:
            return
        with self._send_lock:
            try:
                conn.sendall(b"".join(manager.escape(data)))
            except OSError:
                pass
