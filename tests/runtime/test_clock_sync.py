"""net.clock.sync() against a real SNTP responder on a loopback UDP port."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading

from net.clock import NTP_TO_UNIX_S, Clock, sync

UTC_S = 1795600000


def responder(answer: bool = True):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    seen = []

    def serve():
        try:
            data, peer = sock.recvfrom(64)
        except OSError:
            return
        seen.append(data)
        if answer:
            pkt = bytearray(48)
            pkt[0] = 0x24  # version 4, server
            pkt[1] = 2
            struct.pack_into("!II", pkt, 40, UTC_S + NTP_TO_UNIX_S, 1 << 31)
            sock.sendto(bytes(pkt), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return sock, thread, seen


def test_sync_sets_the_clock_from_a_real_udp_exchange():
    sock, thread, seen = responder()
    clock = Clock()
    ok = asyncio.run(sync(clock, "127.0.0.1", port=sock.getsockname()[1]))
    thread.join(5)
    sock.close()
    assert ok and clock.synced and clock.last_error is None
    assert len(seen) == 1 and seen[0][0] == 0x23
    assert abs(clock.utc_ms() - (UTC_S * 1000 + 500)) < 2000


def test_sync_without_an_answer_records_why_and_leaves_the_clock_alone():
    sock, thread, _ = responder(answer=False)
    clock = Clock()
    ok = asyncio.run(sync(clock, "127.0.0.1", port=sock.getsockname()[1], timeout_ms=300))
    thread.join(5)
    sock.close()
    assert not ok and not clock.synced
    assert "no SNTP reply" in clock.last_error


def test_sync_with_an_unknown_host_fails_cleanly():
    clock = Clock()
    assert not asyncio.run(sync(clock, "no-such-host.invalid", timeout_ms=300))
    assert clock.last_error.startswith("SNTP no-such-host.invalid")
