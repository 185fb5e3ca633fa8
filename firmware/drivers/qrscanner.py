# A UART QR / barcode scanner (the usual GM65 / GM861 style modules): it sends each code it
# reads as text ending in CR (or CR LF, or LF: configurable on the module, all accepted).
#
# poll() is called from an asyncio task; it reads what the UART holds without waiting and
# returns one complete code or None. Codes longer than MAX_CODE are noise or a misconfigured
# scanner: dropped whole (counted), never cut into a wrong code. Only printable ASCII passes:
# a shopper's app code is a short token, not arbitrary bytes.

from micropython import const

MAX_CODE = const(256)
_CR = const(13)
_LF = const(10)


class QRScanner:
    def __init__(self, uart):
        self.uart = uart  # machine.UART (or anything with any() and read(n))
        self._buf = bytearray()
        self._skip = False  # inside an over-long code: drop until its end
        self._codes = []
        self.scans = 0
        self.dropped = 0

    def poll(self):
        """The next complete code (str), or None."""
        n = self.uart.any()
        if n:
            data = self.uart.read(n)
            if data:
                self._take(data)
        if self._codes:
            return self._codes.pop(0)
        return None

    def _take(self, data):
        for b in data:
            if b == _CR or b == _LF:
                self._end()
            elif self._skip:
                continue
            elif len(self._buf) >= MAX_CODE:
                self._skip = True
                self._buf = bytearray()
                self.dropped += 1
            else:
                self._buf.append(b)

    def _end(self):
        if self._skip:
            self._skip = False
            return
        if not self._buf:
            return  # the LF of a CR LF, or an empty line
        raw = bytes(self._buf)
        self._buf = bytearray()
        for b in raw:
            if b < 32 or b > 126:
                self.dropped += 1
                return
        self.scans += 1
        self._codes.append(raw.decode())
