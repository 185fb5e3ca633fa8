"""The whole shelf controller's heap in a MicroPython unix-port binary, firmware as files or
frozen into the binary.

The same workload as host_tools/vm/device_run.py (its script, unchanged: 6 lanes of fake
HX711 chips, the loopback broker, apps.device booted and running), under a `micropython`
built from MicroPython's source instead of the WebAssembly VM:
- mode "mpy": the firmware compiled by mpy-cross (as `shelfctl deploy` sends it) in the run
  directory, first on sys.path: its bytecode is loaded into the heap, as on a board;
- mode "frozen": nothing of the firmware on the filesystem; the binary must have been built
  with firmware/manifest.py frozen in, so the bytecode stays in the binary (flash on an ESP32).
Both modes put the fake board (host_tools/sim/hw, as source) on sys.path; the binary must
have asyncio frozen, as an ESP32 image does. How the binaries are built: docs/runtime.md,
"Heap with frozen firmware".

    python -m host_tools.vm.device_heap_unix --micropython ./micropython --mode frozen
    (--micropython is a command: a 32-bit binary on a 64-bit host may need its loader first)
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from host_tools.firmware import HW_DIR
from host_tools.mpy import compile_tree
from host_tools.vm.device_run import _SCRIPT, BOARD, CPG, UNIT_G, shelf_config

MODES = ("mpy", "frozen")
#: The WebAssembly VM's starting heap (host_tools/vm DEFAULT_HEAP_KB): mem_free is out of this.
HEAP_KB = 192


def _unix_script(spec: dict) -> str:
    # device_run's script uses top-level await (the VM runs it as a coroutine): here it becomes
    # the body of a coroutine that asyncio.run() drives.
    body = _SCRIPT.replace("SPEC_JSON", repr(json.dumps(spec)))
    indented = "".join("    " + line if line.strip() else line
                       for line in body.splitlines(keepends=True))
    return (f"import sys\nsys.path.append({str(HW_DIR)!r})\nimport asyncio\n\n"
            f"async def _device():\n{indented}"
            "    print('@@module ' + device.__file__)\n\n"
            "asyncio.run(_device())\n")


def run_device_unix(micropython: list[str], mode: str, lanes: int = 6, seconds: float = 10.0,
                    sps: int = 80, picks: list[tuple[float, int]] | None = None,
                    heap_kb: int = HEAP_KB) -> dict:
    """Run the device for `seconds` (real time) under the `micropython` command; picks:
    (time s, lane). Returns the heap figures (bytes), the events and where apps.device was
    imported from."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    spec = {"lanes": lanes, "seconds": seconds, "sps": sps, "picks": picks or [],
            "start_g": 10 * UNIT_G, "unit_g": UNIT_G, "cpg": CPG}
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        if mode == "mpy":
            compile_tree(run_dir)
        (run_dir / "config.json").write_text(json.dumps(shelf_config(lanes, sps)))
        shutil.copyfile(BOARD, run_dir / "board.json")
        script = run_dir / "device_heap.py"
        script.write_text(_unix_script(spec))
        # sys.path[0] is the script's directory: the run directory, as '' is on a board.
        proc = subprocess.run([*micropython, "-X", f"heapsize={heap_kb}K", script.name],
                              cwd=run_dir, capture_output=True, text=True,
                              timeout=seconds + 120)
    out = None
    module = ""
    for line in proc.stdout.splitlines():
        if line.startswith("@@device "):
            out = json.loads(line[len("@@device "):])
        elif line.startswith("@@module "):
            module = line[len("@@module "):]
    if proc.returncode != 0 or out is None:
        raise RuntimeError(f"the device run failed (exit {proc.returncode}):\n"
                           f"{proc.stdout}\n{proc.stderr}")
    # A frozen module's __file__ is its name in the manifest; a deployed one ends in .mpy.
    if (mode == "frozen") == module.endswith(".mpy"):
        raise RuntimeError(f"mode {mode!r}, but apps.device came from {module}")
    out["events"] = [json.loads(e) for e in out["events"]]
    out["status"] = [json.loads(s) for s in out["status"]]
    out["device_module"] = module
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--micropython", required=True,
                        help="the command that runs the unix-port binary (split like a shell)")
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args(argv)
    for _ in range(args.runs):
        r = run_device_unix(shlex.split(args.micropython), args.mode, seconds=args.seconds,
                            picks=[(3.0, 1), (4.0, 4)])
        heap = r["heap"]
        print(json.dumps({"mode": args.mode, "device_module": r["device_module"],
                          "heap": heap, "firmware_steady": heap["steady"] - heap["harness"],
                          "events": len(r["events"]), "samples": r["samples"],
                          "outbox_depth": r["outbox_depth"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
