"""`make bench`: the firmware detector against a Tasmota-style baseline, side by side.

Not a test: it measures and reports, it asserts nothing. In one run:

1. detection on a generated set of traces (at least --events truth rows, every profile and
   rate, seeded) and on the recorded traces (the two examples, the real AiFi store), scored
   exactly as traces/FORMAT.md says, for both detectors;
2. the detector's cost inside the MicroPython 1.29 VM in us per lane-sample, next to a plain
   reference loop timed in the same VM run, and heap allocated per sample;
3. gc.mem_alloc() of a 6-lane shelf (glitch filter + detector) after warm-up, in the VM;
4. the runtime (bench/runtime.py): outbox replay rate to a real mosquitto after a 60 s
   outage, the device's MQTT window against stop-and-wait; the whole controller's steady heap
   (6-lane shelf, MQTT client, outbox, every task) in the VM;
5. the host tool (bench/deploy.py, bench/monitor.py): `shelfctl deploy` against `mpremote cp`
   of the same compiled firmware to a virtual board at 115200 baud, and a redeploy with
   nothing changed; `shelfctl monitor --json` against `mosquitto_sub` taking in the same 100k
   messages.

Prints a table, then one JSON document (also written to --json-out).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.tasmota import run_baseline
from host_tools.firmware import REPO
from host_tools.trace.gen import generate_set
from host_tools.trace.io import read_trace
from host_tools.trace.replay import replay
from host_tools.trace.score import aggregate, score_trace

TARGETS = {
    "f1": (">=", 0.99),
    "count_accuracy": (">=", 0.99),
    "receipt_exact": (">=", 0.98),
    "count_latency_p50_ms": ("<=", 200),
    "count_latency_p95_ms": ("<=", 500),
}
REAL = REPO / "traces" / "real"
EXAMPLES = REPO / "traces" / "examples"
LABELLED_PICKUP = ("aifi-g1-s5", 8, -1)  # traces/real/README.md


def _met(value, op, target) -> bool | None:
    if value is None:
        return None
    return value >= target if op == ">=" else value <= target


def generated_set(out: Path, min_events: int, seed: int) -> list:
    """Generate traces (mixed profiles, rates and lane counts) until enough truth rows."""
    traces, rows, batch = [], 0, 0
    while rows < min_events:
        paths = generate_set(out / f"b{batch}", count=10, seed=seed * 100 + batch, profile="any")
        for p in paths:
            t = read_trace(p)
            traces.append(t)
            rows += len(t.truth)
        batch += 1
    return traces


def score_both(traces: list) -> dict:
    firmware, baseline = [], []
    for t in traces:
        firmware.append(score_trace(t, replay(t)))
        baseline.append(score_trace(t, run_baseline(t)))
    return {"firmware": firmware, "tasmota": baseline}


def counted_events_on_real(traces: list) -> dict:
    out = {}
    for name, runner in (("firmware", replay), ("tasmota", run_baseline)):
        counted = []
        for t in traces:
            for ev in runner(t):
                if ev["count"]:
                    counted.append((t.name, ev["lane"], ev["count"]))
        out[name] = {
            "events_with_a_count": len(counted),
            "labelled_pickup_found_as_minus_1": LABELLED_PICKUP in counted,
            "others": len([c for c in counted if c != LABELLED_PICKUP]),
        }
    return out


def vm_cost(seed: int) -> dict:
    """us per lane-sample and allocation, in the VM, against a reference loop."""
    from host_tools.trace.gen import generate
    from host_tools.vm import node_available
    from host_tools.vm.measure import measure

    if not node_available():
        return {"error": "MicroPython VM not installed (run make setup)"}
    trace = generate(seed, lanes=6, sample_rate_hz=80, duration_s=30, profile="mixed")
    rows = "\n".join(f"{t},{ln},{raw}" for t, ln, raw in trace.samples)
    lanes = json.dumps([[m.offset, m.counts_per_gram, m.unit_g, m.sku, m.capacity]
                        for m in trace.lanes])
    setup = f"""
