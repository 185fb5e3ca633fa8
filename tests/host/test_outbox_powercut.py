"""Power-cut proof for the event outbox (firmware/core/outbox.py), in CPython.

Simulated cuts: the outbox's `open` and `os` are replaced (in its module namespace) by a power
line that counts flash work in units, one per byte written and one per create, truncate,
rename, remove or mkdir. At unit K the power goes: the write under way keeps its first bytes,
the metadata operation under way does not happen (as on LittleFS), and every later call raises
PowerCut, so the files are left as a cut would leave them. Then the outbox is opened again,
with the real filesystem, and `check()` compares it with what the workload saw returned.
Cut points: 12 seeded workloads x 45 cuts, half of them spread over every kind of flash
operation the workload makes (segment writes, roll-overs, deletions, ack log records, its
compaction, opens), half anywhere; every third trial cuts once more, in one of the operations
of the next open (the repair of a torn tail among them). Renames are atomic as on LittleFS, or
for half the workloads, remove-then-rename as MicroPython does on FAT.

Real kills: the same workload in a child process, killed with SIGKILL at a random time, again
and again on one directory (one device's life). The child prints each operation before and
after it (flushed); the parent checks the directory against that log after every kill.

Run: .venv/bin/python -m pytest -q tests/host/test_outbox_powercut.py
"""

from __future__ import annotations

import builtins
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from host_tools.firmware import use_firmware  # noqa: E402

use_firmware()

from core import outbox as outbox_mod  # noqa: E402
from core.outbox import Outbox  # noqa: E402

CFG = {"budget_bytes": 1024, "segment_bytes": 256}
SEEDS = range(12)
CUTS_PER_SEED = 45
STEPS = 260
KILLS = 25


# -- the workload: a shelf controller's outbox and a publisher with acks in flight --

def payload(seed: int, seq: int) -> bytes:
    r = random.Random(seed * 1_000_003 + seq)
    return bytes(r.getrandbits(8) for _ in range(r.randint(0, 60)))


def workload(path: str, seed: int, note, steps: int | None = None) -> None:
    """Appends, sends and acks (out of order, some lost), reconnects and reboots; `note`
    hears each operation before ("a", "k", "r") and after ("A", "K", "R") it."""
    rng = random.Random(seed)
    p_append = rng.uniform(0.35, 0.7)  # some seeds fall behind: budget drops
    p_send = (1 - p_append) * 0.85
    p_reconnect = (1 - p_append - p_send) / 2
    cfg = dict(CFG, window=8 if seed % 2 else 0)  # 0: the default, all the budget holds

    def boot() -> Outbox:
        note("r")
        ob = Outbox(path, **cfg)
        note("R", ob.next_seq, ob.acked, ob.dropped)
        return ob

    ob = boot()
    last_sent = 0
    flight: list[int] = []
    step = 0
    while steps is None or step < steps:
        step += 1
        x = rng.random()
        if x < p_append:
            seq = ob.next_seq
            note("a", seq)
            ob.append(payload(seed, seq), seq)
            note("A", seq, ob.acked, ob.dropped)
        elif x < p_append + p_send:
            recs = ob.pending(after=last_sent, limit=rng.randint(1, 4))
            if recs:
                last_sent = recs[-1][0]
                flight += [s for s, _ in recs]
            rng.shuffle(flight)
            n = rng.randint(0, len(flight))
            for s in flight[:n]:
                note("k", s)
                ok = ob.ack(s)
                note("K", s, int(ok), ob.acked, ob.dropped)
            del flight[:n]
        elif x < p_append + p_send + p_reconnect:
            last_sent, flight = 0, []
        else:
            ob.close()
            ob = boot()
            last_sent, flight = 0, []
    ob.close()


