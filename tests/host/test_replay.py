"""shelfctl trace replay (CPython runtime) and the CLI around it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from host_tools.cli import main
from host_tools.trace.io import read_trace
from host_tools.trace.replay import replay
from host_tools.trace.score import score_trace

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "traces" / "examples"
REAL = REPO / "traces" / "real"


def test_replay_prints_one_json_line_per_event(capsys):
    assert main(["trace", "replay", str(EXAMPLES / "example-01")]) == 0
    lines = capsys.readouterr().out.splitlines()
    events = [json.loads(line) for line in lines]
    assert events, "example-01 has picks and put-backs"
    for ev in events:
        assert {"lane", "t_ms", "count", "delta_g", "before_g", "after_g", "confidence",
                "sku"} <= set(ev)
        assert ev["count"] is None or isinstance(ev["count"], int)
    meta = json.loads((EXAMPLES / "example-01" / "meta.json").read_text())
    assert {ev["sku"] for ev in events} <= {m["sku"] for m in meta["lanes"]}
    # events come in time order, as emitted
    assert [ev["t_ms"] for ev in events] == sorted(ev["t_ms"] for ev in events)


def test_replay_table(capsys):
    assert main(["trace", "replay", str(EXAMPLES / "example-00"), "--table"]) == 0
    out = capsys.readouterr().out
    assert "pick" in out and "lane" in out and "SKU" in out


@pytest.mark.parametrize("name", ["example-00", "example-01"])
def test_examples_are_detected_exactly(name):
    trace = read_trace(EXAMPLES / name)
    score = score_trace(trace, replay(trace))
    m = score.metrics()
    assert m["recall"] == 1.0 and m["precision"] == 1.0
    assert m["count_accuracy"] == 1.0 and m["receipt_exact"] == 1.0


def test_real_store_recording_only_the_labelled_pickup():
    # AiFi cps-test-01: 192 real plates, one labelled pickup (g1-s5 lane 8, -1 bottle).
    counted = []
    for d in sorted(REAL.glob("aifi-*")):
        for ev in replay(d):
            if ev["count"]:
                counted.append((d.name, ev["lane"], ev["count"]))
    assert counted == [("aifi-g1-s5", 8, -1)]


def test_bad_directory_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "host_tools", "trace", "replay", str(tmp_path / "nope")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "not a directory" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("verb", ["replay", "score"])
def test_malformed_samples_file_names_the_line(tmp_path, verb):
    d = tmp_path / "t"
    d.mkdir()
    (d / "meta.json").write_text((EXAMPLES / "example-00" / "meta.json").read_text())
    (d / "samples.csv").write_text("t_ms,lane,raw\n0,0,100\n1,0,1x0\n")
    proc = subprocess.run(
        [sys.executable, "-m", "host_tools", "trace", verb, str(d)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "samples.csv:3" in proc.stderr and "Traceback" not in proc.stderr


def test_usage_errors_exit_2():
    proc = subprocess.run([sys.executable, "-m", "host_tools", "trace", "replay"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    proc = subprocess.run([sys.executable, "-m", "host_tools", "trace", "replay", "x",
                           "--runtime", "jython"], capture_output=True, text=True)
    assert proc.returncode == 2

