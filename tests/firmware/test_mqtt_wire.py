# Portable tests (CPython and the MicroPython VM) for net.mqtt_wire, the MQTT 3.1.1 wire
# format, plus the parts of net.mqtt / net.transport that need no network. Expected bytes are
# spelled out from the MQTT 3.1.1 specification (OASIS, 2014), section by section.
import random

from net.mqtt_wire import (
    CONNACK,
    DISCONNECT_PACKET,
    PINGREQ_PACKET,
    PINGRESP,
    PUBACK,
    PUBLISH,
    SUBACK,
    SUBACK_FAILURE,
    UNSUBACK,
    Decoder,
    PacketTooLarge,
    ProtocolError,
    check_topic_filter,
    connack_reason,
    connect_packet,
    decode_varint,
    encode_varint,
    next_packet_id,
    parse_broker_url,
    puback_packet,
    publish_packet,
    set_dup,
    subscribe_packet,
    unsubscribe_packet,
)


def raises(exc_class, fn, *args):
    """The exception fn(*args) raised; fails unless it is an exc_class."""
    try:
        fn(*args)
    except exc_class as e:
        return e
    raise AssertionError(f"no {exc_class.__name__} from {fn!r}{args!r}")


def decode_all(data, max_packet=1 << 20, chunks=None):
    """Every packet in data, fed whole (chunks=None) or in pieces of the given sizes (cycled)."""
    d = Decoder(max_packet)
    out = []
    if chunks is None:
        pieces = [data]
    else:
        pieces = []
        i = 0
        k = 0
        while i < len(data):
            n = chunks[k % len(chunks)]
            pieces.append(data[i:i + n])
            i += n
            k += 1
    for piece in pieces:
        d.feed(piece)
        while True:
            p = d.next_packet()
            if p is None:
                break
            out.append(p)
    return out, d


def decode_one(data):
    packets, d = decode_all(data)
    assert len(packets) == 1, packets
    assert d.pending() == 0
    return packets[0]


def same_publish(p, topic, payload, qos, retain, dup, pid):
    assert p.kind == PUBLISH
    assert p.topic == topic, (p.topic, topic)
    assert p.payload == payload
    assert p.qos == qos and p.retain == retain and p.dup == dup and p.pid == pid


# ---- remaining length (2.2.3) ----------------------------------------------------------

VARINTS = [
    (0, b"\x00"),
    (127, b"\x7f"),
    (128, b"\x80\x01"),
    (16383, b"\xff\x7f"),
    (16384, b"\x80\x80\x01"),
    (2097151, b"\xff\xff\x7f"),
    (2097152, b"\x80\x80\x80\x01"),
    (268435455, b"\xff\xff\xff\x7f"),
]


def test_varint_known_encodings_both_ways():
    for value, wire in VARINTS:
        assert encode_varint(value) == wire, value
        assert decode_varint(wire) == (value, len(wire)), value
        # at an offset, with bytes after it
        assert decode_varint(b"\x30" + wire + b"\x99", 1) == (value, 1 + len(wire)), value


def test_varint_out_of_range_is_refused_when_encoding():
    raises(ValueError, encode_varint, -1)
    raises(ValueError, encode_varint, 268435456)


def test_varint_cut_short_asks_for_more():
    for wire in (b"", b"\x80", b"\xff\xff", b"\x80\x80\x80"):
        assert decode_varint(wire) == (None, 0), wire


def test_varint_with_a_fifth_byte_is_malformed():
    raises(ProtocolError, decode_varint, b"\xff\xff\xff\xff\x7f")
    raises(ProtocolError, decode_varint, b"\x80\x80\x80\x80\x01")
    # known to be malformed at the 4th byte already, before a 5th arrives
    raises(ProtocolError, decode_varint, b"\xff\xff\xff\xff")
    d = Decoder()
    d.feed(b"\x30\xff\xff\xff")
    assert d.next_packet() is None
    d.feed(b"\xff")
    raises(ProtocolError, d.next_packet)


# ---- packets the client sends --------------------------------------------------------------


