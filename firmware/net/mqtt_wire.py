"""MQTT 3.1.1 on the wire: the packets a client sends, and an incremental decoder for the
packets a broker sends. Pure and synchronous: no sockets, no asyncio, no clock.

Encoding (each returns a new bytearray; a PUBLISH stays mutable so that a resend can set DUP):
    connect_packet(client_id, ...), publish_packet(topic, payload, qos, retain, dup, pid),
    puback_packet(pid), subscribe_packet(pid, [(filter, qos), ...]),
    unsubscribe_packet(pid, [filter, ...]); PINGREQ_PACKET and DISCONNECT_PACKET are constants.
Decoding: `Decoder(max_packet)`; feed() it bytes as they arrive, then call next_packet() until
it returns None. It gives Connack, Publish, Ack (PUBACK, UNSUBACK), Suback or Pingresp objects.
Anything malformed, oversize or unsupported (QoS 2, packets only a client sends) raises
ProtocolError (PacketTooLarge for oversize), after which the connection must be dropped.
Also here: packet ids (next_packet_id) and broker URLs (parse_broker_url).
"""

from micropython import const

# Control packet types (the high nibble of the first byte).
CONNECT = const(1)
CONNACK = const(2)
PUBLISH = const(3)
PUBACK = const(4)
PUBREC = const(5)
PUBREL = const(6)
PUBCOMP = const(7)
SUBSCRIBE = const(8)
SUBACK = const(9)
UNSUBSCRIBE = const(10)
UNSUBACK = const(11)
PINGREQ = const(12)
PINGRESP = const(13)
DISCONNECT = const(14)

MAX_REMAINING = const(268435455)  # the largest remaining length 4 varint bytes can carry
DEFAULT_MAX_PACKET = const(16384)  # whole incoming packet, header included
SUBACK_FAILURE = const(0x80)
MAX_PACKET_ID = const(65535)

_DUP = const(0x08)
_RETAIN = const(0x01)

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"

# CONNACK return codes 0..5 (MQTT 3.1.1, 3.2.2.3).
_CONNACK_REASONS = (
    "accepted",
    "unacceptable protocol version",
    "identifier rejected",
    "server unavailable",
    "bad user name or password",
    "not authorized",
)


class ProtocolError(Exception):
    """The broker sent something malformed or unsupported; the connection must be dropped."""


class PacketTooLarge(ProtocolError):
    """An incoming packet is larger than the decoder's max_packet."""


def connack_reason(code):
    """A readable reason for a CONNACK return code."""
    if 0 <= code < len(_CONNACK_REASONS):
        return _CONNACK_REASONS[code]
    return "unknown return code %d" % code


def next_packet_id(pid, in_use=None):
    """The id after `pid` in 1..65535 (0 is never used), skipping the ids in `in_use`."""
    for _ in range(MAX_PACKET_ID):
        pid = 1 if pid >= MAX_PACKET_ID else pid + 1
        if in_use is None or pid not in in_use:
            return pid
    raise ValueError("all 65535 packet ids are in use")


# ---- encoding --------------------------------------------------------------------------


def encode_varint(n):
    """The remaining-length encoding of n: 7 bits a byte, low bits first, 1 to 4 bytes."""
    if n < 0 or n > MAX_REMAINING:
        raise ValueError("remaining length out of range: %d" % n)
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _packet(first, parts):
    size = 0
    for p in parts:
        size += len(p)
    out = bytearray((first,))
    out.extend(encode_varint(size))
    for p in parts:
        out.extend(p)
    return out


def _u16(n):
    return bytes(((n >> 8) & 0xFF, n & 0xFF))


def _utf8(s, what):
    # A UTF-8 string field: 2-byte length, no U+0000 (MQTT-1.5.3-2).
    b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
    if len(b) > 65535:
        raise ValueError("%s is longer than 65535 bytes" % what)
    if b"\x00" in b:
        raise ValueError("%s contains U+0000" % what)
    return _u16(len(b)) + b


