# Portable tests (CPython and the MicroPython VM) for net.clock: SNTP packets, UTC from ticks.
import struct

from net.clock import NTP_TO_UNIX_S, Clock, SntpError, parse_reply, request_packet

UTC_2026 = 1795600000  # 2026-11-25, seconds since 1970


def reply(unix_s, frac=0, mode=4, stratum=2):
    pkt = bytearray(48)
    pkt[0] = 0x20 | mode
    pkt[1] = stratum
    struct.pack_into("!II", pkt, 40, unix_s + NTP_TO_UNIX_S, frac)
    return pkt


def raises(fn, *args):
    try:
        fn(*args)
    except SntpError:
        return True
    return False


def test_request_is_an_sntp_v4_client_packet():
    pkt = request_packet()
    assert len(pkt) == 48
    assert pkt[0] == 0x23  # version 4, client
    assert bytes(pkt[1:]) == bytes(47)


def test_reply_gives_utc_milliseconds():
    assert parse_reply(reply(UTC_2026)) == UTC_2026 * 1000
    assert parse_reply(reply(UTC_2026, 1 << 31)) == UTC_2026 * 1000 + 500
    assert parse_reply(reply(UTC_2026, 0xFFFFFFFF)) == UTC_2026 * 1000 + 999


def test_bad_replies_are_refused():
    assert raises(parse_reply, reply(UTC_2026)[:47])
    assert raises(parse_reply, reply(UTC_2026, mode=3))  # a client packet echoed
    assert raises(parse_reply, reply(UTC_2026, stratum=0))  # kiss-o'-death
    assert raises(parse_reply, reply(0 - NTP_TO_UNIX_S))  # no time at all
    assert raises(parse_reply, reply(946684800))  # 2000: a server without a clock


def test_clock_is_none_until_synced_then_follows_ticks():
    now = [1000]
    clock = Clock(lambda: now[0])
    assert not clock.synced and clock.utc_ms() is None
    clock.set_utc_ms(UTC_2026 * 1000)
    now[0] += 2500
    assert clock.synced and clock.utc_ms() == UTC_2026 * 1000 + 2500
    assert clock.uptime_ms() == 3500


def test_clock_survives_tick_wraparound():
    period = 1 << 30
    now = [period - 1000]
    clock = Clock(lambda: now[0] % period)
    clock.set_utc_ms(UTC_2026 * 1000)
    total = 0
    step = 1 << 27  # ms, 1.55 days: read this often, the clock passes wrap after wrap
    for _ in range(40):  # 62 days, five wraps of the 2**30 ms ticks
        now[0] += step
        total += step
        assert clock.utc_ms() == UTC_2026 * 1000 + total
