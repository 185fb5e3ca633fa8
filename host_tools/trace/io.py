"""Reading and writing `shelf-trace/1` directories (see traces/FORMAT.md).

A trace is a directory with meta.json, samples.csv, truth.csv and optionally actions.csv.
Everything here is plain data: lists of small dataclasses, no numpy, so the same objects feed
the replay, the scorer, the generator and the benchmark.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

FORMAT = "shelf-trace/1"


class TraceError(ValueError):
    """A trace directory that cannot be read; the message names the file and line."""


@dataclass
class LaneMeta:
    lane: int
    offset: int
    counts_per_gram: float
    unit_g: float
    sku: str = ""
    capacity: int = 0  # 0: unknown (the format does not require it)


@dataclass
class TruthRow:
    t_ms: int
    lane: int
    count: int | None  # None: a foreign item (no whole number of the lane's items)
    delta_g: float
    t_start_ms: int


@dataclass
class Action:
    t_start_ms: int
    t_end_ms: int
    lane: int  # -1: the whole shelf (a bump)
    kind: str  # pick<k>, put<k>, foreign0, rest<grams>, touch, bump<grams>


@dataclass
class Trace:
    path: Path | None
    sample_rate_hz: float
    lanes: list[LaneMeta]
    samples: list[tuple[int, int, int]] = field(default_factory=list)  # (t_ms, lane, raw)
    truth: list[TruthRow] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    extra_meta: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name if self.path else "trace"


def _int(text: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise TraceError(f"{where}: not an integer: {text!r}") from None


def _float(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise TraceError(f"{where}: not a number: {text!r}") from None


def _rows(path: Path, header: list[str]):
    with path.open(newline="") as f:
        reader = csv.reader(f)
        first = next(reader, None)
        if first is None or [h.strip() for h in first] != header:
            raise TraceError(f"{path}: header must be {','.join(header)}")
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise TraceError(f"{path}:{lineno}: expected {len(header)} fields, got {len(row)}")
            yield f"{path}:{lineno}", row


def read_meta(directory: Path) -> tuple[float, list[LaneMeta], dict]:
    path = directory / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise TraceError(f"{directory}: no meta.json (not a shelf-trace/1 directory?)") from None
    except json.JSONDecodeError as e:
        raise TraceError(f"{path}: invalid JSON: {e}") from None
    if meta.get("format") != FORMAT:
        raise TraceError(f"{path}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    try:
        lanes = [
            LaneMeta(
                lane=int(m["lane"]),
                offset=int(m["offset"]),
                counts_per_gram=float(m["counts_per_gram"]),
                unit_g=float(m["unit_g"]),
                sku=str(m.get("sku", "")),
                capacity=int(m.get("capacity", 0)),
            )
            for m in meta["lanes"]
        ]
        rate = float(meta["sample_rate_hz"])
    except (KeyError, TypeError, ValueError) as e:
        raise TraceError(f"{path}: bad or missing field: {e}") from None
    if [m.lane for m in lanes] != list(range(len(lanes))):
        raise TraceError(f"{path}: lanes must be numbered 0..{len(lanes) - 1} in order")
    for m in lanes:
        if m.counts_per_gram == 0 or m.unit_g <= 0:
            raise TraceError(f"{path}: lane {m.lane}: counts_per_gram and unit_g must be non-zero")
    known = {"format", "sample_rate_hz", "lanes"}
    return rate, lanes, {k: v for k, v in meta.items() if k not in known}


def read_samples(directory: Path, n_lanes: int) -> list[tuple[int, int, int]]:
    out = []
    for where, (t, lane, raw) in _rows(directory / "samples.csv", ["t_ms", "lane", "raw"]):
        ln = _int(lane, where)
        if not 0 <= ln < n_lanes:
            raise TraceError(f"{where}: lane {ln} not in meta.json")
        out.append((_int(t, where), ln, _int(raw, where)))
    return out


def read_truth(directory: Path) -> list[TruthRow]:
    path = directory / "truth.csv"
    if not path.exists():
        return []
    out = []
    for where, (t, lane, count, delta, t0) in _rows(
        path, ["t_ms", "lane", "count", "delta_g", "t_start_ms"]
    ):
        out.append(
            TruthRow(
                t_ms=_int(t, where),
                lane=_int(lane, where),
                count=_int(count, where) if count.strip() else None,
                delta_g=_float(delta, where),
                t_start_ms=_int(t0, where),
            )
        )
    return out


def read_actions(directory: Path) -> list[Action]:
    path = directory / "actions.csv"
    if not path.exists():
        return []
    return [
        Action(_int(a, w), _int(b, w), _int(c, w), kind.strip())
        for w, (a, b, c, kind) in _rows(path, ["t_start_ms", "t_end_ms", "lane", "kind"])
    ]


def read_trace(directory: str | Path, samples: bool = True) -> Trace:
    d = Path(directory)
    if not d.is_dir():
        raise TraceError(f"{d}: not a directory")
    rate, lanes, extra = read_meta(d)
    return Trace(
        path=d,
        sample_rate_hz=rate,
        lanes=lanes,
        samples=read_samples(d, len(lanes)) if samples else [],
        truth=read_truth(d),
        actions=read_actions(d),
        extra_meta=extra,
    )


def write_trace(trace: Trace, directory: str | Path) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    lanes = []
    for m in trace.lanes:
        entry = {
            "lane": m.lane,
            "offset": m.offset,
            "counts_per_gram": m.counts_per_gram,
            "unit_g": m.unit_g,
            "sku": m.sku,
        }
        if m.capacity:
            entry["capacity"] = m.capacity
        lanes.append(entry)
    meta = {"format": FORMAT, "sample_rate_hz": trace.sample_rate_hz, "lanes": lanes}
    meta.update(trace.extra_meta)
    (d / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    with (d / "samples.csv").open("w", newline="") as f:
        f.write("t_ms,lane,raw\n")
        f.writelines(f"{t},{ln},{raw}\n" for t, ln, raw in trace.samples)
    with (d / "truth.csv").open("w", newline="") as f:
        f.write("t_ms,lane,count,delta_g,t_start_ms\n")
        for r in trace.truth:
            count = "" if r.count is None else str(r.count)
            f.write(f"{r.t_ms},{r.lane},{count},{r.delta_g:.2f},{r.t_start_ms}\n")
    if trace.actions:
        with (d / "actions.csv").open("w", newline="") as f:
            f.write("t_start_ms,t_end_ms,lane,kind\n")
            f.writelines(f"{a.t_start_ms},{a.t_end_ms},{a.lane},{a.kind}\n" for a in trace.actions)
    return d