def _binary(data, what):
    b = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if len(b) > 65535:
        raise ValueError("%s is longer than 65535 bytes" % what)
    return _u16(len(b)) + b


def _check_qos(qos, most=1):
    if qos not in (0, 1, 2) or qos > most:
        raise ValueError("unsupported QoS %r" % (qos,))


def _check_pid(pid):
    if not 1 <= pid <= MAX_PACKET_ID:
        raise ValueError("packet id must be 1..65535, not %r" % (pid,))


def _topic_name(topic):
    # A topic to publish to: not empty, no wildcards.
    if not topic:
        raise ValueError("empty topic")
    if "+" in topic or "#" in topic:
        raise ValueError("wildcards are not allowed in a topic name: %r" % (topic,))
    return _utf8(topic, "topic")


def check_topic_filter(flt):
    """Raise ValueError unless `flt` is a valid subscription filter ('+' and '#' whole levels,
    '#' last)."""
    if not flt:
        raise ValueError("empty topic filter")
    levels = flt.split("/")
    last = len(levels) - 1
    for i in range(len(levels)):
        level = levels[i]
        if ("#" in level and (level != "#" or i != last)) or ("+" in level and level != "+"):
            raise ValueError("bad wildcard in topic filter %r" % (flt,))


def connect_packet(client_id, keepalive=60, clean_session=True, will_topic=None,
                   will_payload=b"", will_qos=0, will_retain=False, username=None,
                   password=None):
    """CONNECT for protocol level 4 (3.1.1). keepalive is in seconds (0: no keepalive)."""
    if not 0 <= keepalive <= 65535:
        raise ValueError("keepalive must be 0..65535 s")
    if not client_id and not clean_session:
        raise ValueError("an empty client id needs clean_session=True")  # MQTT-3.1.3-7
    flags = 0x02 if clean_session else 0
    payload = [_utf8(client_id, "client id")]
    if will_topic is not None:
        _check_qos(will_qos, 2)
        flags |= 0x04 | (will_qos << 3) | (0x20 if will_retain else 0)
        payload.append(_topic_name(will_topic))
        payload.append(_binary(will_payload, "will payload"))
    if username is not None:
        flags |= 0x80
        payload.append(_utf8(username, "username"))
    if password is not None:
        if username is None:
            raise ValueError("a password needs a username in MQTT 3.1.1")  # MQTT-3.1.2-22
        flags |= 0x40
        payload.append(_binary(password, "password"))
    header = b"\x00\x04MQTT\x04" + bytes((flags,)) + _u16(keepalive)
    return _packet(CONNECT << 4, [header] + payload)


def publish_packet(topic, payload, qos=0, retain=False, dup=False, pid=0):
    """PUBLISH at QoS 0 or 1 (QoS 1 needs a packet id 1..65535)."""
    _check_qos(qos)
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    first = (PUBLISH << 4) | (qos << 1) | (_RETAIN if retain else 0)
    if dup:
        if not qos:
            raise ValueError("DUP needs QoS > 0")  # MQTT-3.3.1-2
        first |= _DUP
    if qos:
        _check_pid(pid)
        return _packet(first, (_topic_name(topic), _u16(pid), payload))
    return _packet(first, (_topic_name(topic), payload))


def set_dup(packet):
    """Mark an encoded QoS 1 PUBLISH as a redelivery (DUP=1), in place."""
    packet[0] |= _DUP


def puback_packet(pid):
    _check_pid(pid)
    return bytearray((PUBACK << 4, 2, (pid >> 8) & 0xFF, pid & 0xFF))


def subscribe_packet(pid, topics):
    """SUBSCRIBE for [(filter, qos), ...] (at least one)."""
    _check_pid(pid)
    if not topics:
        raise ValueError("SUBSCRIBE needs at least one topic filter")
    parts = [_u16(pid)]
    for flt, qos in topics:
        check_topic_filter(flt)
        _check_qos(qos, 2)
        parts.append(_utf8(flt, "topic filter"))
        parts.append(bytes((qos,)))
    return _packet((SUBSCRIBE << 4) | 0x02, parts)