def test_connect_minimal_is_byte_exact():
    # 3.1: fixed header 0x10, remaining 13; "MQTT", level 4, flags: clean session (0x02),
    # keepalive 60; payload: client id "c"
    expect = b"\x10\x0d" + b"\x00\x04MQTT" + b"\x04" + b"\x02" + b"\x00\x3c" + b"\x00\x01c"
    assert connect_packet("c", 60, True) == expect


def test_connect_with_will_and_credentials_is_byte_exact():
    got = connect_packet("shelf-1", keepalive=300, clean_session=False,
                         will_topic="s/1/status", will_payload=b"offline", will_qos=1,
                         will_retain=True, username="user", password=b"pw")
    # flags: username 0x80, password 0x40, will retain 0x20, will QoS 1 (0x08), will 0x04
    flags = 0x80 | 0x40 | 0x20 | 0x08 | 0x04
    body = (b"\x00\x04MQTT\x04" + bytes((flags,)) + b"\x01\x2c"
            + b"\x00\x07shelf-1" + b"\x00\x0as/1/status" + b"\x00\x07offline"
            + b"\x00\x04user" + b"\x00\x02pw")
    # 10 (variable header) + 9 + 12 + 9 (client id, will topic, will payload) + 6 + 4
    assert len(body) == 50
    assert got == b"\x10\x32" + body


def test_connect_username_without_password_and_will_qos0():
    got = connect_packet("id", 0, True, "t", b"", 0, False, "u", None)
    flags = 0x80 | 0x04 | 0x02
    body = b"\x00\x04MQTT\x04" + bytes((flags,)) + b"\x00\x00" + b"\x00\x02id" + b"\x00\x01t"
    body += b"\x00\x00" + b"\x00\x01u"
    assert got == bytes((0x10, len(body))) + body


def test_connect_refuses_what_the_spec_forbids():
    raises(ValueError, connect_packet, "c", 60, True, None, b"", 0, False, None, b"pw")
    raises(ValueError, connect_packet, "", 60, False)
    raises(ValueError, connect_packet, "c", 65536, True)
    raises(ValueError, connect_packet, "c", 60, True, "t", b"", 3)
    raises(ValueError, connect_packet, "c", 60, True, "t/+", b"")
    raises(ValueError, connect_packet, "c\x00", 60, True)
    assert connect_packet("", 60, True)[-2:] == b"\x00\x00"  # empty id with clean session


def test_publish_qos0_is_byte_exact():
    # 3.3: 0x30, remaining 7: topic "a/b" (2+3), payload "hi"; no packet id at QoS 0
    assert publish_packet("a/b", b"hi") == b"\x30\x07\x00\x03a/b" + b"hi"
    assert publish_packet("a/b", "hi") == b"\x30\x07\x00\x03a/b" + b"hi"
    assert publish_packet("a", b"") == b"\x30\x03\x00\x01a"


def test_publish_qos1_retain_dup_is_byte_exact():
    # DUP 0x08 | QoS 1 0x02 | RETAIN 0x01; packet id 10 after the topic
    expect = b"\x3b\x09\x00\x03a/b\x00\x0ahi"
    assert publish_packet("a/b", b"hi", 1, True, True, 10) == expect
    packet = publish_packet("a/b", b"hi", 1, True, False, 10)
    assert packet[0] == 0x33
    set_dup(packet)
    assert packet == expect


def test_publish_with_a_two_byte_remaining_length():
    payload = bytes(range(200))
    packet = publish_packet("t", payload, 1, False, False, 0x0102)
    # remaining = 2 + 1 + 2 + 200 = 205 = 0xcd -> 0xcd 0x01
    assert packet[:8] == b"\x32\xcd\x01\x00\x01t\x01\x02"
    assert packet[8:] == payload


def test_publish_refuses_bad_arguments():
    raises(ValueError, publish_packet, "t", b"", 1, False, False, 0)
    raises(ValueError, publish_packet, "t", b"", 1, False, False, 65536)
    raises(ValueError, publish_packet, "t", b"", 2, False, False, 1)
    raises(ValueError, publish_packet, "t", b"", 0, False, True)
    raises(ValueError, publish_packet, "", b"")
    raises(ValueError, publish_packet, "a/+", b"")
    raises(ValueError, publish_packet, "a/#", b"")


