"""Scoring emitted shelf events against a trace's truth (traces/FORMAT.md, docs/scoring.md).

A detector's output is a list of event dicts with at least ``lane``, ``t_ms``, ``count`` (an int,
negative = taken, or None) and ``delta_g``. `score_trace` matches them to the trace's truth rows
and sorts every event into exactly one of three bins: matched to a row, part of a transient pair
inside a distractor's window, or false positive. `aggregate` pools several traces' scores and
`format_table` prints them. `add_arguments` / `run` implement `shelfctl trace score`.

Decisions FORMAT.md leaves open (all documented in docs/scoring.md):
- an event inside the windows of several rows on its lane goes to a row of its kind (no count:
  a foreign row; a count: a counted row) when there is one, then to the row whose action it is
  in or most recently follows: the latest row with ``t_start_ms <= t``; if no candidate row has
  started yet (the event is in a row's 300 ms lead), the earliest-starting candidate;
- transient pairs are formed greedily, per distractor window in time order, from events no row
  took; each event pairs with the first later unpaired event in the same window that cancels it;
- None counts add 0 everywhere (count sums, receipts, cancelling);
- receipt exactness is over the lanes with something to check: lanes with a truth row or an
  emitted event; a lane with neither is not counted;
- a ratio whose denominator is 0 is None (shown as "-"), never a made-up 0 or 1.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field

from host_tools.trace.io import Action, Trace, TraceError, TruthRow, read_trace

MATCH_LEAD_MS = 300  # an event may come this long before the hand touched
MATCH_TAIL_MS = 3000  # ... and this long after the shelf settled
FOREIGN_TAIL_MS = 8000  # after a foreign row (count None): only a long wait tells it from a hand
DISTRACTOR_LEAD_MS = 300
DISTRACTOR_TAIL_MS = 3000
PAIR_MIN_TOLERANCE_G = 10.0  # grams of a transient pair must cancel to max(10 g, 0.3 x unit)
PAIR_UNIT_FRACTION = 0.3
DISTRACTOR_PREFIXES = ("rest", "touch", "bump")


# ---------------------------------------------------------------------------------------------
# windows


def row_window(row: TruthRow) -> tuple[int, int]:
    """The inclusive time window in which an event on the row's lane matches the row."""
    tail = FOREIGN_TAIL_MS if row.count is None else MATCH_TAIL_MS
    return row.t_start_ms - MATCH_LEAD_MS, row.t_ms + tail


def is_distractor(kind: str) -> bool:
    """rest<grams>, touch and bump<grams> actions: something touched the shelf, nothing changed."""
    return kind.startswith(DISTRACTOR_PREFIXES)


def distractor_window(action: Action) -> tuple[int, int]:
    return action.t_start_ms - DISTRACTOR_LEAD_MS, action.t_end_ms + DISTRACTOR_TAIL_MS


def pair_tolerance_g(unit_g: float) -> float:
    return max(PAIR_MIN_TOLERANCE_G, PAIR_UNIT_FRACTION * unit_g)


def _count(event: dict) -> int:
    c = event.get("count")
    return 0 if c is None else int(c)


def _grams(event: dict) -> float:
    g = event.get("delta_g")
    return 0.0 if g is None else float(g)