class Model:
    """What the workload saw: seqs append() returned (with payloads), acks that returned
    True, the acked prefix and dropped count after the last finished operation, and the
    operation under way when the power went (its effect may or may not be on flash)."""

    def __init__(self) -> None:
        self.seed = 0
        self.returned: dict[int, bytes] = {}
        self.acked: set[int] = set()
        self.floor = 0
        self.dropped = 0
        self.doing: tuple = ()
        self.opens = 0

    def note(self, op: str, *args: int) -> None:
        if op in ("a", "k", "r"):
            self.doing = (op, *args)
            return
        if op == "A":
            seq = args[0]
            assert seq not in self.returned, f"seq {seq} returned twice"
            self.returned[seq] = payload(self.seed, seq)
        elif op == "K" and args[1]:
            self.acked.add(args[0])
        elif op == "R":
            self.opens += 1
            top = max(self.returned, default=0)
            assert args[0] > top, f"open: next_seq {args[0]} <= returned {top}"
            self.acked = {s for s in self.acked if s <= args[1]}  # RAM-only acks are gone
        self.floor, self.dropped = args[-2], args[-1]
        self.doing = ()

    def phase(self) -> str:
        return {"a": "append", "k": "ack", "r": "open"}[self.doing[0]] if self.doing else "read"

    def settle(self, ob: Outbox, records: list[tuple[int, bytes]]) -> None:
        """After a check: take in the operation under way as the flash has it, and forget
        acks that were only in RAM (their records are pending again)."""
        if self.doing[:1] == ("a",) and self.doing[1] in dict(records):
            self.returned[self.doing[1]] = payload(self.seed, self.doing[1])
        if self.doing[:1] == ("k",) and self.floor < self.doing[1] <= ob.acked:
            self.acked.add(self.doing[1])
        self.acked = {s for s in self.acked if s <= ob.acked}
        self.floor, self.dropped, self.doing = ob.acked, ob.dropped, ()


def check(path: str, m: Model) -> tuple[Outbox, list[tuple[int, bytes]]]:
    """Open after a cut and check the invariants; returns the open outbox and its records."""
    ob = Outbox(path, **CFG)  # (4) it always opens
    recs = ob.pending(limit=1 << 30)
    seqs = [s for s, _ in recs]
    doing = m.doing
    maybe = doing[1] if doing[:1] == ("a",) else None
    where = f"seed {m.seed}, doing {doing}"
    assert seqs == sorted(set(seqs)), f"out of order or twice: {seqs} ({where})"
    # (2) nothing that was never appended, and every payload exact
    for s, p in recs:
        want = payload(m.seed, s) if s == maybe else m.returned.get(s)
        assert p == want, f"seq {s}: read {p!r}, appended {want!r} ({where})"
    # (3) an ack that returned with the prefix past it never comes undone; an ack only in
    # RAM (out of order, above a gap) may come undone: that record is sent again, a duplicate
    assert ob.acked >= m.floor, f"acked prefix {ob.acked} < {m.floor} ({where})"
    # (1) every returned record above the prefix is there, once
    expect = [s for s in sorted(m.returned) if s > ob.acked]
    assert [s for s in seqs if s != maybe] == expect, f"{seqs} != {expect} ({where})"
    # ... and one below it was acked, or dropped for the budget and counted
    # (an ack of a seq below the prefix, e.g. one dropped meanwhile, does nothing)
    acking = doing[1] if doing[:1] == ("k",) and doing[1] > m.floor else None
    lost = [s for s in m.returned if s <= ob.acked and s not in m.acked and s != acking]
    assert ob.dropped >= m.dropped, f"dropped went back: {ob.dropped} < {m.dropped}"
    assert len(lost) == ob.dropped, f"lost {lost} but dropped {ob.dropped} ({where})"
    # (5) seq goes on after the highest seq ever returned
    top = max([0, *m.returned, *seqs])
    assert ob.next_seq == top + 1, f"next_seq {ob.next_seq}, highest seq {top} ({where})"
    assert ob.depth == len(recs), f"depth {ob.depth} != {len(recs)} records ({where})"
    assert ob.bytes_used <= CFG["budget_bytes"]
    return ob, recs


# -- the power line --

class PowerCut(BaseException):
    """The power is gone (BaseException: no `except Exception` may swallow it)."""


def kind_of(path: str) -> str:
    name = os.path.basename(str(path))
    if name in ("acks.log", "acks.tmp"):
        return {"acks.log": "log", "acks.tmp": "logtmp"}[name]
    return {".seg": "seg", ".tmp": "segtmp"}.get(name[-4:], "dir")


