"""`shelfctl trace replay` prints the same lines in CPython and in the MicroPython 1.29 VM."""

from pathlib import Path

import pytest

from host_tools.cli import main
from host_tools.trace.gen import generate
from host_tools.trace.io import write_trace

REPO = Path(__file__).resolve().parents[2]


def _lines(capsys, trace_dir, runtime):
    assert main(["trace", "replay", str(trace_dir), "--runtime", runtime]) == 0
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize(
    "trace_dir",
    [
        REPO / "traces" / "examples" / "example-00",
        REPO / "traces" / "examples" / "example-01",
        REPO / "traces" / "real" / "aifi-g1-s5",  # the real pickup, noisy gondola, 60 SPS
    ],
    ids=lambda p: p.name,
)
def test_recorded_traces_replay_identically(capsys, trace_dir):
    cpython = _lines(capsys, trace_dir, "cpython")
    micropython = _lines(capsys, trace_dir, "micropython")
    assert cpython, "these traces contain events"
    assert micropython == cpython


@pytest.mark.parametrize("rate,profile", [(80, "busy"), (10, "noisy")])
def test_generated_traces_replay_identically(capsys, tmp_path, rate, profile):
    # glitches, dropped samples, reversed cells, foreign items: every decision path
    trace = generate(11, lanes=5, sample_rate_hz=rate, duration_s=60, profile=profile)
    d = write_trace(trace, tmp_path / "t")
    cpython = _lines(capsys, d, "cpython")
    assert cpython
    assert _lines(capsys, d, "micropython") == cpython