def percentile(values: list[float], p: float) -> float | None:
    """The p-th percentile (0..100), linear interpolation between closest ranks; None if empty."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * p / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return float(s[lo] + (s[hi] - s[lo]) * (pos - lo))


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _f1(p: float | None, r: float | None) -> float | None:
    if p is None or r is None:
        return None
    return 2 * p * r / (p + r) if p + r else 0.0


# ---------------------------------------------------------------------------------------------
# per-trace score


@dataclass
class TraceScore:
    """Counts for one trace plus the events and rows behind them (for --verbose)."""

    name: str
    n_events: int = 0  # all emitted events
    n_matched: int = 0  # events matched to a truth row
    n_transient: int = 0  # events inside transient pairs (2 per pair)
    n_rows: int = 0
    n_found: int = 0
    n_count_rows: int = 0  # rows with a count (not foreign)
    n_count_right: int = 0
    n_receipt_lanes: int = 0  # lanes with a truth row or an emitted event
    n_receipt_exact: int = 0
    latencies_ms: list[int] = field(default_factory=list)  # one per found row
    # the same for found rows with a count: foreign rows wait on purpose (FORMAT.md gives
    # them 8 s), so the picks' and put-backs' latency is worth seeing on its own
    count_latencies_ms: list[int] = field(default_factory=list)
    fp_events: list[dict] = field(default_factory=list)
    missed_rows: list[TruthRow] = field(default_factory=list)
    wrong_count_rows: list[tuple[TruthRow, int]] = field(default_factory=list)  # (row, got)
    transient_pairs: list[tuple[dict, dict]] = field(default_factory=list)
    receipt_errors: list[tuple[int, int, int]] = field(default_factory=list)  # lane, got, truth
    matches: list[tuple[dict, TruthRow]] = field(default_factory=list)

    @property
    def n_fp(self) -> int:
        return len(self.fp_events)

    @property
    def n_pairs(self) -> int:
        return len(self.transient_pairs)

    def metrics(self) -> dict:
        return _metrics(
            n_events=self.n_events,
            n_matched=self.n_matched,
            n_transient=self.n_transient,
            n_pairs=self.n_pairs,
            n_fp=self.n_fp,
            n_rows=self.n_rows,
            n_found=self.n_found,
            n_count_rows=self.n_count_rows,
            n_count_right=self.n_count_right,
            n_receipt_lanes=self.n_receipt_lanes,
            n_receipt_exact=self.n_receipt_exact,
            latencies=self.latencies_ms,
            count_latencies=self.count_latencies_ms,
        )

    def diagnostics(self) -> dict:
        def row(r: TruthRow) -> dict:
            return {
                "t_ms": r.t_ms,
                "lane": r.lane,
                "count": r.count,
                "delta_g": r.delta_g,
                "t_start_ms": r.t_start_ms,
            }

        return {
            "false_positives": list(self.fp_events),
            "missed_rows": [row(r) for r in self.missed_rows],
            "wrong_count_rows": [dict(row(r), got=got) for r, got in self.wrong_count_rows],
            "transient_pairs": [[a, b] for a, b in self.transient_pairs],
            "receipt_errors": [
                {"lane": ln, "emitted": got, "truth": want} for ln, got, want in self.receipt_errors
            ],
        }

    # convenient read-only views of the metrics
    @property
    def precision(self) -> float | None:
        return self.metrics()["precision"]

    @property
    def recall(self) -> float | None:
        return self.metrics()["recall"]

    @property
    def f1(self) -> float | None:
        return self.metrics()["f1"]


def _metrics(
    *,
    n_events: int,
    n_matched: int,
    n_transient: int,
    n_pairs: int,
    n_fp: int,
    n_rows: int,
    n_found: int,
    n_count_rows: int,
    n_count_right: int,
    n_receipt_lanes: int,
    n_receipt_exact: int,
    latencies: list[int],
    count_latencies: list[int],
) -> dict:
    precision = _ratio(n_matched, n_events - n_transient)
    recall = _ratio(n_found, n_rows)
    pairs_per_100 = _ratio(100 * n_pairs, n_events)
    return {
        "precision": precision,
        "recall": recall,
        "f1": _f1(precision, recall),
        "count_accuracy": _ratio(n_count_right, n_count_rows),
        "receipt_exact": _ratio(n_receipt_exact, n_receipt_lanes),
        "latency_p50_ms": percentile(latencies, 50),
        "latency_p95_ms": percentile(latencies, 95),
        "count_latency_p50_ms": percentile(count_latencies, 50),
        "count_latency_p95_ms": percentile(count_latencies, 95),
        "transient_pairs_per_100": pairs_per_100,
        "n_events": n_events,
        "n_matched": n_matched,
        "n_transient_events": n_transient,
        "n_pairs": n_pairs,
        "n_fp": n_fp,
        "n_rows": n_rows,
        "n_found": n_found,
        "n_missed": n_rows - n_found,
        "n_count_rows": n_count_rows,
        "n_count_right": n_count_right,
        "n_receipt_lanes": n_receipt_lanes,
        "n_receipt_exact": n_receipt_exact,
    }


def _assign(event_t: int, candidates: list[tuple[int, TruthRow]]) -> int:
    """Index of the row an event goes to among candidate (index, row) pairs (see module doc)."""
    started = [(r.t_start_ms, -i, i) for i, r in candidates if r.t_start_ms <= event_t]
    if started:
        return max(started)[2]
    return min((r.t_start_ms, i) for i, r in candidates)[1]


def score_trace(trace: Trace, events: list[dict]) -> TraceScore:
    """Score one trace's emitted events against its truth.csv (and actions.csv if any)."""
    score = TraceScore(name=trace.name, n_events=len(events))
    # stable time order: events with the same t_ms keep their emission order
    ordered = sorted(enumerate(events), key=lambda ie: (int(ie[1]["t_ms"]), ie[0]))

    rows = list(trace.truth)
    rows_by_lane: dict[int, list[tuple[int, TruthRow]]] = {}
    for i, r in enumerate(rows):
        rows_by_lane.setdefault(r.lane, []).append((i, r))

    matched: dict[int, list[dict]] = {i: [] for i in range(len(rows))}
    leftover: list[dict] = []
    for _, ev in ordered:
        t = int(ev["t_ms"])
        cands = []
        for i, r in rows_by_lane.get(int(ev["lane"]), []):
            lo, hi = row_window(r)
            if lo <= t <= hi:
                cands.append((i, r))
        if cands:
            # a foreign-looking event (no count) belongs to a foreign row if one is open, a
            # counted event to a counted row; only then does time decide
            alike = [c for c in cands if (c[1].count is None) == (ev.get("count") is None)]
            i = _assign(t, alike or cands)
            matched[i].append(ev)
            score.matches.append((ev, rows[i]))
        else:
            leftover.append(ev)
    score.n_matched = len(score.matches)

    # truth rows: found, count right, latency
    score.n_rows = len(rows)
    for i, r in enumerate(rows):
        evs = matched[i]
        got = sum(_count(e) for e in evs)
        if r.count is not None:
            score.n_count_rows += 1
        if not evs:
            score.missed_rows.append(r)
            continue
        score.n_found += 1
        score.latencies_ms.append(max(int(e["t_ms"]) for e in evs) - r.t_ms)
        if r.count is not None:
            score.count_latencies_ms.append(score.latencies_ms[-1])
        if r.count is not None:
            if got == r.count:
                score.n_count_right += 1
            else:
                score.wrong_count_rows.append((r, got))

    # transient pairs among the events no row took, inside distractor windows
    units = {m.lane: m.unit_g for m in trace.lanes}
    paired: set[int] = set()  # id() of events already in a pair
    distractors = sorted(
        (a for a in trace.actions if is_distractor(a.kind)),
        key=lambda a: (a.t_start_ms, a.t_end_ms),
    )
    for a in distractors:
        lo, hi = distractor_window(a)
        inside = [
            e
            for e in leftover
            if lo <= int(e["t_ms"]) <= hi
            and (a.lane == -1 or int(e["lane"]) == a.lane)
            and id(e) not in paired
        ]
        for j, first in enumerate(inside):
            if id(first) in paired:
                continue
            tol = pair_tolerance_g(units.get(int(first["lane"]), 0.0))
            for second in inside[j + 1 :]:
                if (
                    id(second) not in paired
                    and int(second["lane"]) == int(first["lane"])
                    and _count(first) + _count(second) == 0
                    and abs(_grams(first) + _grams(second)) <= tol
                ):
                    paired.update((id(first), id(second)))
                    score.transient_pairs.append((first, second))
                    break
    score.n_transient = 2 * len(score.transient_pairs)
    score.fp_events = [e for e in leftover if id(e) not in paired]

    # receipts: per lane, emitted counts against truth counts over the whole trace
    emitted: dict[int, int] = {}
    for e in events:
        ln = int(e["lane"])
        emitted[ln] = emitted.get(ln, 0) + _count(e)
    truth: dict[int, int] = {}
    for r in rows:
        truth[r.lane] = truth.get(r.lane, 0) + (r.count or 0)
    for ln in sorted(set(emitted) | set(truth)):
        score.n_receipt_lanes += 1
        got, want = emitted.get(ln, 0), truth.get(ln, 0)
        if got == want:
            score.n_receipt_exact += 1
        else:
            score.receipt_errors.append((ln, got, want))
    return score