def test_small_fixed_packets_are_byte_exact():
    assert puback_packet(0x1234) == b"\x40\x02\x12\x34"
    assert puback_packet(65535) == b"\x40\x02\xff\xff"
    raises(ValueError, puback_packet, 0)
    assert PINGREQ_PACKET == b"\xc0\x00"
    assert DISCONNECT_PACKET == b"\xe0\x00"


def test_subscribe_and_unsubscribe_are_byte_exact():
    # 3.8: 0x82 (reserved bits 0010), packet id, then (filter, requested QoS) pairs
    got = subscribe_packet(1, [("a/+", 1), ("b/#", 0)])
    assert got == b"\x82\x0e\x00\x01" + b"\x00\x03a/+\x01" + b"\x00\x03b/#\x00"
    # 3.10: 0xa2, packet id, filters
    assert unsubscribe_packet(2, ["a/+"]) == b"\xa2\x07\x00\x02\x00\x03a/+"
    raises(ValueError, subscribe_packet, 1, [])
    raises(ValueError, subscribe_packet, 0, [("a", 0)])
    raises(ValueError, subscribe_packet, 1, [("a", 3)])
    raises(ValueError, unsubscribe_packet, 1, [])


def test_topic_filter_rules():
    for ok in ("#", "a/#", "+", "+/b", "a/+/c", "a//b", "/", "sport/tennis/+"):
        check_topic_filter(ok)
    for bad in ("", "a#", "a/#/b", "a+", "a/b+/c", "#/a", "++"):
        raises(ValueError, check_topic_filter, bad)


def test_unicode_topics_are_utf8_on_the_wire():
    packet = publish_packet("caf\u00e9/\u00fc", b"x")
    # "café/ü": c, a, f, é (2 bytes), /, ü (2 bytes): 8 bytes in UTF-8
    assert packet[2:4] == b"\x00\x08"
    assert packet[4:12] == b"caf\xc3\xa9/\xc3\xbc"
    p = decode_one(packet)
    assert p.topic == "caf\u00e9/\u00fc"


# ---- packets a broker sends ----------------------------------------------------------------


def test_connack_decoding_and_reasons():
    p = decode_one(b"\x20\x02\x01\x00")
    assert p.kind == CONNACK and p.session_present and p.code == 0 and p.accepted
    p = decode_one(b"\x20\x02\x00\x05")
    assert not p.session_present and p.code == 5 and not p.accepted
    assert p.reason == "not authorized"
    assert connack_reason(4) == "bad user name or password"
    assert connack_reason(1) == "unacceptable protocol version"
    assert "unknown" in connack_reason(99)


def test_ack_packets_decode():
    p = decode_one(b"\x40\x02\x00\x07")
    assert p.kind == PUBACK and p.pid == 7
    p = decode_one(b"\xb0\x02\xff\xff")
    assert p.kind == UNSUBACK and p.pid == 65535
    p = decode_one(b"\x90\x05\x00\x07\x01\x80\x00")
    assert p.kind == SUBACK and p.pid == 7 and p.granted == [1, SUBACK_FAILURE, 0]
    assert decode_one(b"\xd0\x00").kind == PINGRESP


def test_publish_round_trips():
    cases = [
        ("t", b"", 0, False, False, 0),
        ("store/shelf-1/cmd", b"{\"op\":\"tare\"}", 1, False, False, 1),
        ("a/b", bytes(range(256)), 1, True, True, 65535),
        ("x", b"\x00" * 127, 0, True, False, 0),
        ("y/z", b"p" * 16000, 1, False, False, 300),
    ]
    for topic, payload, qos, retain, dup, pid in cases:
        p = decode_one(publish_packet(topic, payload, qos, retain, dup, pid))
        same_publish(p, topic, payload, qos, retain, dup, pid)