class Power:
    """Flash work in units; at `limit` units the power goes. `ops` lists every operation as
    (phase, op, kind, first unit, units); `cut` is the (phase, op, kind) the cut hit.
    fat: a rename over an existing file is a remove, then a rename (MicroPython on FAT),
    with room for a cut between them; else renames are atomic (LittleFS)."""

    def __init__(self, limit: int | None, phase, fat: bool = False) -> None:
        self.limit = limit
        self.phase = phase
        self.fat = fat
        self.used = 0
        self.dead = False
        self.ops: list[tuple[str, str, str, int, int]] = []
        self.cut: tuple[str, str, str] | None = None

    def alive(self) -> None:
        if self.dead:
            raise PowerCut

    def spend(self, n: int, op: str, path: str) -> int:
        """How many of n units happen before the cut (all of them without one)."""
        self.alive()
        what = (self.phase(), op, kind_of(path))
        self.ops.append((*what, self.used, n))
        if self.limit is None or self.used + n <= self.limit:
            self.used += n
            return n
        k = self.limit - self.used
        self.used, self.dead, self.cut = self.limit, True, what
        return k

    def meta(self, op: str, path: str) -> None:
        if self.spend(1, op, path) < 1:
            raise PowerCut

    def open(self, path, mode="r"):
        self.alive()
        if "r" in mode:
            return builtins.open(path, mode)
        if "w" in mode or not os.path.exists(path):
            self.meta("create", path)
        return CutFile(builtins.open(path, mode, buffering=0), self, path)


class CutFile:
    def __init__(self, f, power: Power, path: str) -> None:
        self.f, self.power, self.path = f, power, path

    def write(self, data) -> int:
        data = bytes(data)
        k = self.power.spend(len(data), "write", self.path)
        self.f.write(data[:k])
        if k < len(data):
            raise PowerCut
        return k

    def flush(self) -> None:
        self.power.alive()

    def close(self) -> None:
        self.f.close()  # after a cut too: the outbox's `finally` closes, nothing is written


class CutOS:
    def __init__(self, power: Power) -> None:
        self.p = power

    def listdir(self, path):
        self.p.alive()
        return os.listdir(path)

    def stat(self, path):
        self.p.alive()
        return os.stat(path)

    def mkdir(self, path):
        self.p.alive()
        if os.path.isdir(path):
            raise FileExistsError(path)
        self.p.meta("mkdir", path)
        os.mkdir(path)

    def remove(self, path):
        self.p.alive()
        if not os.path.exists(path):
            raise FileNotFoundError(path)
        self.p.meta("remove", path)
        os.remove(path)

    def rename(self, src, dst):
        self.p.alive()
        if self.p.fat and os.path.exists(dst):
            self.p.meta("fat-remove", dst)
            os.remove(dst)
        self.p.meta("rename", src)
        os.rename(src, dst)


@contextmanager
def power_line(power: Power):
    saved = outbox_mod.os
    outbox_mod.os = CutOS(power)  # type: ignore[assignment]
    outbox_mod.open = power.open  # type: ignore[attr-defined]
    try:
        yield power
    finally:
        outbox_mod.os = saved
        del outbox_mod.open  # type: ignore[attr-defined]


def fat(seed: int) -> bool:
    return seed % 4 >= 2  # the window sizes (seed % 2) with either kind of rename


def run_cut(path: str, seed: int, limit: int | None) -> tuple[Model, Power]:
    m = Model()
    m.seed = seed
    power = Power(limit, m.phase, fat(seed))
    with power_line(power):
        try:
            workload(path, seed, m.note, STEPS)
        except PowerCut:
            pass
    return m, power


def reopen_ops(path: str, scratch: str, fat: bool) -> list[tuple[str, str, str, int, int]]:
    """The flash operations an open of this directory makes (found on a copy)."""
    if os.path.isdir(path):  # else the first cut came before its mkdir
        shutil.copytree(path, scratch)
    power = Power(None, lambda: "open", fat)
    with power_line(power):
        Outbox(scratch, **CFG).close()
    shutil.rmtree(scratch)
    return [op for op in power.ops if op[4]]


