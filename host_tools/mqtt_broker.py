"""A small MQTT 3.1.1 broker in Python, for the virtual store on a machine without mosquitto.

Enough for the store's boards and observer, no more: CONNECT (clean or persistent sessions,
last will, user names accepted as given), SUBSCRIBE / UNSUBSCRIBE with `+` and `#`, PUBLISH at
QoS 0 and 1 (PUBACK to the sender, delivery at the lower of the two QoS, DUP resends to a
persistent session that comes back), retained messages, PINGREQ, DISCONNECT. Sessions and
retained messages live in memory. Not for production: no authentication, no TLS, no QoS 2.

    broker = EmbeddedBroker()
    url = broker.start()      # mqtt://127.0.0.1:<port>, served from a background thread
    broker.stop()
"""

from __future__ import annotations

import asyncio
import struct
import threading
from dataclasses import dataclass, field


class ProtocolViolation(Exception):
    pass


def topic_matches(flt: str, topic: str) -> bool:
    f = flt.split("/")
    t = topic.split("/")
    for i, part in enumerate(f):
        if part == "#":
            return True
        if i >= len(t) or (part != "+" and part != t[i]):
            return False
    return len(f) == len(t)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def _utf8(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def publish_packet(topic: str, payload: bytes, qos: int, retain: bool, pid: int = 0,
                   dup: bool = False) -> bytes:
    first = 0x30 | (qos << 1) | (0x01 if retain else 0) | (0x08 if dup else 0)
    body = _utf8(topic) + (struct.pack("!H", pid) if qos else b"") + payload
    return _packet(first, body)


@dataclass
class Session:
    client_id: str
    subs: dict[str, int] = field(default_factory=dict)
    writer: asyncio.StreamWriter | None = None
    next_pid: int = 0
    inflight: dict[int, bytes] = field(default_factory=dict)  # pid -> packet (QoS 1 out)
    queued: list[tuple[str, bytes, bool]] = field(default_factory=list)  # QoS 1 while away
    will: tuple[str, bytes, int, bool] | None = None

    def pid(self) -> int:
        self.next_pid = self.next_pid % 65535 + 1
        return self.next_pid


class EmbeddedBroker:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.sessions: dict[str, Session] = {}
        self.retained: dict[str, tuple[bytes, int]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    # ---- running in a thread -------------------------------------------------------------

    def start(self) -> str:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(
                asyncio.start_server(self._client, self.host, self.port))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="mqtt-broker", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self.url

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            for s in self.sessions.values():
                if s.writer is not None:
                    s.writer.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            loop.stop()

        asyncio.run_coroutine_threadsafe(shut(), loop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = None

    # ---- one client ------------------------------------------------------------------------

    async def _read_packet(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        first = (await reader.readexactly(1))[0]
        n = 0
        mult = 1
        for _ in range(4):
            b = (await reader.readexactly(1))[0]
            n += (b & 0x7F) * mult
            if not b & 0x80:
                break
            mult *= 128
        else:
            raise ProtocolViolation("bad remaining length")
        return first, await reader.readexactly(n)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session: Session | None = None
        clean_exit = False
        try:
            first, body = await asyncio.wait_for(self._read_packet(reader), 10)
            if first >> 4 != 1:
                raise ProtocolViolation("first packet is not CONNECT")
            session = self._connect(body, writer)
            while True:
                first, body = await self._read_packet(reader)
                kind = first >> 4
                if kind == 3:
                    self._publish(first, body, writer)
                elif kind == 4:  # PUBACK for our delivery
                    session.inflight.pop(struct.unpack("!H", body[:2])[0], None)
                elif kind == 8:
                    self._subscribe(session, body, writer)
                elif kind == 10:
                    pid = body[:2]
                    pos = 2
                    while pos < len(body):
                        (n,) = struct.unpack("!H", body[pos:pos + 2])
                        session.subs.pop(body[pos + 2:pos + 2 + n].decode(), None)
                        pos += 2 + n
                    writer.write(_packet(0xB0, pid))
                elif kind == 12:
                    writer.write(b"\xd0\x00")
                elif kind == 14:
                    clean_exit = True
                    return
                else:
                    raise ProtocolViolation(f"packet type {kind}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ProtocolViolation,
                asyncio.TimeoutError, struct.error, UnicodeError, IndexError):
            pass
        finally:
            if session is not None and session.writer is writer:
                session.writer = None
                if not clean_exit and session.will is not None:
                    self._route(*session.will)
                session.will = None
                if session.subs == {} or session.client_id.startswith("\0clean"):
                    self.sessions.pop(session.client_id, None)
            writer.close()

    def _connect(self, body: bytes, writer: asyncio.StreamWriter) -> Session:
        (n,) = struct.unpack("!H", body[:2])
        pos = 2 + n
        level = body[pos]
        flags = body[pos + 1]
        pos += 4  # level, flags, keepalive
        if level != 4:
            writer.write(b"\x20\x02\x00\x01")  # unacceptable protocol version
            raise ProtocolViolation("not MQTT 3.1.1")

        def field_() -> bytes:
            nonlocal pos
            (m,) = struct.unpack("!H", body[pos:pos + 2])
            value = body[pos + 2:pos + 2 + m]
            pos += 2 + m
            return value

        client_id = field_().decode()
        clean = bool(flags & 0x02)
        will = None
        if flags & 0x04:
            topic = field_().decode()
            will = (topic, field_(), (flags >> 3) & 3, bool(flags & 0x20))
        key = client_id if client_id and not clean else f"\0clean{id(writer)}"
        old = self.sessions.get(key)
        if old is not None and old.writer is not None:
            old.writer.close()  # a second connection with the same id takes over
        present = old is not None and not clean
        session = old if present else Session(key)
        session.writer = writer
        session.will = will
        self.sessions[key] = session
        writer.write(bytes([0x20, 2, 1 if present else 0, 0]))
        for packet in session.inflight.values():  # unacked before: again, with DUP
            writer.write(bytes([packet[0] | 0x08]) + packet[1:])
        queued, session.queued = session.queued, []
        for topic, payload, retain in queued:
            self._deliver(session, topic, payload, 1, retain)
        return session

    def _publish(self, first: int, body: bytes, writer: asyncio.StreamWriter) -> None:
        qos = (first >> 1) & 3
        if qos > 1:
            raise ProtocolViolation("QoS 2 is not supported")
        retain = bool(first & 1)
        (n,) = struct.unpack("!H", body[:2])
        topic = body[2:2 + n].decode()
        pos = 2 + n
        if qos:
            writer.write(_packet(0x40, body[pos:pos + 2]))
            pos += 2
        self._route(topic, body[pos:], qos, retain)

    def _route(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if retain:
            if payload:
                self.retained[topic] = (payload, qos)
            else:
                self.retained.pop(topic, None)
        for s in self.sessions.values():
            granted = max((q for f, q in s.subs.items() if topic_matches(f, topic)),
                          default=None)
            if granted is not None:
                self._deliver(s, topic, payload, min(qos, granted), False)

    def _deliver(self, s: Session, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if qos == 0:
            if s.writer is not None:
                s.writer.write(publish_packet(topic, payload, 0, retain))
            return
        if s.writer is None:
            s.queued.append((topic, payload, retain))
            return
        pid = s.pid()
        packet = publish_packet(topic, payload, 1, retain, pid)
        s.inflight[pid] = packet
        s.writer.write(packet)

    def _subscribe(self, s: Session, body: bytes, writer: asyncio.StreamWriter) -> None:
        pid = body[:2]
        pos = 2
        granted = bytearray()
        new = []
        while pos < len(body):
            (n,) = struct.unpack("!H", body[pos:pos + 2])
            flt = body[pos + 2:pos + 2 + n].decode()
            qos = min(body[pos + 2 + n] & 3, 1)
            pos += 3 + n
            s.subs[flt] = qos
            granted.append(qos)
            new.append((flt, qos))
        writer.write(_packet(0x90, pid + bytes(granted)))
        for flt, qos in new:
            for topic, (payload, rq) in self.retained.items():
                if topic_matches(flt, topic):
                    self._deliver(s, topic, payload, min(qos, rq), True)
