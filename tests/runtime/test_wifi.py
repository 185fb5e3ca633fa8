"""net.wifi.WifiSupervisor on the fake station (real asyncio time, fake radio)."""

from __future__ import annotations

import asyncio

import machine
import network
from net.wifi import WifiSupervisor, jittered


async def until(cond, timeout_s=10.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not cond():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.02)


def test_joins_reports_rssi_and_rejoins_after_the_access_point_returns():
    machine.fake_reset(realtime=True)
    network.fake_reset_network()
    ticks = []

    async def scenario():
        sup = WifiSupervisor(network.WLAN(network.STA_IF), "store-wifi", "store-secret",
                             progress=lambda: ticks.append(1))
        task = asyncio.create_task(sup.run())
        await until(sup.up.is_set)
        assert sup.rssi() == -58 and sup.joins == 1
        network.fake_ap(up=False)
        await until(lambda: not sup.up.is_set())
        assert sup.losses == 1 and sup.rssi() is None
        await asyncio.sleep(0.5)
        network.fake_ap(up=True, rssi=-71)
        await until(sup.up.is_set)
        assert sup.joins == 2 and sup.rssi() == -71
        task.cancel()

    asyncio.run(scenario())
    assert ticks  # it showed progress to the watchdog while waiting


def test_wrong_password_is_retried_with_the_reason_kept():
    machine.fake_reset(realtime=True)
    network.fake_reset_network()
    network.fake_station().join_ms = 50

    async def scenario():
        sup = WifiSupervisor(network.WLAN(network.STA_IF), "store-wifi", "wrong",
                             join_timeout_ms=500)
        task = asyncio.create_task(sup.run())
        await asyncio.sleep(0.3)
        assert not sup.up.is_set()
        assert network.WLAN(network.STA_IF).status() == network.STAT_WRONG_PASSWORD
        await until(lambda: sup.last_error is not None)
        assert "status 202" in sup.last_error
        sup.password = "store-secret"  # what a re-provisioning would fix
        await until(sup.up.is_set, timeout_s=30)
        task.cancel()

    asyncio.run(scenario())


def test_backoff_is_jittered_around_its_value():
    seen = {jittered(8000) for _ in range(200)}
    assert min(seen) >= 6000 and max(seen) <= 10000
    assert len(seen) > 20  # not the same value for every shelf in the store