def cut_points(ops, total: int, rng: random.Random, n: int) -> list[int]:
    """n cut points: half spread over the kinds of operation, half anywhere."""
    kinds: dict[tuple, list[tuple[int, int]]] = {}
    for phase, op, kind, start, units in ops:
        if units:
            kinds.setdefault((phase, op, kind), []).append((start, units))
    order = sorted(kinds)
    points = []
    for i in range(n):
        if i % 2 == 0:
            start, units = rng.choice(kinds[order[(i // 2) % len(order)]])
            points.append(start + rng.randrange(units))
        else:
            points.append(rng.randrange(total))
    return points


def test_power_cut_at_540_points(tmp_path: Path) -> None:
    trials = 0
    drops: list[int] = []
    hit: set[tuple] = set()
    seen: set[tuple] = set()
    for seed in SEEDS:
        dry = str(tmp_path / f"dry{seed}")
        m, power = run_cut(dry, seed, None)
        check(dry, m)[0].close()
        drops.append(m.dropped)
        seen |= {op[:3] for op in power.ops}
        rng = random.Random(seed + 100)
        for i, k in enumerate(cut_points(power.ops, power.used, rng, CUTS_PER_SEED)):
            path = str(tmp_path / f"s{seed}c{i}")
            m, cut = run_cut(path, seed, k)
            assert cut.cut is not None, f"seed {seed} cut {k}: no cut"
            hit.add(cut.cut)
            if i % 3 == 0:  # cut again, while the outbox repairs what the first cut left
                *_, start, units = rng.choice(reopen_ops(path, path + "x", fat(seed)))
                again = Power(start + rng.randrange(units), lambda: "reopen", fat(seed))
                with power_line(again):
                    try:
                        Outbox(path, **CFG).close()
                    except PowerCut:
                        pass
                if again.cut:
                    hit.add(again.cut)
            ob, recs = check(path, m)
            seq = ob.append(b"after the cut")
            ob.close()
            ob = Outbox(path, **CFG)
            assert ob.pending(after=seq - 1) == [(seq, b"after the cut")]
            ob.close()
            shutil.rmtree(path)
            trials += 1
    assert trials >= 500
    assert any(drops) and not all(drops), f"dropped per workload: {drops}"
    must = {
        ("open", "mkdir", "dir"),
        ("append", "write", "seg"), ("append", "create", "seg"),  # records, roll-overs
        ("append", "remove", "seg"), ("append", "write", "log"),  # budget drops
        ("ack", "write", "log"), ("ack", "remove", "seg"),  # acks, deleting segments
        ("ack", "write", "logtmp"), ("ack", "rename", "logtmp"),  # ack log compaction
        ("open", "write", "logtmp"), ("open", "rename", "logtmp"),
        ("reopen", "write", "segtmp"), ("reopen", "rename", "segtmp"),  # torn-tail repair
        ("ack", "fat-remove", "log"), ("open", "fat-remove", "log"),  # FAT renames
        ("reopen", "fat-remove", "seg"),
    }
    assert must <= hit, f"never cut: {sorted(must - hit)} (made: {sorted(must & seen)})"


# -- real kills --

def child_main(path: str, seed: int) -> None:
    def note(op: str, *args: int) -> None:
        print(op, *args, flush=True)

    workload(path, seed, note)


def test_sigkill_at_random_times(tmp_path: Path) -> None:
    path = str(tmp_path / "ob")
    rng = random.Random(4242)
    m = Model()
    for life in range(KILLS):
        m.seed = 5000 + life
        proc = subprocess.Popen(
            [sys.executable, __file__, "child", path, str(m.seed)],
            stdout=subprocess.PIPE, cwd=REPO,
        )
        out = proc.stdout
        assert out is not None
        lines: list[str] = []
        started = threading.Event()

        def read(out=out, lines=lines, started=started) -> None:
            for raw in out:
                if raw.endswith(b"\n"):  # a line cut off by the kill is no line
                    lines.append(raw.decode().strip())
                started.set()
            started.set()

        reader = threading.Thread(target=read)
        reader.start()
        # The clock starts at the child's first line ("r", just before its first open), so
        # a slow start on a busy machine does not eat the time.
        assert started.wait(30), f"life {life}: no output from the child"
        time.sleep(rng.random() * 0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        reader.join()
        assert lines and lines[0] == "r", f"life {life}: child did not start: {lines[:3]}"
        for line in lines:
            op, *args = line.split()
            m.note(op, *map(int, args))
        ob, recs = check(path, m)
        m.settle(ob, recs)
        ob.close()
    assert m.opens >= KILLS and len(m.returned) > 100


if __name__ == "__main__" and sys.argv[1:2] == ["child"]:
    child_main(sys.argv[2], int(sys.argv[3]))
