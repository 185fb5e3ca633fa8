"""The embedded broker (for machines without mosquitto) with the firmware's own MQTT client:
QoS 1 both ways, wildcards, retained messages, last will, persistent sessions."""

from __future__ import annotations

import asyncio

import pytest

from host_tools.firmware import use_firmware
from host_tools.mqtt_broker import EmbeddedBroker, topic_matches


@pytest.mark.parametrize("flt, topic, ok", [
    ("a/b", "a/b", True), ("a/+", "a/b", True), ("a/+", "a/b/c", False),
    ("a/#", "a/b/c", True), ("#", "x", True), ("a/+/c", "a/b/c", True), ("a/b", "a/c", False),
])
def test_topic_filters(flt, topic, ok):
    assert topic_matches(flt, topic) is ok


def test_the_firmware_client_talks_to_the_embedded_broker():
    use_firmware()
    from net.mqtt import MQTTClient
    from net.transport import Transport

    broker = EmbeddedBroker()
    url = broker.start()

    async def scenario():
        got: list[tuple[str, bytes, bool]] = []
        acked: list[int] = []
        sub = MQTTClient(Transport.from_url(url), "observer",
                         on_message=lambda t, p, r: got.append((t, bytes(p), r)))
        pub = MQTTClient(Transport.from_url(url), "shelf-1", will_topic="s/shelf-1/status",
                         will_payload=b"offline", on_puback=lambda pid, ref: acked.append(ref))
        await pub.connect()
        await pub.publish("s/shelf-1/status", b"online", qos=1, retain=True)
        await sub.connect()
        await sub.subscribe("s/+/status", 1)
        await sub.subscribe("s/shelf-1/event", 1)
        for i in range(20):
            await pub.publish("s/shelf-1/event", b"%d" % i, qos=1, ref=i)
        await pub.wait_all_acked()
        for _ in range(100):
            if len(got) >= 21:
                break
            await asyncio.sleep(0.02)
        assert got[0] == ("s/shelf-1/status", b"online", True)  # the retained one first
        assert [p for t, p, r in got if t.endswith("event")] == [b"%d" % i for i in range(20)]
        assert [r for r in acked if r is not None] == list(range(20))
        # the observer goes away; events keep coming; back, it gets them (persistent session)
        await sub.stop()
        for i in range(20, 25):
            await pub.publish("s/shelf-1/event", b"%d" % i, qos=1)
        await pub.wait_all_acked()
        await sub.connect()
        assert sub.session_present
        await pub.stop(disconnect=False)  # the shelf vanishes: its will
        for _ in range(100):
            if got[-1] == ("s/shelf-1/status", b"offline", False):
                break
            await asyncio.sleep(0.02)
        events = [p for t, p, r in got if t.endswith("event")]
        assert events == [b"%d" % i for i in range(25)]
        assert got[-1] == ("s/shelf-1/status", b"offline", False)
        await sub.stop()

    try:
        asyncio.run(scenario())
    finally:
        broker.stop()
