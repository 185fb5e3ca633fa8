"""`shelfctl trace replay`: run a trace through the firmware's own glitch filter and detector.

Two runtimes execute the same loop (replay_loop.py): CPython, importing firmware/ directly,
and the MicroPython 1.29 VM, with firmware/ mounted as the board's filesystem. Both hand back
integer tuples; formatting happens here, once, so the printed lines are comparable byte for
byte.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

from host_tools.trace.io import Trace, TraceError, read_samples, read_trace

RUNTIMES = ("cpython", "micropython")
LOOP_FILE = Path(__file__).with_name("replay_loop.py")

# (lane, t_ms, count|None, delta_cg, before_cg, after_cg, confidence_pct)
EventTuple = tuple[int, int, int | None, int, int, int, int]


def _as_event(t: EventTuple, trace: Trace) -> dict:
    lane, t_ms, count, delta_cg, before_cg, after_cg, conf = t
    return {
        "lane": lane,
        "t_ms": t_ms,
        "count": count,
        "delta_g": delta_cg / 100,
        "before_g": before_cg / 100,
        "after_g": after_cg / 100,
        "confidence": conf / 100,
        "sku": trace.lanes[lane].sku if lane < len(trace.lanes) else "",
    }


def _replay_cpython(trace_dir: Path) -> list[EventTuple]:
    out: list[EventTuple] = []
    _loop_module().run(str(trace_dir), out.append)
    return out


def _loop_module():
    # Loaded from its file (not via sys.path) so host_tools/trace/ never shadows stdlib names.
    from host_tools.firmware import use_firmware

    use_firmware()
    name = "shelfctl_replay_loop"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, LOOP_FILE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def _parse_vm_line(line: str) -> EventTuple | None:
    parts = line.split()
    if not parts or parts[0] != "E":
        return None
    lane, t_ms, count, d, b, a, conf = parts[1:8]
    return (int(lane), int(t_ms), None if count == "-" else int(count), int(d), int(b), int(a),
            int(conf))


def _replay_micropython(trace_dir: Path) -> list[EventTuple]:
    from host_tools.vm import run_micropython

    script = "import replay_loop\nreplay_loop.main_vm('/trace')\n"
    result = run_micropython(
        script,
        files={
            "/lib/replay_loop.py": LOOP_FILE,
            "/trace/meta.json": trace_dir / "meta.json",
            "/trace/samples.csv": trace_dir / "samples.csv",
        },
    )
    if result.returncode != 0:
        raise RuntimeError(f"replay in the MicroPython VM failed:\n{result.stderr.strip()}")
    out = []
    done = False
    for line in result.stdout.splitlines():
        ev = _parse_vm_line(line)
        if ev is not None:
            out.append(ev)
        elif line.startswith("DONE"):
            done = True
    if not done:
        raise RuntimeError("replay in the MicroPython VM ended early:\n" + result.stderr.strip())
    return out


def replay(trace: Trace | str | Path, runtime: str = "cpython") -> list[dict]:
    """Events the firmware emits for a trace, as dicts (grams as floats, 2 decimals)."""
    if not isinstance(trace, Trace):
        trace = read_trace(trace, samples=False)
    if trace.path is None:
        raise TraceError("replay needs a trace on disk (samples.csv)")
    if runtime == "cpython":
        try:
            tuples = _replay_cpython(trace.path)
        except ValueError:
            # A malformed samples.csv: let the reader name the file and line.
            read_samples(trace.path, len(trace.lanes))
            raise
    elif runtime == "micropython":
        tuples = _replay_micropython(trace.path)
    else:
        raise ValueError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    return [_as_event(t, trace) for t in tuples]


def event_line(ev: dict) -> str:
    return json.dumps(ev, separators=(", ", ": "))


def format_table(events: list[dict]) -> str:
    head = f"{'t (s)':>9} {'lane':>4} {'event':<7} {'count':>5} {'delta g':>9} " \
           f"{'after g':>9} {'conf':>5}  sku"
    rows = [head, "-" * len(head)]
    for ev in events:
        count = ev["count"]
        kind = "change" if count is None else ("pick" if count < 0 else "put")
        rows.append(
            f"{ev['t_ms'] / 1000:9.2f} {ev['lane']:4d} {kind:<7} "
            f"{'-' if count is None else f'{count:+d}':>5} {ev['delta_g']:9.2f} "
            f"{ev['after_g']:9.2f} {ev['confidence']:5.2f}  {ev['sku']}"
        )
    return "\n".join(rows)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("trace", metavar="DIR", help="a shelf-trace/1 directory")
    p.add_argument("--runtime", choices=(*RUNTIMES, "both"), default="cpython",
                   help="run the firmware in CPython (default), in the MicroPython 1.29 VM, or "
                        "in both and check that they agree")
    p.add_argument("--table", action="store_true",
                   help="a readable table (with the trace's truth and score) instead of JSON")


def _truth_table(trace: Trace) -> str:
    rows = [f"{'t (s)':>9} {'lane':>4} {'truth':<7} {'count':>5} {'delta g':>9}  from (s)"]
    for r in sorted(trace.truth, key=lambda r: r.t_ms):
        kind = "change" if r.count is None else ("pick" if r.count < 0 else "put")
        count = "-" if r.count is None else f"{r.count:+d}"
        rows.append(f"{r.t_ms / 1000:9.2f} {r.lane:4d} {kind:<7} {count:>5} {r.delta_g:9.2f}"
                    f"  {r.t_start_ms / 1000:.2f}")
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    trace = read_trace(args.trace, samples=False)
    runtimes = RUNTIMES if args.runtime == "both" else (args.runtime,)
    results = {rt: replay(trace, rt) for rt in runtimes}
    events = results[runtimes[0]]
    if args.table:
        print(f"{trace.name}: {len(events)} events "
              f"({len(trace.lanes)} lanes at {trace.sample_rate_hz:g} SPS, "
              f"runtime {runtimes[0]})")
        print(format_table(events))
        if trace.truth or (trace.path and (trace.path / "truth.csv").exists()):
            from host_tools.trace.score import score_trace

            print(f"\ntruth.csv: {len(trace.truth)} rows")
            print(_truth_table(trace))
            m = score_trace(read_trace(trace.path), events).metrics()
            print(f"\nscore: precision {_ratio(m['precision'])}, recall {_ratio(m['recall'])}, "
                  f"count accuracy {_ratio(m['count_accuracy'])}, receipts exact "
                  f"{_ratio(m['receipt_exact'])}, transient pairs {m['n_pairs']}")
    else:
        out = sys.stdout
        for ev in events:
            out.write(event_line(ev) + "\n")
    if len(runtimes) == 2:
        same = results["cpython"] == results["micropython"]
        verdict = "identical" if same else "DIFFERENT"
        print(f"MicroPython 1.29 VM vs CPython: {verdict} "
              f"({len(results['micropython'])} / {len(results['cpython'])} events)",
              file=sys.stdout if args.table else sys.stderr)
        if not same:
            return 1
    return 0


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"
