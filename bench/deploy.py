"""`make bench`, the host tool part: deploying the compiled firmware to a virtual board at
115200 baud with `shelfctl deploy` versus `mpremote cp` of the same files, in the same run.

Payload = bytes of the files that end up on the board. The virtual board paces its serial line
at the baud rate, so the wire time is real (10 bits a byte). Both tools run as the commands a
user types (process start, connecting, everything), timed from outside; shelfctl's own figure
(from its first byte to the board to the last check) is reported beside it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from host_tools.mpy import compile_tree
from host_tools.sim.board import VirtualBoard

BAUD = 115200


def _mpremote_copy(port: str, out: Path, files: list[Path]) -> float:
    dirs = sorted({f.parent.as_posix() for f in files if f.parent.as_posix() != "."})
    cmd = [sys.executable, "-m", "mpremote", "connect", port]
    for d in dirs:
        cmd += ["fs", "mkdir", f":{d}", "+"]
    for f in files:
        cmd += ["fs", "cp", str(out / f), f":{f.as_posix()}", "+"]
    cmd = cmd[:-1]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"mpremote failed: {proc.stderr[-300:]}")
    return time.monotonic() - start


def _shelfctl_deploy(port: str) -> tuple[float, float, int]:
    """(wall seconds, the tool's own seconds, wire bytes) of `shelfctl deploy --port P`."""
    cmd = [sys.executable, "-m", "host_tools.cli", "deploy", "--port", port, "--no-reset"]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    wall = time.monotonic() - start
    m = re.search(r"\((\d+) on the wire\) in ([\d.]+) s", proc.stdout)
    if proc.returncode != 0 or not m:
        raise RuntimeError(f"shelfctl deploy failed: {proc.stdout[-200:]} {proc.stderr[-300:]}")
    return wall, float(m.group(2)), int(m.group(1))


def deploy_vs_mpremote() -> dict:
    from host_tools.vm import node_available

    if not node_available():
        return {"error": "MicroPython VM not installed (run make setup)"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        out = root / "mpy"
        files = compile_tree(out)
        payload = sum((out / f).stat().st_size for f in files)
        a = VirtualBoard(root / "a", baud=BAUD)
        a.start()
        try:
            time.sleep(1.0)
            wall, tool_s, wire = _shelfctl_deploy(a.port)
            again_wall, again_tool_s, _ = _shelfctl_deploy(a.port)
        finally:
            a.stop()
        b = VirtualBoard(root / "b", baud=BAUD)
        b.start()
        try:
            time.sleep(1.0)
            mp_s = _mpremote_copy(b.port, out, files)
        finally:
            b.stop()
    shelfctl_rate = payload / wall
    mp_rate = payload / mp_s
    return {
        "files": len(files), "payload_bytes": payload, "baud": BAUD,
        "wire_max_bytes_per_s": BAUD // 10,
        "shelfctl_deploy": {"seconds": round(wall, 2), "seconds_in_tool": tool_s,
                            "wire_bytes": wire, "payload_bytes_per_s": round(shelfctl_rate),
                            "payload_bytes_per_s_in_tool": round(payload / tool_s)},
        "mpremote_cp": {"seconds": round(mp_s, 2), "payload_bytes_per_s": round(mp_rate)},
        "ratio": round(shelfctl_rate / mp_rate, 2),
        "redeploy_unchanged_s": round(again_wall, 2),
        "redeploy_unchanged_s_in_tool": again_tool_s,
        "targets": {"ratio >= 5": shelfctl_rate / mp_rate >= 5,
                    ">= 12 KB/s": shelfctl_rate >= 12 * 1024,
                    "redeploy <= 1 s": again_wall <= 1.0},
    }


if __name__ == "__main__":
    import json

    print(json.dumps(deploy_vs_mpremote(), indent=1))
