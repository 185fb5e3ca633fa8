"""`shelfctl sim store`: boards deployed through their ports, shoppers, receipts vs truth."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from host_tools.mosquitto import tool
from host_tools.sim.store import LANES, plan


def test_shopper_plans_are_seeded_and_consistent():
    a = plan(3, 4, seed=7)
    assert [s.took for s in a] == [s.took for s in plan(3, 4, seed=7)]
    for s in a:
        assert all(n >= 0 for n in s.took.values())  # nobody returns more than they took
        for v in s.visits:
            assert all(0 <= act.lane < LANES for step in v.actions for act in step)


@pytest.mark.parametrize("broker, lanes", [("mosquitto", "simple"), ("embedded", "physics")])
def test_a_small_store_ends_with_exact_receipts(tmp_path, broker, lanes):
    # simple lanes: 250 g items on ideal cells; physics: the trace generator's shelf physics
    # and products streamed into the boards (seed 3 is a plan the detector gets right)
    extra = ["--embedded-broker"] if broker == "embedded" else []
    if lanes == "simple":
        extra.append("--simple-lanes")
    if broker == "mosquitto":
        try:
            tool("mosquitto")
        except Exception as exc:
            pytest.skip(str(exc))
    truth = tmp_path / "truth.json"
    proc = subprocess.run(
        [sys.executable, "-m", "host_tools.cli", "sim", "store", "--shelves", "2", "--gates",
         "1", "--shoppers", "2", "--seed", "3", "--truth", str(truth), *extra],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    out = proc.stdout
    assert "3 boards online" in out
    assert ("embedded Python broker" in out) == (broker == "embedded")
    assert re.search(r"event shelf-\d #1 ", out)
    assert "event gate-0 #1   scan SHOPPER-1" in out and "4 gate scans" in out
    taken = json.loads(truth.read_text())
    assert set(taken) == {"1", "2"}
    assert "2/2 receipts exact" in out, out
    assert "Task was destroyed" not in proc.stderr