def test_puback_round_trips():
    for pid in (1, 2, 255, 256, 4660, 65535):
        p = decode_one(puback_packet(pid))
        assert p.kind == PUBACK and p.pid == pid


def stream_of_packets():
    parts = [
        b"\x20\x02\x00\x00",
        bytes(publish_packet("a", b"1")),
        b"\x90\x03\x00\x01\x01",
        bytes(publish_packet("b/c", bytes(300), 1, True, False, 42)),
        b"\xd0\x00",
        bytes(puback_packet(9)),
        bytes(publish_packet("d", b"", 1, False, True, 7)),
        b"\xb0\x02\x00\x05",
    ]
    data = b""
    for part in parts:
        data += part
    return data


def summary(packets):
    out = []
    for p in packets:
        if p.kind == PUBLISH:
            out.append((p.kind, p.topic, len(p.payload), p.qos, p.retain, p.dup, p.pid))
        elif p.kind == CONNACK:
            out.append((p.kind, p.session_present, p.code))
        elif p.kind == SUBACK:
            out.append((p.kind, p.pid, p.granted))
        elif p.kind == PINGRESP:
            out.append((p.kind,))
        else:
            out.append((p.kind, p.pid))
    return out


def test_incremental_decoding_whole_byte_by_byte_and_in_odd_chunks():
    data = stream_of_packets()
    whole, _ = decode_all(data)
    expect = [
        (CONNACK, False, 0),
        (PUBLISH, "a", 1, 0, False, False, 0),
        (SUBACK, 1, [1]),
        (PUBLISH, "b/c", 300, 1, True, False, 42),
        (PINGRESP,),
        (PUBACK, 9),
        (PUBLISH, "d", 0, 1, False, True, 7),
        (UNSUBACK, 5),
    ]
    assert summary(whole) == expect
    for chunks in ([1], [2], [3], [5, 1, 7], [13, 2], [64], [299, 1]):
        got, d = decode_all(data, chunks=chunks)
        assert summary(got) == expect, chunks
        assert d.pending() == 0


def test_decoder_keeps_a_partial_packet_until_the_rest_arrives():
    data = bytes(publish_packet("abc", b"hello", 1, False, False, 3))
    d = Decoder()
    d.feed(data[:5])
    assert d.next_packet() is None
    assert d.pending() == 5
    d.feed(data[5:] + b"\xd0")
    p = d.next_packet()
    same_publish(p, "abc", b"hello", 1, False, False, 3)
    assert d.next_packet() is None  # half a PINGRESP
    d.feed(b"\x00")
    assert d.next_packet().kind == PINGRESP
    assert d.next_packet() is None and d.pending() == 0


MALFORMED = [
    b"\x20\x03\x00\x00\x00",  # CONNACK of 3 bytes
    b"\x21\x02\x00\x00",  # CONNACK with reserved header flags
    b"\x20\x02\x02\x00",  # CONNACK with reserved acknowledge flags
    b"\x40\x02\x00\x00",  # PUBACK for packet id 0
    b"\x40\x03\x00\x01\x00",  # PUBACK of 3 bytes
    b"\x41\x02\x00\x01",  # PUBACK with flags
    b"\x90\x02\x00\x01",  # SUBACK without return codes
    b"\x90\x03\x00\x01\x03",  # SUBACK return code 3
    b"\xb0\x01\x00",  # UNSUBACK too short
    b"\xd0\x01\x00",  # PINGRESP with a body
    b"\x36\x05\x00\x01a\x00\x01",  # PUBLISH QoS 3
    b"\x34\x05\x00\x01a\x00\x01",  # PUBLISH QoS 2 (refused: not supported)
    b"\x38\x03\x00\x01a",  # DUP on a QoS 0 PUBLISH
    b"\x30\x03\x00\x05a",  # topic runs past the packet
    b"\x30\x01\x00",  # no room for a topic length
    b"\x30\x00",  # empty PUBLISH
    b"\x30\x02\x00\x00",  # empty topic
    b"\x30\x03\x00\x01#",  # wildcard in a topic name
    b"\x30\x05\x00\x03a+b",  # wildcard in a topic name
    b"\x32\x03\x00\x01a",  # QoS 1 without packet id
    b"\x32\x04\x00\x01a\x00",  # QoS 1 with half a packet id
    b"\x32\x05\x00\x01a\x00\x00",  # QoS 1 with packet id 0
    b"\x30\x04\x00\x02\xff\xfe",  # topic not UTF-8
    b"\x30\x04\x00\x02\xc3\x28",  # topic not UTF-8 (bad continuation byte)
    b"\x30\x03\x00\x01\x00",  # topic with U+0000
    b"\x50\x02\x00\x01",  # PUBREC (QoS 2)
    b"\x62\x02\x00\x01",  # PUBREL (QoS 2)
    b"\x70\x02\x00\x01",  # PUBCOMP (QoS 2)
    b"\x10\x00",  # CONNECT: only a client sends it
    b"\x82\x00",  # SUBSCRIBE
    b"\xa2\x00",  # UNSUBSCRIBE
    b"\xc0\x00",  # PINGREQ
    b"\xe0\x00",  # DISCONNECT
    b"\x00\x00",  # type 0 is reserved
    b"\xf0\x00",  # type 15 is reserved
    b"\x30\xff\xff\xff\xff\x7f",  # 5-byte remaining length
]