import gc
from core.detector import ShelfDetector
from core.glitch import GlitchFilter
from core.lane import LaneCal
S = []
with open('/bench/samples.csv') as f:
    for line in f:
        a, b, c = line.split(',')
        S.append((int(a), int(b), int(c)))
N = len(S)
cals = [LaneCal(*x) for x in {lanes}]
det = ShelfDetector(cals, 80)
flt = GlitchFilter(6)
for k in range(N // 3):  # warm-up: 10 s of the shelf
    t, ln, raw = S[k]
    v = flt.clean(ln, raw)
    if v is not None:
        det.feed(ln, t, v)
"""
    # the loop index of measure() picks the sample; the reference loop fetches the same way,
    # so "net" is the detector's own cost
    fetch = "        t, ln, raw = S[OFF + _mpvm_i % M]\n"
    cases = {
        "detector.feed": fetch + "        det.feed(ln, t, raw)",
        "glitch.clean + detector.feed": fetch
        + "        v = flt.clean(ln, raw)\n        det.feed(ln, t, v)",
        # the VM notes' yardstick: a 16-tap moving-average update in pure Python
        "reference: 16-tap moving average": fetch
        + "        k = _mpvm_i & 15\n        acc[0] += raw - ring[k]\n        ring[k] = raw",
    }
    setup += "OFF = N // 3\nM = N - OFF\nfrom array import array\nring = array('i', [0] * 16)\n"
    setup += "acc = [0]\n"
    result = measure(cases, setup=setup, reference=fetch.rstrip("\n"), n=20000,
                     files={"/bench/samples.csv": rows.encode()})
    out = {}
    for name, m in result.items():
        out[name] = {
            "us_per_call": round(m.us_per_call, 3),
            "us_net_of_sample_fetch": round(m.net_us_per_call, 3),
            "alloc_bytes_per_call": round(m.alloc_per_call, 3),
        }
    ref = result["reference: 16-tap moving average"].net_us_per_call
    det = result["detector.feed"].net_us_per_call
    out["detector_vs_reference"] = round(det / ref, 2) if ref > 0 else None
    return out


def vm_heap() -> dict:
    from host_tools.vm import node_available, run_micropython

    if not node_available():
        return {"error": "MicroPython VM not installed (run make setup)"}
    script = """
import gc
gc.collect()
base = gc.mem_alloc()
from core.detector import ShelfDetector
from core.glitch import GlitchFilter
from core.lane import LaneCal
gc.collect()
code = gc.mem_alloc()
cals = [LaneCal(100000 * k, 420.0, 250.0, 'SKU%d' % k, 12) for k in range(6)]
det = ShelfDetector(cals, 80)
flt = GlitchFilter(6)
for k in range(80 * 6 * 5):  # 5 s of a quiet 6-lane shelf at 80 SPS
    lane = k % 6
    v = flt.clean(lane, 100000 * lane + 1050000 + (k * 7919) % 400)
    det.feed(lane, k // 6 * 12, v)
gc.collect()
print(base, code, gc.mem_alloc())
"""
    res = run_micropython(script).check()
    base, code, total = (int(x) for x in res.stdout.split())
    return {
        "mem_alloc_after_warmup_bytes": total,
        "modules_bytes": code - base,
        "shelf_objects_bytes": total - code,
        "note": "6 lanes at 80 SPS, after 5 s of samples and gc.collect(); VM heap (wasm32)",
    }


def _fmt(v, kind="ratio"):
    if v is None:
        return "-"
    if kind == "ms":
        return f"{v:.0f}"
    return f"{v:.3f}"


def table(sections: dict) -> str:
    cols = ["precision", "recall", "f1", "count_accuracy", "receipt_exact",
            "count_latency_p50_ms", "count_latency_p95_ms", "latency_p95_ms",
            "transient_pairs_per_100", "n_rows", "n_events", "n_fp"]
    heads = ["set", "detector", "prec", "recall", "f1", "count", "receipt", "p50ms", "p95ms",
             "p95all", "pairs%", "rows", "events", "fp"]
    lines = [heads]
    for set_name, by_det in sections.items():
        for det_name, m in by_det.items():
            cells = [set_name, det_name]
            for c in cols:
                v = m.get(c)
                if c.startswith("n_"):
                    cells.append(str(v))
                elif "latency" in c:
                    cells.append(_fmt(v, "ms"))
                else:
                    cells.append(_fmt(v))
            lines.append(cells)
    widths = [max(len(r[i]) for r in lines) for i in range(len(heads))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=400, help="truth rows in the generated set")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--fresh-seeds", default="2027,2028,2029",
                    help="more generated sets, scored together: how the detector does on sets "
                         "nobody looked at while tuning it (comma-separated; '' for none)")
    ap.add_argument("--json-out", default="bench-results.json")
    ap.add_argument("--no-vm", action="store_true", help="skip the VM measurements")
    ap.add_argument("--no-runtime", action="store_true",
                    help="skip the runtime measurements (mosquitto, whole device in the VM)")
    args = ap.parse_args(argv)
    t0 = time.time()
    report: dict = {"seed": args.seed}
    with tempfile.TemporaryDirectory() as tmp:
        gen = generated_set(Path(tmp), args.events, args.seed)
        fresh_seeds = [int(x) for x in args.fresh_seeds.split(",") if x.strip()]
        fresh = [t for s in fresh_seeds
                 for t in generated_set(Path(tmp) / f"fresh-{s}", args.events, s)]
        sets = {
            "generated": gen,
            **({"gen, fresh seeds": fresh} if fresh else {}),
            "examples": [read_trace(p) for p in sorted(EXAMPLES.iterdir())],
            "real-aifi": [read_trace(p) for p in sorted(REAL.glob("aifi-*"))],
        }
        metrics = {}
        for name, traces in sets.items():
            scored = score_both(traces)
            metrics[name] = {det: aggregate(s) for det, s in scored.items()}
            if name == "generated":  # the same, per sample rate (10 SPS is slower by nature)
                for rate in sorted({int(t.sample_rate_hz) for t in traces}, reverse=True):
                    keep = [i for i, t in enumerate(traces) if int(t.sample_rate_hz) == rate]
                    metrics[f"gen@{rate}SPS"] = {
                        det: aggregate([s[i] for i in keep]) for det, s in scored.items()}
        report["generated_set"] = {
            "traces": len(gen),
            "truth_rows": sum(len(t.truth) for t in gen),
            "rates": sorted({int(t.sample_rate_hz) for t in gen}),
            "profiles": sorted({t.extra_meta.get("generator", {}).get("profile", "?")
                                for t in gen}),
        }
        report["fresh_sets"] = {"seeds": fresh_seeds, "traces": len(fresh),
                                "truth_rows": sum(len(t.truth) for t in fresh)}
        report["detection"] = metrics
        report["real_aifi_counted_events"] = counted_events_on_real(sets["real-aifi"])
    fw = metrics["generated"]["firmware"]
    report["targets"] = {k: {"target": f"{op} {v}", "value": fw.get(k),
                             "met": _met(fw.get(k), op, v)} for k, (op, v) in TARGETS.items()}
    if "gen, fresh seeds" in metrics:
        fr = metrics["gen, fresh seeds"]["firmware"]
        report["targets_fresh_seeds"] = {
            k: {"target": f"{op} {v}", "value": fr.get(k), "met": _met(fr.get(k), op, v)}
            for k, (op, v) in TARGETS.items()}
    if not args.no_vm:
        report["vm_cost_per_lane_sample"] = vm_cost(args.seed)
        report["vm_heap_6_lanes"] = vm_heap()
    if not args.no_runtime:
        from bench.runtime import device_heap_vm, outbox_replay

        report["outbox_replay"] = outbox_replay()
        from bench.monitor import run as monitor_ingest

        report["monitor_ingest"] = monitor_ingest()
        if not args.no_vm:
            report["device_heap_vm"] = device_heap_vm()
            from bench.runtime import device_heap_unix

            report["device_heap_unix_32bit"] = device_heap_unix()
            from bench.deploy import deploy_vs_mpremote

            report["deploy_vs_mpremote"] = deploy_vs_mpremote()
    report["seconds"] = round(time.time() - t0, 1)

    print(table(metrics))
    print()
    for k, v in report["targets"].items():
        value = _fmt(v["value"], "ms" if "ms" in k else "ratio")
        print(f"target {k:<22} {v['target']:<8} measured {value:>7}"
              f"  {'met' if v['met'] else 'NOT met'}")
    for k, v in report.get("targets_fresh_seeds", {}).items():
        value = _fmt(v["value"], "ms" if "ms" in k else "ratio")
        print(f"fresh seeds: {k:<22} {v['target']:<8} measured {value:>7}"
              f"  {'met' if v['met'] else 'NOT met'}")
    real = report["real_aifi_counted_events"]
    for det, r in real.items():
        print(f"real AiFi, {det}: {r['events_with_a_count']} events with a count; labelled "
              f"pickup found as -1: {r['labelled_pickup_found_as_minus_1']}; others: {r['others']}")
    if "vm_cost_per_lane_sample" in report:
        for name, m in report["vm_cost_per_lane_sample"].items():
            print(f"VM {name}: {m}")
        print(f"VM heap: {report['vm_heap_6_lanes']}")
    replay = report.get("outbox_replay")
    if replay and "error" not in replay:
        for key in ("device_window_8", "stop_and_wait_window_1"):
            r = replay[key]
            print(f"outbox replay, {key}: {r['events_per_s']} events/s "
                  f"({r['backlog_events']} in {r['seconds']} s, {r['left_unsent']} left)")
        print(f"outbox replay target {replay['target']}: "
              f"{'met' if replay['met'] else 'NOT met'}")
    elif replay:
        print(f"outbox replay: {replay['error']}")
    dep = report.get("deploy_vs_mpremote")
    if dep and "error" not in dep:
        print(f"deploy at {dep['baud']} baud, {dep['files']} files, {dep['payload_bytes']} B: "
              f"shelfctl {dep['shelfctl_deploy']['payload_bytes_per_s']} B/s, mpremote cp "
              f"{dep['mpremote_cp']['payload_bytes_per_s']} B/s, ratio {dep['ratio']}; "
              f"redeploy unchanged {dep['redeploy_unchanged_s']} s; targets "
              + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in dep["targets"].items()))
    ingest = report.get("monitor_ingest")
    if ingest and "error" not in ingest:
        mon, sub = ingest["shelfctl_monitor_json"], ingest["mosquitto_sub"]
        print(f"monitor ingest, {ingest['messages']} messages: monitor --json "
              f"{mon['messages_per_s']} msg/s (lost {mon['lost']}), mosquitto_sub "
              f"{sub['messages_per_s']} msg/s (lost {sub['lost']}), ratio "
              f"{ingest['ratio_of_medians']}; targets "
              + ", ".join(f"{k}: {'met' if v else 'NOT met'}"
                          for k, v in ingest["targets"].items()))
    elif ingest:
        print(f"monitor ingest: {ingest['error']}")
    unix = report.get("device_heap_unix_32bit")
    if unix and "skipped" not in unix:
        print(f"device heap, 32-bit unix build: {unix['mpy']['firmware_steady_bytes']} B as .mpy, "
              f"{unix['frozen']['firmware_steady_bytes']} B frozen "
              f"({'met' if unix['met_frozen'] else 'NOT met'} frozen: {unix['target']})")
    elif unix:
        print(f"device heap, 32-bit unix build: skipped ({unix['skipped']})")
    heap = report.get("device_heap_vm")
    if heap and "error" not in heap:
        print(f"device heap in the VM: {heap['firmware_steady_bytes']} B steady "
              f"({'met' if heap['met'] else 'NOT met'}: {heap['target']}), nearly all module "
              f"code")
    print()
    text = json.dumps(report, indent=1, default=str)
    print(text)
    Path(args.json_out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
