# Replays a trace through the firmware's glitch filter and detector.
#
# This file runs unchanged in CPython and inside the MicroPython VM (it is copied there next
# to the firmware), so both runtimes execute the very same loop. It prints nothing itself:
# `emit` receives one tuple of integers per event, which the host formats, because float
# printing differs between the two runtimes and the comparison must be exact.
import json

from core.detector import ShelfDetector
from core.glitch import GlitchFilter
from core.lane import LaneCal


def load_lanes(meta_path):
    with open(meta_path) as f:
        meta = json.load(f)
    lanes = []
    for m in meta["lanes"]:
        lanes.append(
            LaneCal(
                m["offset"],
                m["counts_per_gram"],
                m["unit_g"],
                m.get("sku", ""),
                m.get("capacity", 0),
            )
        )
    return lanes, meta["sample_rate_hz"]


def run(trace_dir, emit):
    """Feed trace_dir/samples.csv sample by sample; call emit(tuple) per event; return counts."""
    lanes, rate = load_lanes(trace_dir + "/meta.json")
    glitch = GlitchFilter(len(lanes))
    det = ShelfDetector(lanes, int(rate + 0.5))
    n = 0
    events = 0
    with open(trace_dir + "/samples.csv") as f:
        f.readline()  # header
        for line in f:
            parts = line.split(",")
            if len(parts) != 3:
                continue
            lane = int(parts[1])
            value = glitch.clean(lane, int(parts[2]))
            n += 1
            if value is None:
                continue
            ev = det.feed(lane, int(parts[0]), value)
            if ev is not None:
                events += 1
                emit((ev.lane, ev.t_ms, ev.count, ev.delta_cg, ev.before_cg, ev.after_cg,
                      ev.confidence))
    return n, events


def main_vm(trace_dir):
    # Entry point inside the VM: one line per event, ints only ("-" for no count).
    def out(e):
        print("E", e[0], e[1], "-" if e[2] is None else e[2], e[3], e[4], e[5], e[6])

    n, events = run(trace_dir, out)
    print("DONE", n, events)
