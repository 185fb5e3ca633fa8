"""The firmware's MQTT client (firmware/net/mqtt.py) against a real mosquitto, in CPython.

Observers are independent of the client under test where it matters: mosquitto_sub and
mosquitto_pub. The broker is started per test (see conftest.py); waits are for conditions,
with generous timeouts, never fixed sleeps that a slow machine could outrun.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from host_tools.firmware import use_firmware

from .conftest import Broker, Message, Subscriber, tool, wait_until

use_firmware()

from net.mqtt import (  # noqa: E402  (needs use_firmware() first)
    ConnectionLost,
    ConnectRefused,
    MQTTClient,
)
from net.mqtt_wire import connect_packet, puback_packet  # noqa: E402
from net.transport import Transport  # noqa: E402

Subscribers = Callable[..., Subscriber]


def run(coro: Awaitable[Any], timeout: float = 45.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def client_for(broker: Broker, client_id: str, *, cafile: str | None = None,
               server_hostname: str | None = None, **options: Any) -> MQTTClient:
    """A client for `broker` with a quick backoff (50 ms doubling to 500 ms)."""
    transport = Transport.from_url(broker.url, cafile=cafile or broker.cafile,
                                   server_hostname=server_hostname, timeout_ms=3000)
    settings: dict[str, Any] = {"backoff_ms": 50, "backoff_max_ms": 500,
                                "connect_timeout_ms": 3000}
    settings.update(options)
    return MQTTClient(transport, client_id, **settings)


async def mosquitto_pub(broker: Broker, topic: str, payload: str, *, qos: int = 1,
                        retain: bool = False) -> None:
    cmd = [tool("mosquitto_pub"), "-h", broker.host, "-p", str(broker.port), "-t", topic,
           "-m", payload, "-q", str(qos)]
    if retain:
        cmd.append("-r")
    proc = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True,
                                   timeout=20)
    assert proc.returncode == 0, proc.stderr


def first_arrivals(payloads: list[str]) -> list[int]:
    seen: set[str] = set()
    firsts = []
    for p in payloads:
        if p not in seen:
            seen.add(p)
            firsts.append(int(p))
    return firsts


# ---- publishing ------------------------------------------------------------------------


def test_qos0_and_qos1_publish_arrive_and_the_puback_is_reported(
        broker: Broker, subscribers: Subscribers) -> None:
    sub = subscribers(broker, "shelf/1/#")
    acked: list[tuple[int, Any]] = []

    async def main() -> None:
        c = client_for(broker, "shelf-1", on_puback=lambda pid, ref: acked.append((pid, ref)))
        await c.connect()
        assert c.is_connected and c.connected.is_set()
        assert await c.publish("shelf/1/a", b"zero") == 0
        pid = await c.publish("shelf/1/b", "one", qos=1, ref="record-17")
        assert 1 <= pid <= 65535
        await wait_until(lambda: bool(acked), 10, "the PUBACK")
        assert acked == [(pid, "record-17")] and c.inflight == 0
        await wait_until(lambda: len(sub.messages) >= 2, 10, "both messages at mosquitto_sub")
        await c.stop()
        assert not c.is_connected

    run(main())
    assert sub.messages == [Message("shelf/1/a", "zero", False),
                            Message("shelf/1/b", "one", False)]


def test_200_qos1_publishes_with_a_window_arrive_in_order(
        broker: Broker, subscribers: Subscribers) -> None:
    sub = subscribers(broker, "shelf/2/seq")
    acked: list[int] = []
    most_in_flight = 0

    async def main() -> None:
        nonlocal most_in_flight
        c = client_for(broker, "shelf-2", window=16,
                       on_puback=lambda pid, ref: acked.append(ref))
        await c.connect()
        for i in range(200):
            await c.publish("shelf/2/seq", str(i), qos=1, ref=i)
            most_in_flight = max(most_in_flight, c.inflight)
            assert c.inflight <= 16
        await asyncio.wait_for(c.wait_all_acked(), 20)
        await wait_until(lambda: len(sub.messages) >= 200, 20, "200 messages at mosquitto_sub")
        await c.stop()

    run(main())
    assert most_in_flight > 1, "the window was never used"
    assert acked == list(range(200))
    assert sub.payloads() == [str(i) for i in range(200)]


def test_unacked_publishes_are_resent_with_dup_and_the_same_ids() -> None:
    """Against a scripted broker: connection 1 takes three QoS 1 publishes and dies without a
    PUBACK; on connection 2 they must come again, in order, same ids, DUP=1."""
    seen: list[list[tuple[int, int, bytes]]] = []  # per connection: (flags, pid, body)
    acked: list[tuple[int, Any]] = []

    async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
        first = (await reader.readexactly(1))[0]
        size, shift = 0, 0
        while True:
            b = (await reader.readexactly(1))[0]
            size |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        return first, await reader.readexactly(size)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn: list[tuple[int, int, bytes]] = []
        seen.append(conn)
        first, _ = await read_packet(reader)
        assert first == 0x10
        writer.write(b"\x20\x02\x01\x00")  # CONNACK, session present
        try:
            while True:
                first, body = await read_packet(reader)
                if first >> 4 != 3:
                    continue
                pid = int.from_bytes(body[2 + body[1]:4 + body[1]], "big")
                conn.append((first & 0x0F, pid, body))
                if len(seen) == 1 and len(conn) == 3:
                    writer.transport.abort()  # the connection dies, nothing acknowledged
                    return
                if len(seen) > 1:
                    writer.write(bytes(puback_packet(pid)))
        except asyncio.IncompleteReadError:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        c = MQTTClient(Transport("127.0.0.1", port), "shelf-3", window=4, backoff_ms=20,
                       backoff_max_ms=100, on_puback=lambda pid, ref: acked.append((pid, ref)))
        await c.connect()
        pids = [await c.publish("t", f"m{i}", qos=1, ref=i) for i in range(3)]
        await wait_until(lambda: len(acked) == 3, 10, "PUBACKs on the second connection")
        new_pid = await c.publish("t", "m3", qos=1, ref=3)
        await wait_until(lambda: len(acked) == 4, 10, "the PUBACK of a new publish")
        await c.stop()
        server.close()
        await server.wait_closed()
        assert c.connects == 2
        first, second = seen[0], seen[1]
        assert [(f, p) for f, p, _ in first] == [(0x02, pid) for pid in pids]  # QoS 1, DUP=0
        assert [(f, p) for f, p, _ in second[:3]] == [(0x0A, pid) for pid in pids]  # DUP=1
        assert [b[5:] for _, _, b in second[:3]] == [b"m0", b"m1", b"m2"]
        assert second[3][:2] == (0x02, new_pid) and new_pid not in pids
        assert acked == [(pids[0], 0), (pids[1], 1), (pids[2], 2), (new_pid, 3)]

    run(main())


# ---- subscribing ------------------------------------------------------------------------


def test_subscribe_delivers_retained_and_live_messages_to_the_callback(broker: Broker) -> None:
    got: list[tuple[str, bytes, bool]] = []

    async def main() -> None:
        await mosquitto_pub(broker, "shelf/4/config", "retained-config", retain=True)
        c = client_for(broker, "shelf-4",
                       on_message=lambda topic, payload, retain: got.append(
                           (topic, payload, retain)))
        await c.connect()
        assert await c.subscribe("shelf/4/cmd", 1) == 1
        assert await c.subscribe("shelf/4/config", 0) == 0
        await wait_until(lambda: len(got) == 1, 10, "the retained message")
        await mosquitto_pub(broker, "shelf/4/cmd", '{"op":"tare"}', qos=1)
        await mosquitto_pub(broker, "shelf/4/cmd", "qos0", qos=0)
        await wait_until(lambda: len(got) == 3, 10, "two live messages")
        assert await c.unsubscribe("shelf/4/cmd")
        await mosquitto_pub(broker, "shelf/4/cmd", "after unsubscribe")
        await mosquitto_pub(broker, "shelf/4/config", "marker")
        await wait_until(lambda: len(got) == 4, 10, "the marker")
        await c.stop()

    run(main())
    assert got == [
        ("shelf/4/config", b"retained-config", True),
        ("shelf/4/cmd", b'{"op":"tare"}', False),
        ("shelf/4/cmd", b"qos0", False),
        ("shelf/4/config", b"marker", False),
    ]


@pytest.mark.parametrize("clean_session", [False, True], ids=["persistent", "clean"])
def test_subscription_survives_a_broker_restart(broker: Broker, clean_session: bool) -> None:
    """clean_session=False: the restarted broker still has the session (persistence on);
    clean_session=True: it has none, and the client subscribes again by itself."""
    got: list[bytes] = []
    present: list[bool] = []

    async def main() -> None:
        c = client_for(broker, f"shelf-5-{clean_session}", clean_session=clean_session,
                       on_message=lambda topic, payload, retain: got.append(payload),
                       on_connect=present.append)
        await c.connect()
        await c.subscribe("shelf/5/cmd")
        await mosquitto_pub(broker, "shelf/5/cmd", "before")
        await wait_until(lambda: got == [b"before"], 10, "a command before the restart")
        await asyncio.to_thread(broker.restart)
        await wait_until(lambda: c.connects == 2 and c.is_connected, 15, "the reconnect")
        await wait_until(lambda: len(present) == 2, 10, "on_connect after the reconnect")
        await mosquitto_pub(broker, "shelf/5/cmd", "after")
        await wait_until(lambda: got[-1:] == [b"after"], 10, "a command after the restart")
        await c.stop()

    run(main())
    assert present == [False, not clean_session]
    assert got == [b"before", b"after"]


# ---- authentication and TLS ------------------------------------------------------------


def test_username_and_password(auth_broker: Broker) -> None:
    async def main() -> None:
        good = client_for(auth_broker, "shelf-6", username="shelf-7", password="correct horse")
        await good.connect()
        assert await good.publish("shelf/6/x", b"1", qos=1) > 0
        await asyncio.wait_for(good.wait_all_acked(), 10)
        await good.stop()

        wrong = client_for(auth_broker, "shelf-6b", username="shelf-7", password="wrong")
        with pytest.raises(ConnectRefused) as refused:
            await wrong.connect()
        assert refused.value.code == 5 and refused.value.reason == "not authorized"
        assert "not authorized" in str(refused.value)
        assert not wrong.is_connected

        anonymous = client_for(auth_broker, "shelf-6c")
        with pytest.raises(ConnectRefused):
            await anonymous.connect()

        # in the background the refusal is kept in last_error, and retried with backoff
        retrying = client_for(auth_broker, "shelf-6d", username="ops", password="nope")
        retrying.start()
        await wait_until(lambda: isinstance(retrying.last_error, ConnectRefused), 10,
                         "the refusal in last_error")
        await retrying.stop()
        assert retrying.connects == 0

    run(main())


def test_tls_with_ca_verification(tls_broker: Broker, subscribers: Subscribers) -> None:
    sub = subscribers(tls_broker, "shelf/8/#")
    assert tls_broker.url.startswith("mqtts://") and tls_broker.certs is not None
    ca_pem = tls_broker.certs.ca.read_bytes()

    async def main() -> None:
        c = client_for(tls_broker, "shelf-8")
        await c.connect()
        await c.publish("shelf/8/a", b"over tls", qos=1)
        await asyncio.wait_for(c.wait_all_acked(), 10)
        await c.stop()

        # the CA as bytes (cadata) instead of a file, and the host name instead of the IP
        t = Transport("localhost", tls_broker.port, tls=True, cadata=ca_pem)
        c = MQTTClient(t, "shelf-8b")
        await c.connect()
        await c.publish("shelf/8/b", b"cadata", qos=1)
        await asyncio.wait_for(c.wait_all_acked(), 10)
        await c.stop()

        assert tls_broker.certs is not None
        wrong_ca = client_for(tls_broker, "shelf-8c", cafile=str(tls_broker.certs.other_ca))
        with pytest.raises(ssl.SSLCertVerificationError):
            await wrong_ca.connect()
        wrong_name = client_for(tls_broker, "shelf-8d", server_hostname="broker.example")
        with pytest.raises(ssl.SSLCertVerificationError):
            await wrong_name.connect()
        with pytest.raises(ValueError, match="CA"):
            Transport.from_url(tls_broker.url)

    run(main())
    sub_done = [m.payload for m in sub.messages]
    assert sub_done == ["over tls", "cadata"]


# ---- will and birth -------------------------------------------------------------------------


def test_last_will_is_published_when_the_connection_drops(
        broker: Broker, subscribers: Subscribers) -> None:
    topic = "shelf/9/status"
    sub = subscribers(broker, topic)

    async def main() -> None:
        c: MQTTClient

        async def announce(session_present: bool) -> None:
            await c.publish(topic, b"online", qos=1, retain=True)

        c = client_for(broker, "shelf-9", will_topic=topic, will_payload=b"offline",
                       will_qos=1, will_retain=True, on_connect=announce)
        await c.connect()
        await wait_until(lambda: sub.payloads() == ["online"], 10, "the birth message")
        await c.stop(disconnect=False)  # no DISCONNECT: as if the shelf lost power
        await wait_until(lambda: sub.payloads() == ["online", "offline"], 10, "the will")

        # a graceful stop sends DISCONNECT: the broker drops the will
        polite = client_for(broker, "shelf-9b", will_topic=topic, will_payload=b"polite-will")
        await polite.connect()
        await polite.stop()
        await mosquitto_pub(broker, topic, "marker")
        await wait_until(lambda: sub.payloads()[-1:] == ["marker"], 10, "the marker")

    run(main())
    assert sub.payloads() == ["online", "offline", "marker"]


def test_the_will_is_retained(broker: Broker, subscribers: Subscribers) -> None:
    topic = "shelf/10/status"

    async def main() -> None:
        c = client_for(broker, "shelf-10", will_topic=topic, will_payload=b"offline",
                       will_retain=True)
        await c.connect()
        await c.stop(disconnect=False)

    run(main())
    late = subscribers(broker, topic)
    run(wait_until(lambda: bool(late.messages), 10, "the retained will"))
    assert late.messages == [Message(topic, "offline", True)]


# ---- outages and keepalive ---------------------------------------------------------------


def test_broker_restarts_mid_stream_lose_nothing(
        broker: Broker, subscribers: Subscribers) -> None:
    """Three broker restarts during 150 QoS 1 publishes: the client reconnects by itself and
    every message reaches a persistent observer at least once, first arrivals in order."""
    sub = subscribers(broker, "shelf/11/seq", client_id="observer-11", persistent=True)
    n = 150
    acked: list[int] = []
    disconnects: list[object] = []

    async def main() -> None:
        c = client_for(broker, "shelf-11", window=8, keepalive=5,
                       on_puback=lambda pid, ref: acked.append(ref),
                       on_disconnect=disconnects.append)

        async def outages() -> None:
            for mark in (30, 70, 110):
                await wait_until(lambda m=mark: len(acked) >= m, 30, f"{mark} PUBACKs")
                await asyncio.to_thread(broker.restart, 0.2)

        await c.connect()
        restarting = asyncio.create_task(outages())
        for i in range(n):
            await c.publish("shelf/11/seq", str(i), qos=1, ref=i)
            await asyncio.sleep(0.005)
        await restarting
        await asyncio.wait_for(c.wait_all_acked(), 30)
        await wait_until(lambda: len(set(sub.payloads())) >= n, 30,
                         "every message at the observer")
        assert c.connects == 4 and broker.starts == 4
        await c.stop()

    run(main(), timeout=90)
    assert len(disconnects) >= 3
    assert sorted(set(acked)) == list(range(n))
    payloads = sub.payloads()
    assert first_arrivals(payloads) == list(range(n)), payloads
    assert len(payloads) >= n  # the rest are repeats of messages already seen


def test_keepalive_keeps_an_idle_connection_up(broker: Broker) -> None:
    async def main() -> None:
        c = client_for(broker, "shelf-12", keepalive=1)
        await c.connect()
        await asyncio.sleep(3.5)  # the broker drops a silent client after 1.5 s
        assert c.is_connected and c.connects == 1, c.last_error
        assert c.pings >= 2
        await c.stop()

        # control: a client that never pings is dropped, so the check above means something
        reader, writer = await asyncio.open_connection(broker.host, broker.port)
        writer.write(bytes(connect_packet("shelf-12-silent", keepalive=1)))
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"\x20\x02\x00\x00"
        assert await asyncio.wait_for(reader.read(1), 10) == b""  # closed by the broker
        writer.close()
        await writer.wait_closed()

    run(main())


def test_a_broker_that_stops_answering_is_detected_and_left(broker: Broker) -> None:
    """SIGSTOP: TCP stays up but no PINGRESP comes; the client must call the connection dead,
    and connect again once the broker answers."""
    async def main() -> None:
        c = client_for(broker, "shelf-13", keepalive=1, ping_timeout_ms=500,
                       connect_timeout_ms=1000)
        await c.connect()
        broker.pause()
        try:
            await wait_until(lambda: not c.is_connected, 10, "the dead connection noticed")
            assert isinstance(c.last_error, ConnectionLost), c.last_error
            assert "PINGREQ" in str(c.last_error)
        finally:
            broker.resume()
        await wait_until(lambda: c.is_connected and c.connects == 2, 20, "the reconnect")
        await c.stop()

    run(main())