def test_malformed_packets_raise_protocol_error():
    for data in MALFORMED:
        for chunks in (None, [1]):
            raises(ProtocolError, decode_all, data, 1 << 20, chunks)


def test_a_good_packet_before_a_bad_one_is_still_delivered():
    d = Decoder()
    d.feed(b"\xd0\x00" + b"\x40\x02\x00\x00")
    assert d.next_packet().kind == PINGRESP
    raises(ProtocolError, d.next_packet)


def test_oversize_packet_is_refused_from_its_header():
    d = Decoder(max_packet=100)
    d.feed(b"\x30\xc8\x01")  # remaining length 200: refused before the body arrives
    e = raises(PacketTooLarge, d.next_packet)
    assert isinstance(e, ProtocolError)
    # exactly at the limit: 2 header bytes + 98
    packet = publish_packet("t", bytes(95))
    assert len(packet) == 100
    assert decode_all(packet, 100)[0][0].payload == bytes(95)
    raises(PacketTooLarge, decode_all, publish_packet("t", bytes(96)), 100)


# ---- packet ids and URLs ---------------------------------------------------------------


class Everything:
    def __contains__(self, item):
        return True


def test_packet_ids_wrap_and_skip_zero_and_ids_in_use():
    assert next_packet_id(0) == 1
    assert next_packet_id(1) == 2
    assert next_packet_id(65534) == 65535
    assert next_packet_id(65535) == 1
    assert next_packet_id(65535, {1: None, 2: None}) == 3
    assert next_packet_id(4, {5, 6, 8}) == 7
    raises(ValueError, next_packet_id, 1, Everything())
    pid = 65000
    seen_one = False
    for _ in range(1100):
        pid = next_packet_id(pid)
        assert 1 <= pid <= 65535
        seen_one = seen_one or pid == 1
    assert seen_one and pid == 65000 + 1100 - 65535


def test_broker_urls():
    assert parse_broker_url("mqtt://broker.local") == ("broker.local", 1883, False)
    assert parse_broker_url("mqtts://broker.local") == ("broker.local", 8883, True)
    assert parse_broker_url("mqtt://10.0.0.2:1884") == ("10.0.0.2", 1884, False)
    assert parse_broker_url("MQTTS://h:443/") == ("h", 443, True)
    assert parse_broker_url("mqtt://[::1]") == ("::1", 1883, False)
    assert parse_broker_url("mqtts://[fe80::1]:9000") == ("fe80::1", 9000, True)
    bad = [
        "", "broker:1883", "tcp://h:1883", "http://h", "ws://h", "mqtt://", "mqtt://:1883",
        "mqtt://h:", "mqtt://h:0", "mqtt://h:65536", "mqtt://h:port", "mqtt://h:-1",
        "mqtt://h/topic", "mqtt://u:p@h", "mqtt://h?x=1", "mqtt://[::1", "mqtt://[::1]x",
        "mqtt://h:1:2",
    ]
    for url in bad:
        e = raises(ValueError, parse_broker_url, url)
        assert "URL" in str(e), url


