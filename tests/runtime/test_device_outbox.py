"""The device's outbox budget in CPython, broker unreachable: the oldest unsent events are
dropped, counted, and reported as a `fault` event; seq goes on without reuse."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from host_tools.firmware import REPO

BOARD = (REPO / "boards" / "virtual.json").read_text()


def test_a_full_outbox_drops_the_oldest_and_says_so(tmp_path: Path):
    import machine
    from apps import device
    from core.detector import Change
    from loopback_broker import LoopbackBroker

    cfg = {"device": "shelf-small", "store": "s1", "role": "shelf", "board": "virtual",
           "wifi": {"ssid": "w"}, "broker": {"url": "mqtt://127.0.0.1:1883"},
           "outbox": {"budget_kb": 4},
           "lanes": [{"offset": 0, "counts_per_gram": 400, "sku": "A", "unit_g": 100}]}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "board.json").write_text(BOARD)
    machine.fake_reset()
    broker = LoopbackBroker()
    broker.accepting = False  # the broker is away for the whole test
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        dev = asyncio.run(device.boot(device.Parts(transport=broker)))
        for k in range(200):  # about 240 bytes each: far more than 4 KB
            dev._on_change(Change(0, k, -1, -10000, 50000, 40000, 95, "A"))
        ob = dev.outbox
        assert ob.dropped > 0 and ob.bytes_used <= 4096
        assert ob.next_seq > 200  # the fault events took seqs of their own
        kept = ob.pending(limit=1000)
        faults = [json.loads(p) for _, p in kept if b'"type":"fault"' in p]
        assert faults and faults[-1]["code"] == "outbox_full"
        assert "dropped" in faults[-1]["msg"]
        seqs = [s for s, _ in kept]
        assert seqs == sorted(seqs) and seqs[-1] == ob.next_seq - 1
    finally:
        os.chdir(cwd)
