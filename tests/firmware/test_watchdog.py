# Portable tests (CPython and the MicroPython VM): the progress watchdog and safe mode.
import json
import os

import machine
from apps import safemode
from apps.watchdog import Watchdog


class Ticks:
    def __init__(self):
        self.t = 0

    def __call__(self):
        return self.t


def test_fed_only_while_every_task_shows_progress():
    ticks = Ticks()
    wd = Watchdog(None, ticks)
    sample = wd.register("sampler", 2000)
    publish = wd.register("publisher", 30000)
    ticks.t = 1500
    sample()
    assert wd.healthy()
    ticks.t = 3600  # the sampler has been silent 2.1 s
    assert not wd.healthy() and wd.overdue == "sampler"
    sample()
    assert wd.healthy() and wd.overdue is None
    ticks.t = 31000
    sample()
    assert not wd.healthy() and wd.overdue == "publisher"
    publish()
    assert wd.healthy()


def test_tick_wraparound_does_not_starve_the_watchdog():
    ticks = Ticks()
    ticks.t = (1 << 30) - 500
    wd = Watchdog(None, lambda: ticks.t & ((1 << 30) - 1))
    tick = wd.register("sampler", 2000)
    ticks.t += 1000  # past the wrap
    tick()
    ticks.t += 1000
    assert wd.healthy()


class LowPin:
    # Something holding a pin low (a button pressed), on the fake board.
    def dout(self, now):
        return 0


def _board_file(pin):
    name = "_safemode_board.json"
    with open(name, "w") as f:
        json.dump({"safe_mode_pin": pin}, f)
    return name


def test_safe_mode_by_flag_file_and_by_pin():
    machine.fake_reset()
    board = _board_file(0)
    try:
        safemode.clear()
        assert safemode.check(board) is None
        safemode.request()
        assert "flag" in safemode.check(board)
        safemode.clear()
        assert safemode.check(board) is None
        machine.fake_attach(LowPin(), None, 0)  # BOOT button held at reset
        assert "pin" in safemode.check(board)
        assert safemode.reason == safemode.check(board)
    finally:
        safemode.clear()
        os.remove(board)
        machine.fake_reset()


def test_unreadable_board_file_is_no_safe_mode_and_no_crash():
    safemode.clear()
    assert safemode.check("_no_such_board.json") is None
    with open("_bad_board.json", "w") as f:
        f.write("{not json")
    try:
        assert safemode.check("_bad_board.json") is None
    finally:
        os.remove("_bad_board.json")
