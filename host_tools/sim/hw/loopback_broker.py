"""An MQTT 3.1.1 broker stand-in inside the process, for where no socket exists (the
MicroPython VM): the client's transport opens an in-memory stream to it.

It answers CONNECT with CONNACK (session present after the first connect), PUBLISH QoS 1 with
PUBACK, SUBSCRIBE with SUBACK (granting what was asked), PINGREQ with PINGRESP, and records
what was published (`published`: [(topic, payload, qos, retain)]). `drop()` breaks the
connection as a lost link would; `accepting = False` refuses new ones (an outage). Runs in
CPython and MicroPython alike (asyncio Events only). The tests and benchmarks that can reach a
real mosquitto use that instead.
"""

import asyncio


class _Pipe:
    def __init__(self):
        self.buf = bytearray()
        self.ev = asyncio.Event()
        self.closed = False

    def put(self, data):
        if not self.closed:
            self.buf.extend(data)
            self.ev.set()

    def close(self):
        self.closed = True
        self.ev.set()

    async def read(self, n=-1):
        while not self.buf:
            if self.closed:
                return b""
            self.ev.clear()
            await self.ev.wait()
        if n < 0 or n >= len(self.buf):
            out = bytes(self.buf)
            self.buf = bytearray()
        else:
            out = bytes(self.buf[:n])
            self.buf = self.buf[n:]
        return out

    async def readexactly(self, n):
        out = b""
        while len(out) < n:
            part = await self.read(n - len(out))
            if not part:
                raise EOFError("stream closed")
            out += part
        return out


class _Writer:
    def __init__(self, broker, conn):
        self.broker = broker
        self.conn = conn

    def write(self, data):
        if self.conn.up:
            self.broker._receive(self.conn, bytes(data))
        else:
            raise OSError(104, "connection reset")

    async def drain(self):
        if not self.conn.up:
            raise OSError(104, "connection reset")

    def close(self):
        self.conn.shut()

    async def wait_closed(self):
        pass


class _Conn:
    def __init__(self):
        self.to_client = _Pipe()
        self.inbuf = bytearray()
        self.up = True

    def shut(self):
        self.up = False
        self.to_client.close()


def _varint(buf, pos):
    # (value, next position) or None when incomplete
    mult = 1
    value = 0
    for k in range(4):
        if pos + k >= len(buf):
            return None
        b = buf[pos + k]
        value += (b & 0x7F) * mult
        if not b & 0x80:
            return value, pos + k + 1
        mult *= 128
    raise ValueError("bad remaining length")


class LoopbackBroker:
    def __init__(self):
        self.published = []
        self.connects = 0
        self.accepting = True
        self.conn = None
        self._sessions = set()

    # the transport seam: net.mqtt takes any object with `async open()`
    async def open(self):
        if not self.accepting:
            raise OSError(111, "connection refused")
        if self.conn is not None:
            self.conn.shut()
        conn = _Conn()
        self.conn = conn
        return conn.to_client, _Writer(self, conn)

    def drop(self):
        if self.conn is not None:
            self.conn.shut()
            self.conn = None

    def _receive(self, conn, data):
        conn.inbuf.extend(data)
        while True:
            buf = conn.inbuf
            if len(buf) < 2:
                return
            got = _varint(buf, 1)
            if got is None:
                return
            length, start = got
            end = start + length
            if len(buf) < end:
                return
            self._packet(conn, buf[0], bytes(buf[start:end]))
            conn.inbuf = buf[end:]

    def _packet(self, conn, first, body):
        kind = first >> 4
        out = conn.to_client
        if kind == 1:  # CONNECT: client id after the protocol name, level, flags, keepalive
            n = (body[10] << 8) | body[11]
            cid = bytes(body[12:12 + n])
            present = 1 if cid in self._sessions else 0
            self._sessions.add(cid)
            self.connects += 1
            out.put(bytes((0x20, 2, present, 0)))
        elif kind == 3:  # PUBLISH
            qos = (first >> 1) & 3
            n = (body[0] << 8) | body[1]
            topic = bytes(body[2:2 + n]).decode()
            pos = 2 + n
            if qos:
                pid = body[pos:pos + 2]
                pos += 2
                out.put(b"\x40\x02" + bytes(pid))
            self.published.append((topic, bytes(body[pos:]), qos, bool(first & 1)))
        elif kind == 8:  # SUBSCRIBE: granted as asked
            pid = bytes(body[:2])
            granted = bytearray()
            pos = 2
            while pos < len(body):
                n = (body[pos] << 8) | body[pos + 1]
                pos += 2 + n
                granted.append(body[pos])
                pos += 1
            out.put(bytes((0x90, 2 + len(granted))) + pid + bytes(granted))
        elif kind == 12:  # PINGREQ
            out.put(b"\xd0\x00")
        elif kind == 14:  # DISCONNECT
            conn.shut()
