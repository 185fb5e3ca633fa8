"""Time snippets and count their heap allocations inside the MicroPython VM.

    >>> m = measure_snippet("f.clean(0, 123)", setup="from core.glitch import GlitchFilter\\n"
    ...                     "f = GlitchFilter(4)", n=20_000)
    >>> m.us_per_call, m.ref_us_per_call, m.alloc_per_call

One VM run per `measure()` call: the setup code runs once at module level (its names are
globals of the loops), then for every case and for the reference body:

- time: `n` iterations of `for _ in range(n): <body>`, best of `repeats` runs, with the GC
  enabled as on a board (a collection before each run). The clock is JavaScript's
  `performance.now()` (sub-microsecond); `time.ticks_us()` only ticks per millisecond here.
- allocation: the same loop once more with `gc.disable()`, `gc.mem_alloc()` before and after.
  The reference loop's delta (normally 0) is subtracted, so `alloc_bytes == 0` proves the body
  allocates nothing on the heap per call (MicroPython counts in 16-byte blocks).

Before anything is timed, the reference loop spins for `warm_up_ms` so that the host's
WebAssembly engine has tiered up (without it the first loop timed ran ~2.5x slower).
The reference body (default `pass`) is timed in the same run, so ratios to it compare across
machines better than raw microseconds do. The WebAssembly VM on a PC runs bytecode at its own
speed, not an ESP32's (an empty loop iteration took ~0.2 us here): treat `us_per_call` as
relative, never as the board's latency.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from host_tools.vm import DEFAULT_HEAP_KB, FileSource, run_micropython

MARK = "@@measure "

_PROLOGUE = """\
import gc
try:
    from js import performance as _mpvm_perf

    def _mpvm_now_ns():
        return int(_mpvm_perf.now() * 1000000)

    _MPVM_TIMER = "performance.now"
except ImportError:
    import time as _mpvm_time

    def _mpvm_now_ns():
        return _mpvm_time.ticks_us() * 1000

    _MPVM_TIMER = "ticks_us"
"""

_MEASURE = """
import json as _mpvm_json


def _mpvm_warm_up(loop, n, warm_up_ns):
    # Let the host's WebAssembly engine settle (tier up) before anything is timed.
    t0 = _mpvm_now_ns()
    while _mpvm_now_ns() - t0 < warm_up_ns:
        loop(n)


def _mpvm_measure(name, loop, n, repeats):
    loop(min(n, 16))
    best = None
    for _ in range(repeats):
        gc.collect()
        t0 = _mpvm_now_ns()
        loop(n)
        dt = _mpvm_now_ns() - t0
        if best is None or dt < best:
            best = dt
    gc.collect()
    gc.disable()
    a0 = gc.mem_alloc()
    loop(n)
    a1 = gc.mem_alloc()
    gc.enable()
    print("@@measure " + _mpvm_json.dumps({"name": name, "n": n, "ns": best, "alloc": a1 - a0,
                                           "timer": _MPVM_TIMER}))
"""


@dataclass(frozen=True)
class Measurement:
    name: str
    n: int
    us_per_call: float  # best of the repeats
    ref_us_per_call: float  # the reference body, same VM run
    alloc_bytes: int  # heap bytes allocated by n calls with gc disabled, minus the reference's
    ref_alloc_bytes: int
    timer: str

    @property
    def net_us_per_call(self) -> float:
        return self.us_per_call - self.ref_us_per_call

    @property
    def alloc_per_call(self) -> float:
        return self.alloc_bytes / self.n

    @property
    def ratio_to_reference(self) -> float:
        return self.us_per_call / self.ref_us_per_call if self.ref_us_per_call else float("inf")


def _loop(fname: str, body: str) -> str:
    body = textwrap.indent(textwrap.dedent(body).strip("\n"), " " * 8)
    return f"\n\ndef {fname}(_mpvm_n):\n    for _mpvm_i in range(_mpvm_n):\n{body}\n"


def build_script(
    cases: Mapping[str, str], *, setup: str = "", reference: str = "pass", n: int = 10_000,
    repeats: int = 5, warm_up_ms: float = 300.0,
) -> str:
    """The MicroPython source measure() runs (exposed to look at and to test)."""
    if n < 1 or repeats < 1:
        raise ValueError("n and repeats must be >= 1")
    parts = [_PROLOGUE, textwrap.dedent(setup), _MEASURE, _loop("_mpvm_ref", reference)]
    for i, body in enumerate(cases.values()):
        parts.append(_loop(f"_mpvm_case_{i}", body))
    parts.append(f"\n_mpvm_warm_up(_mpvm_ref, {n}, {int(warm_up_ms * 1_000_000)})\n")
    parts.append(f"_mpvm_measure('\\x00reference', _mpvm_ref, {n}, {repeats})\n")
    for i, name in enumerate(cases):
        parts.append(f"_mpvm_measure({json.dumps(name)}, _mpvm_case_{i}, {n}, {repeats})\n")
    return "".join(parts)


def measure(
    cases: Mapping[str, str],
    *,
    setup: str = "",
    reference: str = "pass",
    n: int = 10_000,
    repeats: int = 5,
    warm_up_ms: float = 300.0,
    mounts: Mapping[str, Path] | None = None,
    files: Mapping[str, FileSource] | None = None,
    firmware: bool = True,
    heap_kb: int = DEFAULT_HEAP_KB,
    timeout_s: float | None = 600.0,
) -> dict[str, Measurement]:
    """Measure every case (name -> statement body) in one VM run; see the module doc."""
    script = build_script(cases, setup=setup, reference=reference, n=n, repeats=repeats,
                          warm_up_ms=warm_up_ms)
    res = run_micropython(
        script, mounts=mounts, files=files, firmware=firmware, heap_kb=heap_kb,
        timeout_s=timeout_s, name="measure.py",
    ).check()
    rows = [json.loads(line[len(MARK):]) for line in res.stdout.splitlines()
            if line.startswith(MARK)]
    ref = next(r for r in rows if r["name"] == "\x00reference")
    out: dict[str, Measurement] = {}
    for r in rows:
        if r is ref:
            continue
        out[r["name"]] = Measurement(
            name=r["name"], n=r["n"], us_per_call=r["ns"] / 1000 / r["n"],
            ref_us_per_call=ref["ns"] / 1000 / ref["n"],
            alloc_bytes=r["alloc"] - ref["alloc"], ref_alloc_bytes=ref["alloc"],
            timer=r["timer"],
        )
    return out


def measure_snippet(call: str, **kwargs) -> Measurement:
    """Measure one statement body; keyword arguments as for measure()."""
    return measure({"snippet": call}, **kwargs)["snippet"]