def unsubscribe_packet(pid, filters):
    """UNSUBSCRIBE for [filter, ...] (at least one)."""
    _check_pid(pid)
    if not filters:
        raise ValueError("UNSUBSCRIBE needs at least one topic filter")
    parts = [_u16(pid)]
    for flt in filters:
        check_topic_filter(flt)
        parts.append(_utf8(flt, "topic filter"))
    return _packet((UNSUBSCRIBE << 4) | 0x02, parts)


# ---- decoding --------------------------------------------------------------------------


class Connack:
    kind = CONNACK

    def __init__(self, session_present, code):
        self.session_present = session_present
        self.code = code

    @property
    def accepted(self):
        return self.code == 0

    @property
    def reason(self):
        return connack_reason(self.code)


class Publish:
    kind = PUBLISH

    def __init__(self, topic, payload, qos=0, retain=False, dup=False, pid=0):
        self.topic = topic  # str
        self.payload = payload  # bytes
        self.qos = qos
        self.retain = retain
        self.dup = dup
        self.pid = pid  # 0 at QoS 0


class Ack:
    """PUBACK or UNSUBACK: `kind` says which."""

    def __init__(self, kind, pid):
        self.kind = kind
        self.pid = pid


class Suback:
    kind = SUBACK

    def __init__(self, pid, granted):
        self.pid = pid
        self.granted = granted  # one code per filter: the granted QoS, or SUBACK_FAILURE


class Pingresp:
    kind = PINGRESP


_PINGRESP = Pingresp()


class Decoder:
    """Incremental decoder of a broker's byte stream.

    feed(data) appends bytes; next_packet() returns the next complete packet or None when
    more bytes are needed. An incoming packet longer than max_packet bytes (header included)
    raises PacketTooLarge as soon as its header is in, before its body is buffered.
    """

    def __init__(self, max_packet=DEFAULT_MAX_PACKET):
        self.max_packet = max_packet
        self._buf = bytearray()
        self._pos = 0  # first byte not yet decoded

    def feed(self, data):
        if self._pos:
            # Drop what was decoded before growing (a bytearray cannot delete a slice in
            # MicroPython); the leftover is at most one partial packet.
            self._buf = self._buf[self._pos:]
            self._pos = 0
        self._buf.extend(data)

    def pending(self):
        """Bytes received but not yet decoded."""
        return len(self._buf) - self._pos

    def next_packet(self):
        buf = self._buf
        pos = self._pos
        end = len(buf)
        if end - pos < 2:
            return None
        size, i = decode_varint(buf, pos + 1)
        if size is None:
            return None
        if (i - pos) + size > self.max_packet:
            raise PacketTooLarge("incoming packet of %d bytes exceeds the limit of %d"
                                 % ((i - pos) + size, self.max_packet))
        if end - i < size:
            return None
        self._pos = i + size
        return _parse(buf[pos], buf, i, i + size)


def decode_varint(data, pos=0):
    """(value, next position) of the remaining length at data[pos]; (None, pos) when it is
    cut short. Raises ProtocolError for a 5th length byte."""
    value = 0
    shift = 0
    i = pos
    while True:
        if i >= len(data):
            return None, pos
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
        if shift >= 28:
            raise ProtocolError("remaining length longer than 4 bytes")


