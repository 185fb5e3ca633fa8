"""A small, fast MQTT 3.1.1 client for the host: blocking sockets, one thread, no asyncio.

Written from the MQTT 3.1.1 specification (OASIS, 2014) for what shelfctl needs on a PC:
subscribing at high rates (`monitor`) and publishing a recording back (`replay`). The
firmware's asyncio client (firmware/net/mqtt.py) is built for a microcontroller; this one
reads up to 1 MB per recv() and parses every complete packet in it, and sends the PUBACKs of
one read in one write, which is what makes 100k messages/s possible in Python.

    client = Client("mqtts://broker:8883", "shelfctl-monitor-1", username="ops",
                    password=secret, cafile="ca.crt")
    client.connect()
    client.subscribe([("store/v1/+/#", 1)])
    for topic, payload, retain, qos in client.receive(timeout=0.25): ...
    client.publish("store/v1/s/d/status", b"{}", qos=1, retain=True)
    client.flush()            # every QoS 1 publish acknowledged
    client.disconnect()

Errors are MQTTError (one line, never the password): BrokerUnreachable for DNS, TCP and TLS
failures, Refused for a CONNACK that says no, ConnectionLost when the stream ends.
Not implemented: QoS 2, resending unacknowledged publishes after a reconnect, last will.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from urllib.parse import urlsplit

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
READ_SIZE = 1 << 20
CONNACK_CODES = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}

# packet types (high nibble of the first byte)
CONNACK, PUBLISH, PUBACK, SUBACK, PINGRESP = 2, 3, 4, 9, 13


class MQTTError(Exception):
    """Something about the broker or the connection, in one line."""


class BrokerUnreachable(MQTTError):
    pass


class Refused(MQTTError):
    pass


class ConnectionLost(MQTTError):
    pass


Message = tuple[str, bytes, bool, int]  # topic, payload, retain, qos


def parse_url(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) of mqtt://host[:port] or mqtts://host[:port]; ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"broker URL must be mqtt://host[:port] or mqtts://host[:port], "
                         f"not {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.username:
        raise ValueError(f"broker URL takes no path, query or credentials: {url!r}")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise ValueError(f"bad port in broker URL {url!r}") from None
    return parts.hostname, port, parts.scheme == "mqtts"


# ---- encoding ------------------------------------------------------------------------------


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        digit, n = n & 0x7F, n >> 7
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _remaining_length(len(body)) + body


def _string(s: str | bytes) -> bytes:
    data = s.encode() if isinstance(s, str) else s
    if len(data) > 0xFFFF:
        raise ValueError("MQTT strings are at most 65535 bytes")
    return struct.pack("!H", len(data)) + data


def connect_packet(client_id: str, keepalive: int, clean_session: bool,
                   username: str | None, password: str | None) -> bytes:
    flags = 0x02 if clean_session else 0
    payload = _string(client_id)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
    if password is not None:
        flags |= 0x40
        payload += _string(password)
    header = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    return _packet(0x10, header + payload)


def publish_packet(topic: str, payload: bytes, qos: int, retain: bool, pid: int = 0) -> bytes:
    first = 0x30 | (qos << 1) | (1 if retain else 0)
    body = _string(topic) + (struct.pack("!H", pid) if qos else b"") + payload
    return _packet(first, body)


def subscribe_packet(pid: int, filters: list[tuple[str, int]]) -> bytes:
    body = struct.pack("!H", pid) + b"".join(_string(t) + bytes([q]) for t, q in filters)
    return _packet(0x82, body)


PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"


# ---- the client ----------------------------------------------------------------------------


class Client:
    def __init__(self, url: str, client_id: str, *, username: str | None = None,
                 password: str | None = None, cafile: str | None = None, keepalive: int = 60,
                 clean_session: bool = True, timeout: float = 10.0, window: int = 64) -> None:
        """timeout: for connecting and for each answer awaited; window: QoS 1 publishes in
        flight at once before publish() waits for PUBACKs."""
        self.host, self.port, self.tls = parse_url(url)
        self.url = url
        self.client_id = client_id
        self.username = username
        self._password = password  # kept out of repr and messages
        self.cafile = cafile
        self.keepalive = keepalive
        self.clean_session = clean_session
        self.timeout = timeout
        self.window = window
        self.sock: socket.socket | None = None
        self._buf = b""
        self._pending: list[Message] = []  # received while waiting for something else
        self._inflight: set[int] = set()
        self._next_pid = 0
        self._suback: dict[int, list[int]] = {}
        self._subscribing: dict[int, list[str]] = {}  # SUBSCRIBE sent, no SUBACK handled yet
        self._connack: tuple[int, int] | None = None
        self._last_send = 0.0
        self._last_recv = 0.0
        self._ping_sent = 0.0

    def __repr__(self) -> str:
        return f"Client({self.url!r}, {self.client_id!r})"

    # connection

    def connect(self) -> bool:
        """Open the connection and wait for CONNACK; True when the broker kept a session."""
        self._open_socket()
        try:
            self._send(connect_packet(self.client_id, self.keepalive, self.clean_session,
                                      self.username, self._password))
            deadline = time.monotonic() + self.timeout
            while self._connack is None:  # a kept session's messages may follow in one read
                self._pending.extend(self._pump(deadline))
        except MQTTError as e:  # TCP was accepted, MQTT never answered: unreachable all the same
            self.close()
            raise BrokerUnreachable(str(e)) from None
        present, code = self._connack
        if code:
            self.close()
            raise Refused(f"the broker refused the connection: "
                          f"{CONNACK_CODES.get(code, f'code {code}')}")
        return bool(present & 1)

    def _open_socket(self) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except socket.gaierror:
            raise BrokerUnreachable(f"cannot resolve host {self.host!r}") from None
        except TimeoutError:
            raise BrokerUnreachable("cannot connect: timed out") from None
        except OSError as e:
            reason = e.strerror or str(e)
            raise BrokerUnreachable(f"cannot connect: {reason.lower()}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls:
            try:
                ctx = ssl.create_default_context(cafile=self.cafile)
                sock = ctx.wrap_socket(sock, server_hostname=self.host)
            except ssl.SSLCertVerificationError as e:
                sock.close()
                raise BrokerUnreachable(f"TLS: certificate not trusted "
                                        f"({e.verify_message})") from None
            except (ssl.SSLError, OSError) as e:
                sock.close()
                raise BrokerUnreachable(f"TLS failed: {e}") from None
        self.sock = sock
        self._buf = b""
        self._pending = []
        self._inflight.clear()
        self._suback.clear()
        self._subscribing.clear()
        self._connack = None
        self._last_recv = self._last_send = time.monotonic()
        self._ping_sent = 0.0

    def disconnect(self) -> None:
        """A clean DISCONNECT (no will), then close."""
        if self.sock is not None:
            try:
                self._send(DISCONNECT)
            except MQTTError:
                pass
        self.close()

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    # subscribing

    def subscribe(self, filters: list[tuple[str, int]], wait: bool = True) -> list[int]:
        """Subscribe; wait: for SUBACK, and return the granted QoS per filter. Without
        waiting, receive() checks the SUBACK when it comes: a session's queued messages may
        come first, and a subscriber should not hoard them meanwhile. A filter the broker
        refuses (0x80) raises Refused."""
        pid = self._pid()
        self._send(subscribe_packet(pid, filters))
        self._subscribing[pid] = [t for t, _ in filters]
        if not wait:
            return []
        deadline = time.monotonic() + self.timeout
        while pid not in self._suback:
            self._pending.extend(self._pump(deadline))
        return self._granted(pid)

    def _granted(self, pid: int) -> list[int]:
        granted = self._suback.pop(pid)
        topics = self._subscribing.pop(pid)
        for topic, code in zip(topics, granted):
            if code == 0x80:
                raise Refused(f"the broker refused the subscription to {topic!r}")
        return granted

    def receive(self, timeout: float) -> list[Message]:
        """The messages of one read from the broker (an empty list when none came within
        `timeout` seconds). QoS 1 messages are acknowledged before this returns."""
        if self._pending:
            out, self._pending = self._pending, []
            return out
        self._keep_alive()
        out = self._pump(time.monotonic() + timeout, quiet=True)
        for pid in [p for p in self._suback if p in self._subscribing]:
            self._granted(pid)
        return out

    # publishing

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Send one PUBLISH; with QoS 1, wait first while `window` publishes are unacked."""
        if qos not in (0, 1):
            raise ValueError("QoS 0 or 1 only")
        pid = 0
        if qos:
            deadline = time.monotonic() + self.timeout
            while len(self._inflight) >= self.window:
                self._pending.extend(self._pump(deadline))
            pid = self._pid()
            self._inflight.add(pid)
        self._send(publish_packet(topic, payload, qos, retain, pid))

    def flush(self) -> None:
        """Wait until every QoS 1 publish has its PUBACK."""
        deadline = time.monotonic() + self.timeout
        while self._inflight:
            self._pending.extend(self._pump(deadline))

    def idle(self, seconds: float) -> None:
        """Wait `seconds` while keeping the connection alive (pings, PUBACKs)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self._keep_alive()
            self._pending.extend(self._pump(time.monotonic() + min(left, 1.0), quiet=True))

    # the wire

    def _pid(self) -> int:
        for _ in range(0xFFFF):
            self._next_pid = self._next_pid % 0xFFFF + 1
            if self._next_pid not in self._inflight and self._next_pid not in self._subscribing:
                return self._next_pid
        raise MQTTError("no free packet identifier")

    def _send(self, data: bytes) -> None:
        if self.sock is None:
            raise ConnectionLost("not connected")
        try:
            self.sock.settimeout(self.timeout)
            self.sock.sendall(data)
        except OSError as e:
            self.close()
            raise ConnectionLost(f"connection to the broker lost: {e.strerror or e}") from None
        self._last_send = time.monotonic()

    def _keep_alive(self) -> None:
        if not self.keepalive or self.sock is None:
            return
        now = time.monotonic()
        if self._ping_sent and now - self._last_recv > self.keepalive:
            self.close()
            raise ConnectionLost("the broker stopped answering (no PINGRESP)")
        if now - self._last_send >= self.keepalive / 2:
            self._send(PINGREQ)
            if not self._ping_sent:
                self._ping_sent = now

    def _pump(self, deadline: float, quiet: bool = False) -> list[Message]:
        """One read (until deadline): parse every complete packet in it, ack QoS 1 messages,
        return the messages. quiet: a timeout returns [] instead of raising."""
        if self.sock is None:
            raise ConnectionLost("not connected")
        left = deadline - time.monotonic()
        if left <= 0:
            if quiet:
                return []
            raise MQTTError("no answer from the broker (timed out)")
        try:
            self.sock.settimeout(left)
            data = self.sock.recv(READ_SIZE)
        except (TimeoutError, ssl.SSLWantReadError):
            if quiet:
                return []
            raise MQTTError("no answer from the broker (timed out)") from None
        except OSError as e:
            self.close()
            raise ConnectionLost(f"connection to the broker lost: {e.strerror or e}") from None
        if not data:
            self.close()
            raise ConnectionLost("the broker closed the connection")
        self._last_recv = time.monotonic()
        self._ping_sent = 0.0
        if self._buf:
            data = self._buf + data
        messages: list[Message] = []
        acks: list[bytes] = []
        self._buf = data[self._parse(data, messages, acks):]
        if acks:
            self._send(b"".join(acks))
        return messages

    def _parse(self, data: bytes, messages: list[Message], acks: list[bytes]) -> int:
        """Parse complete packets from data into messages / acks; returns bytes consumed.
        The hot loop of a subscriber: locals only, PUBLISH first."""
        n = len(data)
        i = 0
        append = messages.append
        while n - i >= 2:
            first = data[i]
            j = i + 1
            length = 0
            shift = 0
            while True:  # remaining length: 1-4 bytes, 7 bits each, low first
                if j >= n:
                    return i
                digit = data[j]
                j += 1
                length |= (digit & 0x7F) << shift
                if digit < 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise ConnectionLost("malformed packet from the broker")
            end = j + length
            if end > n:
                return i
            kind = first >> 4
            if kind == PUBLISH:
                p = j + 2 + ((data[j] << 8) | data[j + 1]) if length >= 2 else end + 1
                if p > end:
                    raise ConnectionLost("malformed PUBLISH from the broker")
                topic = data[j + 2:p].decode("utf-8", "replace")
                qos = (first >> 1) & 3
                if qos:
                    acks.append(b"\x40\x02" + data[p:p + 2])
                    p += 2
                append((topic, data[p:end], bool(first & 1), qos))
            elif kind == PUBACK:
                self._inflight.discard((data[j] << 8) | data[j + 1])
            elif kind == SUBACK:
                self._suback[(data[j] << 8) | data[j + 1]] = list(data[j + 2:end])
            elif kind == CONNACK:
                self._connack = (data[j], data[j + 1])
            elif kind != PINGRESP:
                raise ConnectionLost(f"unexpected packet type {kind} from the broker")
            i = end
        return i