# ---- deterministic fuzz ----------------------------------------------------------------

KINDS = (0x20, 0x30, 0x32, 0x34, 0x38, 0x3B, 0x40, 0x62, 0x90, 0xB0, 0xD0, 0xF0)


def fuzz_case(rng):
    n = rng.getrandbits(5)
    if rng.getrandbits(1):
        # a plausible header, so that the body rules are reached too
        body = bytes(rng.getrandbits(8) for _ in range(n))
        if rng.getrandbits(2) == 0 and n >= 3:
            body = b"\x00\x01" + (b"a" if rng.getrandbits(1) else b"+") + body[3:]
        return bytes((KINDS[rng.getrandbits(8) % len(KINDS)], len(body))) + body
    return bytes(rng.getrandbits(8) for _ in range(n + 1))


def mutate(data, rng):
    data = bytearray(data)
    for _ in range(1 + rng.getrandbits(2)):
        data[rng.getrandbits(16) % len(data)] = rng.getrandbits(8)
    return bytes(data)


def outcome(data):
    """'ok' (decoded, nothing left over), 'more' (waits for bytes) or 'error'."""
    d = Decoder(max_packet=64)
    d.feed(data)
    try:
        while d.next_packet() is not None:
            pass
    except ProtocolError:
        return "error"
    return "ok" if d.pending() == 0 else "more"


def test_fuzz_random_bytes_decode_or_raise_protocol_error():
    rng = random
    rng.seed(20250611)
    seen = {"ok": 0, "more": 0, "error": 0}
    valid = [bytes(publish_packet("a/b", b"xyz", 1, False, False, 5)), b"\x20\x02\x00\x00",
             b"\x90\x04\x00\x02\x01\x80", bytes(puback_packet(3))]
    for i in range(2000):
        if i % 4 == 3:
            data = mutate(valid[i % len(valid)], rng)
        else:
            data = fuzz_case(rng)
        seen[outcome(data)] += 1  # anything but ProtocolError escapes and fails the test
    assert seen["ok"] > 50 and seen["error"] > 500 and seen["more"] > 50, seen


# ---- the client's pure parts ---------------------------------------------------------------


def test_client_modules_import_without_sockets_or_ssl():
    import net.mqtt
    import net.transport

    assert net.mqtt.MQTTClient and net.transport.Transport


def test_backoff_grows_jittered_and_capped():
    from net.mqtt import backoff_delay_ms

    assert backoff_delay_ms(1, 1000, 60000, 0) == 500
    assert backoff_delay_ms(1, 1000, 60000, 65535) == 999
    for attempt, full in ((1, 1000), (2, 2000), (3, 4000), (6, 32000), (7, 60000),
                          (50, 60000), (100000, 60000)):
        low = backoff_delay_ms(attempt, 1000, 60000, 0)
        high = backoff_delay_ms(attempt, 1000, 60000, 65535)
        assert low == full // 2 and full // 2 <= high < full, (attempt, low, high)
    random.seed(7)
    delays = [backoff_delay_ms(4, 100, 10000, random.getrandbits(16)) for _ in range(50)]
    assert min(delays) >= 400 and max(delays) < 800
    assert len(set(delays)) > 10  # jittered, not in step


def test_transport_settings_need_no_network():
    from net.transport import Transport

    t = Transport.from_url("mqtts://broker.local", cafile="/certs/ca.pem")
    assert (t.host, t.port, t.tls, t.server_hostname) == ("broker.local", 8883, True,
                                                          "broker.local")
    t = Transport.from_url("mqtt://10.1.2.3:1884")
    assert (t.host, t.port, t.tls) == ("10.1.2.3", 1884, False)
    e = raises(ValueError, Transport, "h", 8883, True)
    assert "CA" in str(e)
    raises(ValueError, Transport.from_url, "http://h")