def _parse(first, buf, start, end):
    kind = first >> 4
    size = end - start
    if kind == PUBLISH:
        return _parse_publish(first & 0x0F, buf, start, end)
    if kind == PUBREC or kind == PUBREL or kind == PUBCOMP:
        raise ProtocolError("QoS 2 is not supported")
    if kind not in (CONNACK, PUBACK, SUBACK, UNSUBACK, PINGRESP):
        raise ProtocolError("unexpected packet type %d from a broker" % kind)
    _expect(first & 0x0F == 0, "reserved flags set in packet type %d" % kind)
    if kind == CONNACK:
        _expect(size == 2, "CONNACK must be 2 bytes long")
        ack_flags = buf[start]
        _expect(not ack_flags & 0xFE, "reserved CONNACK flags set")
        return Connack(bool(ack_flags & 1), buf[start + 1])
    if kind == SUBACK:
        _expect(size >= 3, "SUBACK without return codes")
        granted = []
        for i in range(start + 2, end):
            code = buf[i]
            _expect(code <= 2 or code == SUBACK_FAILURE, "bad SUBACK return code %d" % code)
            granted.append(code)
        return Suback(_packet_id(buf, start), granted)
    if kind == PINGRESP:
        _expect(size == 0, "PINGRESP must be empty")
        return _PINGRESP
    _expect(size == 2, "PUBACK/UNSUBACK must be 2 bytes long")
    return Ack(kind, _packet_id(buf, start))


def _parse_publish(flags, buf, start, end):
    qos = (flags >> 1) & 0x03
    dup = bool(flags & _DUP)
    _expect(qos != 3, "PUBLISH with QoS 3")  # MQTT-3.3.1-4
    if qos == 2:
        raise ProtocolError("QoS 2 is not supported")
    _expect(qos or not dup, "DUP set on a QoS 0 PUBLISH")  # MQTT-3.3.1-2
    _expect(end - start >= 2, "PUBLISH too short")
    n = (buf[start] << 8) | buf[start + 1]
    i = start + 2 + n
    _expect(i <= end, "PUBLISH topic runs past the packet")
    topic = _decode_utf8(buf, start + 2, i)
    _expect(topic and "+" not in topic and "#" not in topic, "bad topic name in PUBLISH")
    pid = 0
    if qos:
        _expect(i + 2 <= end, "PUBLISH without packet id")
        pid = _packet_id(buf, i)
        i += 2
    return Publish(topic, bytes(buf[i:end]), qos, bool(flags & _RETAIN), dup, pid)


def _packet_id(buf, at):
    pid = (buf[at] << 8) | buf[at + 1]
    _expect(pid != 0, "packet id 0")
    return pid


def _decode_utf8(buf, start, end):
    try:
        s = str(buf[start:end], "utf-8")
    except UnicodeError:
        raise ProtocolError("string is not valid UTF-8")
    _expect("\x00" not in s, "string contains U+0000")
    return s


def _expect(ok, what):
    if not ok:
        raise ProtocolError(what)


# ---- broker URLs -------------------------------------------------------------------------


def parse_broker_url(url):
    """(host, port, tls) of 'mqtt://host[:port]' (port 1883) or 'mqtts://host[:port]' (8883,
    TLS). An IPv6 host goes in brackets. Anything else raises ValueError saying why."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("mqtt", "mqtts"):
        raise ValueError("broker URL %r: expected mqtt://host[:port] or mqtts://host[:port]"
                         % (url,))
    tls = scheme == "mqtts"
    port = 8883 if tls else 1883
    if rest.endswith("/"):
        rest = rest[:-1]
    if "@" in rest:
        raise ValueError("broker URL %r: give the username and password separately" % (url,))
    for c in "/?#":
        if c in rest:
            raise ValueError("broker URL %r: no path, query or fragment allowed" % (url,))
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            raise ValueError("broker URL %r: unclosed '['" % (url,))
        host = rest[1:close]
        tail = rest[close + 1:]
        if tail and not tail.startswith(":"):
            raise ValueError("broker URL %r: junk after ']'" % (url,))
        port_text = tail[1:] if tail else None
    else:
        host, sep, port_text = rest.partition(":")
        if not sep:
            port_text = None
    if not host:
        raise ValueError("broker URL %r: no host" % (url,))
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError("broker URL %r: port must be 1..65535" % (url,))
        port = int(port_text)
    return host, port, tls