# ---------------------------------------------------------------------------------------------
# pooling and printing


def aggregate(scores: list[TraceScore]) -> dict:
    """Metrics pooled over traces: counts are summed, then the ratios are taken (micro average);
    latency percentiles over all found rows of all traces."""
    out = _metrics(
        n_events=sum(s.n_events for s in scores),
        n_matched=sum(s.n_matched for s in scores),
        n_transient=sum(s.n_transient for s in scores),
        n_pairs=sum(s.n_pairs for s in scores),
        n_fp=sum(s.n_fp for s in scores),
        n_rows=sum(s.n_rows for s in scores),
        n_found=sum(s.n_found for s in scores),
        n_count_rows=sum(s.n_count_rows for s in scores),
        n_count_right=sum(s.n_count_right for s in scores),
        n_receipt_lanes=sum(s.n_receipt_lanes for s in scores),
        n_receipt_exact=sum(s.n_receipt_exact for s in scores),
        latencies=[x for s in scores for x in s.latencies_ms],
        count_latencies=[x for s in scores for x in s.count_latencies_ms],
    )
    out["n_traces"] = len(scores)
    return out


def _fmt(x: float | None, kind: str = "ratio") -> str:
    if x is None:
        return "-"
    if kind == "ms":
        return f"{x:.0f}"
    return f"{x:.3f}"


_COLUMNS = (
    ("trace", "<"),
    ("events", ">"),
    ("rows", ">"),
    ("found", ">"),
    ("fp", ">"),
    ("pairs", ">"),
    ("prec", ">"),
    ("recall", ">"),
    ("f1", ">"),
    ("count", ">"),
    ("receipt", ">"),
    ("p50_ms", ">"),
    ("p95_ms", ">"),
)


def _table_row(name: str, m: dict) -> list[str]:
    return [
        name,
        str(m["n_events"]),
        str(m["n_rows"]),
        str(m["n_found"]),
        str(m["n_fp"]),
        str(m["n_pairs"]),
        _fmt(m["precision"]),
        _fmt(m["recall"]),
        _fmt(m["f1"]),
        _fmt(m["count_accuracy"]),
        f"{m['n_receipt_exact']}/{m['n_receipt_lanes']}",
        _fmt(m["latency_p50_ms"], "ms"),
        _fmt(m["latency_p95_ms"], "ms"),
    ]


def format_table(scores: list[TraceScore], pooled: dict | None = None) -> str:
    """One line per trace and, for more than one trace, a pooled line (`aggregate` unless given).

    count = count accuracy; receipt = exact lanes / lanes checked; pairs = transient pairs."""
    lines = [_table_row(s.name, s.metrics()) for s in scores]
    if pooled is None and len(scores) > 1:
        pooled = aggregate(scores)
    if pooled is not None:
        lines.append(_table_row("pooled", pooled))
    header = [c for c, _ in _COLUMNS]
    widths = [max(len(h), *(len(r[k]) for r in lines)) for k, h in enumerate(header)]

    def fmt(cells: list[str]) -> str:
        parts = []
        for k, cell in enumerate(cells):
            align = _COLUMNS[k][1]
            parts.append(f"{cell:{align}{widths[k]}}")
        return "  ".join(parts).rstrip()

    out = [fmt(header), fmt(["-" * w for w in widths])]
    out += [fmt(r) for r in lines]
    return "\n".join(out)


def format_diagnostics(score: TraceScore) -> str:
    """Human-readable list of what went wrong on one trace (for --verbose)."""

    def ev(e: dict) -> str:
        return f"t={e['t_ms']} lane={e['lane']} count={e.get('count')} delta_g={_grams(e):.1f}"

    def row(r: TruthRow) -> str:
        return (
            f"t={r.t_ms} (start {r.t_start_ms}) lane={r.lane} count={r.count} "
            f"delta_g={r.delta_g:.1f}"
        )

    out = [f"{score.name}:"]
    out += [f"  false positive: {ev(e)}" for e in score.fp_events]
    out += [f"  missed row: {row(r)}" for r in score.missed_rows]
    out += [f"  wrong count: {row(r)} got {got}" for r, got in score.wrong_count_rows]
    out += [f"  transient pair: {ev(a)} / {ev(b)}" for a, b in score.transient_pairs]
    out += [
        f"  receipt lane {ln}: emitted {got}, truth {want}"
        for ln, got, want in score.receipt_errors
    ]
    if len(out) == 1:
        out.append("  nothing wrong")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# CLI: shelfctl trace score DIR...


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="shelf-trace/1 directories")
    parser.add_argument(
        "--runtime",
        choices=("cpython", "micropython"),
        default="cpython",
        help="run the firmware detector under CPython or the MicroPython VM (default cpython)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also list false positives, missed rows, wrong counts, pairs and receipt errors",
    )


def run(args: argparse.Namespace) -> int:
    traces = []
    for d in args.dirs:
        try:
            traces.append(read_trace(d))
        except (TraceError, OSError, UnicodeDecodeError) as e:
            print(f"shelfctl trace score: {e}", file=sys.stderr)
            return 2

    from host_tools.trace.replay import replay  # imported only when needed

    scores = [score_trace(t, replay(t, runtime=args.runtime)) for t in traces]
    pooled = aggregate(scores)
    if args.json:
        doc: dict = {"runtime": args.runtime, "traces": [], "pooled": pooled}
        for s in scores:
            entry = {"trace": s.name, **s.metrics()}
            if args.verbose:
                entry["diagnostics"] = s.diagnostics()
            doc["traces"].append(entry)
        print(json.dumps(doc, indent=1, default=str))
        return 0
    print(format_table(scores, pooled if len(scores) > 1 else None))
    if args.verbose:
        for s in scores:
            print()
            print(format_diagnostics(s))
    return 0
